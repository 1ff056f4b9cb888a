"""SymbolIndex: the answers of symclr-predict from Python (one code path), similarities to every
class, extending, saving and loading an index, and its errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from symclr_ft.data.shardset import load_classes, load_split
from symclr_ft.errors import UserError
from symclr_ft.use.embedder import load_model
from symclr_ft.use.predict import predict_main
from symclr_ft.use.symbol_index import UNKNOWN, SymbolIndex

SIZE = 32


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from symclr_ft.models.backbones import SimCLRNet, save_model_file

    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    save_model_file(SimCLRNet("resnet10t", 8), run / "model.pt", epoch=1)
    (run / "config.yaml").write_text(f"data:\n  image_size: {SIZE}\n")
    return run / "model.pt"


@pytest.fixture(scope="module")
def model(model_file):
    return load_model(model_file, device="cpu", precision="no")


def write_folder(out: Path, crops, names, classes, per_class: int) -> Path:
    """ImageFolder of the first ``per_class`` crops of each of ``classes``."""
    taken: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(crops.images, crops.labels.tolist())):
        if label in classes and taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            (out / names[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(out / names[label] / f"{i}.png")
    return out


@pytest.fixture(scope="module")
def folders(synth_shards, tmp_path_factory):
    """A support of 4 classes x 3 train crops, and queries of 6 classes (2 unknown) from valid."""
    names = load_classes(synth_shards)
    root = tmp_path_factory.mktemp("folders")
    support = write_folder(root / "support", load_split(synth_shards, "train", 40), names,
                           range(4), 3)
    queries = write_folder(root / "queries", load_split(synth_shards, "valid", 40), names,
                           range(6), 2)
    return support, queries


def test_predictions_are_those_of_symclr_predict(model_file, model, folders, tmp_path):
    support, queries = folders
    out = tmp_path / "preds.csv"
    assert predict_main(["--model", str(model_file), "--support", str(support), "--query",
                         str(queries), "--out", str(out), "--reject", "auto", "--k", "1",
                         "--mixed-precision", "no"]) == 0
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    index = SymbolIndex.from_folder(model, support)
    assert len(index) == len(list(support.glob("*/*.png")))
    assert index.class_names == sorted(p.name for p in support.iterdir())
    result = index.predict([r["source"] for r in table], reject="auto")
    assert result.labels == [r["predicted"] for r in table]
    got = [f"{float(s):.4f}" for s in result.scores]
    assert got == [r["score"] for r in table]
    best = result.similarities.gather(1, result.predicted[:, None]).squeeze(1)
    assert [f"{float(s):.4f}" for s in best] == [r["similarity"] for r in table]
    assert [t[1][0] if len(t) > 1 else "" for t in result.top(2)] == [r["runner_up"] for r in table]


def test_similarities_to_every_class_and_the_threshold(model, folders):
    support, queries = folders
    index = SymbolIndex.from_folder(model, support, views=0)
    files = sorted(queries.glob("*/*.png"))
    result = index.predict(files, reject=None)
    assert result.similarities.shape == (len(files), 4) and result.class_names == index.class_names
    assert result.labels == [index.class_names[int(i)] for i in result.similarities.argmax(dim=1)]
    assert UNKNOWN not in result.labels and result.threshold is None
    assert set(index.predict(files, reject=1.0).labels) == {UNKNOWN}  # nothing is that similar
    assert index.predict(files, reject=-1.0).labels == result.labels
    top = result.top(3)
    assert all(len(t) == 3 and t[0][1] >= t[1][1] >= t[2][1] for t in top)


def test_add_a_class_save_and_load(model, model_file, folders, tmp_path):
    support, queries = folders
    index = SymbolIndex.from_folder(model, support)
    n = len(index)
    new = sorted(queries.glob("*/*.png"))[-2:]  # a class the support lacks
    index.add("newcomer", new)
    assert index.class_names[-1] == "newcomer" and len(index) == n + 2
    assert index.index.views.shape[:2] == (n + 2, 8)
    assert index.predict(new, reject=None).labels == ["newcomer", "newcomer"]  # itself, nearest
    index.add("newcomer", Image.open(new[0]))  # in memory, to a class it has
    assert index.index.sources[-1] == {"added": n + 2}
    index.save(tmp_path / "idx")
    again = SymbolIndex.load(tmp_path / "idx", model)
    files = sorted(queries.glob("*/*.png"))
    a, b = index.predict(files), again.predict(files)
    assert a.labels == b.labels and torch.equal(a.scores, b.scores) and a.threshold == b.threshold


def test_from_coco_draws_shots_per_class(model, synth_coco):
    index = SymbolIndex.from_coco(model, synth_coco / "train", shots=2, views=0)
    counts = torch.bincount(index.index.labels)
    assert int(counts.max()) <= 2 and len(index.class_names) == 12
    assert set(index.index.sources[0]) == {"image", "bbox"}


def test_misuse_is_one_user_error(model, folders, tmp_path):
    support, queries = folders
    index = SymbolIndex.from_folder(model, support, views=0)
    index.save(tmp_path / "idx")
    with pytest.raises(UserError, match="loaded without a model"):
        SymbolIndex.load(tmp_path / "idx").predict(sorted(queries.glob("*/*.png")))
    with pytest.raises(UserError, match="reject='sometimes'"):
        index.predict(sorted(queries.glob("*/*.png")), reject="sometimes")
    with pytest.raises(UserError, match="needs one subfolder"):
        SymbolIndex.from_folder(model, queries / sorted(p.name for p in queries.iterdir())[0])
    index.index.model_sha256 = "0" * 64
    index.save(tmp_path / "foreign")
    with pytest.raises(UserError, match="made with model sha256"):
        SymbolIndex.load(tmp_path / "foreign", model)

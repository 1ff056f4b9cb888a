"""symclr-embed and symclr-predict: classification and the automatic threshold against slow
references, the commands end to end on tiny synthetic drawings, bad input, two processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from symclr_ft.data.shardset import load_classes, load_split
from symclr_ft.errors import UserError
from symclr_ft.use.index import load_index
from symclr_ft.use.predict import Support, classify, embed_main, predict_main

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- pure parts


def test_classify_matches_a_loop_with_runner_up():
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 1, 2])
    queries = F.normalize(torch.randn(9, 5, generator=g, dtype=torch.float64), dim=-1)
    pred, best, runner, runner_sim = classify(Support(feats, labels, ["a", "b", "c", "d"]), queries)
    for q in range(9):
        per_class = {c: max(float(queries[q] @ feats[i]) for i in range(12) if labels[i] == c)
                     for c in range(3)}
        ranked = sorted(per_class, key=per_class.get, reverse=True)
        assert int(pred[q]) == ranked[0] and float(best[q]) == pytest.approx(per_class[ranked[0]])
        assert int(runner[q]) == ranked[1] and float(runner_sim[q]) == pytest.approx(per_class[ranked[1]])


def test_classify_with_prototypes_and_votes():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1, 1])
    q = torch.tensor([[0.96, 0.28]])
    assert int(classify(Support(feats, labels, ["a", "b"]), q)[0][0]) == 0  # nearest crop is a
    assert int(classify(Support(feats, labels, ["a", "b"], k=3), q)[0][0]) == 1  # 2 votes of 3
    pred, best, _, _ = classify(Support(feats, labels, ["a", "b"], prototypes=True), q)
    mean_b = F.normalize(feats[1:].mean(dim=0), dim=0)
    assert int(pred[0]) == 0 and float(best[0]) == pytest.approx(0.96)
    assert float(classify(Support(feats, labels, ["a", "b"], prototypes=True), q)[3][0]) == \
        pytest.approx(float(q[0] @ mean_b))


# --------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from symclr_ft.models.backbones import SimCLRNet, save_model_file

    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    save_model_file(SimCLRNet("resnet10t", 8), run / "model.pt", epoch=1)
    (run / "config.yaml").write_text("data:\n  image_size: 32\n")
    return run / "model.pt"


@pytest.fixture(scope="module")
def half_classes(synth_shards, tmp_path_factory) -> Path:
    """An ImageFolder support of the first 6 of the 12 synthetic classes (train crops)."""
    out = tmp_path_factory.mktemp("support") / "folder"
    crops, names = load_split(synth_shards, "train", 40), load_classes(synth_shards)
    for i, (image, label) in enumerate(zip(crops.images, crops.labels.tolist())):
        if label < 6:
            (out / names[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(out / names[label] / f"{i}.png")
    return out


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_embed_then_predict_end_to_end(model_file, synth_coco, synth_shards, tmp_path, capsys):
    assert embed_main(["--model", str(model_file), "--input", str(synth_coco), "--split", "train",
                       "--out", str(tmp_path / "idx")]) == 0
    index = load_index(tmp_path / "idx")
    assert len(index) == len(load_split(synth_shards, "train", 32)) and index.image_size == 32
    assert set(index.sources[0]) == {"image", "bbox"}
    out = tmp_path / "p" / "preds.csv"
    assert predict_main(["--model", str(model_file), "--support", str(tmp_path / "idx"),
                         "--query", str(synth_shards), "--query-split", "test", "--out", str(out),
                         "--k", "3", "--reject", "auto"]) == 0
    printed = capsys.readouterr().out
    assert "threshold" in printed and "accuracy on" in printed and "micro" in printed
    assert "symclr-embed --views 8 stores them" in printed  # this index has no views
    table = rows(out)
    test = load_split(synth_shards, "test", 32)
    assert len(table) == len(test) and list(table[0]) == [
        "source", "predicted", "similarity", "score", "runner_up", "runner_up_similarity",
        "true_label"]
    # no views in this index: the score is the similarity itself
    assert all(r["score"] == r["similarity"] for r in table)
    names = load_classes(synth_shards)
    assert [r["true_label"] for r in table] == [names[i] for i in test.labels.tolist()]
    saved = json.loads(out.with_suffix(".threshold.json").read_text())
    assert saved["reject"] == "auto" and -1 <= saved["threshold"] <= 1 and saved["how"]


def test_an_index_with_views_answers_as_its_images_do(model_file, half_classes, synth_shards,
                                                      tmp_path, capsys):
    """symclr-embed --views stores the views symclr-predict would make from the images, so
    both supports give the same rows, and a score that is not the plain similarity."""
    assert embed_main(["--model", str(model_file), "--input", str(half_classes), "--views", "8",
                       "--out", str(tmp_path / "idx")]) == 0
    index = load_index(tmp_path / "idx")
    assert index.views.shape == (len(index), 8, index.features.shape[1])
    query = ["--query", str(synth_shards), "--query-split", "valid", "--reject", "auto"]
    for support in ("idx", "images"):
        path = tmp_path / "idx" if support == "idx" else half_classes
        assert predict_main(["--model", str(model_file), "--support", str(path), *query,
                             "--out", str(tmp_path / support / "preds.csv")]) == 0
    printed = capsys.readouterr().out
    assert "no augmented views" not in printed
    from_index, from_images = rows(tmp_path / "idx" / "preds.csv"), rows(tmp_path / "images" / "preds.csv")
    assert from_index == from_images
    assert any(r["score"] != r["similarity"] for r in from_index)


def test_open_set_numbers_when_query_classes_are_missing(model_file, half_classes, synth_shards,
                                                         tmp_path, capsys):
    out = tmp_path / "preds.csv"
    numbers = None
    assert predict_main(["--model", str(model_file), "--support", str(half_classes), "--shots", "1",
                         "--query", str(synth_shards), "--query-split", "valid", "--out", str(out),
                         "--reject", "auto"]) == 0
    printed = capsys.readouterr().out
    assert "one-example classes x 8 augmented views" in printed and "open set:" in printed
    numbers = json.loads(out.with_suffix(".threshold.json").read_text())["summary"]["open_set"]
    assert 0 <= numbers["auroc"] <= 1 and numbers["known"] > 0 and numbers["unknown"] > 0
    predicted = {r["predicted"] for r in rows(out)}
    assert predicted <= set(os.listdir(half_classes)) | {"unknown"}


def test_unreadable_query_images_are_skipped_and_listed(model_file, half_classes, tmp_path, capsys):
    queries = tmp_path / "q"
    queries.mkdir()
    first = sorted((half_classes / sorted(os.listdir(half_classes))[0]).iterdir())[0]
    (queries / "good.png").write_bytes(first.read_bytes())
    (queries / "bad.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "o" / "preds.csv"
    assert predict_main(["--model", str(model_file), "--support", str(half_classes),
                         "--query", str(queries), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 queries predicted" in printed and "1 skipped" in printed
    assert [r["source"].endswith("good.png") for r in rows(out)] == [True]
    skipped = rows(out.with_suffix(".skipped.csv"))
    assert len(skipped) == 1 and skipped[0]["source"].endswith("bad.png") and skipped[0]["reason"]
    (queries / "good.png").unlink()
    with pytest.raises(SystemExit) as exit_:
        predict_main(["--model", str(model_file), "--support", str(half_classes),
                      "--query", str(queries), "--out", str(tmp_path / "none.csv")])
    assert exit_.value.code == 2 and not (tmp_path / "none.csv").exists()


def bad_cases(tmp: Path, model: Path, support: Path, shards: Path) -> dict:
    other = tmp / "other"
    (tmp / "empty" / "pump").mkdir(parents=True)
    one = tmp / "one"
    (one / "pump").mkdir(parents=True)
    first = sorted(next(support.iterdir()).iterdir())[0]
    (one / "pump" / "a.png").write_bytes(first.read_bytes())
    base = ["--model", str(model), "--query", str(shards), "--query-split", "test"]
    return {
        "unknown --reject": (base + ["--support", str(support), "--reject", "maybe"], "--reject='maybe'"),
        "missing path": (base + ["--support", str(tmp / "nope")], "nope: not found"),
        "empty class folder": (base + ["--support", str(tmp / "empty")], "class folder has no image"),
        "one class for auto": (base + ["--support", str(one), "--reject", "auto"], "at least two classes, it has 1"),
        "index of another model": (base + ["--support", str(other)], "made with model sha256"),
    }


def test_bad_input_is_one_line_and_writes_nothing(model_file, half_classes, synth_shards, tmp_path, capsys):
    from symclr_ft.use.index import FeatureIndex, save_index

    save_index(FeatureIndex(torch.eye(2), torch.tensor([0, 1]), ["a", "b"], [{"file": "x"}] * 2,
                            "0" * 64, 32, "none"), tmp_path / "other")
    for name, (argv, message) in bad_cases(tmp_path, model_file, half_classes, synth_shards).items():
        out = tmp_path / name.replace(" ", "_") / "preds.csv"
        with pytest.raises(SystemExit) as exit_:
            predict_main(argv + ["--out", str(out)])
        err = [line for line in capsys.readouterr().err.splitlines() if "crop/s" not in line]
        assert exit_.value.code == 2, name
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (name, err)
        assert not out.parent.exists() or not any(out.parent.iterdir()), name


def test_two_processes_embed_the_same_index(model_file, synth_shards, tmp_path):
    """torchrun with 2 CPU processes: each embeds its share; the index equals 1 process's."""
    common = ["-m", "symclr_ft.use.predict", "embed", "--model", str(model_file), "--input",
              str(synth_shards), "--split", "valid", "--batch-size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2",
                          *common, "--out", str(tmp_path / "two")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_index(tmp_path / "one"), load_index(tmp_path / "two")
    assert torch.equal(a.labels, b.labels) and a.sources == b.sources
    torch.testing.assert_close(a.features, b.features, rtol=0, atol=1e-6)

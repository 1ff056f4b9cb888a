"""Spotter: the detections of symclr-spot from Python (one pipeline), drawings in memory as on
disk, exemplars from a SymbolIndex, and what it refuses."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from symclr_ft.errors import UserError
from symclr_ft.models.backbones import save_model_file
from symclr_ft.use.embedder import load_model
from symclr_ft.use.spot.spotter import Spotter
from symclr_ft.use.spot.spotting import main as spot_main

SIZE = 48


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """EfficientNet-lite0 with its ImageNet weights (the test extra installs them): its
    features tell the synthetic symbols apart, cheaply at 48 px."""
    from symclr_ft.config import ModelConfig
    from symclr_ft.models.backbones import build_model

    cfg = ModelConfig(arch="tf_efficientnet_lite0", init="efficientnet_lite0", input_norm="imagenet",
                      out_dim=16)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model_file(build_model(cfg), path, epoch=0)
    return path


@pytest.fixture(scope="module")
def model(model_file):
    return load_model(model_file, device="cpu", precision="no", image_size=SIZE)


@pytest.fixture(scope="module")
def spotter(model, synth_coco):
    return Spotter(model, synth_coco / "train", count_score=0.9)


def test_detections_are_those_of_symclr_spot(model_file, spotter, synth_coco, tmp_path):
    """The command on one drawing and the API on it: the same boxes, classes and counts (the
    API's network has its batch norms folded: scores agree to 1e-3)."""
    drawing = sorted((synth_coco / "test").glob("*.jpg"))[0]
    folder = tmp_path / "drawings"
    folder.mkdir()
    Image.open(drawing).save(folder / "d.png")
    assert spot_main(["--model", str(model_file), "--exemplars", str(synth_coco / "train"),
                      "--drawings", str(folder), "--out", str(tmp_path / "out"),
                      "--image-size", str(SIZE), "--count-score", "0.9"]) == 0
    rows = json.loads((tmp_path / "out" / "detections.json").read_text())
    found = spotter.spot(folder / "d.png")
    assert len(rows) == len(found.labels) > 0
    names = dict(zip(spotter.exemplars.category_ids, spotter.class_names))
    assert found.labels == [names[r["category_id"]] for r in rows]
    xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rows)])
    torch.testing.assert_close(found.boxes, xyxy, rtol=0, atol=0.02)
    torch.testing.assert_close(found.scores, torch.tensor([r["score"] for r in rows]), rtol=0,
                               atol=1e-3)
    with open(tmp_path / "out" / "counts.csv") as handle:  # the takeoff: a row per class
        assert {row["class"]: int(row["count"]) for row in csv.DictReader(handle)} == found.counts


def test_a_drawing_in_memory_is_spotted_as_on_disk(spotter, synth_coco):
    path = sorted((synth_coco / "test").glob("*.jpg"))[1]
    on_disk = spotter.spot(path)
    for image in (Image.open(path), np.asarray(Image.open(path).convert("RGB"))):
        again = spotter.spot(image)
        assert again.labels == on_disk.labels and torch.equal(again.boxes, on_disk.boxes)
    counted = sum(on_disk.counts.values())
    assert counted == int((on_disk.scores >= on_disk.count_score).sum())
    assert set(on_disk.counts) == set(spotter.class_names)


def test_per_class_thresholds_from_a_file_or_a_dict(spotter, model, synth_coco, tmp_path):
    """``thresholds`` (the file report.html saves, or its dict): the file's count_score
    replaces count_score, a class of its own is counted from its own threshold; a class that
    is not among the exemplars is refused by name."""
    path = sorted((synth_coco / "test").glob("*.jpg"))[0]
    scores = spotter.spot(path)  # the module's spotter: count_score 0.9, the same detections
    busiest = max(set(scores.labels), key=scores.labels.count)
    given = tmp_path / "thresholds.json"
    given.write_text(json.dumps({"count_score": 0.5, "classes": {busiest: 0.99}}))
    found = Spotter(model, synth_coco / "train", count_score=0.9, thresholds=given).spot(path)
    assert found.count_score == 0.5 and found.class_count_scores == {busiest: 0.99}
    expected = dict.fromkeys(spotter.class_names, 0)
    for label, score in zip(found.labels, found.scores.tolist()):
        expected[label] += round(score, 5) >= (0.99 if label == busiest else 0.5)
    assert found.counts == expected and found.counts[busiest] < found.labels.count(busiest)
    with pytest.raises(UserError, match="'no-such-class'"):
        Spotter(model, synth_coco / "train", thresholds={"classes": {"no-such-class": 0.5}})


def test_exemplars_from_a_symbol_index(model, synth_coco):
    from symclr_ft.use.symbol_index import SymbolIndex

    index = SymbolIndex.from_coco(model, synth_coco / "train", shots=1, views=0)
    spotter = Spotter(model, index, count_score=0.5)
    found = spotter.spot(sorted((synth_coco / "test").glob("*.jpg"))[0])
    assert spotter.class_names == index.class_names
    assert found.boxes.shape == (len(found.labels), 4) and set(found.labels) <= set(index.class_names)


def test_what_it_refuses(model, model_file, synth_coco, tmp_path):
    with pytest.raises(UserError, match="shots=0"):
        Spotter(model, synth_coco / "train", shots=0)
    with pytest.raises(UserError, match="exemplars not found"):
        Spotter(model, tmp_path / "nowhere.txt")
    with pytest.raises(UserError, match="cannot decode"):
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not a png")
        Spotter(model, synth_coco / "train").spot(bad)
    pytest.importorskip("onnxruntime")
    from symclr_ft.models.export import main as export_main

    assert export_main(["--model", str(model_file), "--onnx", str(tmp_path / "f.onnx"),
                        "--image-size", str(SIZE), "--no-check"]) == 0
    with pytest.raises(UserError, match="spotting needs a model.pt"):
        Spotter(load_model(tmp_path / "f.onnx"), synth_coco / "train")

"""symclr-spot on tiny synthetic drawings: candidates, tiling, NMS, counts, the CLI, bad input,
two processes. The browser check of report.html is in tests/use/spot/test_report.py."""

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
from PIL import Image, ImageDraw

from symclr_ft.data import synth
from symclr_ft.models.backbones import save_model_file
from symclr_ft.use.spot.candidates import candidate_boxes, tile_grid
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.drawings import list_drawings
from symclr_ft.use.spot.report import count_detections
from symclr_ft.use.spot.spotting import drawing_candidates, embed_exemplars, score_candidates, to_coco_results

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[3]
SIZE = 48  # crop size of the test model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """EfficientNet-lite0 with its ImageNet weights (the test extra installs them): unlike a
    random network its features tell the synthetic symbols apart, cheaply at 48 px."""
    from symclr_ft.config import ModelConfig
    from symclr_ft.models.backbones import build_model

    cfg = ModelConfig(arch="tf_efficientnet_lite0", init="efficientnet_lite0", input_norm="imagenet", out_dim=16)
    net = build_model(cfg)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model_file(net, path, epoch=0)
    return path


@pytest.fixture(scope="session")
def net(tiny_model):
    from symclr_ft.models.backbones import load_model_file

    return load_model_file(tiny_model).eval()


def canvas(width: int, height: int) -> Image.Image:
    """A blank sheet with one long wire (removed by the line filter, as on real drawings)."""
    image = Image.new("RGB", (width, height), synth.BACKGROUND)
    ImageDraw.Draw(image).line([(0, height - 6), (width - 1, height - 6)], fill=synth.WIRE_COLOURS[0])
    return image


def plant(image: Image.Image, design_index: int, x: int, y: int, size: int = 30) -> list[float]:
    """Paste synthetic class ``design_index`` at (x, y); returns its COCO box (tight ink)."""
    design = synth.symbol_designs(12)[design_index]
    mask = synth.draw_symbol(design, size)
    image.paste(design.colour, (x, y), mask)
    ix0, iy0, ix1, iy1 = mask.getbbox()
    return [x + ix0, y + iy0, ix1 - ix0, iy1 - iy0]


def iou(a: list[float], b: list[float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    h = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def exemplar_sheet(tmp_path: Path, designs: list[int]) -> tuple[Path, list[list[float]]]:
    """A COCO split with one exemplar of each design, ids = design + 1. Its box is the ink box
    grown as the candidates' are (``box_padding``), so that even a random network sees the same
    crop on the sheet and on a drawing."""
    folder = tmp_path / "exemplars"
    folder.mkdir()
    image = canvas(60 * len(designs) + 20, 90)
    pad = SpotConfig().box_padding
    boxes = [plant(image, k, 15 + 60 * i, 25) for i, k in enumerate(designs)]
    boxes = [[x - pad * w, y - pad * h, w * (1 + 2 * pad), h * (1 + 2 * pad)] for x, y, w, h in boxes]
    image.save(folder / "sheet.png")
    coco = {
        "images": [{"id": 0, "file_name": "sheet.png", "width": image.width, "height": image.height}],
        "categories": [{"id": k + 1, "name": f"class{k}"} for k in designs],
        "annotations": [
            {"id": i, "image_id": 0, "category_id": k + 1, "bbox": box}
            for i, (k, box) in enumerate(zip(designs, boxes))
        ],
    }
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    return folder, boxes


def test_planted_symbol_is_found_at_its_place(net, tmp_path):
    from symclr_ft.use.spot.spotting import pick_coco_exemplars

    folder, _ = exemplar_sheet(tmp_path, [0, 1, 2])
    ex = embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, SpotConfig())
    drawing = canvas(200, 160)
    x, y, w, h = plant(drawing, 1, 120, 40)
    pad = SpotConfig().box_padding  # the sheet's boxes are drawn this much looser than the ink
    truth = [x - pad * w, y - pad * h, w * (1 + 2 * pad), h * (1 + 2 * pad)]
    dets = score_candidates(drawing_candidates(net, drawing, SIZE, SpotConfig()), ex, SpotConfig())
    rows = to_coco_results(dets, 7, ex)
    best = max(rows, key=lambda r: r["score"])
    assert best["category_id"] == 2 and best["image_id"] == 7
    assert iou(best["bbox"], truth) >= 0.5
    assert best["score"] > 0.95


def test_tile_cores_partition_the_drawing():
    for width, height, tile, overlap in [(1000, 700, 256, 100), (256, 256, 256, 64), (1301, 257, 300, 120)]:
        hits = np.zeros((height, width), int)
        for (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) in tile_grid(width, height, tile, overlap):
            assert x1 - x0 <= tile and y1 - y0 <= tile
            assert x0 <= cx0 < cx1 <= x1 and y0 <= cy0 < cy1 <= y1
            hits[cy0:cy1, cx0:cx1] += 1
        assert (hits == 1).all()


def test_tiling_finds_the_same_candidates_as_one_pass(net, tmp_path):
    """Symbols straddling every tile border: tiled candidates equal the untiled ones, and after
    NMS each planted symbol is detected exactly once (nothing double counted)."""
    from symclr_ft.use.spot.spotting import pick_coco_exemplars

    drawing = canvas(620, 300)
    places = [(150, 40), (240, 100), (300, 200), (420, 30), (500, 150), (20, 220)]
    inks = [plant(drawing, k % 3, x, y) for k, (x, y) in enumerate(places)]
    tiled = SpotConfig(tile=256, tile_overlap=2 * (60 // 2 + 8), max_side=60)
    assert len(tile_grid(620, 300, tiled.tile, tiled.tile_overlap)) > 2
    rgb = np.asarray(drawing)
    untiled = candidate_boxes(rgb, SpotConfig(tile=4096, max_side=60))
    assert sorted(map(tuple, candidate_boxes(rgb, tiled).tolist())) == sorted(map(tuple, untiled.tolist()))

    folder, _ = exemplar_sheet(tmp_path, [0, 1, 2])
    ex = embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, tiled)
    rows = to_coco_results(score_candidates(drawing_candidates(net, drawing, SIZE, tiled), ex, tiled), 0, ex)
    counted = [r for r in rows if r["score"] >= 0.9]
    pad = tiled.box_padding
    truth = [[x - pad * w, y - pad * h, w * (1 + 2 * pad), h * (1 + 2 * pad)] for x, y, w, h in inks]
    assert len(counted) == len(truth)
    for k, t in enumerate(truth):
        hits = [r for r in counted if iou(r["bbox"], t) >= 0.5]
        assert len(hits) == 1 and hits[0]["category_id"] == k % 3 + 1


def test_counts_match_detections():
    rows = [
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": [9, 0, 5, 5], "score": 0.7},
        {"image_id": 1, "category_id": 3, "bbox": [0, 9, 5, 5], "score": 0.4},
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.8},
    ]
    assert count_detections(rows, 0.5) == {(1, 2): 2, (2, 3): 1}
    assert count_detections(rows, 0.0) == {(1, 2): 2, (1, 3): 1, (2, 3): 1}


def run(cmd, env=None, timeout=300):
    full = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=timeout)


def spot_cmd(model, exemplars, drawings, out, *extra):
    return [sys.executable, "-m", "symclr_ft.use.spot.spotting", "--model", str(model), "--exemplars", str(exemplars),
            "--drawings", str(drawings), "--out", str(out), "--image-size", str(SIZE), *extra]


@pytest.fixture(scope="module")
def cli_run(tiny_model, synth_coco, tmp_path_factory):
    out = tmp_path_factory.mktemp("spot") / "out"
    result = run(spot_cmd(tiny_model, synth_coco / "train", synth_coco / "test", out, "--count-score", "0.9"))
    assert result.returncode == 0, result.stderr[-2000:]
    return out, result


def test_cli_outputs_coco_results_and_counts(cli_run, synth_coco):
    out, result = cli_run
    rows = json.loads((out / "detections.json").read_text())
    gt = json.loads((synth_coco / "test" / "_annotations.coco.json").read_text())
    assert rows and {r["image_id"] for r in rows} <= {im["id"] for im in gt["images"]}
    assert {r["category_id"] for r in rows} <= {c["id"] for c in gt["categories"]}
    from pycocotools.coco import COCO

    COCO(str(synth_coco / "test" / "_annotations.coco.json")).loadRes(rows)  # scores directly
    with open(out / "counts.csv") as f:
        table = list(csv.DictReader(f))
    names = {c["name"]: c["id"] for c in gt["categories"]}
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    expected = count_detections(rows, 0.9)
    assert len(table) == len(gt["images"]) * len({r["class"] for r in table})  # every (drawing, class)
    for line in table:
        image_id = int(line["image_id"])
        assert line["file"] == files[image_id] and line["page"] == ""
        assert int(line["count"]) == expected.get((image_id, names[line["class"]]), 0)
    assert len(list((out / "overlays").glob("*.png"))) == len(gt["images"])
    assert "exact counts" in result.stdout


def test_two_processes_give_the_one_process_detections(cli_run, tiny_model, synth_coco, tmp_path):
    out, _ = cli_run
    two = run([str(BIN / "torchrun"), "--nproc_per_node", "2", "-m", "symclr_ft.use.spot.spotting",
               *spot_cmd(tiny_model, synth_coco / "train", synth_coco / "test", tmp_path / "two", "--count-score", "0.9")[3:]])
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "detections.json").read_text()) == json.loads((out / "detections.json").read_text())
    assert (tmp_path / "two" / "counts.csv").read_text() == (out / "counts.csv").read_text()


def test_undecodable_drawing_is_skipped_and_listed(tiny_model, synth_coco, tmp_path):
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    Image.open(synth_coco / "test" / "test-0000.jpg").save(drawings / "good.png")
    (drawings / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = run(spot_cmd(tiny_model, synth_coco / "train", drawings, tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "broken.png" in skipped and "cannot decode" in skipped
    assert "1 skipped" in result.stdout
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 1


def test_exemplar_larger_than_drawing_is_skipped(tiny_model, tmp_path):
    folder, _ = exemplar_sheet(tmp_path, [0, 1])
    coco = json.loads((folder / "_annotations.coco.json").read_text())
    coco["annotations"][1]["bbox"] = [0, 0, 100, 70]  # class1's exemplar: wider than the drawing
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    small = canvas(90, 90)
    plant(small, 0, 30, 30)
    small.save(drawings / "small.png")
    result = run(spot_cmd(tiny_model, folder, drawings, tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "exemplar of class1" in skipped and "larger than drawing small.png (90x90)" in skipped


@pytest.mark.parametrize("problem", ["no_exemplars", "bad_model"])
def test_fatal_input_is_one_line_exit_2_nothing_written(problem, tiny_model, synth_coco, tmp_path):
    model, exemplars = tiny_model, synth_coco / "train"
    if problem == "no_exemplars":
        exemplars = tmp_path / "empty"
        exemplars.mkdir()
    else:
        model = tmp_path / "model.pt"
        model.write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    result = run(spot_cmd(model, exemplars, synth_coco / "test", out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_drawings_folder_ids_follow_file_names(tmp_path):
    for name in ["b.png", "a.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    drawings = list_drawings(tmp_path)
    assert [(d.file_name, d.image_id, d.truth) for d in drawings] == [("a.jpg", 0, None), ("b.png", 1, None)]


def test_folder_exemplars_match_coco_exemplars(net, tmp_path):
    """A class folder of crops cut as make-shards cuts them gives the same features and box
    size as the COCO box it was cut from."""
    from symclr_ft.data.coco import padded_crop_box
    from symclr_ft.use.spot.spotting import folder_exemplars, pick_coco_exemplars

    folder, boxes = exemplar_sheet(tmp_path, [0, 1])
    sheet = Image.open(folder / "sheet.png")
    crops = tmp_path / "crops"
    for k, box in zip([0, 1], boxes):
        (crops / f"class{k}").mkdir(parents=True)
        sheet.crop(padded_crop_box(box, sheet.width, sheet.height)).save(crops / f"class{k}" / "a.png")
    from_coco = embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, SpotConfig())
    from_folder = embed_exemplars(net, folder_exemplars(crops, 1, 0.1), SIZE, SpotConfig())
    assert from_folder.class_names == ["class0", "class1"]
    assert torch.allclose(from_folder.features, from_coco.features, atol=1e-4)
    assert torch.allclose(from_folder.sizes, from_coco.sizes, atol=2.0)

"""Per-class count thresholds from the exemplars (``--count-score per-class``): the calibration
sheet (deterministic, its boxes true), the threshold rule against a brute-force F1 search, a
class scoring under the global threshold counted after calibration (on the sheet, and on the
exemplars' split's other annotated drawings), and the command's thresholds.json read back by
``--thresholds`` to the same counts."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from symclr_ft.errors import UserError
from symclr_ft.use.spot.calibration import (
    BOX_SCALES, choose_box_scale, matched, scaled_boxes,
    calibrate, calibrate_for, calibration_drawings, choose_threshold, exact_count_threshold, f1_at, wrong_counts,
)
from symclr_ft.use.spot.calibration_sheet import DISTRACTOR, calibration_pages
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.pipeline import Exemplars, embed_exemplars, pick_coco_exemplars, spot_pixels, to_coco_results
from symclr_ft.use.spot.report import count_detections, count_thresholds
from symclr_ft.use.spot.spotting import main as spot_main
from symclr_ft.use.spot.template import ink_picture
from use.spot.test_spotting import SIZE, canvas, exemplar_sheet, net, plant, tiny_model  # noqa: F401

DESIGNS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def exemplars(net, tmp_path_factory):  # noqa: F811
    folder, _ = exemplar_sheet(tmp_path_factory.mktemp("calibration"), DESIGNS)
    return embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, SpotConfig())


def test_the_sheet_is_deterministic_for_a_seed(exemplars):
    one, again, other = (calibration_pages(exemplars.crops, seed) for seed in (3, 3, 4))
    for a, b in zip(one, again):
        assert np.array_equal(a.rgb, b.rgb) and a.boxes == b.boxes and a.labels == b.labels
    assert not np.array_equal(one[0].rgb, other[0].rgb)
    labels = one[0].labels
    assert all(labels.count(c) == 4 for c in range(len(DESIGNS))) and labels.count(DISTRACTOR) == 4
    assert one[1].labels == labels and len(one[1].boxes) == len(one[0].boxes)  # the scan: the same pieces


def test_unaltered_copies_are_the_exemplars_pixels_in_their_boxes(exemplars):
    """One copy each (no alteration): the page inside each box is the exemplar's crop inside
    its box, pixel for pixel (the exemplar sheet's paper is the page's)."""
    page = calibration_pages(exemplars.crops, 0, copies=1, distractors=0)[0]
    for label, rgb, (cx, cy, w, h) in exemplars.crops:
        (x, y, bw, bh), = [b for b, l in zip(page.boxes, page.labels) if l == label]
        assert (bw, bh) == (w, h)
        dx, dy = x - cx, y - cy  # the paste offset: whole pixels
        assert dx == int(dx) and dy == int(dy)
        x0, y0, x1, y1 = int(np.floor(cx)), int(np.floor(cy)), int(np.ceil(cx + w)), int(np.ceil(cy + h))
        assert np.array_equal(page.rgb[y0 + int(dy):y1 + int(dy), x0 + int(dx):x1 + int(dx)], rgb[y0:y1, x0:x1])


def _ink_box(rgb: np.ndarray, paper: np.ndarray, zone: list[int], threshold: int, blur: float = 0) -> list[float]:
    """The bounding box of the ink in ``zone`` (x0, y0, x1, y1); ``blur``: a Gaussian first
    (a scan's noise is then far below faint lines)."""
    x0, y0, x1, y1 = zone
    ink = ink_picture(rgb[y0:y1, x0:x1], paper)
    if blur:
        ink = cv2.GaussianBlur(ink, (0, 0), blur)
    ys, xs = np.nonzero(ink > threshold)
    return [x0 + xs.min(), y0 + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def _margins(ink: list[float], box: list[float]) -> np.ndarray:
    """The box's margins around its ink, as shares of the box's side: left, top, right, bottom."""
    return np.array([(ink[0] - box[0]) / box[2], (ink[1] - box[1]) / box[3],
                     (box[0] + box[2] - ink[0] - ink[2]) / box[2], (box[1] + box[3] - ink[1] - ink[3]) / box[3]])


@pytest.mark.parametrize("page_index, threshold, blur, tolerance", [(0, 30, 0, 0.1), (1, 15, 1.0, 0.15)])
def test_every_pasted_box_holds_its_copy_as_the_exemplars_box_holds_it(exemplars, page_index, threshold, blur,
                                                                        tolerance):
    """Altered copies (scaled, line weight, quarter turns, skew; then the scanned page): the ink
    found around each true box sits inside it with the exemplar's margins (turned with the copy:
    compared as sorted pairs), so the boxes are where the copies were pasted. On the scan, the
    copies made faint by a thinner line weight (their ink under 150 on the clean page) fade into
    the noise: they are left out of the check (the scan's boxes: test_robustness.py)."""
    pages = calibration_pages(exemplars.crops, 1)
    page = pages[page_index]
    clean_paper = np.median(pages[0].rgb.reshape(-1, 3), axis=0)
    paper = np.median(page.rgb.reshape(-1, 3), axis=0)
    reference = {}
    for label, rgb, box in exemplars.crops:
        whole = [0, 0, rgb.shape[1], rgb.shape[0]]
        margins = _margins(_ink_box(rgb, np.median(rgb.reshape(-1, 3), axis=0), whole, 90), box)
        reference[label] = sorted([sorted(margins[[0, 2]]), sorted(margins[[1, 3]])])
    checked = []
    for k, (box, label) in enumerate(zip(page.boxes, page.labels)):
        if label == DISTRACTOR:
            continue
        zone = [max(0, int(box[0]) - 4), max(0, int(box[1]) - 4), int(box[0] + box[2]) + 5, int(box[1] + box[3]) + 5]
        x, y, w, h = (int(v) for v in pages[0].boxes[k])
        if page_index and ink_picture(pages[0].rgb[y:y + h, x:x + w], clean_paper).max() < 150:
            continue
        checked.append(label)
        margins = _margins(_ink_box(page.rgb, paper, zone, threshold, blur), box)
        found = sorted([sorted(margins[[0, 2]]), sorted(margins[[1, 3]])])
        assert np.abs(np.array(found) - np.array(reference[label])).max() <= tolerance, (label, box)
    assert len(checked) >= 3 * len(DESIGNS)


def test_the_threshold_rule_is_f1_best_against_a_brute_force_search():
    rng = np.random.default_rng(0)
    for _ in range(200):
        pos = [round(float(v), 3) for v in rng.uniform(0.3, 1.0, int(rng.integers(4, 12)))]
        neg = [round(float(v), 3) for v in rng.uniform(0.2, 0.9, int(rng.integers(0, 10)))]
        missed, base = int(rng.integers(0, 3)), 0.7
        grid = np.round(np.arange(0.0, 1.0005, 0.0005), 4)  # every threshold, a fine grid
        best = max(f1_at(t, pos, neg, missed) for t in grid)
        t = choose_threshold(pos, neg, missed, base, shift=1.0, min_positives=4)
        assert f1_at(t, pos, neg, missed) == pytest.approx(best)
        if f1_at(base, pos, neg, missed) == pytest.approx(best):
            assert t == base  # the global one stays where it is as good as any
        held = choose_threshold(pos, neg, missed, base, shift=0.1, min_positives=4)
        assert abs(held - base) <= 0.1 + 1e-9
    assert choose_threshold([0.1, 0.2, 0.3], [], 0, 0.7, 1.0, min_positives=4) == 0.7  # too few: the global


def test_the_exact_count_rule_counts_most_pages_exactly_against_a_brute_force_search():
    rng = np.random.default_rng(1)
    for _ in range(200):
        pages = [([round(float(v), 3) for v in rng.uniform(0.3, 1.0, int(rng.integers(0, 6)))], int(rng.integers(0, 4)))
                 for _ in range(int(rng.integers(1, 8)))]
        base, shift = 0.7, float(rng.choice([0.05, 0.15, 1.0]))
        grid = np.round(np.arange(base - shift, base + shift + 1e-9, 0.0005), 4)  # every threshold allowed
        best = min(wrong_counts(t, pages) for t in grid)
        t = exact_count_threshold(pages, 10, base, shift, min_positives=4)
        assert wrong_counts(t, pages) == best and abs(t - base) <= shift + 1e-9
        if wrong_counts(base, pages) == best:
            assert t == base
    assert exact_count_threshold([([0.5], 1)], 3, 0.7, 0.3, min_positives=4) == 0.7  # too few: the global


def test_a_class_under_the_global_threshold_is_lowered_and_then_counted(net, exemplars):  # noqa: F811
    """Global 0.99: no true score of any class on the calibration sheet reaches it, so every
    class with enough copies found gets a lower threshold of its own; three planted symbols of
    one class on a drawing are counted then, and not with the global threshold alone."""
    cfg = SpotConfig(count_score=0.99, calibration_shift=0.5)
    cal = calibrate(net, exemplars, SIZE, cfg, seed=0)
    again = calibrate(net, exemplars, SIZE, cfg, seed=0)
    assert again.thresholds == cal.thresholds and again.positives == cal.positives  # deterministic for a seed
    design = DESIGNS[1]
    name = f"class{design}"
    assert max(cal.positives[name]) < 0.99 and cal.thresholds[name] < 0.99
    drawing = canvas(320, 160)
    for x in (20, 120, 220):
        plant(drawing, design, x, 40)
    plant(drawing, DESIGNS[3], 160, 100)
    dets, _, _ = spot_pixels(net, np.asarray(drawing), exemplars, SIZE, cfg)
    rows = to_coco_results(dets, 0, exemplars)
    cat = exemplars.category_ids[exemplars.class_names.index(name)]
    assert count_detections(rows, cfg.count_score).get((0, cat), 0) == 0
    cfg.class_count_scores = dict(cal.thresholds)
    assert count_detections(rows, cfg.count_score, count_thresholds(cfg, exemplars)).get((0, cat), 0) == 3


def test_exemplars_without_pictures_are_refused_in_one_line(net):  # noqa: F811
    index_like = Exemplars(torch.zeros((1, 4)), torch.zeros(1, dtype=torch.long), torch.ones((1, 2)), ["a"], [1])
    with pytest.raises(UserError) as err:
        calibrate(net, index_like, SIZE, SpotConfig())
    assert "not an index" in str(err.value) and "\n" not in str(err.value)


def test_the_command_saves_thresholds_that_count_the_same_when_read_back(tiny_model, synth_coco, tmp_path,  # noqa: F811
                                                                         capsys):
    common = ["--model", str(tiny_model), "--exemplars", str(synth_coco / "train"), "--drawings",
              str(synth_coco / "test"), "--image-size", str(SIZE), "--max-drawings", "3", "--no-objectness"]
    assert spot_main([*common, "--out", str(tmp_path / "per-class"), "--count-score", "per-class"]) == 0
    printed = capsys.readouterr().out
    assert "per-class count thresholds from the exemplars:" in printed
    saved = json.loads((tmp_path / "per-class" / "thresholds.json").read_text())
    assert saved["count_score"] == SpotConfig.count_score and saved["classes"]  # some class differs
    # read back (with another --count-score: the file's wins), and with per-class too: nothing calibrated
    for extra in (["--count-score", "0.3"], ["--count-score", "per-class"]):
        out = tmp_path / f"again{extra[1]}"
        assert spot_main([*common, "--out", str(out), "--thresholds",
                          str(tmp_path / "per-class" / "thresholds.json"), *extra]) == 0
        assert "per-class count thresholds from the exemplars:" not in capsys.readouterr().out  # not calibrated
        assert (out / "counts.csv").read_text() == (tmp_path / "per-class" / "counts.csv").read_text()
        assert json.loads((out / "thresholds.json").read_text()) == saved
    plain = tmp_path / "global"
    assert spot_main([*common, "--out", str(plain)]) == 0
    assert json.loads((plain / "thresholds.json").read_text()) == {"count_score": 0.7, "classes": {}}


def test_the_spotter_calibrates_unless_given_thresholds(tiny_model, tmp_path):  # noqa: F811
    from symclr_ft.use.embedder import load_model
    from symclr_ft.use.spot.spotter import Spotter

    folder, _ = exemplar_sheet(tmp_path, DESIGNS)
    model = load_model(tiny_model, device="cpu", precision="no", image_size=SIZE)
    config = SpotConfig(count_score=0.99, calibration_shift=0.5)
    spotter = Spotter(model, folder, config=config, count_score="per-class", objectness=False)
    cal = spotter.calibration
    assert cal.seconds > 0 and cal.thresholds and spotter.cfg.class_count_scores == cal.thresholds
    assert spotter.cfg.count_score == 0.99  # the config's global one; the classes' own around it
    drawing = canvas(200, 120)
    plant(drawing, DESIGNS[1], 60, 30)
    found = spotter.spot(np.asarray(drawing))
    assert found.class_count_scores == cal.thresholds and found.counts[f"class{DESIGNS[1]}"] == 1
    given = Spotter(model, folder, config=SpotConfig(), count_score="per-class", objectness=False,
                    thresholds={"classes": {"class0": 0.5}})
    assert given.calibration is None and given.cfg.class_count_scores == {"class0": 0.5}


@pytest.fixture(scope="module")
def split_with_copies(tmp_path_factory):
    """The exemplar sheet's COCO split plus an annotated drawing with three copies of every
    design: the drawing calibration learns from (the sheet is the exemplars' own)."""
    folder, _ = exemplar_sheet(tmp_path_factory.mktemp("split"), DESIGNS)
    picked = pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0)  # the sheet's, before the copies
    coco = json.loads((folder / "_annotations.coco.json").read_text())
    drawing = canvas(60 * len(DESIGNS) + 20, 260)
    pad = SpotConfig().box_padding
    for row in range(3):
        for i, k in enumerate(DESIGNS):
            x, y, w, h = plant(drawing, k, 15 + 60 * i, 20 + 80 * row)
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": 1, "category_id": k + 1,
                                        "bbox": [x - pad * w, y - pad * h, w * (1 + 2 * pad), h * (1 + 2 * pad)]})
    drawing.save(folder / "copies.png")
    coco["images"].append({"id": 1, "file_name": "copies.png", "width": drawing.width, "height": drawing.height})
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    return folder, np.asarray(drawing), picked


def test_calibration_on_the_splits_other_drawings(net, split_with_copies):  # noqa: F811
    """From a COCO split, "auto" calibrates on its annotated drawings other than the exemplars'
    own: each copy there is found or missed once, and a class whose copies score under the
    global threshold gets its own, under which they are counted."""
    folder, copies, picked = split_with_copies
    json_path = folder / "_annotations.coco.json"
    ex = embed_exemplars(net, picked, SIZE, SpotConfig())
    own = {p[2] for p in picked}
    assert [d.file_name for d in calibration_drawings(json_path, own, 30, 0)] == ["copies.png"]
    cfg = SpotConfig(count_score=0.99, calibration_shift=0.5, calibration_min_positives=2)
    cal = calibrate_for(net, ex, SIZE, cfg, seed=0, exemplar_json=json_path, exemplar_files=own)
    assert cal.pages.startswith("1 annotated drawings") and "1 annotated drawings" in cal.summary()
    for name in ex.class_names:
        assert len(cal.positives[name]) + cal.missed[name] == cal.copies[name] == 3
    name = f"class{DESIGNS[1]}"
    assert len(cal.positives[name]) == 3 and cal.thresholds[name] <= min(cal.positives[name])
    dets, _, _ = spot_pixels(net, copies, ex, SIZE, cfg)
    rows = to_coco_results(dets, 0, ex)
    cat = ex.category_ids[ex.class_names.index(name)]
    assert count_detections(rows, cfg.count_score).get((0, cat), 0) == 0
    cfg.class_count_scores = dict(cal.thresholds)
    assert count_detections(rows, cfg.count_score, count_thresholds(cfg, ex)).get((0, cat), 0) == 3
    # the sheet when asked for, or when there is no other drawing; "drawings" without a split: one line
    assert calibrate_for(net, ex, SIZE, replace(cfg, calibration_source="sheet"), exemplar_json=json_path,
                         exemplar_files=own).pages == "calibration sheet"
    assert calibrate_for(net, ex, SIZE, cfg, exemplar_json=json_path, exemplar_files=own | {folder / "copies.png"}
                         ).pages == "calibration sheet"  # no other drawing: the sheet
    with pytest.raises(UserError) as err:
        calibrate_for(net, ex, SIZE, replace(cfg, calibration_source="drawings"))
    assert "COCO split" in str(err.value) and "\n" not in str(err.value)


def test_an_unreadable_calibration_drawing_is_left_out_and_named(net, split_with_copies, tmp_path):  # noqa: F811
    folder, _, picked = split_with_copies
    coco = json.loads((folder / "_annotations.coco.json").read_text())
    broken = tmp_path / "split"
    broken.mkdir()
    for name in ("sheet.png", "copies.png"):
        (broken / name).write_bytes((folder / name).read_bytes())
    (broken / "torn.png").write_bytes(b"not a png")
    coco["images"].append({"id": 2, "file_name": "torn.png", "width": 50, "height": 50})
    coco["annotations"].append({"id": 999, "image_id": 2, "category_id": 1, "bbox": [1, 1, 10, 10]})
    (broken / "_annotations.coco.json").write_text(json.dumps(coco))
    ex = embed_exemplars(net, picked, SIZE, SpotConfig())
    cal = calibrate_for(net, ex, SIZE, SpotConfig(), exemplar_json=broken / "_annotations.coco.json",
                        exemplar_files={broken / "sheet.png"})
    assert cal.pages.startswith("1 annotated drawings") and "1 unreadable, left out" in cal.pages
    assert "torn.png" in cal.pages and cal.copies[f"class{DESIGNS[0]}"] == 3  # the torn drawing's box not counted


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def _matched_by_hand(boxes: list, scores: list, truth: list) -> int:
    """COCO's greedy matching written out: detections by falling score, each true box once."""
    taken = set()
    for _, box in sorted(zip(scores, boxes), key=lambda p: -p[0]):
        free = [(_iou(box, t), k) for k, t in enumerate(truth) if k not in taken]
        if free and max(free)[0] >= 0.5:
            taken.add(max(free)[1])
    return len(taken)


def test_the_box_scale_matches_the_most_true_boxes_against_a_brute_force_search():
    rng = np.random.default_rng(0)
    for trial in range(30):
        pages = []
        for _ in range(3):
            centres = rng.uniform(20, 200, size=(6, 2))
            sizes = rng.uniform(10, 30, size=(6, 2))
            looser = rng.uniform(0.8, 1.7, size=(6, 1))  # annotators' boxes, looser or tighter
            shift = rng.normal(0, 2, size=(6, 2))
            dets = torch.tensor(np.hstack([centres - sizes / 2, centres + sizes / 2]), dtype=torch.float32)
            truth = torch.tensor(np.hstack([centres + shift - looser * sizes / 2, centres + shift + looser * sizes / 2]),
                                 dtype=torch.float32)
            scores = torch.tensor(rng.uniform(0.3, 1.0, size=6), dtype=torch.float32)
            keep = rng.uniform(size=6) < 0.8  # some true boxes without a detection
            pages.append((dets[keep], scores[keep], truth))
        found = {s: sum(_matched_by_hand(scaled_boxes(b, torch.full((b.shape[0],), s)).tolist(), sc.tolist(), t.tolist())
                        for b, sc, t in pages) for s in BOX_SCALES}
        for b, sc, t in pages:
            assert matched(b, sc, t) == _matched_by_hand(b.tolist(), sc.tolist(), t.tolist())
        chosen = choose_box_scale(pages, min_positives=4)
        best = max(found.values())
        if best < 4 or found[1.0] == best:
            assert chosen == 1.0
        else:
            assert found[chosen] == best
            assert all(abs(s - 1.0) >= abs(chosen - 1.0) for s, n in found.items() if n == best)


def test_scaled_boxes_keep_their_centres():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 4.0, 2.0]])
    out = scaled_boxes(boxes, torch.tensor([1.5, 0.5]))
    assert torch.allclose(out, torch.tensor([[5.0, 10.0, 35.0, 70.0], [1.0, 0.5, 3.0, 1.5]]))
    assert choose_box_scale([], 1) == 1.0  # nothing to go on


@pytest.fixture(scope="module")
def split_with_loose_boxes(tmp_path_factory):
    """The exemplar sheet's split plus a drawing of three copies of every design whose boxes
    are drawn 1.6 times as large as the exemplars' (an annotator's looser boxes)."""
    folder, _ = exemplar_sheet(tmp_path_factory.mktemp("loose"), DESIGNS)
    picked = pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0)
    coco = json.loads((folder / "_annotations.coco.json").read_text())
    drawing = canvas(60 * len(DESIGNS) + 60, 300)
    pad = SpotConfig().box_padding
    truth = []
    for row in range(3):
        for i, k in enumerate(DESIGNS):
            x, y, w, h = plant(drawing, k, 30 + 60 * i, 40 + 80 * row)
            bw, bh = 1.6 * w * (1 + 2 * pad), 1.6 * h * (1 + 2 * pad)
            box = [x + w / 2 - bw / 2, y + h / 2 - bh / 2, bw, bh]
            truth.append((k, box))
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": 1, "category_id": k + 1,
                                        "bbox": box})
    drawing.save(folder / "copies.png")
    coco["images"].append({"id": 1, "file_name": "copies.png", "width": drawing.width, "height": drawing.height})
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    return folder, np.asarray(drawing), picked, truth


def test_calibration_scales_a_class_boxes_to_the_splits_boxes(net, split_with_loose_boxes):  # noqa: F811
    """Boxes drawn 1.6x the exemplar's: at the exemplar's size a detection overlaps its symbol's
    box at IoU (1/1.6)^2 < 0.5 and counts as false; calibration scales the class's boxes (to the
    smallest factor of BOX_SCALES that matches them all) and the same detections match."""
    folder, copies, picked, truth = split_with_loose_boxes
    ex = embed_exemplars(net, picked, SIZE, SpotConfig())
    cfg = SpotConfig(calibration_min_positives=2)
    cal = calibrate_for(net, ex, SIZE, cfg, exemplar_json=folder / "_annotations.coco.json",
                        exemplar_files={p[2] for p in picked})
    assert cal.box_scales and all(1.1 <= s <= 1.5 for s in cal.box_scales.values())
    assert f"{len(cal.box_scales)} with their own box scale" in cal.summary()

    def true_boxes(config):
        dets, _, _ = spot_pixels(net, copies, ex, SIZE, config)
        names = [ex.class_names[int(l)] for l in dets["labels"]]
        return sum(any(_iou(b, [x, y, x + w, y + h]) >= 0.5 for k, (x, y, w, h) in truth if f"class{k}" == n)
                   for b, n in zip(dets["boxes"].tolist(), names) if n in cal.box_scales)

    assert true_boxes(replace(cfg, class_box_scales=dict(cal.box_scales))) > true_boxes(cfg)
    assert calibrate_for(net, ex, SIZE, replace(cfg, calibrate_boxes=False), exemplar_json=folder / "_annotations.coco.json",
                         exemplar_files={p[2] for p in picked}).box_scales == {}

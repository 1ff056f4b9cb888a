"""Ink components (symclr_ft.data.components): the boxes of planted symbols, against the synthetic
drawings' ground truth and hand-drawn shapes; deduplication and IoU against slow references."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw

from symclr_ft.data.coco import load_coco, open_image
from symclr_ft.data.components import (
    ComponentConfig, box_iou, dedup_boxes, drawing_components, drawing_ink_threshold,
)


def planted_boxes(split, image) -> np.ndarray:
    return np.array([[a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]]
                     for a in split.annotations if a.image_id == image.id])


def test_hand_drawn_shapes_are_found_with_their_exact_boxes():
    page = Image.new("RGB", (200, 120), "white")
    draw = ImageDraw.Draw(page)
    draw.rectangle([10, 10, 39, 29], outline="black", width=2)  # xyxy inclusive
    draw.ellipse([80, 20, 109, 49], outline="black", width=2)
    draw.line([150, 60, 150, 89], fill="black", width=2)  # a plus: two strokes, one component
    draw.line([136, 75, 165, 75], fill="black", width=2)
    draw.line([0, 110, 199, 110], fill="black", width=1)  # a wire: a long straight run, removed
    boxes = dedup_boxes(drawing_components(np.asarray(page), ComponentConfig()), 0.5)
    truth = [(10, 10, 40, 30), (80, 20, 110, 50), (136, 60, 166, 90)]
    assert all(box_iou(np.array(t), np.array(boxes)).max() >= 0.9 for t in truth), boxes
    assert len(boxes) == 3, boxes


def test_components_match_the_planted_symbols_of_generated_drawings(synth_coco):
    """Reference: the generator's own boxes. Wires end on the symbols and text lies around
    them, so not every box is exact; most are, and nearly all are found."""
    best = []
    for name in ("train", "valid", "test"):
        split = load_coco(synth_coco / name / "_annotations.coco.json")
        for image in split.images.values():
            rgb = np.asarray(open_image(split, image))
            boxes = dedup_boxes(drawing_components(rgb, ComponentConfig()), 0.5)
            best.extend(box_iou(planted_boxes(split, image), np.array(boxes)).max(axis=1))
    best = np.array(best)
    assert (best >= 0.5).mean() >= 0.85
    assert (best >= 0.9).mean() >= 0.6


def test_tiles_and_threads_do_not_change_the_boxes(synth_coco):
    split = load_coco(synth_coco / "train" / "_annotations.coco.json")
    rgb = np.asarray(open_image(split, next(iter(split.images.values()))))
    whole = drawing_components(rgb, ComponentConfig(), threads=1)
    tiled = drawing_components(rgb, ComponentConfig(tile=120, tile_overlap=60, max_side=25), threads=3)
    small = drawing_components(rgb, ComponentConfig(max_side=25), threads=1)
    assert whole and tiled == small


def slow_iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_box_iou_matches_a_slow_reference():
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 50, size=(12, 2))
    boxes = np.concatenate([xy, xy + rng.integers(1, 30, size=(12, 2))], axis=1)
    fast = box_iou(boxes[:5], boxes)
    for i, j in itertools.product(range(5), range(12)):
        assert np.isclose(fast[i, j], slow_iou(boxes[i], boxes[j]))


def test_dedup_keeps_the_smallest_of_near_duplicates_and_separate_boxes():
    boxes = [(0, 0, 10, 10), (0, 0, 10, 11), (0, 0, 11, 11), (20, 20, 30, 30), (0, 0, 30, 30)]
    assert dedup_boxes(boxes, 0.5) == [(0, 0, 10, 10), (0, 0, 30, 30), (20, 20, 30, 30)]
    assert dedup_boxes(boxes, 1.0) == sorted(boxes)  # only identical boxes are one
    assert dedup_boxes([], 0.5) == []


def test_dedup_leaves_no_pair_above_the_threshold_and_drops_only_overlapped_boxes():
    rng = np.random.default_rng(1)
    xy = rng.integers(0, 80, size=(60, 2))
    boxes = [tuple(int(v) for v in b) for b in np.concatenate([xy, xy + rng.integers(3, 25, size=(60, 2))], axis=1)]
    kept = dedup_boxes(boxes, 0.5)
    assert all(slow_iou(a, b) < 0.5 for a, b in itertools.combinations(kept, 2))
    assert all(any(slow_iou(b, k) >= 0.5 for k in kept) for b in set(boxes) - set(kept))


def faint_page(contrast: int) -> np.ndarray:
    """The hand-drawn shapes of the first test, in ink ``contrast`` levels darker than the paper."""
    page = Image.new("L", (200, 120), 200)
    draw = ImageDraw.Draw(page)
    ink = 200 - contrast
    draw.rectangle([10, 10, 39, 29], outline=ink, width=2)
    draw.ellipse([80, 20, 109, 49], outline=ink, width=2)
    draw.line([150, 60, 150, 89], fill=ink, width=2)
    draw.line([136, 75, 165, 75], fill=ink, width=2)
    return np.asarray(page.convert("RGB"))


def test_faint_ink_is_found_with_the_drawings_own_threshold_only():
    """Ink 50 levels from the paper: under the fixed threshold (90) nothing is ink; the drawing's
    Otsu threshold finds the three shapes with the boxes of the dark version."""
    fixed, adaptive = ComponentConfig(), ComponentConfig(adaptive_ink_threshold=True)
    faint = faint_page(50)
    assert drawing_components(faint, fixed) == []
    assert drawing_ink_threshold(faint, adaptive) < 50
    found = dedup_boxes(drawing_components(faint, adaptive), 0.5)
    assert found == dedup_boxes(drawing_components(faint_page(180), fixed), 0.5) and len(found) == 3


def test_the_threshold_never_rises_nor_drops_below_its_floor():
    cfg = ComponentConfig(adaptive_ink_threshold=True, min_ink_threshold=30)
    assert drawing_ink_threshold(faint_page(180), cfg) <= cfg.ink_threshold
    assert drawing_ink_threshold(faint_page(10), cfg) == 30
    blank = np.full((50, 60, 3), 255, np.uint8)
    assert drawing_ink_threshold(blank, cfg) == 30 and drawing_components(blank, cfg) == []
    assert drawing_ink_threshold(faint_page(10), ComponentConfig()) == ComponentConfig().ink_threshold


def test_clean_generated_drawings_find_their_symbols_as_well_with_the_adaptive_threshold(synth_coco):
    """High-contrast ink: Otsu's threshold falls near the gap between paper and ink; boxes may
    gain an anti-aliased pixel, none of the planted symbols is lost."""
    fixed, adaptive = [], []
    for name in ("train", "valid"):
        split = load_coco(synth_coco / name / "_annotations.coco.json")
        for image in split.images.values():
            rgb = np.asarray(open_image(split, image))
            truth = planted_boxes(split, image)
            for cfg, found in ((ComponentConfig(), fixed), (ComponentConfig(adaptive_ink_threshold=True), adaptive)):
                found.extend(box_iou(truth, np.array(dedup_boxes(drawing_components(rgb, cfg), 0.5))).max(axis=1))
    assert (np.array(adaptive) >= 0.5).mean() >= (np.array(fixed) >= 0.5).mean() - 0.01
    assert (np.array(adaptive) >= 0.5).mean() >= 0.85


def test_tiles_agree_on_one_adaptive_threshold(synth_coco):
    split = load_coco(synth_coco / "train" / "_annotations.coco.json")
    rgb = np.asarray(open_image(split, next(iter(split.images.values()))))
    faint = (255 - (255 - rgb.astype(np.int16)) * 0.3).astype(np.uint8)  # ink 70% lighter
    cfg = ComponentConfig(adaptive_ink_threshold=True, max_side=25)
    whole = drawing_components(faint, cfg, threads=1)
    tiled = drawing_components(faint, replace(cfg, tile=120, tile_overlap=60), threads=3)
    assert whole and tiled == whole

"""robustness.transform: the copies bench/spotting.py scores on keep their boxes true and are
the same for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from symclr_ft.data import synth
from symclr_ft.use.spot.robustness import SETTINGS, transform
from use.spot.test_spotting import iou

PLACES = [(0, 30, 40), (1, 200, 30), (2, 120, 150), (3, 260, 170)]


def drawing(only: int | None = None) -> tuple[Image.Image, list[list[float]]]:
    """Symbols of 40 px (2 px strokes) on the paper; ``only``: just that one symbol drawn, the
    boxes of all returned. Boxes are the tight ink boxes."""
    image = Image.new("RGB", (340, 260), synth.BACKGROUND)
    boxes = []
    for k, (design, x, y) in enumerate(PLACES):
        d = synth.symbol_designs(12)[design]
        mask = synth.draw_symbol(d, 40)
        if only is None or only == k:
            image.paste(d.colour, (x, y), mask)
        x0, y0, x1, y1 = mask.getbbox()
        boxes.append([x + x0, y + y0, x1 - x0, y1 - y0])
    return image, boxes


def ink_box(image: Image.Image) -> list[float]:
    """Tight box of the pixels that differ clearly from the paper (its median colour)."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    paper = np.median(rgb.reshape(-1, 3), axis=0)
    ys, xs = np.nonzero(np.abs(rgb - paper).max(axis=2) > 60)
    return [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


@pytest.mark.parametrize("setting", SETTINGS)
def test_transformed_boxes_hold_the_planted_symbols(setting):
    """Each symbol alone, transformed with the same seed, has its ink where the transformed
    box of the full drawing says (IoU >= 0.8 with the ink's own box)."""
    _, boxes = transform(*drawing(), setting, seed=5)
    assert len(boxes) == len(PLACES)
    for k in range(len(PLACES)):
        alone, _ = transform(*drawing(only=k), setting, seed=5)
        assert iou(ink_box(alone), boxes[k]) >= 0.8, (setting, k, ink_box(alone), boxes[k])


@pytest.mark.parametrize("setting", SETTINGS)
def test_same_seed_same_copy(setting):
    a, boxes_a = transform(*drawing(), setting, seed=3)
    b, boxes_b = transform(*drawing(), setting, seed=3)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and boxes_a == boxes_b
    if setting == "scan":  # the only setting with chance in it: skew and noise follow the seed
        c, boxes_c = transform(*drawing(), setting, seed=4)
        assert not np.array_equal(np.asarray(a), np.asarray(c)) or boxes_a != boxes_c


def test_scan_is_grey_on_its_paper_and_turn_swaps_the_sides():
    scanned, _ = transform(*drawing(), "scan", seed=0)
    rgb = np.asarray(scanned).astype(int)
    paper = np.asarray(Image.new("RGB", (1, 1), synth.BACKGROUND).convert("L")).item()  # the paper, in grey
    assert abs(np.median(rgb) - paper) <= 3 and np.abs(rgb[..., 0] - rgb[..., 1]).max() == 0
    turned, _ = transform(*drawing(), "turn90", seed=0)
    assert turned.size == (260, 340)
    with pytest.raises(ValueError):
        transform(*drawing(), "sepia", seed=0)

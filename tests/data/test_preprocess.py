"""Ink normalisation and letterbox: the rules a crop goes through before the network."""

import io

import numpy as np
import torch
from PIL import Image

from symclr_ft.data import shardset as data
from symclr_ft.data.preprocess import border_colour, canonical_ink, decode_crop, letterbox, prepare_crop


def _drawing(ink, background, size=(20, 30)):
    """A crop with a cross of ``ink`` on ``background`` (H, W, 3) uint8."""
    rgb = np.zeros((*size, 3), np.uint8) + np.array(background, np.uint8)
    rgb[size[0] // 2, 3:-3] = ink
    rgb[3:-3, size[1] // 2] = ink
    return rgb


def _png(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_canonical_ink_is_the_same_for_any_polarity_and_colour():
    dark_on_light = _drawing((0, 0, 0), (255, 255, 255))
    light_on_dark = _drawing((250, 250, 250), (5, 5, 5))
    green_on_navy = _drawing((20, 200, 40), (30, 30, 60))
    want = canonical_ink(dark_on_light)
    assert want.dtype == np.uint8 and want.shape == dark_on_light.shape
    np.testing.assert_array_equal(canonical_ink(light_on_dark), want)
    np.testing.assert_array_equal(canonical_ink(green_on_navy), want)
    # dark ink on white: strokes 0, background 255
    assert want[10, 15].tolist() == [0, 0, 0] and want[0, 0].tolist() == [255, 255, 255]


def test_canonical_ink_scales_faint_ink_to_black_and_blank_crops_stay_white():
    faint = _drawing((70, 70, 70), (40, 40, 40))
    assert canonical_ink(faint)[10, 15].tolist() == [0, 0, 0]
    blank = np.full((8, 8, 3), 17, np.uint8)
    assert (canonical_ink(blank) == 255).all()


def test_border_colour_is_the_median_of_the_ring():
    rgb = np.full((5, 5, 3), 200, np.uint8)
    rgb[0, 0] = 0  # one odd border pixel does not move the median
    assert border_colour(rgb).tolist() == [200, 200, 200]


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_background():
    wide = np.full((10, 40, 3), 255, np.uint8)  # white, 4:1, ink filling its inner rows
    wide[1:-1, 1:-1] = 0
    out = np.asarray(letterbox(Image.fromarray(wide), 32))
    assert out.shape == (32, 32, 3)
    inked_rows = np.flatnonzero((out < 128).any(axis=(1, 2)))
    # 40 -> 32 wide, 10 -> 8 high, centred in rows 12..19; the padding is background (white)
    assert inked_rows.min() >= 12 and inked_rows.max() <= 19 and len(inked_rows) >= 6
    assert (out[:12] == 255).all() and (out[20:] == 255).all()


def test_default_decode_is_the_seed_stretch():
    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    png = _png(rgb)
    stretched = Image.open(io.BytesIO(png)).convert("RGB").resize((24, 24), Image.BILINEAR)
    assert torch.equal(decode_crop(png, 24), torch.from_numpy(np.asarray(stretched).copy()).permute(2, 0, 1))


def test_prepare_crop_shapes_and_invert():
    img = Image.fromarray(_drawing((0, 0, 0), (255, 255, 255)))
    for ink in ("none", "canonical", "invert"):
        for box in (False, True):
            out = prepare_crop(img, 16, ink, box)
            assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
    inverted = prepare_crop(img, 16, "invert")
    assert torch.equal(inverted, 255 - prepare_crop(img, 16))

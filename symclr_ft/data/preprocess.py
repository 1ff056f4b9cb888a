"""How a crop becomes the model's square input: ink normalisation and letterboxing.

Why this exists: features trained on one drawing style fail on another partly because the
*input* differs, not the symbols. Firefighting drawings are coloured lines on a dark
background; handwritten music is black ink on white paper. Two pure functions remove those
differences before the network sees a crop:

* :func:`canonical_ink` turns any crop into dark ink on a white background, in grey: the ink
  is how far each pixel is from the background colour (the median of the crop's border, which
  make-shards' 10% padding makes background), so the polarity and the colour of the lines no
  longer matter.
* :func:`letterbox` keeps the aspect ratio (pads the short side with background) instead of
  stretching to a square, so a tall flag and a wide rest keep their shapes.

``decode_crop(png, size, ink, letterbox)`` is what ``data.load_split`` calls; the settings
are config keys (``data.ink``, ``data.letterbox``) stored with the run, so training,
evaluation, embedding and spotting all apply the same rule. Example::

    image = decode_crop(png_bytes, 96, ink="canonical", letterbox=True)  # (3, 96, 96) uint8
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

# none: as drawn; canonical: dark grey ink on white (below); invert: 255 - x, a diagnostic
# that only flips the polarity (is the gap the background colour alone?).
INK_MODES = ("none", "canonical", "invert")


def border_colour(rgb: np.ndarray) -> np.ndarray:
    """Median colour of the one-pixel border of an (H, W, 3) image: the background."""
    ring = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]], axis=0)
    return np.median(ring.astype(np.float32), axis=0)


def canonical_ink(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8: dark grey ink on white, whatever the input style.

    Ink strength is the largest per-channel distance from the background colour, scaled so
    that the strongest ink in the crop is black (a crop of faint yellow lines and one of black
    strokes look alike); a crop without ink (all background) comes out white.
    """
    background = border_colour(rgb)
    distance = np.abs(rgb.astype(np.float32) - background).max(axis=2)
    peak = float(distance.max())
    ink = distance / peak if peak > 0 else np.zeros_like(distance)
    grey = np.rint(255.0 * (1.0 - ink)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Resize ``image`` so its longer side is ``size``, centred on a ``size`` square filled
    with its background (border median) colour: shapes keep their proportions."""
    w, h = image.size
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = image.resize(new, Image.BILINEAR)
    fill = tuple(int(round(c)) for c in border_colour(np.asarray(image)))
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


def prepare_crop(image: Image.Image, size: int, ink: str = "none", box: bool = False) -> torch.Tensor:
    """A PIL crop -> (3, size, size) uint8 tensor: decoded to RGB as make-shards decodes
    drawings (``coco.to_rgb``: 16-bit scaled, alpha-only ink kept; a :class:`UserError` for a
    mode it cannot convert), the ink rule (at native resolution, where the border is
    cleanest), then letterbox (``box``) or stretch."""
    from symclr_ft.data.coco import to_rgb

    if ink not in INK_MODES:
        raise ValueError(f"ink={ink!r}: expected one of {INK_MODES}")
    image = image if image.mode == "RGB" else to_rgb(image)
    if ink == "canonical":
        image = Image.fromarray(canonical_ink(np.asarray(image)))
    elif ink == "invert":
        image = Image.fromarray(255 - np.asarray(image))
    if box:
        image = letterbox(image, size)
    else:
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def decode_crop(data: bytes, size: int, ink: str = "none", box: bool = False) -> torch.Tensor:
    """PNG bytes -> (3, size, size) uint8, with the ink and letterbox rules applied.
    ``ink="none", box=False`` is exactly the seed's stretch (``data._decode_crop``)."""
    with Image.open(io.BytesIO(data)) as img:
        return prepare_crop(img, size, ink, box)


def input_rule_beside(model_file) -> tuple[str, bool]:
    """(data.ink, data.letterbox) of the run whose model file this is, from the config.yaml
    beside it; ("none", False) when there is none (models trained before these keys)."""
    from pathlib import Path

    from symclr_ft.config import read_yaml

    if model_file is None or not (Path(model_file).parent / "config.yaml").is_file():
        return "none", False
    data = (read_yaml(Path(model_file).parent / "config.yaml") or {}).get("data") or {}
    return str(data.get("ink", "none")), bool(data.get("letterbox", False))

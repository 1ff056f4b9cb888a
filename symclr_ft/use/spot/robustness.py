"""Copies of a drawing as people have them, with its boxes carried along exactly.

One seeded function, :func:`transform`, makes each robustness setting of ``bench/spotting.py``
from a drawing and its COCO boxes ``[x, y, w, h]``:

* ``scan``: a grey scanned copy: greyscale (the paper keeps its tone, so that grey template
  matching, the reference, is not handed an inverted picture), skewed by 1-2 degrees (random
  sign), Gaussian blur sigma 1, Gaussian noise sigma 8, JPEG quality 40. A box becomes the
  bounding box of its turned corners;
* ``scale0.7`` / ``scale1.4``: the whole drawing resized (area / bicubic); boxes scaled;
* ``turn90``: the sheet turned a quarter counter-clockwise; boxes turned;
* ``thicker`` / ``thinner``: every stroke 1 px wider / narrower (grey dilation / erosion of the
  ink with a 3 x 3 square at twice the resolution, i.e. half a pixel on each side); boxes kept.

The same drawing, boxes, setting and seed always give the same pixels and boxes.
Example::

    image, boxes = transform(Image.open("a.png"), [[10, 20, 30, 30]], "scan", seed=0)
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image

SETTINGS = ("scan", "scale0.7", "scale1.4", "turn90", "thicker", "thinner")


def _dark_paper(grey: np.ndarray) -> bool:
    return float(np.median(grey[:: max(1, grey.shape[0] // 64), :: max(1, grey.shape[1] // 64)])) < 128


def skew(pixels: np.ndarray, boxes: list[list[float]], degrees: float, paper) -> tuple[np.ndarray, list[list[float]]]:
    """Turn a grey (H, W) or colour (H, W, 3) picture by ``degrees`` about the centre onto a
    canvas that holds all of it (``paper`` fill: a grey level, or a colour for a colour picture);
    each box becomes the bounding box of its turned corners. Also the calibration sheet's small
    skew of an exemplar's copy (calibration_sheet.py)."""
    h, w = pixels.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = math.ceil(w * cos + h * sin), math.ceil(w * sin + h * cos)
    matrix[:, 2] += ((new_w - w) / 2, (new_h - h) / 2)
    fill = tuple(float(v) for v in np.ravel(paper)) if np.ndim(paper) else float(paper)
    out = cv2.warpAffine(pixels, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderValue=fill)
    moved = []
    for x, y, bw, bh in boxes:
        corners = np.array([[x, y, 1], [x + bw, y, 1], [x, y + bh, 1], [x + bw, y + bh, 1]], float) @ matrix.T
        x0, y0 = corners.min(axis=0)
        x1, y1 = corners.max(axis=0)
        moved.append([float(x0), float(y0), float(x1 - x0), float(y1 - y0)])
    return out, moved


def scan(image: Image.Image, boxes: list[list[float]], rng: np.random.Generator) -> tuple[Image.Image, list]:
    """The ``scan`` setting (module docstring)."""
    grey = np.asarray(image.convert("L"))
    degrees = float(rng.uniform(1.0, 2.0) * rng.choice([-1.0, 1.0]))
    grey, boxes = skew(grey, boxes, degrees, paper=int(np.median(grey[:: max(1, grey.shape[0] // 64)])))
    blurred = cv2.GaussianBlur(grey, (0, 0), 1.0).astype(np.float32)
    noisy = np.clip(blurred + rng.normal(0.0, 8.0, blurred.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG", quality=40)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB"), boxes


def line_weight(image: Image.Image, delta: int) -> Image.Image:
    """Every stroke ``delta`` (+1 or -1) px wider: grey dilation (or erosion) of the ink, at
    twice the resolution so that each side moves by half a pixel."""
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    big = cv2.resize(rgb, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    kernel = np.ones((3, 3), np.uint8)
    grow = delta > 0
    if not _dark_paper(np.asarray(image.convert("L"))):
        grow = not grow  # ink is dark on white paper: the minimum spreads it
    big = cv2.dilate(big, kernel) if grow else cv2.erode(big, kernel)
    return Image.fromarray(cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA))


def transform(image: Image.Image, boxes: list[list[float]], setting: str, seed: int) -> tuple[Image.Image, list[list[float]]]:
    """``image`` and its COCO ``boxes`` under ``setting`` (one of :data:`SETTINGS`), seeded."""
    rng = np.random.default_rng(seed)
    boxes = [list(map(float, b)) for b in boxes]
    if setting == "scan":
        return scan(image, boxes, rng)
    if setting in ("scale0.7", "scale1.4"):
        s = float(setting[len("scale"):])
        size = (max(1, round(image.width * s)), max(1, round(image.height * s)))
        sx, sy = size[0] / image.width, size[1] / image.height
        resample = Image.BICUBIC if s > 1 else Image.BOX
        return image.resize(size, resample), [[x * sx, y * sy, w * sx, h * sy] for x, y, w, h in boxes]
    if setting == "turn90":  # counter-clockwise: (x, y) -> (y, W - x)
        width = image.width
        return image.transpose(Image.Transpose.ROTATE_90), [[y, width - x - w, h, w] for x, y, w, h in boxes]
    if setting in ("thicker", "thinner"):
        return line_weight(image, 1 if setting == "thicker" else -1), boxes
    raise ValueError(f"unknown robustness setting {setting!r} (one of {', '.join(SETTINGS)})")

"""The calibration sheet: the exemplars' own copies, altered as real sheets differ, with their boxes.

``--count-score per-class`` (calibration.py) needs true and false matches of every class whose
boxes are known exactly, without looking at the drawings being counted or at any ground truth
but the exemplars'. This module makes them: a blank page (the paper colour of the exemplars'
crop borders) with ``copies`` copies of each exemplar's crop, each altered as a real drawing
differs from the exemplar's (``robustness.py``'s kinds, applied to the copy):

* the first copy as it is; every other one scaled by 0.85-1.2 (the tolerance of the three
  template scales), its strokes 1 px wider or narrower or kept (``robustness.line_weight``),
  turned by a random quarter turn (only when the pipeline matches turns: ``template_turns``)
  and skewed by up to 3 degrees (``robustness.skew``);
* a few distractor strokes (short lines, crossings, tees, corners in the exemplars' ink
  colours), and every other class's copies: the false matches;
* a second page: the whole first page as a scan (``robustness.transform(..., "scan")``: grey,
  skew, blur, noise, JPEG), boxes carried exactly.

A copy is pasted as its difference from its own paper added to the page's paper, so an
exemplar on the page's paper is pasted pixel for pixel. The same crops and seed always give the
same pages. Example::

    pages = calibration_pages(ex.crops, seed=0, copies=4, turns=True)
    pages[0].rgb, pages[0].boxes, pages[0].labels   # label -1: a distractor
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from symclr_ft.use.spot.robustness import line_weight, skew, transform
from symclr_ft.use.spot.template import ink_picture

DISTRACTOR = -1  # label of a distractor stroke
SCALES = (0.85, 1.2)  # a copy's scale is drawn in this range (except the first copy)
MAX_SKEW = 3.0  # degrees either way
INK = 90  # an ink pixel differs this much from its paper (ComponentConfig.ink_threshold)


@dataclass
class Page:
    """One calibration page: RGB pixels and what is on it (COCO boxes ``[x, y, w, h]``, the
    class index of each, or :data:`DISTRACTOR`)."""

    rgb: np.ndarray
    boxes: list[list[float]]
    labels: list[int]


def border_paper(rgb: np.ndarray) -> np.ndarray:
    """The paper colour of a crop: the median of its border pixels (a crop is cut with a margin,
    mostly paper)."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return np.median(border, axis=0)


def ink_colour(rgb: np.ndarray, paper: np.ndarray) -> tuple[int, int, int]:
    """The median colour of a crop's ink (pixels far from its paper); grey when it has none."""
    ink = ink_picture(rgb, paper) > INK
    if not ink.any():
        return (128, 128, 128)
    return tuple(int(v) for v in np.median(rgb[ink], axis=0))


def altered_copy(rgb: np.ndarray, box: list[float], paper: np.ndarray, rng: np.random.Generator,
                 turns: bool) -> tuple[np.ndarray, list[float]]:
    """One altered copy of a crop and its symbol box (module docstring: scale, line weight,
    quarter turn, skew), drawn with ``rng``."""
    scale = float(rng.uniform(*SCALES))
    delta = int(rng.integers(-1, 2))
    quarter = int(rng.integers(0, 4)) if turns else 0
    degrees = float(rng.uniform(-MAX_SKEW, MAX_SKEW))
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = Image.fromarray(rgb).resize(size, Image.BICUBIC if scale > 1 else Image.BOX)
    sx, sy = size[0] / w, size[1] / h
    box = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
    if delta:
        image = line_weight(image, delta)
    pixels = np.asarray(image)
    for _ in range(quarter):  # counter-clockwise, as robustness's turn90: (x, y) -> (y, W - x)
        width = pixels.shape[1]
        pixels = np.ascontiguousarray(np.rot90(pixels))
        box = [box[1], width - box[0] - box[2], box[3], box[2]]
    pixels, (box,) = skew(pixels, [box], degrees, paper)
    return pixels, box


def distractor(rng: np.random.Generator, side: int, colour: tuple[int, int, int],
               paper: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """A stroke that is no symbol: a short line, a crossing, a tee or a corner (lines shorter
    than ``ComponentConfig.line_length``, so the wire filter keeps them), on ``paper``."""
    side = int(np.clip(side, 12, 40))
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = paper
    kind = ("line", "cross", "tee", "corner")[int(rng.integers(0, 4))]
    width = int(rng.integers(1, 3))
    lo, hi, mid = 1, side - 2, side // 2
    segments = {"line": [((lo, lo), (hi, hi))] if rng.random() < 0.5 else [((lo, mid), (hi, mid))],
                "cross": [((lo, mid), (hi, mid)), ((mid, lo), (mid, hi))],
                "tee": [((lo, lo), (hi, lo)), ((mid, lo), (mid, hi))],
                "corner": [((lo, lo), (lo, hi)), ((lo, hi), (hi, hi))]}[kind]
    for a, b in segments:
        cv2.line(canvas, a, b, colour, width)
    ys, xs = np.nonzero(ink_picture(canvas, paper) > 0)
    return canvas, [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _paste(page: np.ndarray, pixels: np.ndarray, own_paper: np.ndarray, x: int, y: int) -> None:
    """``pixels`` onto ``page`` at (x, y): their difference from ``own_paper`` added to the
    page's paper (an exemplar on another paper keeps its ink, not its background)."""
    h, w = pixels.shape[:2]
    region = page[y : y + h, x : x + w].astype(np.int16)
    page[y : y + h, x : x + w] = np.clip(region + pixels.astype(np.int16) - np.round(own_paper).astype(np.int16),
                                         0, 255).astype(np.uint8)


def _layout(sizes: list[tuple[int, int]], gap: int) -> tuple[list[tuple[int, int]], int, int]:
    """Shelf packing: positions of pieces of ``sizes`` (w, h), left to right in rows of about
    the square's width, ``gap`` px apart and from the border; the page's width and height."""
    area = sum((w + gap) * (h + gap) for w, h in sizes)
    width = max(int(np.sqrt(area) * 1.1), max(w for w, _ in sizes)) + 2 * gap
    positions, x, y, row = [], gap, gap, 0
    for w, h in sizes:
        if x + w + gap > width and x > gap:
            x, y, row = gap, y + row + gap, 0
        positions.append((x, y))
        x, row = x + w + gap, max(row, h)
    return positions, width, y + row + gap


def calibration_pages(crops: list[tuple[int, np.ndarray, list[float]]], seed: int, copies: int = 4,
                      turns: bool = True, distractors: int | None = None) -> list[Page]:
    """The calibration pages of exemplar ``crops`` (``Exemplars.crops``: class index, RGB
    crop, symbol box in it): the clean page and its scan (module docstring). ``distractors``
    strokes (default: one per exemplar, at least 4). Deterministic for ``seed``."""
    if not crops:
        raise ValueError("no exemplar crops to calibrate with")
    rng = np.random.default_rng(seed)
    papers = [border_paper(rgb) for _, rgb, _ in crops]
    page_paper = np.median(np.stack(papers), axis=0)
    pieces = []  # (pixels, own paper, box in pixels, label)
    for (label, rgb, box), paper in zip(crops, papers):
        pieces.append((rgb, paper, list(map(float, box)), label))
        for _ in range(copies - 1):
            pixels, moved = altered_copy(rgb, box, paper, rng, turns)
            pieces.append((pixels, paper, moved, label))
    side = int(np.median([max(b[2], b[3]) for _, _, b in crops]))
    colours = [ink_colour(rgb, paper) for (_, rgb, _), paper in zip(crops, papers)]
    for _ in range(max(4, len(crops)) if distractors is None else distractors):
        colour = colours[int(rng.integers(0, len(colours)))]
        pixels, box = distractor(rng, int(side * rng.uniform(0.6, 1.2)), colour, page_paper)
        pieces.append((pixels, page_paper, box, DISTRACTOR))
    order = rng.permutation(len(pieces))  # classes side by side as on a sheet, not in blocks
    pieces = [pieces[i] for i in order]
    gap = max(12, side // 2)  # more than the candidates' dilations: copies stay apart
    positions, width, height = _layout([(p[0].shape[1], p[0].shape[0]) for p in pieces], gap)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = np.round(page_paper).astype(np.uint8)
    boxes, labels = [], []
    for (pixels, paper, box, label), (x, y) in zip(pieces, positions):
        _paste(rgb, pixels, paper, x, y)
        boxes.append([box[0] + x, box[1] + y, box[2], box[3]])
        labels.append(label)
    scanned, scan_boxes = transform(Image.fromarray(rgb), boxes, "scan", seed)
    return [Page(rgb, boxes, labels), Page(np.asarray(scanned), scan_boxes, list(labels))]

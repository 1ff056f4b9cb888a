"""Ink components of a drawing: class-agnostic boxes found without any learning or labels.

Why here, on the data floor: two users need the same boxes. Spotting
(``symclr_ft.use.spot.candidates``) proposes them as candidates to embed, and
``symclr-components`` (:mod:`symclr_ft.data.component_shards`) cuts them from unannotated
drawings into shards for self-supervised adaptation. Data must not import ``use``, so the pure
part lives here and spotting imports it.

A drawing's ink is found by colour (all ink, then each colour group, so that a green symbol on
a red wire is a component of its own), long straight runs (wires, staff lines) are removed, and
the connected components are boxed at a few dilation radii that join a symbol's separate
strokes. Large drawings are processed tile by tile; tiles overlap and each keeps the boxes
whose centre lies in its own core, so a symbol is found once and as on the whole drawing.

Example::

    boxes = drawing_components(np.asarray(image), ComponentConfig())   # [(x0, y0, x1, y1), ...]
    kept = dedup_boxes(boxes, iou=0.5)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), pixels


@dataclass
class ComponentConfig:
    """How ink becomes component boxes. The defaults are spotting's (``SpotConfig`` extends
    this class), chosen on the firefighting valid drawings."""

    ink_threshold: int = 90  # a pixel is ink when its brightest channel differs this much from paper
    # faint ink (grey scans, thinned lines): the threshold drops to the drawing's own Otsu
    # threshold of its ink picture when that is lower, never below min_ink_threshold
    adaptive_ink_threshold: bool = False
    min_ink_threshold: int = 20
    saturation: int = 80  # HSV saturation above which a pixel belongs to a colour group
    line_length: int = 41  # straight runs at least this long are wires / staff lines, not symbols
    dilations: tuple[int, ...] = (0, 1, 2, 3)  # radii that join a symbol's separate strokes
    min_side: int = 6
    max_side: int = 140
    tile: int = 1536
    tile_overlap: int = 320  # at least 2 x (max_side + max dilation) so a symbol fits in some core


def paper_of(rgb: np.ndarray) -> np.ndarray:
    """The paper's colour: the median of a sparse grid of pixels."""
    return np.median(rgb[:: max(1, rgb.shape[0] // 64), :: max(1, rgb.shape[1] // 64)], axis=(0, 1))


def ink_difference(rgb: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """(H, W) uint8: each pixel's largest channel difference from ``paper``."""
    channels = cv2.split(cv2.absdiff(np.ascontiguousarray(rgb), (*(int(v) for v in paper.astype(np.int16)), 0)))
    return cv2.max(cv2.max(channels[0], channels[1]), channels[2])


def sparse_sample(rgb: np.ndarray, max_pixels: int = 4_000_000) -> np.ndarray:
    """Every other pixel of every other row, or a sparser regular grid of at most about
    ``max_pixels`` on a large sheet (a view, no copy): a drawing's statistics cheaply."""
    step = max(2, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / max_pixels))))
    return rgb[::step, ::step]


def drawing_ink_threshold(rgb: np.ndarray, cfg: ComponentConfig) -> int:
    """The ink threshold for one whole drawing: ``ink_threshold``, or with
    ``adaptive_ink_threshold`` the lower of it and Otsu's threshold of the drawing's ink picture
    (on :func:`sparse_sample`'s pixels), not below ``min_ink_threshold``. Why: on clean CAD
    drawings the ink picture has a wide gap between paper and ink and Otsu's threshold falls
    inside it (the same ink); on a grey scan or thinned strokes ink stands out by far less than
    ``ink_threshold`` and no component was found at all. Computed once per drawing, so that
    tiles agree."""
    if not cfg.adaptive_ink_threshold:
        return cfg.ink_threshold
    sample = np.ascontiguousarray(sparse_sample(rgb))
    otsu, _ = cv2.threshold(ink_difference(sample, paper_of(rgb)), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return int(min(cfg.ink_threshold, max(cfg.min_ink_threshold, otsu)))


def ink_masks(rgb: np.ndarray, cfg: ComponentConfig) -> list[np.ndarray]:
    """Boolean ink masks: all ink, plus ink of each colour group (grey and six hues), so that a
    green symbol on a red wire is a component of its own in the green mask."""
    ink = ink_difference(rgb, paper_of(rgb)) > cfg.ink_threshold
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"))
    saturated = hsv[..., 1] > cfg.saturation
    hue = ((hsv[..., 0].astype(np.int16) + 21) // 43) % 6
    groups = [ink & ~saturated] + [ink & saturated & (hue == k) for k in range(6)]
    return [ink] + [g for g in groups if np.count_nonzero(g) > 20 and not np.array_equal(g, ink)]


def _opening(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary opening with nothing but paper outside the image (as ``scipy.ndimage`` does)."""
    eroded = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.dilate(eroded, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)


def component_boxes(mask: np.ndarray, cfg: ComponentConfig) -> list[Box]:
    """Boxes of connected components (8-neighbours) after removing long straight runs, at each
    dilation (a diamond of that radius). OpenCV's morphology and contours: the same boxes as
    ``scipy.ndimage`` (checked on the valid drawings), many times faster."""
    m = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    x, y, w, h = cv2.boundingRect(m)  # only the part that holds ink (a colour group is sparse)
    if w == 0:
        return []
    margin = max(cfg.dilations) + 1  # paper around it: the same components as on the whole
    x0, y0 = max(0, x - margin), max(0, y - margin)
    return [(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0)
            for bx0, by0, bx1, by1 in _boxes_of(m[y0 : y + h + margin, x0 : x + w + margin], cfg)]


def _component_rects(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of each 8-connected component: the bounding box of its outer contour
    (``RETR_CCOMP``'s top level holds every component's outer boundary, also one lying in
    another's hole). The same boxes as ``connectedComponentsWithStats``, ten times faster on
    sparse line drawings (measured on a tile of a generated sheet)."""
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    return [cv2.boundingRect(c) for c, h in zip(contours, hierarchy[0]) if h[3] < 0]


def _boxes_of(m: np.ndarray, cfg: ComponentConfig) -> list[Box]:
    """:func:`component_boxes` of a 0/1 uint8 mask."""
    lines = _opening(m, np.ones((1, cfg.line_length), np.uint8)) | _opening(m, np.ones((cfg.line_length, 1), np.uint8))
    strokes = m & (1 - lines)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    boxes = []
    for r in cfg.dilations:
        grown = cv2.dilate(strokes, cross, iterations=r, borderType=cv2.BORDER_CONSTANT, borderValue=0) if r else strokes
        for x, y, w, h in _component_rects(grown):
            x0, y0, x1, y1 = x + r, y + r, x + w - r, y + h - r
            w, h = x1 - x0, y1 - y0
            if cfg.min_side <= max(w, h) <= cfg.max_side and min(w, h) >= 3:
                boxes.append((x0, y0, x1, y1))
    return boxes


def tile_grid(width: int, height: int, tile: int, overlap: int) -> list[tuple[tuple, tuple]]:
    """Tiles ``((x0, y0, x1, y1), core)``: tiles overlap by ``overlap``; the cores (each tile's
    own region, split at the middle of every overlap) partition the drawing exactly."""

    def spans(n: int) -> list[tuple[int, int, int, int]]:
        if n <= tile:
            return [(0, n, 0, n)]
        step = tile - overlap
        starts = list(range(0, n - tile, step)) + [n - tile]
        out = []
        for i, s in enumerate(starts):
            lo = 0 if i == 0 else (s + starts[i - 1] + tile) // 2
            hi = n if i == len(starts) - 1 else (starts[i + 1] + s + tile) // 2
            out.append((s, s + tile, lo, hi))
        return out

    return [
        ((x0, y0, x1, y1), (cx0, cy0, cx1, cy1))
        for y0, y1, cy0, cy1 in spans(height)
        for x0, x1, cx0, cx1 in spans(width)
    ]


def owned_boxes(masks: list[np.ndarray], tile: tuple, core: tuple, cfg: ComponentConfig) -> list[Box]:
    """The component boxes of one tile's masks (tile coordinates, sorted, each once) whose
    centre lies in the tile's core: the boxes this tile answers for."""
    x0, y0 = tile[:2]
    cx0, cy0, cx1, cy1 = core
    owned = set()
    for mask in masks:
        for bx0, by0, bx1, by1 in component_boxes(mask, cfg):
            if cx0 <= x0 + (bx0 + bx1) / 2 < cx1 and cy0 <= y0 + (by0 + by1) / 2 < cy1:
                owned.add((bx0, by0, bx1, by1))
    return sorted(owned)


def drawing_components(rgb: np.ndarray, cfg: ComponentConfig, threads: int | None = None) -> list[Box]:
    """Every component box of one drawing (H, W, 3 uint8), in drawing coordinates, sorted, each
    once; tile by tile on ``threads`` threads (default: the CPU count; OpenCV lets go of the
    GIL). The boxes do not depend on the thread count."""
    from concurrent.futures import ThreadPoolExecutor

    height, width = rgb.shape[:2]
    tiles = tile_grid(width, height, cfg.tile, cfg.tile_overlap)
    cfg = replace(cfg, ink_threshold=drawing_ink_threshold(rgb, cfg))

    def one(tile_core) -> list[Box]:
        (x0, y0, x1, y1), core = tile_core
        local = owned_boxes(ink_masks(rgb[y0:y1, x0:x1], cfg), (x0, y0, x1, y1), core, cfg)
        return [(a + x0, b + y0, c + x0, d + y0) for a, b, c, d in local]

    workers = max(1, min(len(tiles), threads or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        found = {box for part in pool.map(one, tiles) for box in part}
    return sorted(found)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), xyxy: (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0, y0 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x1, y1 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def dedup_boxes(boxes: list[Box], iou: float) -> list[Box]:
    """Boxes with near-duplicates removed: the dilations (and the colour masks) find one symbol
    several times with boxes a few pixels apart, and each copy would be a pseudo-class of its
    own, a negative of itself. Greedy, smallest box first (the tightest around the ink: on
    generated drawings it keeps the planted boxes more often than largest-first): a box is
    dropped when its IoU with a kept one is at least ``iou``. Returns the kept boxes sorted;
    deterministic."""
    if not boxes:
        return []
    order = sorted(boxes, key=lambda b: ((b[2] - b[0]) * (b[3] - b[1]), b))
    arr = np.asarray(order, np.float64)
    dropped = np.zeros(len(order), dtype=bool)
    for i in range(len(order)):  # one row of IoUs at a time: memory O(N), not O(N^2)
        if not dropped[i]:
            dropped[i + 1 :] |= box_iou(arr[i], arr[i + 1 :])[0] >= iou
    return sorted(b for b, d in zip(order, dropped) if not d)

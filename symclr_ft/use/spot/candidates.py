"""Class-agnostic candidate boxes on a drawing (no learning): ink components split by colour,
long straight runs removed, at a few dilation radii, tile by tile, with cheap shape descriptors
that the objectness model reads. The components themselves are ``symclr_ft.data.components``'
(``symclr-components`` cuts the same boxes into shards); this module adds what spotting needs:
descriptors, the cost cap, padding."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import torch

from symclr_ft.data.components import (  # noqa: F401  (component_boxes, tile_grid: also read from here)
    component_boxes, drawing_ink_threshold, ink_masks, owned_boxes, tile_grid,
)
from symclr_ft.use.spot.config import SpotConfig

_component_boxes = component_boxes  # its name before it moved to symclr_ft.data.components


DESCRIPTORS = ("width", "height", "aspect", "area", "ink_inside", "ink_around", "red", "green", "blue")


def box_descriptors(rgb: np.ndarray, ink: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """(N, 9) descriptors of integer boxes on one image (or tile) with its ink mask."""
    integral = cv2.integral(ink.view(np.uint8), sdepth=cv2.CV_32S)  # (H + 1, W + 1), zeros first
    height, width = ink.shape

    def inked(x0, y0, x1, y1):
        return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]

    rows = []
    for x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        ax0, ay0 = max(0, x0 - w // 2), max(0, y0 - h // 2)
        ax1, ay1 = min(width, x1 + w // 2), min(height, y1 + h // 2)
        inside = ink[y0:y1, x0:x1]
        colour = rgb[y0:y1, x0:x1][inside].mean(axis=0) if inside.any() else np.zeros(3)
        rows.append([w, h, w / h, w * h, inked(x0, y0, x1, y1) / (w * h),
                     inked(ax0, ay0, ax1, ay1) / ((ax1 - ax0) * (ay1 - ay0)), *colour])
    return np.asarray(rows, dtype=np.float32).reshape(-1, len(DESCRIPTORS))


def _tile_candidates(rgb: np.ndarray, tile: tuple, core: tuple, cfg: SpotConfig) -> dict[tuple, np.ndarray]:
    """Boxes (drawing coordinates) of one tile's candidates whose centre lies in its core, with
    their descriptors computed in the tile."""
    x0, y0, x1, y1 = tile
    pixels = rgb[y0:y1, x0:x1]
    masks = ink_masks(pixels, cfg)
    local = owned_boxes(masks, tile, core, cfg)
    return {(b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0): d for b, d in zip(local, box_descriptors(pixels, masks[0], local))}


def candidate_boxes_with_descriptors(rgb: np.ndarray, cfg: SpotConfig) -> tuple[torch.Tensor, np.ndarray]:
    """Class-agnostic candidate boxes (N, 4) of one drawing (H, W, 3 uint8), tile by tile (on
    as many threads as torch uses: OpenCV lets go of the GIL), and their shape descriptors
    (objectness) computed in the tile that owns them."""
    from concurrent.futures import ThreadPoolExecutor

    height, width = rgb.shape[:2]
    found: dict[tuple[int, int, int, int], np.ndarray] = {}
    tiles = tile_grid(width, height, cfg.tile, cfg.tile_overlap)
    cfg = replace(cfg, ink_threshold=drawing_ink_threshold(rgb, cfg))  # once for the drawing: tiles agree
    with ThreadPoolExecutor(max(1, min(len(tiles), torch.get_num_threads()))) as pool:
        for part in pool.map(lambda t: _tile_candidates(rgb, *t, cfg), tiles):
            found.update(part)
    boxes = sorted(found)
    desc = np.stack([found[b] for b in boxes]) if boxes else np.zeros((0, len(DESCRIPTORS)), np.float32)
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), desc


def candidate_boxes(rgb: np.ndarray, cfg: SpotConfig) -> torch.Tensor:
    """Class-agnostic candidate boxes (N, 4), sorted."""
    return candidate_boxes_with_descriptors(rgb, cfg)[0]


def select_candidates(boxes: torch.Tensor, desc: np.ndarray, objectness, width: int, height: int,
                      cfg: SpotConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidates worth embedding and their P(symbol): the most symbol-like ones, at most
    ``candidates_per_megapixel`` (and ``max_candidates``); without an objectness model, the
    largest ones, each with probability 1."""
    limit = min(cfg.max_candidates, max(cfg.min_candidates, round(cfg.candidates_per_megapixel * width * height / 1e6)))
    if objectness is None:  # no way to tell symbols from letters: look at three times as many
        limit = min(cfg.max_candidates, 3 * limit)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = torch.argsort(-area, stable=True)[:limit]
        return boxes[order], torch.ones(len(order))
    prob = torch.from_numpy(objectness.probability(desc))
    order = torch.argsort(-prob, stable=True)[:limit]
    return boxes[order], prob[order]


def pad_boxes(boxes: torch.Tensor, padding: float, width: int, height: int) -> torch.Tensor:
    """Grow boxes by ``padding`` of their size on each side, clipped to the drawing."""
    size = boxes[:, 2:] - boxes[:, :2]
    grown = torch.cat([boxes[:, :2] - padding * size, boxes[:, 2:] + padding * size], dim=1)
    limit = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    return torch.minimum(grown.clamp(min=0), limit)

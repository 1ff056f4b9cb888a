"""Template-matching candidates: where an exemplar's picture correlates with the drawing.

The ink candidates (``candidates``) need clean, coloured ink: on a grey, blurred, noisy or
JPEG'd copy their colour thresholds find nothing. Normalised cross-correlation
(``cv2.matchTemplate``, ``TM_CCOEFF_NORMED``) of each exemplar's picture does not: it is blind
to contrast and brightness within a window, so a faint grey symbol on a scan still peaks where
it is. Here it is a second source of candidates and a second piece of evidence for scoring:

* both the drawing and the exemplars become an *ink picture* first: each pixel's largest
  channel difference from the paper colour (dark CAD backgrounds and white pages alike give
  ink bright on black, and a coloured symbol matches its grey copy);
* each exemplar is correlated at a few scales (``template_scales``) in its four quarter turns,
  on the drawing reduced by 2, 4, ... as far as the template keeps ``template_min_side`` pixels
  (cost falls with the square of the reduction);
* local maxima above ``template_peak`` are candidate boxes of the exemplar's box size at that
  scale and turn, carrying their correlation as a score; each ink candidate also gets the best
  correlation of every class at its place (``TemplateEvidence.correlation``).

Large drawings are matched tile by tile (``candidates.tile_grid``): a peak belongs to the tile
whose core holds its centre, so nothing is found twice and no full-size float map exists.
Related: Rezvanifar et al. (2019) correlate symbols on architectural drawings in the same way.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou, nms

from symclr_ft.use.spot.candidates import tile_grid
from symclr_ft.use.spot.config import SpotConfig

# The drawing is reduced by one of these before matching (level = index). Steps of about 1.4
# rather than 2 keep every template near template_min_side, so none costs 4x more than needed;
# each factor is p / q with a small p, so tiles that start on multiples of p reduce to exactly
# the pixels of the whole drawing reduced (tiled matching equals one pass).
FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
MAX_LEVEL = 6  # 8x for the exemplar sizes; the rest is for large drawings over the budget


def paper_colour(rgb: np.ndarray) -> np.ndarray:
    """The paper's colour: the median of a sparse grid of pixels (a strided view, no copy)."""
    step_y, step_x = max(1, rgb.shape[0] // 64), max(1, rgb.shape[1] // 64)
    return np.median(rgb[::step_y, ::step_x].reshape(-1, rgb.shape[-1]), axis=0)


def ink_picture(rgb: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """(H, W) uint8: each pixel's largest channel difference from ``paper`` (ink bright)."""
    scalar = tuple(float(v) for v in paper[:3]) + (0.0,)
    channels = cv2.split(cv2.absdiff(np.ascontiguousarray(rgb), scalar))
    return cv2.max(cv2.max(channels[0], channels[1]), channels[2])


def exemplar_picture(rgb: np.ndarray, bbox: list[float] | None, padding: float) -> np.ndarray:
    """The ink picture of an exemplar: its COCO box ``[x, y, w, h]`` on its drawing (paper from
    the whole drawing), or for a crop file (``bbox`` None) the crop less make-shards' padding
    (paper from the crop's border, which is all paper)."""
    if bbox is None:
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        h, w = rgb.shape[0] / (1 + 2 * padding), rgb.shape[1] / (1 + 2 * padding)
        x, y = (rgb.shape[1] - w) / 2, (rgb.shape[0] - h) / 2
        paper = np.median(border, axis=0)
    else:
        x, y, w, h = bbox
        paper = paper_colour(rgb)
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(rgb.shape[1], int(round(x + w))), min(rgb.shape[0], int(round(y + h)))
    return ink_picture(rgb[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)], paper)


@dataclass
class Template:
    """One exemplar picture at one scale and turn, ready to correlate at ``level``."""

    label: int  # class index (into Exemplars.class_names)
    level: int  # the drawing is reduced by FACTORS[level] before matching
    picture: np.ndarray  # uint8 ink picture at that level
    size: tuple[float, float]  # (w, h) of its box on the full-size drawing


@dataclass
class Templates:
    """Every exemplar's templates, made once per exemplar set (not once per drawing)."""

    items: list[Template]
    classes: int
    skipped: list[str] = field(default_factory=list)  # why an exemplar has no template
    pictures: list[tuple[int, np.ndarray]] = field(default_factory=list, repr=False)  # the sources
    shift: int = 0  # levels added to every template's (a large drawing within the budget)

    @property
    def largest_side(self) -> float:
        return max((max(t.size) for t in self.items), default=0.0)

    def cost(self, pixels: float) -> float:
        """Megapixels correlated with every template on a drawing of ``pixels``."""
        return sum(pixels / FACTORS[t.level] ** 2 for t in self.items) / 1e6


def _level(side: float, cfg: SpotConfig) -> int:
    """The largest reduction FACTORS[level] that keeps ``side`` at least ``template_min_side``."""
    level = 0
    while level < MAX_LEVEL and side / FACTORS[level + 1] >= cfg.template_min_side:
        level += 1
    return level


def resized(picture: np.ndarray, factor: float, blur: float) -> np.ndarray:
    """``picture`` reduced by ``factor`` and blurred (Gaussian ``blur`` px at that size): thin
    lines a pixel off, or at 10% another scale, then still overlap, so the correlation peak is
    wide enough for a few scales to cover 0.7x-1.4x (measured in the tests)."""
    h, w = picture.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = cv2.resize(picture, size, interpolation=cv2.INTER_AREA) if size != (w, h) else picture
    return cv2.GaussianBlur(out, (0, 0), blur) if blur > 0 else out


def make_templates(pictures: list[tuple[int, np.ndarray]], classes: int, cfg: SpotConfig, shift: int = 0) -> Templates:
    """Templates of exemplar ink pictures ``(class index, picture of its box)``: every scale of
    ``template_scales`` in four quarter turns; a turn that looks like another turn of the same
    picture (a round symbol) is kept once. ``shift`` reduces every one ``shift`` levels more
    (the turns kept are those of the finest level)."""
    items, skipped = [], []
    for label, picture in pictures:
        h, w = picture.shape
        if picture.std() < 1.0:
            skipped.append(f"class {label}: exemplar picture has no contrast")
            continue
        for scale in cfg.template_scales:
            finest = _level(min(w, h) * scale, cfg)
            level = min(len(FACTORS) - 1, finest + shift)
            base = resized(picture, scale / FACTORS[level], cfg.template_blur)
            if min(base.shape) < 4:
                continue
            for turn in _distinct_turns(resized(picture, scale / FACTORS[finest], cfg.template_blur), cfg):
                size = (w * scale, h * scale) if turn % 2 == 0 else (h * scale, w * scale)
                items.append(Template(label, level, np.ascontiguousarray(np.rot90(base, turn)), size))
    return Templates(items, classes, skipped, list(pictures), shift)


def _distinct_turns(picture: np.ndarray, cfg: SpotConfig) -> list[int]:
    """Quarter turns of ``picture`` that do not look like an earlier one."""
    kept: list[np.ndarray] = []
    turns = []
    for turn in range(4 if cfg.template_turns else 1):
        turned = np.ascontiguousarray(np.rot90(picture, turn))
        if not any(_same_picture(turned, k) for k in kept):
            kept.append(turned)
            turns.append(turn)
    return turns


def within_budget(templates: Templates, pixels: float, cfg: SpotConfig) -> Templates:
    """``templates``, or coarser ones (each reduced one level or more further) when
    correlating them all on a drawing of ``pixels`` would cost more than ``template_budget``
    megapixels: a large sheet is matched at lower resolution rather than for minutes. It stops
    before a template would become too small to match (over the budget, then)."""
    while templates.cost(pixels) > cfg.template_budget:
        coarser = make_templates(templates.pictures, templates.classes, cfg, templates.shift + 1)
        if len(coarser.items) < len(templates.items) or templates.shift + 1 >= len(FACTORS):
            break
        templates = coarser
    return templates


def _same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two same-shape pictures correlate almost perfectly (a symmetric symbol's turn)."""
    if a.shape != b.shape:
        return False
    return float(cv2.matchTemplate(a, b, cv2.TM_CCOEFF_NORMED)[0, 0]) > 0.95


@dataclass
class TemplateEvidence:
    """What template matching says about one drawing."""

    correlation: torch.Tensor  # (N, C) best correlation of each class at each given box
    sizes: torch.Tensor  # (N, C, 2) box (w, h) of that best template
    peaks: torch.Tensor  # (M, 4) peak boxes x0, y0, x1, y1 (full size), one per class and place
    peak_scores: torch.Tensor  # (M,)
    peak_labels: torch.Tensor  # (M,) class index
    extra: torch.Tensor  # (K, 4) template candidates that no given box covers
    extra_correlation: torch.Tensor  # (K, C)
    extra_sizes: torch.Tensor  # (K, C, 2)


def local_peaks(result: np.ndarray, radius: int, threshold: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of local maxima (within ``radius``) at least ``threshold``; the
    ``limit`` highest."""
    ys, xs = np.nonzero(result >= threshold)
    if ys.size:
        kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
        local = result[ys, xs] >= cv2.dilate(result, kernel)[ys, xs]
        ys, xs = ys[local], xs[local]
    if ys.size > limit:
        top = np.argsort(-result[ys, xs], kind="stable")[:limit]
        ys, xs = ys[top], xs[top]
    return ys, xs


def window_max(result: np.ndarray, row: np.ndarray, col: np.ndarray, slack: int) -> np.ndarray:
    """Largest value of ``result`` within ``slack`` of each (row, col), clipped to the map."""
    offsets = np.arange(-slack, slack + 1)
    rows = np.clip(row[:, None, None] + offsets[None, :, None], 0, result.shape[0] - 1)
    cols = np.clip(col[:, None, None] + offsets[None, None, :], 0, result.shape[1] - 1)
    return result[rows, cols].reshape(row.shape[0], -1).max(axis=1)


def _match_one(picture: np.ndarray, t: Template, origin: tuple[int, int], core: tuple, centres: np.ndarray,
               cfg: SpotConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One template on one tile: its best correlation near each of ``centres`` (tile
    coordinates at full size), and its peak boxes (full size) and scores in the tile's core."""
    th, tw = t.picture.shape
    if th > picture.shape[0] or tw > picture.shape[1]:
        return None
    result = cv2.matchTemplate(picture, t.picture, cv2.TM_CCOEFF_NORMED)
    cv2.patchNaNs(result, 0.0)
    f = FACTORS[t.level]
    x0, y0 = origin
    cx0, cy0, cx1, cy1 = core
    value = np.zeros(centres.shape[0], np.float32)
    if centres.shape[0]:  # the best correlation near each candidate's centre (its ink box is looser)
        col = np.round((centres[:, 0] - x0) / f - tw / 2).astype(int)
        row = np.round((centres[:, 1] - y0) / f - th / 2).astype(int)
        value = window_max(result, row, col, cfg.template_slack)
    ys, xs = local_peaks(result, max(1, min(th, tw) // 2), cfg.template_peak, cfg.template_peaks_per_tile)
    px, py = x0 + (xs + tw / 2) * f, y0 + (ys + th / 2) * f
    inside = (px >= cx0) & (px < cx1) & (py >= cy0) & (py < cy1)
    w, h = t.size
    return value, np.stack([px - w / 2, py - h / 2, px + w / 2, py + h / 2], 1)[inside], result[ys, xs][inside]


def _match_tile(levels: list[np.ndarray], origin: tuple[int, int], core: tuple, templates: Templates,
                centres: np.ndarray, ev: dict, cfg: SpotConfig, pool) -> tuple[torch.Tensor, ...]:
    """Every template on one tile (its ink picture at each level), on the threads of ``pool``
    (OpenCV lets go of the GIL), merged in template order: fills ``ev``'s correlation at the
    centres that lie in the tile's core, and returns the core's peaks, one per class and place
    (boxes, scores, labels)."""
    cx0, cy0, cx1, cy1 = core
    mine = np.nonzero((centres[:, 0] >= cx0) & (centres[:, 0] < cx1) & (centres[:, 1] >= cy0) & (centres[:, 1] < cy1))[0]
    jobs = [(levels[t.level], t, origin, core, centres[mine], cfg) for t in templates.items]
    peaks, scores, labels = [np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0, int)]
    for t, out in zip(templates.items, pool.map(lambda job: _match_one(*job), jobs)):
        if out is None:
            continue
        value, boxes, values = out
        better = value > ev["correlation"][mine, t.label]
        ev["correlation"][mine[better], t.label] = value[better]
        ev["sizes"][mine[better], t.label] = t.size
        peaks.append(boxes)
        scores.append(values)
        labels.append(np.full(len(values), t.label))
    boxes = torch.tensor(np.concatenate(peaks), dtype=torch.float32).reshape(-1, 4)
    values = torch.tensor(np.concatenate(scores), dtype=torch.float32)
    classes = torch.tensor(np.concatenate(labels), dtype=torch.long)
    keep = batched_nms(boxes, values, classes, 0.5)  # a class's scales and turns at one place: the best
    return boxes[keep], values[keep], classes[keep]


def peak_candidates(peaks: tuple[torch.Tensor, ...], given: torch.Tensor, area: float, classes: int,
                     cfg: SpotConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One tile's template candidates (or a drawing's feature-match candidates,
    ``feature_match.py``): its peaks after class-agnostic NMS and
    :func:`same_place_suppression`, at most ``template_candidates_per_megapixel`` of the core's
    ``area``, less those a ``given`` box covers (IoU >= ``template_dedup_iou``); with the best
    correlation of every class at each (its peaks overlapping it at IoU >= 0.5) and their sizes."""
    boxes, scores, labels = peaks
    empty = (torch.zeros((0, 4)), torch.zeros((0, classes)), torch.zeros((0, classes, 2)))
    if boxes.shape[0] == 0:
        return empty
    limit = max(1, round(cfg.template_candidates_per_megapixel * area / 1e6))
    keep = nms(boxes, scores, cfg.nms_iou)[: 2 * limit]  # the best; same-place costs grow with the square
    keep = keep[same_place_suppression(boxes[keep], scores[keep])]
    new = boxes[keep[:limit]]
    if given.shape[0]:
        new = new[box_iou(new, given).max(dim=1).values < cfg.template_dedup_iou]
    if new.shape[0] == 0:
        return empty
    rows, cols = torch.nonzero(box_iou(new, boxes) >= 0.5, as_tuple=True)  # (new, peak) pairs
    order = torch.argsort(scores[cols], stable=True)  # written in rising score: the best wins
    rows, cols = rows[order], cols[order]
    corr, sizes = torch.zeros((new.shape[0], classes)), torch.zeros((new.shape[0], classes, 2))
    corr[rows, labels[cols]] = scores[cols]
    sizes[rows, labels[cols]] = boxes[cols, 2:] - boxes[cols, :2]
    return new, corr, sizes


def aligned_tiles(width: int, height: int, tile: int, overlap: int, step: int) -> list[tuple[tuple, tuple]]:
    """``candidates.tile_grid`` with every edge on a multiple of ``step`` (a multiple of every
    reduction's numerator): a tile reduced by FACTORS[level] then holds exactly the pixels of
    the whole drawing reduced, so tiled and untiled matching agree."""
    grid = tile_grid(-(-width // step), -(-height // step), tile // step, -(-overlap // step))
    return [
        (tuple(min(v * step, limit) for v, limit in zip(box, (width, height, width, height))),
         tuple(min(v * step, limit) for v, limit in zip(core, (width, height, width, height))))
        for box, core in grid
    ]  # fmt: skip


def match_templates(rgb: np.ndarray, templates: Templates, boxes: torch.Tensor, cfg: SpotConfig) -> TemplateEvidence:
    """Template evidence on one drawing (H, W, 3 uint8), tile by tile (nothing of full size
    but the drawing itself): the best correlation of each class at each of ``boxes`` (N, 4),
    the peaks, and the template candidates that none of ``boxes`` covers. A large drawing is
    matched with coarser templates (:func:`within_budget`)."""
    n, classes = boxes.shape[0], templates.classes
    height, width = rgb.shape[:2]
    templates = within_budget(templates, width * height, cfg)
    ev = {"correlation": np.zeros((n, classes), np.float32), "sizes": np.zeros((n, classes, 2), np.float32)}
    peaks, extra = [], []
    if templates.items:
        centres = ((boxes[:, :2] + boxes[:, 2:]) / 2).numpy()
        paper = paper_colour(rgb)
        needed = {t.level for t in templates.items}
        coarsest = FACTORS[max(needed)]
        step = math.lcm(*(Fraction(FACTORS[lv]).numerator for lv in needed))
        # a peak owned by a core has its window and its local-maximum neighbourhood (half a
        # template) inside the tile: the core lies overlap / 2 inside the tile's edges
        overlap = max(cfg.tile_overlap, 2 * int(np.ceil(templates.largest_side)) + int(4 * coarsest))
        tiles = aligned_tiles(width, height, max(cfg.tile, 2 * overlap), overlap, step)
        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:  # as many threads as torch uses
            for (x0, y0, x1, y1), core in tiles:
                picture = ink_picture(rgb[y0:y1, x0:x1], paper)
                levels = [resized(picture, 1 / FACTORS[lv], cfg.template_blur) if lv in needed else None
                          for lv in range(max(needed) + 1)]
                peaks.append(_match_tile(levels, (x0, y0), core, templates, centres, ev, cfg, pool))
                near = (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0) & (centres[:, 1] < y1)
                area = (core[2] - core[0]) * (core[3] - core[1])
                extra.append(peak_candidates(peaks[-1], boxes[torch.from_numpy(near)], area, classes, cfg))
    peaks = [(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long))] + peaks
    extra = [(torch.zeros((0, 4)), torch.zeros((0, classes)), torch.zeros((0, classes, 2)))] + extra
    boxes_x, corr_x, sizes_x = (torch.cat(part) for part in zip(*extra))
    best = torch.argsort(-corr_x.max(dim=1).values if corr_x.shape[0] else torch.zeros(0), stable=True)
    best = best[: cfg.max_template_candidates].sort().values  # the best of a large sheet, in tile order
    limit = torch.tensor([width, height, width, height], dtype=torch.float32)
    return TemplateEvidence(
        torch.from_numpy(ev["correlation"]), torch.from_numpy(ev["sizes"]),
        *(torch.cat(part) for part in zip(*peaks)),
        torch.minimum(boxes_x[best].clamp(min=0), limit), corr_x[best], sizes_x[best],
    )  # fmt: skip


def same_place_suppression(boxes: torch.Tensor, scores: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Indices (best first) of the boxes left when every box whose centre lies in the middle
    half of a better kept box, or holds that box's centre in its own middle half, is dropped.
    IoU-based NMS keeps two concentric boxes whose sizes differ by 0.7x (IoU 0.49): the
    same symbol matched at two scales; symbols on a drawing do not sit inside each other.
    The pairs in conflict are found ``chunk`` rows at a time (memory stays small)."""
    order = torch.argsort(-scores, stable=True)
    b = boxes[order]
    centre = (b[:, :2] + b[:, 2:]) / 2
    quarter = (b[:, 2:] - b[:, :2]) / 4
    lo, hi = centre - quarter, centre + quarter
    conflicts: list[list[int]] = [[] for _ in range(b.shape[0])]
    for start in range(0, b.shape[0], chunk):
        rows = slice(start, start + chunk)
        holds = ((centre[None] >= lo[rows, None]) & (centre[None] <= hi[rows, None])).all(-1)
        held = ((centre[rows, None] >= lo[None]) & (centre[rows, None] <= hi[None])).all(-1)
        for i, j in torch.nonzero(holds | held).tolist():
            if j > start + i:
                conflicts[start + i].append(j)
    dropped = np.zeros(b.shape[0], bool)
    for i, later in enumerate(conflicts):
        if not dropped[i] and later:
            dropped[later] = True
    return order[torch.from_numpy(~dropped)]

"""Template correlation checked again at a finer resolution, for each detection's best classes.

Template matching (``template.py``) correlates on the drawing reduced until every template keeps
``template_min_side`` (12) pixels. That is cheap and tolerant of scales between its three
template scales, but at 12 px a symbol drawn with lines a pixel thicker, or a look-alike class's
symbol, correlates about as well as the right one. Matching the whole drawing with finer
templates (24 px) tells them apart, at 1.7x the time and with less tolerance of in-between
scales (docs/RESULTS.md, issue 27, "Finer templates and a scan count threshold").

Here the coarse match keeps the two jobs it does well: finding candidates, and the scale and turn
of each class's best template. Only the detections that NMS keeps with a score of at least
``template_refine_from`` (``scoring.score_candidates`` picks them) have their
``template_refine_classes`` best classes correlated again, at ``template_refine_min_side``
pixels, in a window around the detection, at scales around the coarse match's
(``template_refine_scales``): a shortlist re-ranked, as in retrieval, with small correlations
in windows in place of whole-drawing maps (docs/RESULTS.md, issue 27, "Refined template
correlation")."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace

import cv2
import numpy as np
import torch

from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.records import Candidates
from symclr_ft.use.spot.template import ink_picture, paper_colour, resized


def turns_for(picture_shape: tuple[int, int], size: tuple[float, float]) -> tuple[int, ...]:
    """The quarter turns of a picture (h, w) that could give a box of ``size`` (w, h): the even
    ones when the box has the picture's orientation, the odd ones when turned, all four for a
    picture about as wide as tall (its box does not say)."""
    ph, pw = picture_shape
    w, h = size
    aspect = math.log(pw / ph)
    if abs(aspect) < 0.15:
        return (0, 1, 2, 3)
    seen = math.log(w / h)
    return (0, 2) if abs(seen - aspect) <= abs(seen + aspect) else (1, 3)


class FineMatcher:
    """Fine correlations on one drawing. The coarse matches' box sizes come from a few template
    scales, so the refined templates (one per picture, scale and turn) and the windows (one per
    candidate and reduction) repeat: each is made once."""

    def __init__(self, rgb: np.ndarray, cfg: SpotConfig):
        self.rgb, self.cfg = rgb, cfg
        self.paper = paper_colour(rgb)
        self.templates: dict[tuple, np.ndarray | None] = {}
        self.windows: dict[tuple, np.ndarray | None] = {}

    def template(self, picture: np.ndarray, key: int, scale: float, factor: float, turn: int) -> np.ndarray | None:
        """``picture`` (exemplar ``key``) at ``scale`` of its size, reduced by ``factor``, turned."""
        k = (key, round(scale, 4), round(factor, 4), turn)
        if k not in self.templates:
            base = resized(picture, scale / factor, self.cfg.template_blur)
            self.templates[k] = np.ascontiguousarray(np.rot90(base, turn)) if min(base.shape) >= 4 else None
        return self.templates[k]

    def window(self, n: int, centre: tuple[float, float], half: float, factor: float) -> np.ndarray | None:
        """Candidate ``n``'s window: the ink picture within ``half`` of ``centre``, off the
        drawing counted as paper (no ink), reduced by ``factor``."""
        k = (n, round(half, 1), round(factor, 4))
        if k not in self.windows:
            cx, cy = centre
            x0, y0 = int(math.floor(cx - half)), int(math.floor(cy - half))
            x1, y1 = int(math.ceil(cx + half)), int(math.ceil(cy + half))
            height, width = self.rgb.shape[:2]
            crop = self.rgb[max(0, y0):min(height, y1), max(0, x0):min(width, x1)]
            if crop.size == 0:
                self.windows[k] = None
            else:
                ink = cv2.copyMakeBorder(ink_picture(crop, self.paper), max(0, -y0), max(0, y1 - height),
                                         max(0, -x0), max(0, x1 - width), cv2.BORDER_CONSTANT, value=0)
                self.windows[k] = resized(ink, 1 / factor, self.cfg.template_blur)
        return self.windows[k]

    def correlation(self, n: int, picture: np.ndarray, key: int, centre: tuple[float, float],
                    size: tuple[float, float]) -> tuple[float, tuple[float, float]]:
        """The best correlation of exemplar picture ``picture`` (``key``: which one) in a window
        around candidate ``n``'s ``centre``, at ``template_refine_scales`` times the scale that
        gives a box of ``size`` (w, h, full size), in the turns that fit that box; both reduced
        so that the template keeps ``template_refine_min_side`` pixels (never enlarged). Returns
        the correlation and the box size (w, h, full size) of the best template."""
        cfg = self.cfg
        ph, pw = picture.shape
        w, h = size
        scale = math.sqrt(w * h / (pw * ph))
        factor = max(1.0, scale * min(pw, ph) / cfg.template_refine_min_side)
        window = self.window(n, centre, max(w, h) * (max(cfg.template_refine_scales) / 2 + cfg.template_refine_slack),
                             factor)
        best, best_size = 0.0, size
        if window is None:
            return best, best_size
        for rel in cfg.template_refine_scales:
            for turn in turns_for(picture.shape, size):
                templ = self.template(picture, key, scale * rel, factor, turn)
                if templ is None or templ.shape[0] > window.shape[0] or templ.shape[1] > window.shape[1]:
                    continue
                result = cv2.matchTemplate(window, templ, cv2.TM_CCOEFF_NORMED)
                cv2.patchNaNs(result, 0.0)
                value = float(result.max())
                if value > best:
                    box = (pw * scale * rel, ph * scale * rel)
                    best, best_size = value, box if turn % 2 == 0 else box[::-1]
        return best, best_size


def fine_correlation(rgb: np.ndarray, picture: np.ndarray, centre: tuple[float, float], size: tuple[float, float],
                     cfg: SpotConfig) -> tuple[float, tuple[float, float]]:
    """:meth:`FineMatcher.correlation` of one picture at one place of ``rgb``."""
    return FineMatcher(rgb, cfg).correlation(0, picture, 0, centre, size)


def refine_candidates(rgb: np.ndarray, cands: Candidates, per_class: torch.Tensor,
                      pictures: list[tuple[int, np.ndarray]], cfg: SpotConfig) -> Candidates:
    """``cands`` with the template correlation of each candidate's ``template_refine_classes``
    best classes by ``per_class`` (N, C; the score before) replaced by the fine correlation
    (:meth:`FineMatcher.correlation`, best over the class's exemplar ``pictures``), and their box
    sizes with ``template_refine_sizes``. The other classes of a candidate keep their coarse
    correlation, but no more than its shortlist's lowest refined one: a class outside the
    shortlist does not overtake it on correlations measured less strictly."""
    if cands.correlation is None or cands.template_sizes is None or per_class.shape[0] == 0:
        return cands
    by_class: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for key, (label, picture) in enumerate(pictures):
        if picture.std() >= 1.0:
            by_class[label].append((key, picture))
    corr, sizes = cands.correlation.clone(), cands.template_sizes.clone()
    top = per_class.topk(min(cfg.template_refine_classes, per_class.shape[1]), dim=1).indices
    matcher = FineMatcher(rgb, cfg)
    centres = ((cands.boxes[:, :2] + cands.boxes[:, 2:]) / 2).tolist()
    for n in range(per_class.shape[0]):
        refined = []
        for c in top[n].tolist():
            w, h = cands.template_sizes[n, c].tolist()
            if w <= 0 or h <= 0 or c not in by_class:
                continue  # no template of the class matched here: nothing to refine
            value, size = max((matcher.correlation(n, p, key, centres[n], (w, h)) for key, p in by_class[c]),
                              key=lambda out: out[0])
            corr[n, c] = value
            if cfg.template_refine_sizes:
                sizes[n, c] = torch.tensor(size)
            refined.append(c)
        if refined:
            others = torch.ones(corr.shape[1], dtype=torch.bool)
            others[refined] = False
            corr[n, others] = corr[n, others].clamp(max=float(corr[n, refined].min()))
    return replace(cands, correlation=corr, template_sizes=sizes)

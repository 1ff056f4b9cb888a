"""Is this candidate a symbol at all? A small class-agnostic model on cheap shape descriptors.

Most ink components on a drawing are not symbols (letters of labels, wire stubs, dots). Nine
numbers per candidate (size, aspect, ink density inside and around it, mean ink colour) separate
them well, and cost nothing next to embedding a crop. The model is fitted on the drawings the
exemplars come from (their boxes say which candidates are symbols; no class is used, and
classes to hold out can be ignored), so it needs no file of its own and follows each dataset.
Two jobs: embed only the most symbol-like candidates (speed), and weigh a candidate's score by
its probability (fewer false positives).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from symclr_ft.use.spot.candidates import DESCRIPTORS, candidate_boxes_with_descriptors, pad_boxes
from symclr_ft.use.spot.drawings import list_drawings, open_rgb


@dataclass
class Objectness:
    """A fitted classifier: ``probability(descriptors)`` is P(candidate is a symbol)."""

    model: object
    positives: int
    candidates: int
    box_padding: float  # ink box -> symbol box that fits this dataset's annotations

    def probability(self, descriptors: np.ndarray) -> np.ndarray:
        """P(symbol) of each row. On one thread: a few hundred rows take milliseconds, while
        OpenMP's threads waiting for each other took half a second per drawing on a busy
        2-core machine (measured)."""
        from threadpoolctl import threadpool_limits

        if descriptors.shape[0] == 0:
            return np.zeros(0, np.float32)
        with threadpool_limits(1):
            return self.model.predict_proba(descriptors)[:, 1].astype(np.float32)


PADDINGS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def _matches(boxes: torch.Tensor, truth: list, threshold: float) -> torch.Tensor:
    if not truth or boxes.shape[0] == 0:
        return torch.zeros(boxes.shape[0], dtype=torch.bool)
    return box_iou(boxes, torch.tensor(truth, dtype=torch.float32).reshape(-1, 4)).max(1).values >= threshold


def collect(drawings, cfg) -> list[tuple]:
    """(ink boxes, descriptors, image size, truth) of each drawing: computed once, used to
    choose the padding and to label candidates."""
    out = []
    for d in drawings:
        image = open_rgb(d.path)
        boxes, desc = candidate_boxes_with_descriptors(np.asarray(image), cfg)
        out.append((boxes, desc, image.size, d.truth))
    return out


def best_padding(collected, ignore: set[int]) -> float:
    """The growth of ink boxes that matches most annotated boxes (IoU >= 0.5): annotators of
    one dataset draw boxes tight (music) or loose (the CAD drawings) around the ink."""

    def recall(pad):
        found = 0
        for boxes, _, (w, h), truth in collected:
            gt = torch.tensor([(x, y, x + bw, y + bh) for c, (x, y, bw, bh) in truth if c not in ignore]).reshape(-1, 4)
            if gt.shape[0] and boxes.shape[0]:
                found += int((box_iou(gt, pad_boxes(boxes, pad, w, h)).max(1).values >= 0.5).sum())
        return found

    return max(PADDINGS, key=lambda pad: (recall(pad), -pad))


def training_rows(collected, padding: float, ignore_categories: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors and labels (candidate matches a box, IoU >= 0.5). Candidates on a box of an
    ignored category are left out (neither symbol nor background)."""
    xs, ys = [], []
    for boxes, desc, (w, h), truth in collected:
        if boxes.shape[0] == 0:
            continue
        grown = pad_boxes(boxes, padding, w, h)
        keep = [(x, y, x + bw, y + bh) for c, (x, y, bw, bh) in truth if c not in ignore_categories]
        drop = [(x, y, x + bw, y + bh) for c, (x, y, bw, bh) in truth if c in ignore_categories]
        hit = _matches(grown, keep, 0.5)
        use = (~_matches(grown, drop, 0.3) | hit).numpy()
        xs.append(desc[use])
        ys.append(hit.numpy()[use])
    if not xs:
        return np.zeros((0, len(DESCRIPTORS)), np.float32), np.zeros(0, bool)
    return np.concatenate(xs), np.concatenate(ys)


def fit_objectness(json_path: Path, cfg, max_drawings: int = 30, seed: int = 0,
                   ignore_categories: set[int] = frozenset()) -> Objectness | None:
    """Fit on up to ``max_drawings`` drawings (seeded) of a COCO split, with the box padding
    that suits its annotations; None when its boxes give too few examples of either kind."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    drawings = [d for d in list_drawings(json_path) if d.truth]
    random.Random(seed).shuffle(drawings)
    collected = collect(drawings[:max_drawings], cfg)
    padding = best_padding(collected, set(ignore_categories))
    x, y = training_rows(collected, padding, set(ignore_categories))
    if y.sum() < 10 or (~y).sum() < 10:
        return None
    model = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(x, y)
    return Objectness(model, int(y.sum()), int(y.size), padding)

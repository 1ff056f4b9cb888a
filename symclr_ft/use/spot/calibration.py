"""Count thresholds per class from the exemplars alone: ``--count-score per-class``.

One global ``count_score`` (chosen on the valid split) decides which detections are counted;
some classes' true matches score lower than most (little ink, or a look-alike class), some
classes' false matches higher. Here each class gets its own threshold from a calibration sheet
made of the exemplars themselves (calibration_sheet.py: altered copies of every exemplar, the
other classes' copies and a few stray strokes, a clean page and its scan), never from the
drawings being counted nor from any ground truth but the exemplars' boxes:

1. the real pipeline (``pipeline.spot_pixels``, the same exemplars, objectness model and
   settings) runs on the pages;
2. a detection of class c is true when it is the best-scoring detection of c that overlaps a
   copy of c at IoU >= 0.5 (each copy matched once, as COCO matches), else false (another
   class's copy, a stroke, a second box on one copy); a copy of c without a true detection is
   missed whatever the threshold;
3. the class keeps ``count_score`` when that already gives the best F1 of its true and false
   detections on the sheet; otherwise its threshold is the middle of the best-F1 interval of
   scores nearest to ``count_score``, held within ``calibration_shift`` of it. A class with
   fewer than ``calibration_min_positives`` copies found keeps ``count_score`` (too little to go
   on). ``calibration_rule`` "exact" chooses by exactly counted pages instead of F1
   (:func:`exact_count_threshold`; measured, not chosen).

The cost is one pass of the pipeline over the two pages, once per exemplar set
(``Calibration.seconds``). When the exemplars come from an annotated COCO split, the pages can
instead be that split's other drawings (:func:`calibrate_on_drawings`, ``calibration_source``
"drawings": up to ``calibration_drawings`` of them, none an exemplar was cut from), with their
boxes as the truth of step 2: real sheets, still never the drawings being counted. There, with
``calibrate_boxes``, each class's box size is calibrated before step 2 (:func:`choose_box_scale`):
the one exemplar's box is as tight or as loose as its annotator drew it, and other annotators of
the same split draw that class's boxes their way; the factor on the exemplar's size under which
the class's detections match the most of the split's boxes is ``Calibration.box_scales`` (where
it beats 1), and ``SpotConfig.class_box_scales`` applies it. Example::

    cal = calibrate(net, ex, image_size, cfg, objectness, seed=0)
    cfg.class_count_scores = cal.thresholds     # {"valve": 0.62, ...}: the classes that differ
    cfg.class_box_scales = cal.box_scales       # {"valve": 1.3, ...}: from annotated drawings only
    print(cal.summary())
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torchvision.ops import box_iou

from symclr_ft.errors import UserError
from symclr_ft.use.spot.calibration_sheet import Page, calibration_pages
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.drawings import Drawing, list_drawings, open_drawing
from symclr_ft.use.spot.pipeline import Exemplars, pick_coco_exemplars, spot_pixels
from symclr_ft.use.spot.scoring import box_scales

MATCH_IOU = 0.5
BOX_SCALES = tuple(round(0.5 + 0.05 * k, 2) for k in range(31))  # 0.5 ... 2.0, the box scales tried
BELOW = 0.1  # where no score lies below the best interval, it starts this far under its top


@dataclass
class Calibration:
    """What calibration found: ``thresholds`` (class name -> its own threshold, for the classes
    that differ from ``count_score``), the true (``positives``) and false (``negatives``) scores
    and the ``missed`` copies of each class, the ``copies`` pasted per class, and ``seconds``
    (the sheet made and spotted)."""

    count_score: float
    thresholds: dict[str, float]
    positives: dict[str, list[float]] = field(default_factory=dict)
    negatives: dict[str, list[float]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    copies: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    min_positives: int = 1  # fewer true detections than this: the class kept count_score
    pages: str = "calibration sheet"  # what was spotted: the sheet, or "N annotated drawings"
    box_scales: dict[str, float] = field(default_factory=dict)  # class name -> box scale, where not 1

    def summary(self) -> str:
        """One line: how many classes were lowered, raised, kept, or had too few copies found, and
        how many got their own box scale."""
        lowered = sum(t < self.count_score for t in self.thresholds.values())
        few = sum(len(p) < self.min_positives for p in self.positives.values())
        kept = len(self.positives) - len(self.thresholds) - few
        return (f"per-class count thresholds from the exemplars: {lowered} lowered, {len(self.thresholds) - lowered} "
                f"raised, {kept} kept at {self.count_score:.3f}, {few} with too few copies found (kept); "
                f"{len(self.box_scales)} with their own box scale; "
                f"{self.pages} with {sum(self.copies.values())} copies, {self.seconds:.1f} s")


def f1_at(threshold: float, positives: list[float], negatives: list[float], missed: int) -> float:
    """F1 of counting the detections scoring at least ``threshold`` (true ones ``positives``,
    false ones ``negatives``; ``missed`` true symbols never detected)."""
    tp = sum(p >= threshold for p in positives)
    fp = sum(n >= threshold for n in negatives)
    fn = len(positives) - tp + missed
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def choose_threshold(positives: list[float], negatives: list[float], missed: int, count_score: float,
                     shift: float, min_positives: int) -> float:
    """A class's threshold (module docstring, step 3): ``count_score`` when it is F1-best or
    there are fewer than ``min_positives`` positives, else the middle of the best-F1 interval
    nearest to it, within ``shift`` of it."""
    if len(positives) < min_positives:
        return count_score
    values = sorted(set(positives) | set(negatives))
    f1 = [f1_at(v, positives, negatives, missed) for v in values]
    best = max(f1)
    if f1_at(count_score, positives, negatives, missed) >= best - 1e-12:
        return count_score
    # every threshold in (values[i - 1], values[i]] counts as values[i] does
    middles = [((values[i - 1] if i else v - BELOW) + v) / 2 for i, v in enumerate(values) if f1[i] >= best - 1e-12]
    chosen = min(middles, key=lambda t: abs(t - count_score))
    return round(min(max(chosen, count_score - shift, -1.0), count_score + shift, 1.0), 4)


def wrong_counts(threshold: float, pages: list[tuple[list[float], int]]) -> int:
    """Pages whose count of scores at or above ``threshold`` differs from their copies."""
    return sum(sum(v >= threshold for v in scores) != copies for scores, copies in pages)


def exact_count_threshold(pages: list[tuple[list[float], int]], positives: int, count_score: float, shift: float,
                          min_positives: int) -> float:
    """A class's threshold by the counts themselves (``calibration_rule`` "exact"): the one
    within ``shift`` of ``count_score`` that counts the most pages exactly (each page's
    detection scores of the class, and its copies), ``count_score`` when it is among the best,
    else the middle of the best interval nearest to it; ``count_score`` below ``min_positives``."""
    if positives < min_positives:
        return count_score
    values = sorted({v for scores, _ in pages for v in scores if abs(v - count_score) <= shift + 1e-9})
    # every threshold in (values[i - 1], values[i]] counts as values[i] does; above the last, as none do
    middles = [((values[i - 1] if i else max(count_score - shift, v - BELOW)) + v) / 2 for i, v in enumerate(values)]
    if values:
        middles.append(min(count_score + shift, values[-1] + BELOW / 2))
    wrong = {t: wrong_counts(t, pages) for t in [count_score, *middles]}
    best = min(wrong.values())
    if wrong[count_score] <= best:
        return count_score
    chosen = min((t for t, w in wrong.items() if w == best), key=lambda t: abs(t - count_score))
    return round(min(max(chosen, count_score - shift, -1.0), count_score + shift, 1.0), 4)


def page_scores(dets: dict[str, torch.Tensor], page: Page, classes: int):
    """True scores, false scores and missed copies of each class index on one page (step 2);
    scores rounded as detections.json writes them (what counting compares)."""
    positives = [[] for _ in range(classes)]
    negatives = [[] for _ in range(classes)]
    missed = [0] * classes
    for c in range(classes):
        mine = dets["labels"] == c
        scores, truth = dets["scores"][mine], truth_boxes(page, c)
        true = true_detections(dets["boxes"][mine], scores, truth)
        for i in scores.argsort(descending=True, stable=True).tolist():
            (positives if true[i] else negatives)[c].append(round(float(scores[i]), 5))
        missed[c] = truth.shape[0] - int(true.sum())
    return positives, negatives, missed


def require_pictures(ex: Exemplars) -> None:
    """Refuse exemplars without pictures (from an index) in one line: the sheet is made of them."""
    if not ex.crops:
        raise UserError("per-class count thresholds (--count-score per-class) need exemplars from images (a COCO "
                        "split or a folder of crops), not an index: the calibration sheet is made of their pictures")


def calibrate(net, ex: Exemplars, image_size: int, cfg: SpotConfig, objectness=None, seed: int = 0) -> Calibration:
    """Per-class count thresholds of exemplar set ``ex`` around ``cfg.count_score`` (module
    docstring), with the pipeline's own settings and ``objectness``; ``seed`` makes the sheet."""
    require_pictures(ex)
    start = time.perf_counter()
    pages = calibration_pages(ex.crops, seed, cfg.calibration_copies, cfg.template_turns)
    return calibrated(net, ex, image_size, cfg, objectness, pages, start)


def labelled_pages(drawings: list[Drawing], ex: Exemplars, skipped: list[tuple[str, str]]) -> Iterator[Page]:
    """Annotated drawings as calibration pages, decoded one at a time: their boxes of the
    exemplars' classes (boxes of other classes are left out: a detection there is false). An
    unreadable drawing is left out and listed in ``skipped`` (path, reason)."""
    index = {cat: k for k, cat in enumerate(ex.category_ids)}
    for d in drawings:
        try:
            rgb = np.asarray(open_drawing(d))
        except UserError as err:
            skipped.append((str(d.path), str(err)))
            continue
        mine = [(index[cat], box) for cat, box in d.truth or [] if cat in index]
        yield Page(rgb, [box for _, box in mine], [k for k, _ in mine])


def calibration_drawings(json_path: Path, exemplar_files: set[Path], count: int, seed: int) -> list[Drawing]:
    """Up to ``count`` annotated drawings of the exemplars' COCO split (seeded), none that an
    exemplar was cut from (there the class's copies look like the exemplar more than anywhere else)."""
    drawings = [d for d in list_drawings(json_path) if d.truth and d.path not in exemplar_files]
    random.Random(seed).shuffle(drawings)
    return drawings[:count]


def calibrate_on_drawings(net, ex: Exemplars, drawings: list[Drawing], image_size: int, cfg: SpotConfig,
                          objectness=None) -> Calibration:
    """Per-class count thresholds as :func:`calibrate` chooses them, from annotated drawings of
    the exemplars' own split (:func:`calibration_drawings`) instead of a sheet of the exemplars'
    copies: real sheets, with wires through symbols and neighbours beside them. Never the
    drawings being counted."""
    skipped: list[tuple[str, str]] = []
    found = calibrated(net, ex, image_size, cfg, objectness, labelled_pages(drawings, ex, skipped), time.perf_counter(),
                       fit_boxes=cfg.calibrate_boxes)
    unread = f" ({len(skipped)} unreadable, left out: {skipped[0][1]}{' ...' if len(skipped) > 1 else ''})" if skipped else ""
    return replace(found, pages=f"{len(drawings) - len(skipped)} annotated drawings of the exemplars' split{unread}")


def calibrated(net, ex: Exemplars, image_size: int, cfg: SpotConfig, objectness, pages: Iterable[Page],
               start: float, fit_boxes: bool = False) -> Calibration:
    """Steps 1-3 of the module docstring on ``pages`` (a class never on them keeps count_score);
    with ``fit_boxes``, each class's box scale first (:func:`choose_box_scale`), its detections
    then judged with the scaled boxes."""
    run_cfg = replace(cfg, class_count_scores={}, class_box_scales={})
    classes, names = len(ex.class_names), ex.class_names
    seen: list[tuple[dict[str, torch.Tensor], Page]] = []  # detections and truth of each page (no pixels)
    with torch.no_grad():
        for k, page in enumerate(pages):
            dets, _skipped, _note = spot_pixels(net, page.rgb, ex, image_size, run_cfg, objectness, f"calibration-{k}")
            seen.append(({key: dets[key] for key in ("boxes", "scores", "labels")}, Page(None, page.boxes, page.labels)))
    scales = {}
    if fit_boxes:
        for c, name in enumerate(names):
            scale = choose_box_scale([(d["boxes"][d["labels"] == c], d["scores"][d["labels"] == c],
                                       truth_boxes(p, c)) for d, p in seen], cfg.calibration_min_positives)
            if scale != 1.0:
                scales[name] = scale
    factors = box_scales(names, scales)
    positives = [[] for _ in range(classes)]
    negatives = [[] for _ in range(classes)]
    missed = [0] * classes
    per_page: list[list[tuple[list[float], int]]] = [[] for _ in range(classes)]  # (scores, copies) per page
    for dets, page in seen:
        scaled = dict(dets, boxes=scaled_boxes(dets["boxes"], factors[dets["labels"]]))
        pos, neg, miss = page_scores(scaled, page, classes)
        for c in range(classes):
            positives[c] += pos[c]
            negatives[c] += neg[c]
            missed[c] += miss[c]
            per_page[c].append((pos[c] + neg[c], sum(label == c for label in page.labels)))
    copies = {names[c]: sum(n for _, n in per_page[c]) for c in range(classes)}
    thresholds = {}
    for c, name in enumerate(names):
        if not copies[name]:
            continue  # no copy of this class on the pages (an unreadable exemplar): count_score
        if cfg.calibration_rule == "exact":
            t = exact_count_threshold(per_page[c], len(positives[c]), cfg.count_score, cfg.calibration_shift,
                                      cfg.calibration_min_positives)
        else:
            t = choose_threshold(positives[c], negatives[c], missed[c], cfg.count_score, cfg.calibration_shift,
                                 cfg.calibration_min_positives)
        if t != cfg.count_score:
            thresholds[name] = t
    pictured = [c for c in range(classes) if copies[names[c]]]
    return Calibration(cfg.count_score, thresholds, {names[c]: positives[c] for c in pictured},
                       {names[c]: negatives[c] for c in pictured}, {names[c]: missed[c] for c in pictured},
                       {names[c]: copies[names[c]] for c in pictured}, time.perf_counter() - start,
                       cfg.calibration_min_positives, box_scales=scales)


def truth_boxes(page: Page, c: int) -> torch.Tensor:
    """The page's boxes of class index ``c`` as (T, 4) x0, y0, x1, y1."""
    return torch.tensor([[x, y, x + w, y + h] for (x, y, w, h), label in zip(page.boxes, page.labels) if label == c],
                        dtype=torch.float32).reshape(-1, 4)


def scaled_boxes(boxes: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``boxes`` (K, 4) each scaled by its factor (K,) about its centre."""
    centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2 * factors.unsqueeze(1)
    return torch.cat([centre - half, centre + half], dim=1)


def true_detections(boxes: torch.Tensor, scores: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Which detections (K, in their order) match one of ``truth``'s boxes at IoU >= 0.5, taken
    by falling score, each true box matched once (as COCO matches)."""
    true = torch.zeros(boxes.shape[0], dtype=torch.bool)
    if not boxes.shape[0] or not truth.shape[0]:
        return true
    order = scores.argsort(descending=True, stable=True)
    taken = torch.zeros(truth.shape[0], dtype=torch.bool)
    for i, row in zip(order.tolist(), box_iou(boxes[order], truth)):
        free = row.masked_fill(taken, -1.0)
        if float(free.max()) >= MATCH_IOU:
            taken[int(free.argmax())] = true[i] = True
    return true


def matched(boxes: torch.Tensor, scores: torch.Tensor, truth: torch.Tensor) -> int:
    """How many of ``truth``'s boxes the detections match (:func:`true_detections`)."""
    return int(true_detections(boxes, scores, truth).sum())


def choose_box_scale(pages: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], min_positives: int) -> float:
    """A class's box scale from its detections and true boxes on annotated pages (boxes, scores,
    truth per page): the factor of ``BOX_SCALES`` under which its detections match the most true
    boxes; 1 when 1 does as well, or when fewer than ``min_positives`` boxes are matched at best
    (too little to go on); else the best nearest to 1."""
    found = {s: sum(matched(scaled_boxes(b, torch.full((b.shape[0],), s)), sc, t) for b, sc, t in pages)
             for s in BOX_SCALES}
    best = max(found.values())
    if best < min_positives or found[1.0] >= best:
        return 1.0
    return min((s for s, n in found.items() if n == best), key=lambda s: abs(s - 1.0))


def calibrate_for(net, ex: Exemplars, image_size: int, cfg: SpotConfig, objectness=None, seed: int = 0,
                  exemplar_json: Path | None = None, exemplar_files: Iterable[Path] | None = None,
                  shots: int = 1) -> Calibration:
    """Per-class thresholds from ``cfg.calibration_source``: "drawings", the annotated drawings
    of the exemplars' COCO split ``exemplar_json`` other than the exemplars' own
    (``exemplar_files``; None: those :func:`~symclr_ft.use.spot.pipeline.pick_coco_exemplars`
    picks with ``shots`` and ``seed``), through :func:`calibrate_on_drawings`; "sheet", the
    exemplars' altered copies (:func:`calibrate`); "auto", the drawings when there are any, else
    the sheet. "drawings" without such drawings is a one-line error."""
    source = cfg.calibration_source
    if source not in ("auto", "sheet", "drawings"):
        raise UserError(f"calibration_source {source!r}: use 'auto', 'sheet' or 'drawings'")
    drawings = []
    if source != "sheet" and exemplar_json is not None:
        if exemplar_files is None:
            exemplar_files = {p[2] for p in pick_coco_exemplars(exemplar_json, shots, seed)}
        drawings = calibration_drawings(exemplar_json, set(exemplar_files), cfg.calibration_drawings, seed)
    if drawings:
        return calibrate_on_drawings(net, ex, drawings, image_size, cfg, objectness)
    if source == "drawings":
        raise UserError(f"{exemplar_json or 'the exemplars'}: per-class count thresholds from drawings need exemplars "
                        "from a COCO split with annotated drawings besides the exemplars' own")
    return calibrate(net, ex, image_size, cfg, objectness, seed=seed)

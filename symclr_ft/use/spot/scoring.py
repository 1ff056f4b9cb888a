"""Scoring the candidates of one drawing: every class's evidence at each, the drawing's own
exemplars, the best class per candidate and NMS.

Evidence (:func:`class_evidence`) is what the exemplars say: feature similarity, template
correlation, feature-map correlation, objectness, combined by the rules chosen on valid.

**The drawing's own exemplars** (:func:`with_own_exemplars`, ``SpotConfig.own_exemplars``):
symbols on one sheet are copies of one CAD block, drawn and printed (or scanned, or thinned)
alike, while the exemplar comes from another sheet. So the best match of a class on the drawing,
once it scores ``own_exemplar_score`` or more, becomes a second exemplar of that class on that
drawing: its feature (already computed: it is a candidate) and its picture (correlated over the
drawing in its quarter turns, at scale 1). A candidate that looks like it inherits its score,
scaled by how alike they look: ``score(seed) * evidence(seed -> candidate)``. The product keeps
a weaker seed (a false match) from outranking a class's true one at the same symbols. Transductive
exemplar refinement of this kind is common in few-shot counting; here it is chosen on valid
(docs/RESULTS.md, issue 27).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING

import torch
from torchvision.ops import batched_nms, nms

from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.records import Candidates, Exemplars
from symclr_ft.use.spot.refine import refine_candidates
from symclr_ft.use.spot.template import exemplar_picture, make_templates, match_templates, same_place_suppression

if TYPE_CHECKING:
    import numpy as np


def class_evidence(cands: Candidates, ex: Exemplars, cfg: SpotConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Score of every class at every candidate (N, C) and the box size it implies (N, C, 2).

    Feature similarity (best exemplar of the class, any turn) weighed by P(symbol) **
    ``objectness_weight``, combined with the template correlation mapped to [0, 1] from
    ``template_floor`` up: ``score_rule`` "sum" takes ``(1 - t) * similarity + t * correlation``,
    "max" the larger of similarity and ``t * correlation`` (t = ``template_weight``; both chosen
    on the valid split by ``bench/spotting.py --tune``). The size is the best exemplar's, or, where
    the correlation counts, the best template's (its scale and turn). With feature matching
    (``feature_match``), its correlation mapped from ``feature_match_floor`` up is combined with
    that score in the same way (weight ``feature_match_weight``), and its box size is used where
    it counts and the template's does not."""
    sim, best = class_similarity(cands, ex)
    sizes = ex.sizes[best.clamp(min=0)]
    score = sim.clamp(min=0) * cands.objectness.clamp(min=0).unsqueeze(1) ** cfg.objectness_weight
    use_template = torch.zeros_like(score, dtype=torch.bool)
    if cands.correlation is not None and cfg.template_weight > 0:
        corr = evidence(cands.correlation, cfg.template_floor)
        score = combined(score, corr, cfg.template_weight, cfg.score_rule)
        use_template = corr > 0
        sizes = torch.where(use_template.unsqueeze(-1), cands.template_sizes, sizes)
    if cands.feature_correlation is not None and cfg.feature_match_weight > 0:
        corr = evidence(cands.feature_correlation, cfg.feature_match_floor)
        score = combined(score, corr, cfg.feature_match_weight, cfg.score_rule)
        sizes = torch.where(((corr > 0) & ~use_template).unsqueeze(-1), cands.feature_sizes, sizes)
    return score, sizes


def class_similarity(cands: Candidates, ex: Exemplars) -> tuple[torch.Tensor, torch.Tensor]:
    """Each candidate's cosine similarity to every class (N, C): its best exemplar of the class
    in any turn (-1 for a class without exemplars), and that exemplar's index (N, C; -1 none)."""
    n, classes = cands.boxes.shape[0], len(ex.class_names)
    sims = cands.features @ ex.features.T  # (N, E)
    sim = torch.full((n, classes), -1.0)
    sim = sim.scatter_reduce(1, ex.labels.expand(n, -1), sims, reduce="amax")
    best = torch.full((n, classes), -1, dtype=torch.long)
    for e in range(ex.labels.shape[0]):  # the exemplar behind each class's similarity
        best[:, ex.labels[e]] = torch.where(sims[:, e] >= sim[:, ex.labels[e]], e, best[:, ex.labels[e]])
    return sim, best


def evidence(correlation: torch.Tensor, floor: float) -> torch.Tensor:
    """A correlation as evidence in [0, 1]: none at or below ``floor`` (``template_floor``,
    ``feature_match_floor``), linear above."""
    return ((correlation - floor) / (1 - floor)).clamp(0, 1)


def combined(score: torch.Tensor, corr: torch.Tensor, weight: float, rule: str) -> torch.Tensor:
    """``score`` and a correlation in [0, 1] by ``score_rule``: "sum" (1 - w) score + w corr,
    "max" the larger of score and w corr."""
    if rule == "max":
        return torch.maximum(score, weight * corr)
    return (1 - weight) * score + weight * corr


def box_scales(class_names: list[str], scales: dict[str, float]) -> torch.Tensor:
    """The factor on each class's box size (C,): ``scales[name]`` where given, else 1."""
    return torch.tensor([float(scales.get(name, 1.0)) for name in class_names])


def own_exemplar_seeds(per_class: torch.Tensor, threshold: float) -> dict[int, int]:
    """Class index -> the candidate that is that class's best match on the drawing (its best
    class is that class) and scores at least ``threshold``."""
    if per_class.shape[0] == 0:
        return {}
    scores, labels = per_class.max(dim=1)
    seeds = {}
    for c in torch.unique(labels[scores >= threshold]).tolist():
        mine = torch.where(labels == c, scores, torch.full_like(scores, -2.0))
        seeds[c] = int(mine.argmax())
    return seeds


def with_own_exemplars(rgb: np.ndarray, cands: Candidates, per_class: torch.Tensor, sizes: torch.Tensor,
                       cfg: SpotConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` and ``sizes`` (:func:`class_evidence`) raised by the drawing's own
    exemplars (the module's docstring): each candidate's score for a class becomes at least
    ``seed score * (similarity and template correlation to the seed, combined as for any
    exemplar)``, with the size of the seed's template where that wins."""
    seeds = own_exemplar_seeds(per_class, cfg.own_exemplar_score)
    if not seeds:
        return per_class, sizes
    n, classes = per_class.shape
    pictures, seed_of = [], torch.full((classes,), -1, dtype=torch.long)
    for c, i in seeds.items():
        seed_of[c] = i
        (cx, cy), (w, h) = ((cands.boxes[i, :2] + cands.boxes[i, 2:]) / 2).tolist(), sizes[i, c].tolist()
        pictures.append((c, exemplar_picture(rgb, [cx - w / 2, cy - h / 2, w, h], cfg.crop_padding)))
    seeded = seed_of >= 0
    sim = torch.where(seeded, cands.features @ cands.features[seed_of.clamp(min=0)].T, torch.zeros(()))
    likeness, own_sizes = sim.clamp(min=0), sizes[seed_of.clamp(min=0), torch.arange(classes)].expand(n, -1, -1)
    if cfg.templates and cfg.template_weight > 0:
        at_scale_one = replace(cfg, template_scales=(1.0,))
        ev = match_templates(rgb, make_templates(pictures, classes, at_scale_one), cands.boxes, at_scale_one)
        corr = evidence(ev.correlation, cfg.template_floor)
        likeness = combined(likeness, corr, cfg.template_weight, cfg.score_rule)
        own_sizes = torch.where((corr > 0).unsqueeze(-1), ev.sizes, own_sizes)
    inherited = torch.where(seeded, per_class[seed_of.clamp(min=0), torch.arange(classes)] * likeness, -1.0)
    wins = inherited > per_class
    return torch.where(wins, inherited, per_class), torch.where(wins.unsqueeze(-1), own_sizes, sizes)


def best_boxes(boxes: torch.Tensor, per_class: torch.Tensor, sizes: torch.Tensor, class_names: list[str],
               cfg: SpotConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each candidate's best class, its score and its box: the class's size (times its
    ``class_box_scales`` factor, from per-class calibration) centred on the candidate with
    ``box_mode`` "exemplar", else the candidate's own box."""
    if cfg.class_box_scales:
        sizes = sizes * box_scales(class_names, cfg.class_box_scales).view(1, -1, 1)
    scores, labels = per_class.max(dim=1)
    if cfg.box_mode == "exemplar":
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = sizes[torch.arange(labels.shape[0]), labels] / 2
        boxes = torch.cat([centre - half, centre + half], dim=1)
    else:
        boxes = boxes.clone()
    return boxes, scores, labels


def survivors(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, cfg: SpotConfig) -> torch.Tensor:
    """Indices of the detections kept: ``min_score`` or more, then NMS (class-agnostic with
    :func:`same_place_suppression`, or per class), best first."""
    keep = torch.nonzero(scores >= cfg.min_score).flatten()
    if cfg.class_agnostic_nms:
        kept = nms(boxes[keep], scores[keep], cfg.nms_iou)
        kept = kept[same_place_suppression(boxes[keep][kept], scores[keep][kept])]  # one symbol, two scales
    else:
        kept = batched_nms(boxes[keep], scores[keep], labels[keep], cfg.nms_iou)
    return keep[kept]


def taken(cands: Candidates, index: torch.Tensor) -> Candidates:
    """The candidates at ``index``, every field alike."""
    values = {f.name: getattr(cands, f.name) for f in fields(cands)}
    return Candidates(**{name: None if v is None else v[index] for name, v in values.items()})


def score_candidates(cands: Candidates, ex: Exemplars, cfg: SpotConfig, rgb: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Best class per candidate and its box (:func:`best_boxes`), then NMS (:func:`survivors`):
    ``{"boxes", "scores", "labels"}``, and ``"best_score"``: the highest score seen at all (-1
    without candidates). With the drawing's pixels ``rgb``, ``own_exemplars`` lets the drawing's
    own exemplars raise the scores first (:func:`with_own_exemplars`), and ``template_refine``
    checks the best classes of the detections that NMS kept with ``template_refine_from`` or
    more again with finer templates (``refine.py``), scores them anew from the exemplars'
    evidence (the drawing's own exemplars play no part there), and runs NMS on them and the rest
    again (the candidates NMS dropped, and the weakest detections, are not worth the fine
    correlations)."""
    empty = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long),
             "best_score": torch.tensor(-1.0)}
    if cands.boxes.shape[0] == 0 or ex.features.shape[0] == 0:
        return empty
    per_class, sizes = class_evidence(cands, ex, cfg)
    if rgb is not None and cfg.own_exemplars:
        per_class, sizes = with_own_exemplars(rgb, cands, per_class, sizes, cfg)
    boxes, scores, labels = best_boxes(cands.boxes, per_class, sizes, ex.class_names, cfg)
    best_score = scores.max()
    kept = survivors(boxes, scores, labels, cfg)
    if rgb is not None and cfg.template_refine and ex.templates is not None and cfg.template_weight > 0:
        high, low = kept[scores[kept] >= cfg.template_refine_from], kept[scores[kept] < cfg.template_refine_from]
        subset = refine_candidates(rgb, taken(cands, high), per_class[high], ex.templates.pictures, cfg)
        refined = best_boxes(subset.boxes, *class_evidence(subset, ex, cfg), ex.class_names, cfg)
        boxes, scores, labels = (torch.cat([new, old[low]]) for new, old in zip(refined, (boxes, scores, labels)))
        kept = survivors(boxes, scores, labels, cfg)
    return {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept], "best_score": best_score}

"""The "unknown" answer of symclr-predict: the score it compares, and a threshold chosen from
the support alone.

A query is labelled by its nearest support crops (:func:`symclr_ft.use.predict.classify`); whether
that label is given or the query is called unknown depends on a *score*: its best similarity
to a class's mean of support crops **and their augmented views** (:func:`view_scores`). The
views (random crops of 30-100% of the area, flips, blur: :func:`augmented_views`) stand in for
other drawings of the same symbol, which a one- or few-shot support lacks, and their mean is a
steadier picture of the class than one crop; a symbol the model never saw rarely comes as
close to it as a redrawn known one. Chosen on the valid splits' held-out class folds over the
plain nearest-crop similarity and other scores (the closest view, energy, class-normalised,
margin; bench/open_set.py, docs/RESULTS.md). The label itself is the classification rule's
(nearest crops, or class means with ``--prototypes``): views never change an answer, only
whether it is given.

``--reject auto`` (:func:`auto_threshold`) needs no labelled query. Each support crop is held
out in turn and scored, as a query would be, against the rest of its class and their views
(leave-one-out); a crop alone in its
class is scored by its views against the crop itself (never against its sibling views, which
come from the same drawing and would flatter it). The threshold accepts ``tpr`` (95%) of these
known-class scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from symclr_ft.errors import UserError

VIEWS_PER_CROP = 8
# Crops of 30-100% of the area, flips, blur. Chosen on the valid classes (bench/open_set.py,
# docs/RESULTS.md): milder views (60-100%, no blur) are so close to their crop that the
# threshold rejected a fifth of the known queries.
VIEW_SCALE_MIN = 0.3
VIEW_BLUR = True
# Crops turned into views per call: the views of a crop depend only on its position in the
# support (chunk and seed), so an index's stored views equal the ones predict would make.
VIEW_CHUNK = 32


def augmented_views(images: torch.Tensor, count: int, seed: int = 0,
                    scale_min: float = VIEW_SCALE_MIN, blur: bool = VIEW_BLUR) -> torch.Tensor:
    """``count`` augmented views of each uint8 crop: (N * count, 3, S, S) uint8, crop-major.
    Random crops of ``scale_min``-100% of the area (aspect 3/4..4/3), flips, and with ``blur``
    a Gaussian blur (sigma 0.1-2 px, like thicker or scanned lines); no colour changes (the
    drawings are black on white)."""
    from symclr_ft.config import ViewsConfig
    from symclr_ft.data.views import apply_views, sample_view_params

    cfg = ViewsConfig(preset="simclr", crop_scale_min=scale_min, color_jitter_p=0.0,
                      grayscale_p=0.0, blur=blur)
    repeated = images.repeat_interleave(count, dim=0)
    params = sample_view_params(cfg, len(repeated), torch.Generator().manual_seed(seed))
    return apply_views(repeated, params).mul_(255).round_().to(torch.uint8)


def loo_scores(features: torch.Tensor, labels: torch.Tensor, prototypes: bool = False,
               views: torch.Tensor | None = None):
    """Leave-one-out scores: for each crop whose class has at least two, its score against the
    rest of its class, the way a query is scored: with ``views`` (N, V, D), its similarity to
    the mean of the other crops of its class and their views (:func:`view_scores`); else to the
    best other crop, or the class mean without it (``prototypes``). For every crop, its best
    score against any other class (what an unknown symbol might score). (own, other)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    has_peer = (same & ~eye).any(dim=1)
    if prototypes or views is not None:
        parts = _class_mean_parts(features, views)
        one_hot = torch.nn.functional.one_hot(labels).to(features.dtype)
        sums = one_hot.T @ parts  # (C, D)
        own_mean = torch.nn.functional.normalize(sums[labels] - parts, dim=-1)
        own = (features * own_mean).sum(dim=1)
        protos = torch.nn.functional.normalize(sums, dim=-1)
        scores = (features @ protos.T).scatter(1, labels[:, None], float("-inf"))
        other = scores.max(dim=1).values
    else:
        sim = features @ features.T
        own = sim.masked_fill(~same | eye, float("-inf")).max(dim=1).values
        other = sim.masked_fill(same, float("-inf")).max(dim=1).values
    return own[has_peer], other


def auto_threshold(features: torch.Tensor, labels: torch.Tensor, tpr: float = 0.95,
                   view_features: torch.Tensor | None = None,
                   prototypes: bool = False, option: str = "--reject auto") -> tuple[float, str]:
    """A similarity threshold from labelled support features alone: the ``1 - tpr`` quantile
    of the known-class scores, so that ``tpr`` of them would be accepted. Known-class scores
    are leave-one-out scores (:func:`loo_scores`; with ``view_features`` (N, V, D) for every
    crop, those of the view score :func:`view_scores`) and, for crops alone in their class, the
    similarity of their views to the crop itself. Returns the threshold and a sentence saying
    how it was chosen. ``option`` is what the user asked for it with, for the messages
    (symclr-spot's is ``--count-score auto``)."""
    labels = labels.cpu()
    if len(torch.unique(labels)) < 2:
        raise UserError(f"{option}: needs examples of at least two classes")
    views = None if view_features is None else view_features.cpu()
    own, other = loo_scores(features.cpu(), labels, prototypes, views)
    parts, how = [own], [f"{own.numel()} leave-one-out scores"] if own.numel() else []
    counts = torch.bincount(labels)
    alone = counts[labels] == 1
    if bool(alone.any()) and view_features is None:
        if not own.numel():
            raise UserError(f"{option}: every class has one example; that needs augmented "
                            "views of the examples (give the support as images, not an index)")
        how.append(f"{int(alone.sum())} one-example classes left out (no views)")
    elif bool(alone.any()):
        views = view_features.cpu()[alone]  # (A, V, D)
        parts.append((views * features.cpu()[alone][:, None, :]).sum(dim=-1).flatten())
        how.append(f"{int(alone.sum())} one-example classes x {views.shape[1]} augmented views")
    positives = torch.cat(parts).double()
    threshold = float(torch.quantile(positives, 1.0 - tpr))
    accepted = float((other >= threshold).double().mean()) if other.numel() else float("nan")
    sentence = (
        f"threshold {threshold:.4f}: {100 * tpr:.0f}% of the support's own-class similarities "
        f"({' + '.join(how)}) are at or above it"
    )
    if other.numel():
        sentence += f"; {100 * accepted:.1f}% of their best other-class similarities are too"
    return threshold, sentence


def view_features(embed: Callable[[torch.Tensor], torch.Tensor], crops: Iterable[torch.Tensor],
                  count: int, seed: int = 0) -> torch.Tensor:
    """(N, count, D) features of ``count`` augmented views of each uint8 crop of ``crops`` (in
    order), made and embedded ``VIEW_CHUNK`` crops at a time so that only one chunk of pixels
    is held; ``embed`` maps uint8 views (M, 3, S, S) to features (M, D). Chunk k uses seed
    ``seed + k``."""
    parts, chunk = [], []

    def flush():
        views = augmented_views(torch.stack(chunk), count, seed + len(parts))
        parts.append(embed(views).view(len(chunk), count, -1))
        chunk.clear()

    for crop in crops:
        chunk.append(crop)
        if len(chunk) == VIEW_CHUNK:
            flush()
    if chunk:
        flush()
    if not parts:
        raise UserError("no crops to make augmented views of")
    return torch.cat(parts)


def _class_mean_parts(features: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
    """Each crop's part of its class mean: itself, and with ``views`` (N, V, D) its views too."""
    return features if views is None else features + views.to(features.dtype).sum(dim=1)


def view_prototypes(features: torch.Tensor, labels: torch.Tensor, views: torch.Tensor,
                    num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) L2-normalised mean of each class's support crops and all their augmented
    ``views`` (N, V, D), and (C,) which classes have any."""
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype)
    sums.index_add_(0, labels.cpu(), _class_mean_parts(features.cpu(), views.cpu()))
    present = torch.bincount(labels.cpu(), minlength=num_classes) > 0
    return torch.nn.functional.normalize(sums, dim=-1), present


def view_scores(queries: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The score ``--reject`` compares, per query: its best cosine similarity to a class's mean
    of support crops and views (:func:`view_prototypes`)."""
    sim = queries @ prototypes.to(queries.dtype).T
    return sim.masked_fill(~present, float("-inf")).max(dim=1).values

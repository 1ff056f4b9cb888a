"""Label crops from a few examples of each symbol: :class:`SymbolIndex`.

A symbol index is a feature index (:mod:`symclr_ft.use.index`: safetensors + JSON, no pickle)
of labelled example crops, the *support*, together with the model that embedded them. It
answers each query crop with the class of its most similar examples (k-NN, or the nearest
class mean), or ``"unknown"`` when its score is below a threshold: the rules of
``symclr-predict``, which classifies through the same :func:`classify` and chooses the same
threshold (:mod:`symclr_ft.use.rejection`). Beside the label it gives the similarity to every
class, for the runner-up or a review queue. Example::

    from symclr_ft import SymbolIndex, load_model

    model = load_model("runs/demo_cpu/model.pt")
    index = SymbolIndex.from_folder(model, "my_symbols/")     # one subfolder of crops per class
    index.add("new-valve", ["valve1.png", "valve2.png"])     # a class more, no training
    result = index.predict(["query.png"], reject="auto")
    result.labels[0], result.scores[0], result.top(3)[0]     # 'pump' or 'unknown', ...
    index.save("runs/my_index")                               # SymbolIndex.load(path, model)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from symclr_ft.data.crops import CropSource, coco_source, folder_source
from symclr_ft.errors import UserError
from symclr_ft.eval.knn import class_prototypes, class_similarity, draw_supports, knn_vote
from symclr_ft.use.embedder import (
    Embedder, ImageLike, Model, as_list, crop_pixels, embed_source, embed_views,
)
from symclr_ft.use.index import FeatureIndex, load_index, save_index
from symclr_ft.use.rejection import (
    VIEW_CHUNK, VIEWS_PER_CROP, auto_threshold, view_features, view_prototypes, view_scores,
)

__all__ = ["Prediction", "SymbolIndex", "Support", "UNKNOWN", "classify", "shots_per_class"]

UNKNOWN = "unknown"


# --------------------------------------------------------------------------- classification


@dataclass
class Support:
    features: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    k: int = 1
    prototypes: bool = False
    views: torch.Tensor | None = None  # (N, V, D) augmented views of each crop: the unknown score

    def __post_init__(self):
        if self.prototypes:
            self.protos, self.present = class_prototypes(
                self.features, self.labels, len(self.class_names)
            )
        if self.views is not None:
            self.view_protos, self.view_present = view_prototypes(
                self.features, self.labels, self.views, len(self.class_names)
            )

    def scores(self, queries: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """What --reject compares: :func:`~symclr_ft.use.rejection.view_scores` with views, else
        the predicted class's similarity ``best``."""
        if self.views is None:
            return best
        return view_scores(queries, self.view_protos, self.view_present)


def class_scores(support: Support, queries: torch.Tensor) -> torch.Tensor:
    """(Q, C) similarity of each query to each class: that of the class's most similar support
    crop, or of its mean with ``prototypes``; -inf for a class without support crops."""
    if support.prototypes:
        return (queries @ support.protos.T).masked_fill(~support.present, float("-inf"))
    return class_similarity(queries @ support.features.T, support.labels, len(support.class_names))


def classify(support: Support, queries: torch.Tensor):
    """(predicted class, its similarity, runner-up class, its similarity) for each query.

    The similarity of a class is that of its most similar support crop (or of its mean with
    ``prototypes``); the prediction is the best class, or the k-NN vote when k > 1."""
    scores = class_scores(support, queries)
    pred = scores.argmax(dim=1)
    if support.k > 1 and not support.prototypes:
        sim = queries @ support.features.T
        nearest = sim.topk(min(support.k, sim.shape[1]), dim=1).indices
        pred = knn_vote(support.labels[nearest], len(support.class_names))
    best = scores.gather(1, pred[:, None]).squeeze(1)
    rest = scores.scatter(1, pred[:, None], float("-inf"))
    runner_sim, runner = rest.max(dim=1)
    return pred, best, runner, runner_sim


def shots_per_class(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Indices of at most ``shots`` support crops per class, drawn with ``seed``."""
    return draw_supports(labels, shots, 1, torch.Generator().manual_seed(seed))[0].sort().values


def choose_shots(source: CropSource, shots: int, seed: int) -> CropSource:
    """At most ``shots`` crops per class of a labelled source, drawn from the labels first so
    that only the chosen crops are ever decoded."""
    crops = list(source.crops)
    labels = torch.tensor([c.label for c in crops], dtype=torch.int64)
    rows = shots_per_class(labels, shots, seed).tolist()
    return CropSource(source.class_names, [crops[i] for i in rows], True, source.description)


def source_text(source: dict) -> str:
    """``file`` as is, ``image#x,y,w,h`` for a box of a drawing, ``added #n`` for a crop given
    to :meth:`SymbolIndex.add` in memory."""
    if "file" in source:
        return str(source["file"])
    if "added" in source:
        return f"added #{source['added']}"
    bbox = ",".join(f"{v:g}" for v in source.get("bbox") or [])
    return f"{source.get('image')}#{bbox}"


# --------------------------------------------------------------------------- the API


@dataclass
class Prediction:
    """What :meth:`SymbolIndex.predict` answers for N query crops.

    ``labels``: the class name, or ``"unknown"`` when ``scores`` is below ``threshold``;
    ``predicted``: the class index before rejection; ``scores`` (N,): what the threshold is
    compared with (the similarity to the best class's mean of examples and their augmented
    views when the index has views, else ``similarities`` of the predicted class);
    ``similarities`` (N, C): cosine similarity to every class of ``class_names`` (its most
    similar example, or its mean with ``prototypes``); ``how``: how the threshold was chosen."""

    labels: list[str]
    predicted: torch.Tensor
    scores: torch.Tensor
    similarities: torch.Tensor
    class_names: list[str]
    threshold: float | None = None
    how: str = ""

    def top(self, n: int = 3) -> list[list[tuple[str, float]]]:
        """The ``n`` most similar classes of each query, best first: [(name, similarity)]."""
        sims, idx = self.similarities.topk(min(n, self.similarities.shape[1]), dim=1)
        return [[(self.class_names[c], float(s)) for c, s in zip(row_i.tolist(), row_s.tolist())
                 if s > float("-inf")] for row_i, row_s in zip(idx, sims)]


@dataclass(eq=False)
class SymbolIndex:
    """Labelled example crops embedded with a model: build, extend, save, load, predict.

    ``skipped`` lists the crops that could not be read when it was built, as (source, reason).
    Build one with :meth:`from_folder` or :meth:`from_coco`, or read one written by
    :meth:`save` or ``symclr-embed`` with :meth:`load`."""

    index: FeatureIndex
    model: Model | None = None
    skipped: list = field(default_factory=list)
    seed: int = 0

    def __post_init__(self):
        self._thresholds: dict = {}
        if self.model is not None and self.model.sha256 != self.index.model_sha256:
            raise UserError(f"the index was made with model sha256 {self.index.model_sha256[:16]}, "
                            f"not {self.model.sha256[:16]} ({self.model.path}); embed it again")

    @property
    def class_names(self) -> list[str]:
        return list(self.index.class_names)

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def from_folder(cls, model: Model, folder: str | Path, views: int = VIEWS_PER_CROP,
                    seed: int = 0, batch_size: int = 64) -> "SymbolIndex":
        """Every image of ``folder/<class>/``, labelled by its subfolder. ``views`` augmented
        views of each crop are embedded too (the unknown score, :mod:`~symclr_ft.use.rejection`);
        0 leaves them out (``reject`` then compares the plain similarity)."""
        source = folder_source(folder, model.image_size)
        if not source.labelled:
            raise UserError(f"{folder}: needs one subfolder of example crops per class")
        return cls._embedded(model, source, folder, None, views, seed, batch_size)

    @classmethod
    def from_coco(cls, model: Model, path: str | Path, shots: int | None = None,
                  split: str | None = None, views: int = VIEWS_PER_CROP, seed: int = 0,
                  batch_size: int = 64) -> "SymbolIndex":
        """Every box of a COCO export, split folder or json (cut as make-shards cuts it), or
        at most ``shots`` per class drawn with ``seed``; ``split`` picks one of an export's."""
        source = coco_source(path, model.image_size, split)
        if shots:
            source = choose_shots(source, shots, seed)
        return cls._embedded(model, source, path, split, views, seed, batch_size)

    @classmethod
    def _embedded(cls, model: Model, source: CropSource, path, split, views: int, seed: int,
                  batch_size: int) -> "SymbolIndex":
        embedder = Embedder(model, batch_size)
        index, skipped = embed_source(embedder.accelerator, model, source, batch_size, "support")
        if views:
            index.views = embed_views(embedder.accelerator, model, path, split, index.sources,
                                      seed, batch_size, views)
        return cls(index, model, skipped, seed)

    @classmethod
    def load(cls, path: str | Path, model: Model | None = None) -> "SymbolIndex":
        """An index folder (:meth:`save` or ``symclr-embed``). Without ``model`` it can be
        inspected and saved, not extended or asked; with one made by another model file it is
        refused."""
        index = load_index(path, expect_sha256=model.sha256 if model is not None else None)
        return cls(index, model)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the index folder, as ``symclr-embed`` does: a new or empty folder, or an index
        written before (replaced only when complete); another folder only with ``overwrite``,
        and then only the index's own files in it are replaced."""
        return save_index(self.index, path, overwrite)

    def _embedder(self) -> Embedder:
        if self.model is None:
            raise UserError("this index was loaded without a model: SymbolIndex.load(path, model)")
        return Embedder(self.model)

    def add(self, label: str, images: ImageLike | Sequence[ImageLike]) -> None:
        """Add example crops of class ``label`` (a new class or one it has)."""
        embedder, items = self._embedder(), as_list(images)
        feats = embedder.embed(items)
        names = self.class_names
        if label not in names:
            names.append(label)
        start = len(self)
        sources = [{"file": str(x)} if isinstance(x, (str, Path)) else {"added": start + i}
                   for i, x in enumerate(items)]
        old = self.index
        views = old.views
        if views is not None:  # the added crops' views, seeded by where they sit in the index
            crops = (crop_pixels(x, self.model.image_size) for x in items)
            new = view_features(embedder.embed_pixels, crops, views.shape[1],
                                self.seed + start // VIEW_CHUNK)
            views = torch.cat([views, new])
        self.index = FeatureIndex(
            torch.cat([old.features, feats]),
            torch.cat([old.labels, torch.full((len(items),), names.index(label))]),
            names, old.sources + sources, old.model_sha256, old.image_size, old.input_norm,
            old.precision, views,
        )
        self._thresholds.clear()

    def threshold(self, reject, tpr: float = 0.95, prototypes: bool = False) -> tuple[float | None, str]:
        """(threshold or None, how it was chosen) for ``reject``: None or "none" (every query
        gets a class), a similarity in [-1, 1], or "auto" (chosen from the examples alone,
        accepting ``tpr`` of them: :func:`~symclr_ft.use.rejection.auto_threshold`)."""
        if reject is None or reject == "none":
            return None, "no rejection: every query gets a class"
        if reject == "auto":
            key = (tpr, prototypes)
            if key not in self._thresholds:
                labelled = self.index.labels >= 0
                views = None if self.index.views is None else self.index.views[labelled]
                self._thresholds[key] = auto_threshold(
                    self.index.features[labelled], self.index.labels[labelled], tpr, views,
                    prototypes)
            return self._thresholds[key]
        if isinstance(reject, (int, float)) and not isinstance(reject, bool) and -1 <= reject <= 1:
            return float(reject), f"threshold {float(reject):.4f} given"
        raise UserError(f"reject={reject!r}: expected None, 'auto' or a similarity in [-1, 1]")

    def predict(self, images: ImageLike | Sequence[ImageLike], k: int = 1, reject="auto",
                prototypes: bool = False, tpr: float = 0.95) -> Prediction:
        """Label query crops: the class of the most similar example (``k`` > 1: the vote of
        the ``k`` nearest; ``prototypes``: the nearest class mean), or ``"unknown"`` when the
        score is below the ``reject`` threshold (see :meth:`threshold`)."""
        if k < 1:
            raise UserError(f"k={k}: must be at least 1")
        queries = self._embedder().embed(images)
        labelled = self.index.labels >= 0
        if not bool(labelled.any()):
            raise UserError("the index has no labelled examples")
        views = None if self.index.views is None else self.index.views[labelled]
        support = Support(self.index.features[labelled], self.index.labels[labelled],
                          self.class_names, k, prototypes,
                          None if reject is None or reject == "none" else views)
        threshold, how = self.threshold(reject, tpr, prototypes)
        pred, best, _, _ = classify(support, queries)
        scores = support.scores(queries, best)
        names = [UNKNOWN if threshold is not None and float(s) < threshold
                 else self.class_names[int(p)] for p, s in zip(pred, scores)]
        return Prediction(names, pred, scores, class_scores(support, queries), self.class_names,
                          threshold, how)

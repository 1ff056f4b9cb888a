"""Few-shot evaluation of embedded crops: the seed's protocols, in four steps.

The seed's definitions, kept exactly (features are the backbone output before the projection
head, L2-normalised, compared by cosine similarity; the support set is the train split, the
queries are every crop of the evaluated split): ``one_shot`` (one random train crop per class,
1-NN), ``five_shot`` (five per class, 3-NN vote), ``full_knn`` (every train crop, 5-NN vote);
the k-NN rules are in :mod:`symclr_ft.eval.knn`, the summaries in :mod:`symclr_ft.eval.metrics`.

Evaluation runs in four steps, each a function: embed (:func:`embed_feature_sets`), exclude
queries whose class has no support crop (:func:`queries_with_support`, they cannot be
classified: counted in ``queries_without_support`` and named in one warning), predict every
protocol on the same seeded episodes (:func:`predict_protocols`) and summarise
(:func:`summarise`). Options are reported NEXT TO the seed's numbers under their own names:
``_tta`` (features averaged over the four rotations by 90 degrees), ``_centered`` (SimpleShot)
and ``five_shot_proto`` (5-shot by the nearest class mean). Training and ``symclr-evaluate``
(:mod:`symclr_ft.eval.evaluate`) both call :func:`evaluate_model` / :func:`evaluate_features`.
Example::

    metrics = evaluate_model(accelerator, net, train_set, valid_set, cfg.eval, names, None)
    print(summary_line(metrics))  # 1-shot 91.2±0.8%  5-shot 95.0±0.4%  full 97.0% (valid, ...)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from symclr_ft.config import EvalConfig
from symclr_ft.errors import UserError
from symclr_ft.eval.embedding import embed_images
from symclr_ft.eval.knn import FEW_SHOT, centre, draw_supports, protocol_predictions
from symclr_ft.eval.metrics import (
    SEED_METRICS,
    confusion,
    confusion_pairs,
    episodic_summary,
    full_summary,
    per_class_accuracy,
    per_class_accuracy_of_pairs,
    summary_line,
)

__all__ = ["Labelled", "evaluate_features", "evaluate_model", "summary_line"]


def embed_feature_sets(accelerator, net, support_images, query_images, cfg: EvalConfig,
                       counts: tuple = (None, None)) -> dict:
    """Step 1: suffix -> (support, query) features: "" always, "_tta" and "_centered"
    variants when asked. ``*_images``: zero-argument functions returning a fresh iterable of
    crops (a stream can be read only once, TTA reads it twice); ``counts``: their lengths
    when known."""
    sets = {}
    for suffix, tta in (("", False), ("_tta", True)):
        if tta and not cfg.tta_rot90:
            continue
        sets[suffix] = tuple(
            embed_images(accelerator, net, images(), cfg.batch_size, tta, count)
            for images, count in ((support_images, counts[0]), (query_images, counts[1]))
        )
    if cfg.centering:
        for suffix in list(sets):
            sets[suffix + "_centered"] = centre(*sets[suffix])
    return sets


def queries_with_support(
    support_labels: torch.Tensor, query_labels: torch.Tensor, class_names, split_name: str,
    warn: bool = True,
) -> torch.Tensor:
    """Step 2: which queries can be classified (their class has a support crop); the others
    are named in one warning on stderr. None at all is an error."""
    num_classes = len(class_names)
    has_support = torch.bincount(support_labels, minlength=num_classes) > 0
    keep = has_support[query_labels]
    excluded = int((~keep).sum())
    if excluded and warn:
        missing = torch.bincount(query_labels[~keep], minlength=num_classes)
        names = ", ".join(f"{class_names[i]} ({int(missing[i])})" for i in missing.nonzero()[:, 0])
        print(
            f"warning: {split_name}: {excluded} queries excluded, no train crops for "
            f"class(es) {names}",
            file=sys.stderr,
        )
    if not bool(keep.any()):
        raise UserError(f"{split_name}: no query belongs to a class with train crops")
    return keep


def predict_protocols(feature_sets: dict, support_labels, keep, cfg: EvalConfig, num_classes: int):
    """Step 3: name -> predictions (E, Q) of every protocol on every feature set, all on the
    same seeded episodes (a paired comparison of the options)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    try:
        episode_supports = {
            name: draw_supports(support_labels, shots, cfg.episodes, generator)
            for name, (shots, _) in FEW_SHOT.items()
        }
        preds: dict[str, torch.Tensor] = {}
        for suffix, (s_feats, q_feats) in feature_sets.items():
            preds.update(protocol_predictions(
                s_feats, support_labels.to(s_feats.device), q_feats[keep.to(q_feats.device)],
                episode_supports, num_classes, cfg.prototypes, suffix,
            ))
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "memory" not in str(err).lower():
            raise
        raise UserError(
            f"eval.episodes={cfg.episodes}: not enough memory for that many episodes of "
            f"{len(support_labels)} support crops; use fewer"
        ) from None
    return preds


def summarise(preds: dict, targets: torch.Tensor, num_classes: int) -> dict:
    """Step 4: the summary block of every protocol (Wilson interval for full k-NN)."""
    return {
        name: (full_summary if name.startswith("full_knn") else episodic_summary)(
            p, targets, num_classes
        )
        for name, p in preds.items()
    }


PROTOCOLS = {
    "one_shot": "1 random train crop per class, 1-NN, cosine",
    "five_shot": "5 random train crops per class, 3-NN vote, cosine",
    "full_knn": "all train crops, 5-NN vote, cosine",
    "ties": "class of the nearest neighbour among the tied classes",
}


@dataclass
class Labelled:
    """Labels and keys of a support or query set (the pixels are streamed separately)."""

    labels: torch.Tensor
    keys: list[str]


def check_inputs(support: Labelled, queries: Labelled, class_names) -> None:
    c = len(class_names)
    for what, crops in (("support", support), ("queries", queries)):
        if len(crops.labels) == 0:
            raise UserError(f"{what}: no crops to evaluate")
        lo, hi = int(crops.labels.min()), int(crops.labels.max())
        if lo < 0 or hi >= c:
            raise UserError(f"{what}: class index {hi if hi >= c else lo} outside 0..{c - 1}")
    shared = set(support.keys) & set(queries.keys)
    if shared:
        raise UserError(
            f"{sorted(shared)[0]}: {len(shared)} crop(s) are both support and query; "
            "evaluate a split other than the support split"
        )


def evaluate_features(
    accelerator, feature_sets: dict, support: Labelled, queries: Labelled, cfg: EvalConfig,
    class_names: list[str], out_dir: Path | None, split_name: str, image_size: int,
) -> dict:
    """Steps 2 to 4 on embedded sets, plus the run facts and the detail files: the metrics
    layout of :func:`evaluate_model`."""
    num_classes = len(class_names)
    keep = queries_with_support(
        support.labels, queries.labels, class_names, split_name, accelerator.is_main_process
    )
    targets = queries.labels[keep]
    t0 = time.perf_counter()
    preds = predict_protocols(feature_sets, support.labels, keep, cfg, num_classes)
    metrics: dict[str, Any] = {
        "split": split_name,
        "image_size": int(image_size),
        "episodes": cfg.episodes,
        "seed": cfg.seed,
        "support": len(support.labels),
        "queries": int(keep.sum()),
        "queries_without_support": int((~keep).sum()),
        "classes": int(torch.unique(targets).numel()),
        "protocols": dict(PROTOCOLS),
        **summarise(preds, targets, num_classes),
    }
    if out_dir is not None and accelerator.is_main_process:
        write_details(Path(out_dir), preds, targets, class_names, split_name)
    metrics["knn_seconds"] = time.perf_counter() - t0
    return metrics


def evaluate_model(
    accelerator,
    net: torch.nn.Module,
    support,
    queries,
    cfg: EvalConfig,
    class_names: list[str],
    out_dir: Path | None,
    split_name: str = "valid",
) -> dict:
    """Embed two in-memory ``CropSet``s, run every protocol, return the metrics (JSON-ready).

    Layout: ``one_shot``, ``five_shot``, ``full_knn`` (+ option variants), each
    ``{micro_mean, micro_std, micro_ci95, macro_mean, macro_std, macro_ci95, episodes}``
    (full k-NN adds the Wilson bounds ``*_ci95_low/high``); plus ``split``, ``image_size``,
    ``episodes``, ``seed``, ``support``, ``queries`` (classified), ``queries_without_support``,
    ``classes`` (classes among the classified queries), ``protocols`` and timings
    ``embed_seconds``, ``knn_seconds``, ``seconds``. Accuracies are fractions in [0, 1].
    Per-class accuracies and confusion matrices go to files in ``out_dir`` (main process).
    """
    t0 = time.perf_counter()
    s, q = Labelled(support.labels.cpu(), support.keys), Labelled(queries.labels.cpu(), queries.keys)
    check_inputs(s, q, class_names)
    sets = embed_feature_sets(
        accelerator, net, lambda: [support.images], lambda: [queries.images], cfg,
        (len(support), len(queries)),
    )
    embed_seconds = time.perf_counter() - t0
    metrics = evaluate_features(
        accelerator, sets, s, q, cfg, class_names, out_dir, split_name,
        int(queries.images.shape[-1]),
    )
    metrics["embed_seconds"] = embed_seconds
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


DENSE_CONFUSION_CLASSES = 200  # above: confusion written as non-zero cells, no pictures


def write_details(
    out_dir: Path,
    preds: dict[str, torch.Tensor],
    targets: torch.Tensor,
    class_names: list[str],
    split_name: str,
) -> list[Path]:
    """Per-class accuracies and confusion matrices of every metric as JSON, and PNGs of the
    seed's three; all written atomically. Returns the paths. Above ``DENSE_CONFUSION_CLASSES``
    classes (a symbol universe) the matrices are written as their non-zero cells and no picture
    is drawn: a dense matrix would be gigabytes of JSON and a picture nobody could read."""
    from symclr_ft.io import write_json
    from symclr_ft.eval.plots import plot_confusion, plot_per_class

    c = len(class_names)
    dense = c <= DENSE_CONFUSION_CLASSES
    if dense:
        matrices = {name: confusion(p, targets, c) for name, p in preds.items()}
        per_class = {name: per_class_accuracy(m, class_names) for name, m in matrices.items()}
    else:
        cells = {name: confusion_pairs(p, targets) for name, p in preds.items()}
        per_class = {name: per_class_accuracy_of_pairs(rows, class_names) for name, rows in cells.items()}
    counts = torch.bincount(targets, minlength=c)
    queries_per_class = {n: int(counts[i]) for i, n in enumerate(class_names) if counts[i]}
    paths = [out_dir / f"per_class_{split_name}.json", out_dir / f"confusion_{split_name}.json"]
    write_json(paths[0], {
        "split": split_name, "queries_per_class": queries_per_class, "accuracy": per_class,
    })
    if not dense:
        write_json(paths[1], {
            "split": split_name,
            "classes": list(class_names),
            "note": "non-zero cells [true class, predicted class, count]; episodic metrics summed over episodes",
            "cells": cells,
        })
        return paths
    write_json(paths[1], {
        "split": split_name,
        "classes": list(class_names),
        "note": "rows: true class, columns: predicted class; episodic metrics summed over episodes",
        "matrices": {name: m.tolist() for name, m in matrices.items()},
    })
    for name in SEED_METRICS:
        path = out_dir / f"confusion_{split_name}_{name}.png"
        plot_confusion(matrices[name], class_names, f"{name} ({split_name})", path)
        paths.append(path)
    path = out_dir / f"per_class_{split_name}.png"
    plot_per_class({name: per_class[name] for name in SEED_METRICS}, path, split_name)
    paths.append(path)
    return paths

"""Accuracy summaries and intervals, the one list of metric names and the one percent format.

Shared by ``evaluate.py`` (which computes the numbers) and ``report.py`` (which compares runs),
so that a metric is named and printed the same way everywhere. Accuracies are fractions in
[0, 1]; they are shown as percentages.

* Few-shot protocols are random draws: :func:`episodic_summary` gives the mean over episodes,
  the sample standard deviation and the normal 95% interval of the mean.
* Full k-NN is deterministic: :func:`full_summary` gives a Wilson interval over the queries,
  the interval that stays inside [0, 1] near 100% where the normal one does not.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch

# The seed's three metrics, in table order, and how they are labelled for people.
SEED_METRICS = ("one_shot", "five_shot", "full_knn")
LABELS = {"one_shot": "1-shot", "five_shot": "5-shot", "full_knn": "full k-NN"}
Z95 = 1.96


def episode_accuracies(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Micro and macro accuracy of each episode (rows of ``predictions`` (E, Q)).

    Macro is class-balanced: the mean of the per-class accuracies over the classes present
    among the queries, so that a large class cannot hide a poor small one.
    """
    predictions = predictions.cpu().reshape(-1, targets.numel())
    targets = targets.cpu()
    correct = (predictions == targets).double()
    micro = correct.mean(dim=1)
    per_class = torch.zeros(correct.shape[0], num_classes, dtype=torch.float64)
    per_class.index_add_(1, targets, correct)
    counts = torch.bincount(targets, minlength=num_classes)
    present = counts > 0
    macro = (per_class[:, present] / counts[present]).mean(dim=1)
    return micro.numpy(), macro.numpy()


def mean_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and the half-width of the
    normal 95% confidence interval of the mean, 1.96 * std / sqrt(E)."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std, Z95 * std / math.sqrt(values.size)


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` trials."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1.0 + z * z / n
    mid = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, mid - half), min(1.0, mid + half)


def episodic_summary(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Mean, std and 95% CI half-width over episodes of micro and macro accuracy."""
    micro, macro = episode_accuracies(predictions, targets, num_classes)
    out: dict[str, Any] = {}
    for name, values in (("micro", micro), ("macro", macro)):
        mean, std, ci = mean_ci(values)
        out.update({f"{name}_mean": mean, f"{name}_std": std, f"{name}_ci95": ci})
    out["episodes"] = int(len(micro))
    return out


def full_summary(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    """Micro and macro accuracy of one deterministic prediction, with 95% Wilson intervals
    over the Q queries. ``*_ci95`` is the half-width (high - low) / 2 for tables; the exact,
    asymmetric bounds are ``*_ci95_low`` / ``*_ci95_high``. The macro interval treats the
    class-balanced accuracy as a proportion over the same Q queries (an approximation).
    ``*_std`` is 0: there is nothing random to vary."""
    micro, macro = episode_accuracies(predictions.reshape(1, -1), targets, num_classes)
    n = int(targets.numel())
    out: dict[str, Any] = {}
    for name, value in (("micro", float(micro[0])), ("macro", float(macro[0]))):
        low, high = wilson_interval(value, n)
        out.update(
            {
                f"{name}_mean": value,
                f"{name}_std": 0.0,
                f"{name}_ci95": (high - low) / 2,
                f"{name}_ci95_low": low,
                f"{name}_ci95_high": high,
            }
        )
    out["episodes"] = 1
    return out


def confusion(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted), summed over episodes."""
    from sklearn.metrics import confusion_matrix

    predictions = predictions.cpu().reshape(-1, targets.numel())
    true = targets.cpu().repeat(predictions.shape[0])
    flat = predictions.reshape(-1).numpy()
    return confusion_matrix(true.numpy(), flat, labels=list(range(num_classes)))


def confusion_pairs(predictions: torch.Tensor, targets: torch.Tensor) -> list[list[int]]:
    """The non-zero cells of :func:`confusion` as ``[true, predicted, count]`` rows, summed over
    episodes: the same information in memory that grows with the queries, not with the square of
    the classes (a 10,000-class universe's dense matrix is 10^8 cells)."""
    predictions = predictions.cpu().reshape(-1, targets.numel())
    pairs = torch.stack([targets.cpu().repeat(predictions.shape[0]), predictions.reshape(-1)], dim=1)
    cells, counts = torch.unique(pairs.long(), dim=0, return_counts=True)
    return [[int(t), int(p), int(n)] for (t, p), n in zip(cells.tolist(), counts.tolist())]


def per_class_accuracy_of_pairs(pairs: list[list[int]], class_names: Sequence[str]) -> dict[str, float]:
    """:func:`per_class_accuracy` from :func:`confusion_pairs` rows."""
    totals = np.zeros(len(class_names), dtype=np.int64)
    right = np.zeros(len(class_names), dtype=np.int64)
    for t, p, n in pairs:
        totals[t] += n
        right[t] += n if t == p else 0
    return {name: float(right[i] / totals[i]) for i, name in enumerate(class_names) if totals[i]}


def per_class_accuracy(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Accuracy of each class that has queries, by name (from a summed confusion matrix; every
    episode has the same queries, so this is also the mean over episodes)."""
    totals = matrix.sum(axis=1)
    return {
        name: float(matrix[i, i] / totals[i]) for i, name in enumerate(class_names) if totals[i]
    }


# --------------------------------------------------------------------------- names and format


def option_blocks(metrics: dict) -> Iterator[tuple[str, dict]]:
    """The metric blocks beyond the seed's three (``five_shot_proto``, ``*_tta``, ...)."""
    for name, block in metrics.items():
        if name not in SEED_METRICS and isinstance(block, dict) and "micro_mean" in block:
            yield name, block


def percent(block: dict, key: str = "micro", ci: bool = True, table: bool = False) -> str:
    """A block's accuracy in percent with its 95% half-width: ``91.2±0.8%`` on a summary
    line, ``91.2 ± 0.8`` in a table (whose header says %); ``ci=False`` drops the interval."""
    text = f"{100 * block[f'{key}_mean']:.1f}"
    if ci:
        half = f"{100 * block[f'{key}_ci95']:.1f}"
        return f"{text} ± {half}" if table else f"{text}±{half}%"
    return text if table else text + "%"


def summary_line(metrics: dict) -> str:
    """``1-shot 91.2±0.8%  5-shot 95.0±0.4%  full 97.0% (valid, 100 episodes)``, then the
    options that were computed, e.g. ``| five_shot_proto 96.1±0.3%``."""
    text = (
        f"1-shot {percent(metrics['one_shot'])}  5-shot {percent(metrics['five_shot'])}  "
        f"full {percent(metrics['full_knn'], ci=False)} "
        f"({metrics.get('split', '?')}, {metrics.get('episodes', '?')} episodes)"
    )
    extras = [
        f"{name} {percent(block, ci=not name.startswith('full_knn'))}"
        for name, block in option_blocks(metrics)
    ]
    return text + (" | " + "  ".join(extras) if extras else "")


# --------------------------------------------------------------------------- open set


def fpr_at_tpr(known: np.ndarray, score: np.ndarray, tpr: float = 0.95) -> float:
    """Share of unknown queries accepted by the threshold that accepts ``tpr`` of the known
    ones (OpenOOD's FPR@95TPR), from scikit-learn's ROC curve."""
    from sklearn.metrics import roc_curve

    fpr, tprs, _ = roc_curve(known, score)
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def open_set_summary(score, known, correct, threshold: float | None = None) -> dict:
    """Known-vs-unknown separation of queries by their best similarity ``score``.

    ``known``: the query's class is in the support; ``correct``: its (closed-set) prediction is
    right. AUROC and FPR at 95% TPR need both kinds of query. At ``threshold``: the share of
    known queries accepted and correctly labelled (the open-set classification rate) against
    the share of unknown queries accepted, and known-class accuracy with and without rejection.
    """
    from sklearn.metrics import roc_auc_score

    score, known, correct = (np.asarray(v) for v in (score, known, correct))
    known, correct = known.astype(bool), correct.astype(bool)
    out: dict[str, Any] = {"known": int(known.sum()), "unknown": int((~known).sum())}
    if known.any() and (~known).any():
        out["auroc"] = float(roc_auc_score(known, score))
        out["fpr_at_95_tpr"] = fpr_at_tpr(known, score, 0.95)
    if known.any():
        out["closed_set_accuracy"] = float(correct[known].mean())
    if threshold is not None:
        accepted = score >= threshold
        if known.any():
            out["known_accepted_correct"] = float((accepted & correct)[known].mean())
            out["known_accepted"] = float(accepted[known].mean())
        if (~known).any():
            out["unknown_accepted"] = float(accepted[~known].mean())
    return out

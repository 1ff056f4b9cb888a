"""Figures of a run: training curves, confusion matrices, per-class accuracy.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch,
nothing opens a window) and saved atomically like every other output. Why not in
``symclr-report``'s module (:mod:`symclr_ft.eval.report`): training and evaluation draw these
too, and no module imports a command. Example::

    plot_history([{"epoch": 1, "loss": 2.3, "lr": 3e-4}], "runs/demo")  # runs/demo/loss.png, lr.png
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from symclr_ft.eval.metrics import LABELS, SEED_METRICS
from symclr_ft.io import atomic_path


def _figure(width: float = 6.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def plot_confusion(
    matrix: np.ndarray, class_names: Sequence[str], title: str, path: str | Path
) -> Path:
    """Row-normalised confusion matrix (rows: true class) as an image, counts in the title."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    shown = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = max(4.0, 0.22 * len(class_names) + 2.5)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot()
    image = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap="Blues")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=90, fontsize=6)
    ax.set_yticks(ticks, labels=class_names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: {int(matrix.sum())} predictions, rows normalised")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def plot_per_class(
    per_class: dict[str, dict[str, float]], path: str | Path, title: str = ""
) -> Path:
    """Horizontal grouped bars: per-class accuracy of each metric."""
    names = list(dict.fromkeys(c for accs in per_class.values() for c in accs))  # class order
    fig = _figure(7.0, max(3.0, 0.06 * len(names) * max(1, len(per_class)) + 1.5))
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(per_class))
    y = np.arange(len(names))
    for i, (metric, accs) in enumerate(per_class.items()):
        values = [100 * accs.get(n, np.nan) for n in names]
        ax.barh(y + i * height, values, height=height, label=LABELS.get(metric, metric))
    ax.set_yticks(y + height * (len(per_class) - 1) / 2, labels=names, fontsize=6)
    ax.invert_yaxis()
    ax.margins(y=0.01)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(f"per-class accuracy {title}".strip())
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path)


def _line_plot(xs, series: dict[str, list], ylabel: str, path: Path, log: bool = False) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    for label, ys in series.items():
        ax.plot(xs[label] if isinstance(xs, dict) else xs, ys, marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _number(value: Any) -> float | None:
    """A float from a history/metrics value: a number, or a block with ``micro_mean``."""
    if isinstance(value, dict):
        value = value.get("micro_mean")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def plot_history(history_rows: list[dict], out_dir: str | Path) -> list[Path]:
    """loss.png, lr.png and (when some rows hold evaluation results) accuracy.png from the
    rows of history.jsonl (keys ``epoch, loss, lr, seconds, images_per_s`` and optionally
    ``one_shot, five_shot, full_knn`` micro means). Returns the written paths."""
    out_dir = Path(out_dir)
    written = []
    for key, ylabel, log in (("loss", "loss", False), ("lr", "learning rate", True)):
        points = [(r["epoch"], _number(r.get(key))) for r in history_rows if "epoch" in r]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            xs, ys = zip(*points)
            written.append(
                _line_plot(list(xs), {key: list(ys)}, ylabel, out_dir / f"{key}.png",
                           log=log and min(ys) > 0)
            )
    xs: dict[str, list] = {}
    series: dict[str, list] = {}
    for name in SEED_METRICS:
        for row in history_rows:
            value = _number(row.get(name))
            if value is not None and "epoch" in row:
                xs.setdefault(LABELS[name], []).append(row["epoch"])
                series.setdefault(LABELS[name], []).append(100 * value)
    if series:
        written.append(_line_plot(xs, series, "accuracy (%)", out_dir / "accuracy.png"))
    return written

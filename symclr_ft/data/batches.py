"""Where the training loop's batches come from, and the two views made of them.

A *source* hands each process, step by step, its part of the global batch as a
:class:`LocalBatch`: :class:`MemorySource` from a split decoded once and held as uint8 tensors on
the training device (every process derives the same global batches from the seed and the epoch
and keeps its rows), :class:`StreamingSource` from shards read as a stream, for shard sets larger
than memory. :func:`views_for` turns a local batch into both augmented views.

Example::

    source = make_source(cfg, rank=0, world=1, device=torch.device("cpu"))
    steps = source.start_epoch(0)
    batch = source.batch(0)
    x = views_for(batch, cfg, epoch=0, step=0, rank=0)  # (2b, 3, S, S) float in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from symclr_ft.config import Config
from symclr_ft.data.shardset import (
    check_batch_size,
    epoch_batches,
    load_split,
    load_stats,
    local_part,
    stream_batches,
)
from symclr_ft.errors import UserError
from symclr_ft.data.views import apply_views, sample_view_params, view_generator


@dataclass
class LocalBatch:
    """What one process trains on in one step."""

    images: torch.Tensor  # (b, 3, S, S) uint8, on the device
    labels: torch.Tensor  # (b,) on the device
    valid: torch.Tensor  # (b,) bool: False for filler rows that only even out the sizes
    global_size: int  # crops in the global batch
    indices: np.ndarray | None = None  # crop indices (in memory only)
    rows: torch.Tensor | None = None  # positions in the global batch (in memory only)


def views_for(batch: LocalBatch, cfg: Config, epoch: int, step: int, rank: int) -> torch.Tensor:
    """Both views of a process's crops, stacked: (2B, 3, S, S) float. In memory, parameters are
    drawn for the whole global batch and each process takes its rows, so a crop's views do not
    depend on the number of processes; a streamed batch draws its own."""
    out = []
    for view in (0, 1):
        if batch.rows is not None:
            g = view_generator(cfg.train.seed, epoch, step, view)
            params = sample_view_params(cfg.views, batch.global_size, g).select(batch.rows)
        else:
            g = view_generator(cfg.train.seed, epoch, step, view, rank=rank + 1)
            params = sample_view_params(cfg.views, len(batch.labels), g)
        out.append(apply_views(batch.images, params))
    return torch.cat(out)


def input_rule(cfg: Config) -> tuple[bool, str, bool]:
    """``(allow_subset, ink, letterbox)``: how load_split reads a split for this run, the same
    for training and its evaluation."""
    return cfg.data.allow_subset, cfg.data.ink, cfg.data.letterbox


class MemorySource:
    """Global batches from the configured sampler over a split held in memory."""

    def __init__(self, cfg: Config, rank: int, world: int, device: torch.device):
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.crops = load_split(cfg.data.shards, cfg.data.train_split, cfg.data.image_size, *input_rule(cfg))
        self.labels = self.crops.labels.numpy()
        check_batch_size(
            cfg.data.sampler, self.labels, cfg.data.batch_size,
            cfg.loss.mask_same_class or cfg.loss.name == "supcon",
        )
        self.images = self.crops.images.to(device)
        self.device_labels = self.crops.labels.to(device)
        self.batches: list[np.ndarray] = []

    def start_epoch(self, epoch: int) -> int:
        """Draw the epoch's global batches; returns the number of steps."""
        self.batches = epoch_batches(
            self.cfg.data.sampler, self.labels, self.cfg.data.batch_size, self.cfg.train.seed, epoch,
            self.cfg.data.samples_per_class,
        )
        return len(self.batches)

    def batch(self, step: int) -> LocalBatch:
        batch = self.batches[step]
        local, valid = local_part(batch, self.rank, self.world)
        rows = torch.from_numpy(np.arange(len(batch))[self.rank :: self.world])
        rows = torch.cat([rows, rows.new_zeros(len(local) - len(rows))])
        index = torch.from_numpy(local).to(self.device)
        return LocalBatch(
            self.images[index], self.device_labels[index], torch.from_numpy(valid).to(self.device),
            len(batch), local, rows,
        )


class StreamingSource:
    """Class-unique local batches streamed from shards (split by process and by worker), for
    shard sets larger than memory. An epoch is ``crops // batch_size`` steps, every process
    taking the same number; classes are unique within a process's batch but not across
    processes, so same-class pairs must be masked out of the loss (config.validate checks)."""

    def __init__(self, cfg: Config, rank: int, world: int, device: torch.device):
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        stats = load_stats(cfg.data.shards)
        try:
            crops = int(stats["splits"][cfg.data.train_split]["crops"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{cfg.data.shards}/stats.json: no crop count for split {cfg.data.train_split}") from None
        self.local_batch = cfg.data.batch_size // world
        self.steps = max(1, crops // cfg.data.batch_size)
        self.iterator = None

    def start_epoch(self, epoch: int) -> int:
        """Start the epoch's stream (shuffled by seed + epoch); returns the number of steps."""
        loader = stream_batches(
            self.cfg.data.shards, self.cfg.data.train_split, self.cfg.data.image_size,
            self.local_batch, self.steps, self.rank, self.world, self.cfg.train.seed + epoch,
            self.cfg.data.num_workers, self.cfg.data.shuffle_buffer, self.cfg.data.allow_subset,
        )
        self.iterator = iter(loader)
        return self.steps

    def batch(self, step: int) -> LocalBatch:
        images, labels = next(self.iterator)
        valid = torch.ones(self.local_batch, dtype=torch.bool)
        if len(labels) < self.local_batch:  # the greedy grouping may emit a smaller batch
            fill = self.local_batch - len(labels)
            valid[len(labels):] = False
            images = torch.cat([images, images[:1].expand(fill, -1, -1, -1)])
            labels = torch.cat([labels, labels[:1].expand(fill)])
        return LocalBatch(
            images.to(self.device), labels.to(self.device), valid.to(self.device),
            self.cfg.data.batch_size,
        )


def make_source(cfg: Config, rank: int, world: int, device: torch.device) -> MemorySource | StreamingSource:
    """The configured source; refuses a global batch that does not split evenly over the
    processes (every process must train on the same number of crops)."""
    if cfg.data.batch_size % world:
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} is the global batch and must divide evenly "
            f"over {world} processes"
        )
    if cfg.data.streaming:
        return StreamingSource(cfg, rank, world, device)
    return MemorySource(cfg, rank, world, device)

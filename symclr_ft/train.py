"""Fine-tune a (SimCLR) ResNet-18 on symbol crops: the hand-written Accelerate loop.

Run it as::

    accelerate launch symclr_ft/train.py --config configs/baseline.yaml [section.key=value ...]
    python -m symclr_ft.train --config configs/demo_cpu.yaml train.epochs=2
    torchrun --nproc_per_node 2 -m symclr_ft.train --config ...   # several CPU processes

One loop, top to bottom: every process computes the same global batches (class-unique by
default) from the seed and the epoch and trains on its part; augmentations run batched on
tensors; the two views' projections are gathered from all processes with gradient and the
contrastive loss is computed on the global batch. The run folder ``runs/<name>/`` receives the
config, environment, per-epoch history, evaluation metrics, a portable model file in the
SimCLR key layout, resumable Accelerate state and plots.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `accelerate launch symclr_ft/train.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm import tqdm

from symclr_ft.config import Config, load_config
from symclr_ft.data import (
    CropSet,
    check_batch_size,
    epoch_batches,
    load_classes,
    load_split,
    load_stats,
    local_part,
    stream_batches,
)
from symclr_ft.distributed import convert_batchnorm, gather_plain, gather_with_grad, make_accelerator
from symclr_ft.errors import ArgumentParser, UserError, report_user_errors
from symclr_ft.losses import contrastive_loss
from symclr_ft.model import build_model, save_model_file
from symclr_ft.wise import apply_wise_
from symclr_ft.tracking import RunFiles, environment, wandb_settings
from symclr_ft.views import apply_views, sample_view_params, view_generator


@dataclass
class Progress:
    """Where training stands; saved with the Accelerate state so a resume continues at the
    exact step (batches and views are functions of (seed, epoch, step))."""

    epoch: int = 0
    step: int = 0  # steps done within `epoch`
    global_step: int = 0
    loss_sum: float = 0.0  # of the current epoch so far
    loss_count: int = 0
    crops: int = 0
    seconds: float = 0.0

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


class StopRequested:
    """Ctrl-C / SIGTERM set a flag; the loop saves its state at the next step boundary and
    exits cleanly (a second Ctrl-C aborts at once). Accelerate's trigger makes every process
    stop at the same step."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainingStopped(Exception):
    """Training ended early (interrupted or diverged) after saving its state."""


def cosine_scheduler(optimizer: torch.optim.Optimizer, cfg: Config):
    """The seed's schedule: constant learning rate for ``warmup_epochs``, then cosine decay
    towards zero over the remaining epochs, stepped once per epoch (the last epoch keeps a small
    positive rate rather than training at zero). ``none``: constant."""
    epochs_after = max(1, cfg.train.epochs - cfg.optim.warmup_epochs + 1)

    def factor(epoch_steps: int) -> float:
        if cfg.optim.scheduler == "none":
            return 1.0
        t = min(epoch_steps, epochs_after)
        return 0.5 * (1 + math.cos(math.pi * t / epochs_after))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def views_for(batch: "LocalBatch", cfg: Config, epoch: int, step: int, rank: int) -> torch.Tensor:
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


@dataclass
class LocalBatch:
    """What one process trains on in one step."""

    images: torch.Tensor  # (b, 3, S, S) uint8, on the device
    labels: torch.Tensor  # (b,) on the device
    valid: torch.Tensor  # (b,) bool: False for filler rows that only even out the sizes
    global_size: int  # crops in the global batch
    indices: np.ndarray | None = None  # crop indices (in memory only)
    rows: torch.Tensor | None = None  # positions in the global batch (in memory only)


class MemorySource:
    """Global batches from the configured sampler over a split held in memory."""

    def __init__(self, cfg: Config, rank: int, world: int, device: torch.device):
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.crops = load_split(cfg.data.shards, cfg.data.train_split, cfg.data.image_size,
                                cfg.data.ink, cfg.data.letterbox)
        self.labels = self.crops.labels.numpy()
        check_batch_size(
            cfg.data.sampler, self.labels, cfg.data.batch_size,
            cfg.loss.mask_same_class or cfg.loss.name == "supcon",
        )
        self.images = self.crops.images.to(device)
        self.device_labels = self.crops.labels.to(device)
        self.batches: list[np.ndarray] = []

    def start_epoch(self, epoch: int) -> int:
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
    processes, so same-class pairs must be masked out of the loss."""

    def __init__(self, cfg: Config, rank: int, world: int, device: torch.device):
        if not (cfg.loss.mask_same_class or cfg.loss.name == "supcon"):
            raise UserError(
                "data.streaming=true: classes are unique only within each process's batch; set "
                "loss.mask_same_class=true (or loss.name=supcon)"
            )
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
        loader = stream_batches(
            self.cfg.data.shards, self.cfg.data.train_split, self.cfg.data.image_size,
            self.local_batch, self.steps, self.rank, self.world, self.cfg.train.seed + epoch,
            self.cfg.data.num_workers, self.cfg.data.shuffle_buffer,
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


def run_dir_for(cfg: Config) -> Path:
    return Path(cfg.run.out_dir) / cfg.run.name


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    state = run_dir / "state"
    if resume:
        if not state.is_dir():
            raise UserError(f"{run_dir}: nothing to resume (no saved state); start without --resume")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise UserError(
                f"{run_dir}: run folder exists; use --resume to continue it, --overwrite to "
                "replace it, or another run.name"
            )
        shutil.rmtree(run_dir)


def save_state(accelerator: Accelerator, files: RunFiles) -> None:
    """Accelerate state into a fresh folder, renamed over the previous one only when
    complete: an interruption during the save keeps the previous state."""
    tmp = files.dir / "state.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = files.dir / "state.old"
        shutil.rmtree(old, ignore_errors=True)
        if files.state_dir.exists():
            files.state_dir.rename(old)
        tmp.rename(files.state_dir)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def evaluate_now(accelerator, net, cfg: Config, train_set: CropSet, query_set: CropSet,
                 classes: list[str], out_dir: Path | None) -> dict:
    from symclr_ft.evaluate import evaluate_model

    model = accelerator.unwrap_model(net, keep_torch_compile=False)
    was_training = model.training
    model.eval()
    metrics = evaluate_model(
        accelerator, model, train_set, query_set, cfg.eval, classes, out_dir, split_name=cfg.eval.split
    )
    model.train(was_training)
    return metrics


def train(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    """Train and evaluate one configuration; returns the final metrics."""
    run_dir = run_dir_for(cfg)
    log_with, tracker_kwargs = wandb_settings(cfg, run_dir)
    accelerator = make_accelerator(
        mixed_precision=cfg.train.mixed_precision,
        dynamo_backend="inductor" if cfg.train.compile else "no",
        gradient_accumulation_steps=cfg.optim.accumulate,
        log_with=log_with,
        project_dir=str(run_dir),
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    files = RunFiles(run_dir)
    if accelerator.is_main_process:
        prepare_run_dir(run_dir, resume, overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(cfg.train.seed)

    # Data: decoded once and kept as uint8 tensors on the training device, or streamed.
    classes = load_classes(cfg.data.shards)
    if cfg.data.batch_size % world:
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} is the global batch and must divide evenly "
            f"over {world} processes"
        )
    if cfg.data.streaming:
        source = StreamingSource(cfg, rank, world, accelerator.device)
    else:
        source = MemorySource(cfg, rank, world, accelerator.device)
    evaluating = cfg.eval.split != "none"
    if evaluating:
        eval_size = cfg.eval.image_size or cfg.data.image_size
        query_set = load_split(cfg.data.shards, cfg.eval.split, eval_size, cfg.data.ink, cfg.data.letterbox)
        support_set = (
            source.crops
            if not cfg.data.streaming and eval_size == cfg.data.image_size
            else load_split(cfg.data.shards, cfg.data.train_split, eval_size, cfg.data.ink, cfg.data.letterbox)
        )

    # Model, optimiser, schedule.
    net = build_model(cfg.model)
    net = convert_batchnorm(net, accelerator.device)
    memory_format = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = cosine_scheduler(optimizer, cfg)
    net, optimizer = accelerator.prepare(net, optimizer)
    progress = Progress()
    accelerator.register_for_checkpointing(scheduler, progress)

    history: list[dict] = []
    if resume:
        try:
            accelerator.load_state(str(files.state_dir))
        except (OSError, RuntimeError, ValueError, KeyError, EOFError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise UserError(f"{files.state_dir}: saved state cannot be loaded ({first})") from None
        history = [r for r in files.read_history() if r["epoch"] < progress.epoch]
        accelerator.print(f"resuming {run_dir} at epoch {progress.epoch}, step {progress.step}")
    if accelerator.is_main_process:
        files.write_config(cfg)
        files.write_environment(environment(world, str(accelerator.device), cfg.train.mixed_precision))
    if log_with:
        accelerator.init_trackers(cfg.run.wandb_project, config=_flat_config(cfg), init_kwargs=tracker_kwargs)

    metrics: dict = {}
    stop = StopRequested()
    with stop:
        for epoch in range(progress.epoch, cfg.train.epochs):
            steps = source.start_epoch(epoch)
            net.train()
            bar = tqdm(
                total=steps, initial=progress.step, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                disable=not (accelerator.is_main_process and sys.stderr.isatty()), leave=False, dynamic_ncols=True,
            )
            epoch_start = time.perf_counter() - progress.seconds
            for step in range(progress.step, steps):
                batch = source.batch(step)
                x = views_for(batch, cfg, epoch, step, rank)
                x = x.contiguous(memory_format=memory_format)
                with accelerator.accumulate(net):
                    _, z = net(x)
                    z1, z2 = z.float().chunk(2)
                    keep = gather_plain(batch.valid)
                    batch_labels = gather_plain(batch.labels)
                    z1, z2 = gather_with_grad(z1)[keep], gather_with_grad(z2)[keep]
                    loss = contrastive_loss(
                        cfg.loss.name, z1, z2, batch_labels[keep], cfg.loss.temperature,
                        cfg.loss.mask_same_class, cfg.loss.infonce_weight,
                    )
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        optimizer.zero_grad()
                        save_state(accelerator, files)
                        raise TrainingStopped(
                            f"loss is {loss_value} at epoch {epoch + 1}, step {step + 1}: stopped "
                            f"before applying it; the last good state is in {files.state_dir}"
                        )
                    accelerator.backward(loss)
                    if cfg.optim.grad_clip > 0 and accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad()
                if cfg.train.log_batches:
                    _log_batch(files.dir / f"batches-rank{rank}.jsonl", epoch, step, batch)
                progress.step = step + 1
                progress.global_step += 1
                progress.loss_sum += loss_value
                progress.loss_count += 1
                progress.crops += batch.global_size
                progress.seconds = time.perf_counter() - epoch_start
                if accelerator.is_main_process:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{loss_value:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                        img_s=f"{progress.crops / max(progress.seconds, 1e-9):.0f}",
                    )
                if stop.requested:
                    accelerator.set_trigger()
                limit = cfg.train.max_steps and progress.global_step >= cfg.train.max_steps
                if accelerator.check_trigger():
                    save_state(accelerator, files)
                    raise TrainingStopped(
                        f"interrupted at epoch {epoch + 1}, step {step + 1}; state saved: "
                        f"continue with --resume"
                    )
                if limit:
                    break
            bar.close()

            row = {
                "epoch": epoch,
                "step": progress.global_step,
                "loss": progress.loss_sum / max(progress.loss_count, 1),
                "lr": scheduler.get_last_lr()[0],
                "seconds": progress.seconds,
                "images_per_s": progress.crops / max(progress.seconds, 1e-9),
            }
            if epoch + 1 >= cfg.optim.warmup_epochs:
                scheduler.step()
            last = epoch + 1 == cfg.train.epochs or bool(limit)
            due = cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0
            if last and cfg.model.wise_alpha < 1.0:  # WiSE-FT, before the final eval and save
                apply_wise_(accelerator.unwrap_model(net, keep_torch_compile=False), cfg.model)
            if evaluating and (last or due):
                metrics = evaluate_now(
                    accelerator, net, cfg, support_set, query_set, classes,
                    files.dir / "eval" if last else None,
                )
                for name in ("one_shot", "five_shot", "full_knn"):
                    row[name] = metrics[name]["micro_mean"]
            history.append(row)
            progress.epoch, progress.step = epoch + 1, 0
            progress.loss_sum, progress.loss_count, progress.crops, progress.seconds = 0.0, 0, 0, 0.0
            accelerator.log({k: v for k, v in row.items() if k != "epoch"} | {"epoch": epoch + 1},
                            step=progress.global_step)
            if accelerator.is_main_process:
                files.write_history(history)
                save_model_file(accelerator.unwrap_model(net, keep_torch_compile=False), files.model_path, epoch + 1)
                _plot(history, files.dir)
                accelerator.print(_epoch_line(row, cfg.train.epochs))
            if last or (epoch + 1) % cfg.train.save_every == 0:
                save_state(accelerator, files)
            if limit:
                break

    total = sum(r["seconds"] for r in history)
    metrics["train"] = {
        "epochs": len(history),
        "seconds": total,
        "images_per_s": float(np.mean([r["images_per_s"] for r in history])) if history else 0.0,
        "num_processes": world,
    }
    if accelerator.is_main_process:
        files.write_metrics(metrics)
    accelerator.end_training()
    return metrics


def _log_batch(path: Path, epoch: int, step: int, batch: LocalBatch) -> None:
    """One line per step: which crops this process trained on (for checking the sampler's
    guarantees in a real multi-process run)."""
    valid = batch.valid.cpu().numpy()
    indices = batch.indices[valid].tolist() if batch.indices is not None else None
    row = {"epoch": epoch, "step": step, "indices": indices,
           "labels": batch.labels.cpu()[valid].tolist()}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _flat_config(cfg: Config) -> dict:
    from symclr_ft.config import config_to_dict

    return {f"{s}.{k}": v for s, values in config_to_dict(cfg).items() for k, v in values.items()}


def _plot(history: list[dict], out_dir: Path) -> None:
    from symclr_ft.report import plot_history

    plot_history(history, out_dir)


def _epoch_line(row: dict, epochs: int) -> str:
    text = (
        f"epoch {row['epoch'] + 1}/{epochs}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  "
        f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s"
    )
    if "one_shot" in row:
        text += (
            f"  1-shot {100 * row['one_shot']:.1f}%  5-shot {100 * row['five_shot']:.1f}%"
            f"  full {100 * row['full_knn']:.1f}%"
        )
    return text


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = ArgumentParser(
        description="Fine-tune a SimCLR ResNet-18 on symbol crops (hand-written Accelerate loop).",
        epilog="Any config key can be overridden as section.key=value, e.g. optim.lr=1e-3.",
    )
    parser.add_argument("--config", help="YAML config (configs/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue runs/<name> from its saved state")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    return parser.parse_known_args(argv)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    cfg = load_config(args.config, overrides)
    try:
        metrics = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except TrainingStopped as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 3
    from symclr_ft.evaluate import summary_line

    if int(os.environ.get("RANK", "0")) == 0:
        if "one_shot" in metrics:
            print(summary_line(metrics))
        print(f"run folder: {run_dir_for(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

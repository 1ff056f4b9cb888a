"""Fine-tune a (SimCLR) backbone on symbol crops: the hand-written Accelerate loop.

Run it as::

    accelerate launch symclr_ft/train.py --config configs/baseline.yaml [section.key=value ...]
    python -m symclr_ft.train --config configs/demo_cpu.yaml train.epochs=2
    torchrun --nproc_per_node 2 -m symclr_ft.train --config ...   # several CPU processes

Read it top to bottom: :func:`train` sets up and loops over epochs, :func:`train_one_epoch`
loops over steps, :func:`train_step` is one step. Every process computes the same global
batches (class-unique by default) from the seed and the epoch and trains on its part
(``symclr_ft.data.batches``); the two views' projections are gathered from all processes with
gradient and the contrastive loss is computed on the global batch. The run folder
``runs/<name>/`` (``tracking.RunFiles``) receives the config, environment, per-epoch history,
evaluation metrics, a portable model file and resumable state.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `accelerate launch symclr_ft/train.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from symclr_ft.errors import interrupt_exits_130

with interrupt_exits_130():  # Ctrl-C while torch loads (seconds): one line, not a traceback
    import argparse
    import math
    import os
    import signal
    import time
    import warnings
    from dataclasses import asdict, dataclass, field

    import numpy as np
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from symclr_ft.data.batches import LocalBatch, MemorySource, input_rule, make_source, views_for
    from symclr_ft.config import Config, config_to_dict, load_config
    from symclr_ft.data.shardset import CropSet, is_components_set, load_classes, load_split
    from symclr_ft.distributed import convert_batchnorm, gather_plain, gather_with_grad, make_accelerator, native_precision
    from symclr_ft.errors import ArgumentParser, UserError, report_user_errors
    from symclr_ft.eval.fewshot import evaluate_model, summary_line
    from symclr_ft.models.losses import contrastive_loss
    from symclr_ft.models.backbones import build_model
    from symclr_ft.tracking import RunFiles, environment, wandb_settings
    from symclr_ft.models.wise import apply_wise_


@dataclass
class Progress:
    """Where training stands; saved as JSON with the Accelerate state so that a resume
    continues at the exact step (batches and views are functions of (seed, epoch, step))."""

    epoch: int = 0
    step: int = 0  # steps done within `epoch`
    global_step: int = 0
    loss_sum: float = 0.0  # of the current epoch so far
    loss_count: int = 0
    crops: int = 0
    seconds: float = 0.0

    def next_epoch(self) -> None:
        self.epoch, self.step = self.epoch + 1, 0
        self.loss_sum, self.loss_count, self.crops, self.seconds = 0.0, 0, 0, 0.0


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


def hold_then_cosine(optimizer: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LambdaLR:
    """The seed's schedule, stepped once per epoch: the full rate for ``optim.hold_epochs``
    epochs, then cosine decay towards zero over the remaining ones (the last epoch keeps a
    small positive rate rather than training at zero). ``scheduler: none``: constant."""
    hold = max(1, cfg.optim.hold_epochs)  # the decay's first value is the full rate itself
    decay_epochs = max(1, cfg.train.epochs - cfg.optim.hold_epochs + 1)

    def factor(epoch: int) -> float:
        if cfg.optim.scheduler == "none":
            return 1.0
        t = min(max(0, epoch - hold + 1), decay_epochs)
        return 0.5 * (1 + math.cos(math.pi * t / decay_epochs))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Trainer:
    """Everything the loop works with, and the bookkeeping of its position."""

    cfg: Config
    accelerator: Accelerator
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    source: object  # batches.MemorySource or StreamingSource
    files: RunFiles
    progress: Progress = field(default_factory=Progress)
    history: list = field(default_factory=list)
    stop: StopRequested = field(default_factory=StopRequested)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cfg.model.channels_last else torch.contiguous_format

    def budget_spent(self) -> bool:
        """``train.max_steps`` reached (checked before a step, so a resume never adds one)."""
        return bool(self.cfg.train.max_steps) and self.progress.global_step >= self.cfg.train.max_steps

    def finished(self) -> bool:
        """Nothing left to train: every epoch done, or the step budget spent at an epoch's end."""
        done = self.progress.epoch >= self.cfg.train.epochs
        return done or (self.budget_spent() and self.progress.step == 0)

    def save_state(self) -> None:
        custom = {"progress": asdict(self.progress), "scheduler": self.scheduler.state_dict()}
        self.files.save_state(self.accelerator, custom)

    def resume(self) -> None:
        """Load the saved state: weights, optimiser, schedule, position and history."""
        saved = self.files.load_state(self.accelerator)
        try:
            self.progress = Progress(**saved["progress"])
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in asdict(self.progress).values()):
                raise TypeError("progress values must be numbers")
            self.scheduler.load_state_dict(saved["scheduler"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"{self.files.progress_path}: not a training progress record") from None
        self.history = [r for r in self.files.read_history() if r["epoch"] < self.progress.epoch]
        self.accelerator.print(f"resuming {self.files.dir} at epoch {self.progress.epoch}, step {self.progress.step}")

    def record_step(self, epoch: int, step: int, batch: LocalBatch, loss: float, started: float) -> None:
        p = self.progress
        if self.cfg.train.log_batches:
            self.files.log_batch(self.accelerator.process_index, batch_record(epoch, step, batch))
        p.step, p.global_step = step + 1, p.global_step + 1
        p.loss_sum, p.loss_count, p.crops = p.loss_sum + loss, p.loss_count + 1, p.crops + batch.global_size
        p.seconds = time.perf_counter() - started

    def stop_if_requested(self, epoch: int, step: int) -> None:
        if self.stop.requested:
            self.accelerator.set_trigger()
        if self.accelerator.check_trigger():
            self.save_state()
            raise TrainingStopped(
                f"interrupted at epoch {epoch + 1}, step {step + 1}; state saved: continue with --resume"
            )

    def stop_diverged(self, epoch: int, step: int, loss: float) -> None:
        self.optimizer.zero_grad()
        self.save_state()
        raise TrainingStopped(
            f"loss is {loss} at epoch {epoch + 1}, step {step + 1}: stopped before applying it; "
            f"the last good state is in {self.files.state_dir}"
        )


def batch_record(epoch: int, step: int, batch: LocalBatch) -> dict:
    """Which crops a process trained on in one step (``train.log_batches``), for checking the
    sampler's guarantees in a real multi-process run."""
    valid = batch.valid.cpu().numpy()
    indices = batch.indices[valid].tolist() if batch.indices is not None else None
    return {"epoch": epoch, "step": step, "indices": indices, "labels": batch.labels.cpu()[valid].tolist()}


def train_step(t: Trainer, batch: LocalBatch, epoch: int, step: int) -> float:
    """One optimiser step (or one accumulation step) on the global batch; returns its loss."""
    cfg, acc = t.cfg, t.accelerator
    # views: both augmented views of this process's crops, (2b, 3, S, S) float
    x = views_for(batch, cfg, epoch, step, acc.process_index).contiguous(memory_format=t.memory_format)
    with acc.accumulate(t.net):
        # forward: the projections of both views
        _, z = t.net(x)
        z1, z2 = z.float().chunk(2)
        # gather: every process's rows, with gradient; filler rows dropped
        keep, labels = gather_plain(batch.valid), gather_plain(batch.labels)
        z1, z2 = gather_with_grad(z1)[keep], gather_with_grad(z2)[keep]
        # loss: on the global batch; a non-finite one stops before it is applied
        loss = contrastive_loss(
            cfg.loss.name, z1, z2, labels[keep], cfg.loss.temperature, cfg.loss.mask_same_class,
            cfg.loss.infonce_weight,
        )
        value = loss.item()
        if not math.isfinite(value):
            t.stop_diverged(epoch, step, value)
        # backward and update (Accelerate skips the update between accumulation steps)
        acc.backward(loss)
        if cfg.optim.grad_clip > 0 and acc.sync_gradients:
            acc.clip_grad_norm_(t.net.parameters(), cfg.optim.grad_clip)
        t.optimizer.step()
        t.optimizer.zero_grad()
    return value


def train_one_epoch(t: Trainer, epoch: int) -> None:
    """The steps of ``epoch`` not done yet: all of them, or those after a resumed position."""
    steps = t.source.start_epoch(epoch)
    t.net.train()
    show = t.accelerator.is_main_process and sys.stderr.isatty()
    bar = tqdm(total=steps, initial=min(t.progress.step, steps), desc=f"epoch {epoch + 1}/{t.cfg.train.epochs}",
               disable=not show, leave=False, dynamic_ncols=True)
    started = time.perf_counter() - t.progress.seconds
    for step in range(t.progress.step, steps):
        if t.budget_spent():
            break
        batch = t.source.batch(step)
        loss = train_step(t, batch, epoch, step)
        # bookkeeping: position and running loss (saved with the state), the bar, a stop request
        t.record_step(epoch, step, batch, loss, started)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{t.scheduler.get_last_lr()[0]:.2e}",
                        img_s=f"{t.progress.crops / max(t.progress.seconds, 1e-9):.0f}")
        t.stop_if_requested(epoch, step)
    bar.close()


def keep_epoch(t: Trainer, row: dict, epoch: int, save_state: bool) -> None:
    """The epoch's history row, model file, plots and (when asked) resumable state."""
    acc = t.accelerator
    t.history.append(row)
    t.progress.next_epoch()
    acc.log({k: v for k, v in row.items() if k != "epoch"} | {"epoch": epoch + 1}, step=t.progress.global_step)
    if acc.is_main_process:
        t.files.write_history(t.history)
        t.files.save_model(acc.unwrap_model(t.net, keep_torch_compile=False), epoch + 1)
        plot_history(t.history, t.files.dir)
        acc.print(epoch_line(row, t.cfg.train.epochs))
    if save_state:
        t.save_state()


def finish_epoch(t: Trainer, epoch: int, evaluation: tuple | None, classes: list[str]) -> dict | None:
    """The epoch's history row, schedule step, evaluation (when due), files and saved state;
    returns the metrics when it evaluated."""
    cfg, acc, p = t.cfg, t.accelerator, t.progress
    row = {"epoch": epoch, "step": p.global_step, "loss": p.loss_sum / max(p.loss_count, 1),
           "lr": t.scheduler.get_last_lr()[0], "seconds": p.seconds,
           "images_per_s": p.crops / max(p.seconds, 1e-9)}
    with warnings.catch_warnings():  # a resumed epoch may end without an optimiser step here
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
        t.scheduler.step()
    last = epoch + 1 == cfg.train.epochs or t.budget_spent()
    due = cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0
    if last and cfg.model.wise_alpha < 1:  # WiSE-FT: evaluated and saved as the averaged weights
        apply_wise_(acc.unwrap_model(t.net, keep_torch_compile=False), cfg.model)
    metrics = None
    if evaluation and (last or due):
        try:
            metrics = evaluate_now(acc, t.net, cfg, *evaluation, classes, t.files.dir / "eval" if last else None)
        except BaseException:
            # An evaluation that fails (a bad split, Ctrl-C) must not cost the epoch's training:
            # its weights and state are saved first, so --resume goes on from here.
            keep_epoch(t, row, epoch, save_state=True)
            raise
        row.update({name: metrics[name]["micro_mean"] for name in ("one_shot", "five_shot", "full_knn")})
    keep_epoch(t, row, epoch, save_state=last or (epoch + 1) % cfg.train.save_every == 0)
    return metrics


def load_evaluation(cfg: Config, source) -> tuple[CropSet, CropSet] | None:
    """(support, queries) for the k-NN evaluation, read before training so that a problem with
    the split stops the run before it trains; None when ``eval.split=none``. With
    ``eval.shards``: that set's train split and ``eval.split``, not the training set's."""
    if cfg.eval.split == "none":
        return None
    if not cfg.eval.shards and is_components_set(cfg.data.shards):
        raise UserError(
            f"{cfg.data.shards}: cut by symclr-components (every crop its own class, no labelled split): "
            f"evaluate on a labelled make-shards set, eval.shards=DIR eval.split=valid, or set eval.split=none"
        )
    shards = cfg.eval.shards or cfg.data.shards
    size = cfg.eval.image_size or cfg.data.image_size
    queries = load_split(shards, cfg.eval.split, size, *input_rule(cfg))
    if not cfg.eval.shards and isinstance(source, MemorySource) and size == cfg.data.image_size:
        return source.crops, queries
    support_split = "train" if cfg.eval.shards else cfg.data.train_split
    return load_split(shards, support_split, size, *input_rule(cfg)), queries


def evaluate_now(accelerator, net, cfg: Config, support: CropSet, queries: CropSet,
                 classes: list[str], out_dir: Path | None) -> dict:
    model = accelerator.unwrap_model(net, keep_torch_compile=False)
    was_training = model.training
    model.eval()
    metrics = evaluate_model(accelerator, model, support, queries, cfg.eval, classes, out_dir,
                             split_name=cfg.eval.split)
    model.train(was_training)
    return metrics


def build_training(cfg: Config, accelerator: Accelerator):
    """The network (initialised from ``model.init``), Adam and the schedule, prepared."""
    net = convert_batchnorm(build_model(cfg.model), accelerator.device)
    net = net.to(memory_format=torch.channels_last if cfg.model.channels_last else torch.contiguous_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = hold_then_cosine(optimizer, cfg)
    net, optimizer = accelerator.prepare(net, optimizer)
    return net, optimizer, scheduler


def run_dir_for(cfg: Config) -> Path:
    return Path(cfg.run.out_dir) / cfg.run.name


def train(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    """Train and evaluate one configuration; returns the final metrics."""
    files = RunFiles(run_dir_for(cfg))
    log_with, tracker_kwargs = wandb_settings(cfg, files.dir)
    precision = native_precision(cfg.train.mixed_precision)  # "auto": bf16 only where the hardware has it
    accelerator = make_accelerator(
        mixed_precision=precision, dynamo_backend="inductor" if cfg.train.compile else "no",
        gradient_accumulation_steps=cfg.optim.accumulate, log_with=log_with, project_dir=str(files.dir),
    )
    start = files.check_start(resume, overwrite)  # refuses before anything is read or deleted
    set_seed(cfg.train.seed)

    # Inputs, every one read and checked before the run folder is touched.
    rank, world = accelerator.process_index, accelerator.num_processes
    classes = load_classes(cfg.data.shards)
    source = make_source(cfg, rank, world, accelerator.device)
    evaluation = load_evaluation(cfg, source)
    if evaluation and cfg.eval.shards:
        classes = load_classes(cfg.eval.shards)  # the names evaluation reports
    t = Trainer(cfg, accelerator, *build_training(cfg, accelerator), source, files)
    if resume:
        t.resume()
        if t.finished():
            accelerator.print(f"{files.dir}: nothing left to train (epoch {t.progress.epoch}, "
                              f"step {t.progress.global_step}); raise train.epochs or train.max_steps to go on")
            return files.read_metrics()

    # The run folder: an earlier run there is replaced only now.
    if accelerator.is_main_process:
        files.start(start)
        files.write_config(cfg)
        files.write_environment(environment(world, str(accelerator.device), precision))
    accelerator.wait_for_everyone()
    if log_with:
        accelerator.init_trackers(cfg.run.wandb_project, config=flat_config(cfg), init_kwargs=tracker_kwargs)

    metrics: dict = {}
    with t.stop:
        for epoch in range(t.progress.epoch, cfg.train.epochs):
            if t.finished():
                break
            train_one_epoch(t, epoch)
            metrics = finish_epoch(t, epoch, evaluation, classes) or metrics

    metrics["train"] = {
        "epochs": len(t.history),
        "seconds": sum(r["seconds"] for r in t.history),
        "images_per_s": float(np.mean([r["images_per_s"] for r in t.history])) if t.history else 0.0,
        "num_processes": world,
    }
    if accelerator.is_main_process:
        files.write_metrics(metrics)
    accelerator.end_training()
    return metrics


def flat_config(cfg: Config) -> dict:
    return {f"{s}.{k}": v for s, values in config_to_dict(cfg).items() for k, v in values.items()}


def plot_history(history: list[dict], out_dir: Path) -> None:
    from symclr_ft.eval.plots import plot_history as plot  # matplotlib: loaded only when plotting

    plot(history, out_dir)


def epoch_line(row: dict, epochs: int) -> str:
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
    return build_parser().parse_known_args(argv)


def build_parser() -> ArgumentParser:
    """The command's flags; every number is a config key (section.key=value, checked by
    ``config.validate``), none is a flag of its own."""
    parser = ArgumentParser(
        description="Fine-tune a SimCLR backbone on symbol crops (hand-written Accelerate loop).",
        epilog="Any config key can be overridden as section.key=value, e.g. optim.lr=1e-3.",
    )
    parser.add_argument("--config", help="YAML config (configs/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue runs/<name> from its saved state")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run (only after the new one has checked its inputs)")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    cfg = load_config(args.config, overrides)
    try:
        metrics = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except TrainingStopped as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 3
    if int(os.environ.get("RANK", "0")) == 0:
        if "one_shot" in metrics:
            print(summary_line(metrics))
        print(f"run folder: {run_dir_for(cfg)}")
    return 0


if __name__ == "__main__":
    with interrupt_exits_130():
        sys.exit(main())

"""What the speed benchmarks share: the default (train.py) path as steppable pieces, the
batches both paths see, A/B alternation, and the markdown report.

The default path is ``symclr_ft.train``'s loop body on one process, built from the package's
own functions: uint8 crops in memory (``load_split``), both views made batched on tensors
(``batches.views_for`` = ``sample_view_params`` + ``apply_views``), channels_last, bf16 autocast
through ``Accelerator(mixed_precision="bf16")`` and ``accelerator.prepare(model, optimizer)``,
InfoNCE, Adam. Its switches (precision, memory format) exist only to measure what each one
contributes.

Benchmarks run every path of a comparison once per repetition, in turn (A B A B ...), so that
other work on the machine hits all of them alike, and report medians and ratios.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

LOAD_AT_START = os.getloadavg()[0]  # others' work on a shared machine shows up here
REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
if str(REPO) not in sys.path:  # the package is installed editable; this is for a bare checkout
    sys.path.insert(0, str(REPO))

from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState  # noqa: E402

from symclr_ft.config import Config  # noqa: E402
from symclr_ft.data.shardset import class_unique_batches  # noqa: E402
from symclr_ft.models.losses import contrastive_loss  # noqa: E402
from symclr_ft.models.backbones import build_model  # noqa: E402
from symclr_ft.data.batches import LocalBatch, views_for  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Batches


def full_batches(labels: np.ndarray, batch_size: int, seed: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
    """Endless (epoch, step, indices) of the class-unique sampler's *full* batches.

    The sampler shrinks batches once few classes have crops left (16 of the 940 batches of an
    epoch of the real data hold 32 crops); a speed comparison at "batch 32" uses only the full
    ones, the same for every path.
    """
    for epoch in itertools.count():
        for step, batch in enumerate(class_unique_batches(labels, batch_size, seed, epoch)):
            if len(batch) == batch_size:
                yield epoch, step, batch


def take_batches(labels: np.ndarray, batch_size: int, count: int) -> list[tuple[int, int, np.ndarray]]:
    return list(itertools.islice(full_batches(np.asarray(labels), batch_size), count))


# ---------------------------------------------------------------------------------------------
# The default path


def fresh_accelerator(mixed_precision: str, compile: bool = False) -> Accelerator:
    """An Accelerator with its own precision. Accelerate keeps one shared state per process and
    refuses a second precision; a benchmark that compares precisions in one process resets it.
    The precision of a prepared model is fixed at ``prepare`` (its forward is wrapped in
    autocast), so models prepared earlier keep theirs; but ``accelerator.autocast()`` reads the
    shared state, so create the mixed-precision accelerator last."""
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=mixed_precision, dynamo_backend="inductor" if compile else "no")


def bench_config(image_size: int, batch_size: int, mixed_precision: str = "bf16",
                 channels_last: bool = True, compile: bool = False) -> Config:
    """``configs/baseline.yaml``'s values (the Config defaults) at the given size and batch."""
    cfg = Config()
    cfg.data.image_size = image_size
    cfg.data.batch_size = batch_size
    cfg.train.mixed_precision = mixed_precision
    cfg.model.channels_last = channels_last
    cfg.train.compile = compile
    return cfg


class DefaultPath:
    """One process of ``symclr_ft.train``'s loop, split into ``views`` and ``model_step``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cfg: Config):
        self.cfg = cfg
        self.accelerator = fresh_accelerator(cfg.train.mixed_precision, cfg.train.compile)
        self.device = self.accelerator.device
        self.memory_format = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
        self.images = images.to(self.device)  # uint8, kept on the device as train.py does
        self.labels = labels
        net = build_model(cfg.model).to(memory_format=self.memory_format)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.net, self.optimizer = self.accelerator.prepare(net, optimizer)
        self.net.train()

    def views(self, epoch: int, step: int, batch: np.ndarray) -> torch.Tensor:
        """Both views of a global batch, (2B, 3, S, S) float, in the model's memory format."""
        index = torch.from_numpy(batch).to(self.device)
        local = LocalBatch(self.images[index], self.labels[index.cpu()], torch.ones(len(batch), dtype=torch.bool),
                           len(batch), batch, torch.arange(len(batch)))
        x = views_for(local, self.cfg, epoch, step, rank=0)
        return x.contiguous(memory_format=self.memory_format)

    def model_step(self, x: torch.Tensor, batch: np.ndarray) -> float:
        """Forward, InfoNCE, backward, Adam step; the loss is read every step as train.py does."""
        cfg = self.cfg
        with self.accelerator.accumulate(self.net):
            _, z = self.net(x)
            z1, z2 = z.float().chunk(2)
            labels = self.labels[torch.from_numpy(batch)].to(self.device)
            loss = contrastive_loss(cfg.loss.name, z1, z2, labels, cfg.loss.temperature,
                                    cfg.loss.mask_same_class)
            value = loss.item()
            self.accelerator.backward(loss)
            self.optimizer.step()
            self.optimizer.zero_grad()
        return value

    def step(self, epoch: int, step: int, batch: np.ndarray) -> float:
        return self.model_step(self.views(epoch, step, batch), batch)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Alternation and reporting


def alternate(runners: dict[str, Callable[[int], float]], repeats: int) -> dict[str, list[float]]:
    """Run every runner once per repetition, in turn (A B A B ...); each returns a rate."""
    out: dict[str, list[float]] = {name: [] for name in runners}
    for rep in range(repeats):
        for name, run in runners.items():
            value = run(rep)
            out[name].append(value)
            print(f"  rep {rep + 1}/{repeats}  {name:<44} {value:10.2f}", flush=True)
    return out


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def runs(values: list[float]) -> str:
    return " / ".join(fmt(v) for v in values)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_name() -> str:
    name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine()


def machine(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    text = (
        f"{_cpu_name()} ({platform.machine()}), os.cpu_count()={os.cpu_count()}, "
        f"torch threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text + f", device {device}"


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return " ".join(["python", str(script)] + [shlex.quote(a) for a in sys.argv[1:]])


def report(script: str, title: str, body: str) -> None:
    """Print the result and append it, with the exact command, to bench/results/<script>.md."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = (f"Load average (1 min) of the machine: {LOAD_AT_START:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} logical CPUs.")
    text = f"### {title} ({stamp})\n\n`{command_line()}`\n\n{body.strip()}\n\n{load}\n"
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{script}.md", "a", encoding="utf-8") as handle:
        handle.write(text + "\n")

"""End-to-end training speed: the default path (what train.py does) against the seed's pipeline.

One command::

    python bench/train_speed.py --shards shards/firefighting

For each image size, every path trains ``warmup + steps`` steps per repetition on the same
full class-unique batches of 32 crops, in turn (seed, then each optimisation added one at a
time, ending with the default path), ``--repeats`` times. Reported: crops/s (a crop = two
views = two images through the network), median over repetitions, and the ratio to the seed.

Paths:

* ``seed reference``: PIL views per sample in DataLoader workers, fp32, contiguous
  (``bench/seed_reference.py``);
* ``fp32, batched views, contiguous``: uint8 crops in memory, views batched on tensors;
* ``+ channels_last``;
* ``+ bf16 autocast = default``: train.py's configuration;
* ``+ torch.compile``: the default plus ``train.compile=true`` (inductor, compiled during the
  first warm-up step; off by default, see docs/RESULTS.md).
"""

from __future__ import annotations

import argparse

import torch

from benchlib import (
    DefaultPath, alternate, bench_config, fmt, machine, median, report, runs, table, take_batches,
    timed,
)
from seed_reference import SeedCropDataset, SeedPath, seed_loader, simclr_transform
from symclr_ft.data.shardset import load_split

VARIANTS = {  # name -> (mixed precision, channels_last, torch.compile)
    "fp32, batched views, contiguous": ("no", False, False),
    "+ channels_last": ("no", True, False),
    "+ bf16 autocast = default": ("bf16", True, False),
    "+ torch.compile (train.compile=true)": ("bf16", True, True),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="shards", help="folder written by make-shards")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    p.add_argument("--steps", type=int, nargs="+", default=[3, 12],
                   help="timed steps per repetition, one value or one per size")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before each timed run")
    p.add_argument("--repeats", type=int, default=3, help="alternations (seed, variants, default)")
    p.add_argument("--batch-size", type=int, default=32, help="crops per step (the seed's 32)")
    p.add_argument("--workers", type=int, default=2, help="the seed's DataLoader workers")
    p.add_argument("--no-breakdown", action="store_true",
                   help="only the seed reference and the default path")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile path")
    args = p.parse_args(argv)
    if len(args.steps) == 1:
        args.steps = args.steps * len(args.sizes)
    if len(args.steps) != len(args.sizes):
        p.error("--steps takes one value or one per size")
    return args


def bench_size(args, size: int, steps: int) -> tuple[list[list[str]], dict]:
    per_run = args.warmup + steps
    crops = load_split(args.shards, "train", size)
    batches = take_batches(crops.labels.numpy(), args.batch_size, per_run * args.repeats)
    names = ["+ bf16 autocast = default"] if args.no_breakdown else list(VARIANTS)
    if args.no_compile and not args.no_breakdown:
        names.remove("+ torch.compile (train.compile=true)")
    paths = {}
    for name in names:
        mixed, channels_last, compile = VARIANTS[name]
        cfg = bench_config(size, args.batch_size, mixed, channels_last, compile)
        paths[name] = DefaultPath(crops.images, crops.labels, cfg)
    device = paths["+ bf16 autocast = default"].device
    seed = SeedPath(device)
    seed_data = SeedCropDataset(args.shards, "train", simclr_transform(size))

    step_times: dict[str, list[float]] = {}  # every timed step of every repetition, per path

    def record(name: str, times: list[float]) -> float:
        step_times.setdefault(name, []).extend(times)
        return len(times) * args.batch_size / sum(times)

    def run_seed(rep: int) -> float:
        mine = [b for _, _, b in batches[rep * per_run:(rep + 1) * per_run]]
        loader = seed_loader(seed_data, mine, args.workers, pin_memory=device.type == "cuda")
        it = iter(loader)
        for _ in range(args.warmup):
            seed.step(next(it)[0])
        times = [timed(lambda: seed.step(next(it)[0]), device) for _ in range(steps)]
        del it
        return record("seed reference", times)

    def runner(name: str, path: DefaultPath):
        def run(rep: int) -> float:
            mine = batches[rep * per_run:(rep + 1) * per_run]
            for epoch, step, batch in mine[:args.warmup]:
                path.step(epoch, step, batch)
            return record(name, [timed(lambda: path.step(*b), device) for b in mine[args.warmup:]])
        return run

    runners = {"seed reference": run_seed}
    runners.update({name: runner(name, path) for name, path in paths.items()})
    print(f"\n{size} px: {steps} timed steps after {args.warmup} warm-up, {args.repeats} repetitions",
          flush=True)
    rates = alternate(runners, args.repeats)
    base = median(rates["seed reference"])
    per_step = {name: args.batch_size / median(times) for name, times in step_times.items()}
    base_step = per_step["seed reference"]
    rows = []
    for name, values in rates.items():
        m, ms = median(values), per_step[name]
        bold = "**" if name.endswith("default") else ""
        rows.append([
            f"{size}", name, fmt(m), runs(values), f"{m / base:.2f}x",
            fmt(ms), f"{1000 * median(step_times[name]):.0f}", f"{bold}{ms / base_step:.2f}x{bold}",
        ])
    return rows, {"device": device, "default": median(rates["+ bf16 autocast = default"]), "seed": base,
                  "default_step": per_step["+ bf16 autocast = default"], "seed_step": base_step}


def main(argv=None) -> None:
    args = parse_args(argv)
    all_rows, summary, device = [], [], None
    for size, steps in zip(args.sizes, args.steps):
        rows, info = bench_size(args, size, steps)
        all_rows += rows
        device = info["device"]
        summary.append(
            f"{size} px: default {fmt(info['default_step'])} vs seed {fmt(info['seed_step'])} crops/s "
            f"from median step times = {info['default_step'] / info['seed_step']:.2f}x; from median "
            f"run rates {fmt(info['default'])} vs {fmt(info['seed'])} = "
            f"{info['default'] / info['seed']:.2f}x (target >= 3x)")
    body = "\n".join([
        f"Machine: {machine(device)}.",
        f"Batch {args.batch_size} crops (2 views each), steps {args.steps} per size after "
        f"{args.warmup} warm-up, {args.repeats} alternations; seed reference with "
        f"{args.workers} DataLoader workers.",
        "",
        "Two medians: of the repetitions' rates, and of all timed steps (more robust when other "
        "work on the machine slows some steps down).",
        "",
        table(["px", "path", "crops/s, median of runs", "runs (crops/s)", "vs seed",
               "crops/s, median step", "median ms/step", "vs seed (median step)"], all_rows),
        "",
        *[f"- {line}" for line in summary],
    ])
    report("train_speed", "Training speed: default vs seed reference", body)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()

"""The input pipeline alone (crops -> augmented batch of two views), against what the model
step consumes.

One command::

    python bench/input_pipeline.py --shards shards/firefighting

Per image size and repetition, in turn:

* ``default views``: uint8 crops in memory -> ``batches.views_for`` (batched ``sample_view_params``
  + ``apply_views``) -> channels_last, on the training device, in the training process;
* ``seed views, N workers``: the seed's per-sample PIL transforms in a DataLoader with 0, 1, 2
  workers (decoded PIL crops from the shards -> collated (2B, 3, S, S) float tensor);
* ``default model step``: forward + InfoNCE + backward + Adam of the default path (bf16,
  channels_last) on ready views; ``seed model step``: the same in fp32, contiguous.

Reported: crops/s (a crop = two views), medians, and pipeline / model-step ratios. The default
path makes its views in the training process, between steps, so its step time is the sum of
both: a ratio of 2 means the views take a third of a step.
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="shards", help="folder written by make-shards")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    p.add_argument("--steps", type=int, default=8, help="timed batches of views per repetition")
    p.add_argument("--model-steps", type=int, default=2, help="timed model steps per repetition")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    return p.parse_args(argv)


def bench_size(args, size: int) -> tuple[list[list[str]], dict]:
    per_run = args.warmup + args.steps
    crops = load_split(args.shards, "train", size)
    batches = take_batches(crops.labels.numpy(), args.batch_size, per_run * args.repeats)
    default = DefaultPath(crops.images, crops.labels, bench_config(size, args.batch_size))
    device = default.device
    seed = SeedPath(device)
    seed_data = SeedCropDataset(args.shards, "train", simclr_transform(size))
    epoch, step, batch0 = batches[0]
    ready_default = default.views(epoch, step, batch0)
    ready_seed = torch.randn(2 * args.batch_size, 3, size, size, device=device).clamp_(0, 1)

    def mine(rep):
        return batches[rep * per_run:(rep + 1) * per_run]

    def default_views(rep: int) -> float:
        part = mine(rep)
        for b in part[:args.warmup]:
            default.views(*b)
        seconds = timed(lambda: [default.views(*b) for b in part[args.warmup:]], device)
        return args.steps * args.batch_size / seconds

    def seed_views(workers: int):
        def run(rep: int) -> float:
            loader = seed_loader(seed_data, [b for _, _, b in mine(rep)], workers,
                                 pin_memory=device.type == "cuda")
            it = iter(loader)
            for _ in range(args.warmup):
                seed.batch_to_device(next(it)[0])
            seconds = timed(lambda: [seed.batch_to_device(next(it)[0]) for _ in range(args.steps)],
                            device)
            del it
            return args.steps * args.batch_size / seconds
        return run

    def model_step(step_fn):
        def run(rep: int) -> float:
            for _ in range(args.warmup):
                step_fn()
            seconds = timed(lambda: [step_fn() for _ in range(args.model_steps)], device)
            return args.model_steps * args.batch_size / seconds
        return run

    runners = {"default views (batched, in process)": default_views}
    runners.update({f"seed views, {w} workers": seed_views(w) for w in args.workers})
    runners["default model step (bf16, channels_last)"] = model_step(
        lambda: default.model_step(ready_default, batch0))
    runners["seed model step (fp32, contiguous)"] = model_step(lambda: seed.model_step(ready_seed))
    print(f"\n{size} px: {args.steps} batches / {args.model_steps} model steps per repetition, "
          f"{args.repeats} repetitions", flush=True)
    rates = alternate(runners, args.repeats)
    model_default = median(rates["default model step (bf16, channels_last)"])
    model_seed = median(rates["seed model step (fp32, contiguous)"])
    rows = []
    for name, values in rates.items():
        m = median(values)
        if name.startswith("default views"):
            ratio = f"**{m / model_default:.2f}x** of default model step"
        elif name.startswith("seed views"):
            ratio = f"{m / model_seed:.2f}x of seed model step, {m / model_default:.2f}x of default"
        else:
            ratio = ""
        rows.append([f"{size}", name, fmt(m), f"{1000 * args.batch_size / m:.0f}", runs(values), ratio])
    return rows, {"device": device, "ratio": median(rates["default views (batched, in process)"]) / model_default}


def main(argv=None) -> None:
    args = parse_args(argv)
    all_rows, summary, device = [], [], None
    for size in args.sizes:
        rows, info = bench_size(args, size)
        all_rows += rows
        device = info["device"]
        summary.append(f"{size} px: default views / default model step = {info['ratio']:.2f}x (target >= 2x)")
    body = "\n".join([
        f"Machine: {machine(device)}.",
        f"Batch {args.batch_size} crops (2 views each); {args.steps} batches of views and "
        f"{args.model_steps} model steps timed per repetition after {args.warmup} warm-up; "
        f"{args.repeats} alternations.",
        "",
        table(["px", "stage", "crops/s (median)", "ms/batch", "runs (crops/s)", "pipeline / model step"],
              all_rows),
        "",
        *[f"- {line}" for line in summary],
    ])
    report("input_pipeline", "Input pipeline vs model step", body)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()

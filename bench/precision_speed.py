"""Training step time in fp32 and in bf16 autocast, on this machine, and what ``auto`` picks.

One command::

    python bench/precision_speed.py --shards shards/firefighting

The demo recipe's model and crops (``configs/demo_cpu.yaml``: EfficientNet-lite0, 72 px,
channels_last) on class-unique batches of 32 crops, one process, ``train.py``'s loop body
(``benchlib.DefaultPath``); each precision trains ``--steps`` steps per repetition after one
warm-up step, in turn, ``--repeats`` times. Reported: seconds per step (median) and crops/s, the ratio, and what
``train.mixed_precision: auto`` resolves to here (``distributed.native_precision``), with the
CPU flags it reads. Why it exists: bf16 was the training default, and on a CPU without native
bf16 (AVX2 only) autocast emulates it; the main job then took several times longer.
"""

from __future__ import annotations

import argparse

import torch

from benchlib import DefaultPath, alternate, machine, median, report, table, take_batches, timed
from symclr_ft.config import load_config
from symclr_ft.data.shardset import load_split
from symclr_ft.distributed import native_precision


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="shards/firefighting", help="folder written by make-shards")
    p.add_argument("--config", default="configs/demo_cpu.yaml", help="the recipe whose model and crop size are timed")
    p.add_argument("--batch-size", type=int, default=32, help="crops per step (class-unique: at most one per class)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per repetition")
    p.add_argument("--repeats", type=int, default=2, help="alternations (fp32, bf16, fp32, ...)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, [f"data.shards={args.shards}"])
    cfg.data.batch_size = args.batch_size
    crop_set = load_split(args.shards, "train", cfg.data.image_size)
    images, labels = crop_set.images, crop_set.labels
    batches = take_batches(labels.numpy(), args.batch_size, args.steps + 1)
    crops = sum(len(b) for _, _, b in batches[1:])
    steps: dict[str, list[float]] = {}

    def runner(precision: str):
        def run(rep: int) -> float:
            cfg.train.mixed_precision = precision
            path = DefaultPath(images, labels, cfg)
            path.step(*batches[0])  # warm-up
            seconds = timed(lambda: [path.step(*b) for b in batches[1:]], path.device)
            steps.setdefault(precision, []).append(seconds / args.steps)
            return crops / seconds
        return run

    rates = alternate({"no": runner("no"), "bf16": runner("bf16")}, args.repeats)
    flags = {name: bool(getattr(torch.cpu, name, lambda: False)())
             for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")}
    rows = [[p, f"{median(steps[p]):.2f}", f"{median(rates[p]):.1f}", f"{median(steps[p]) / median(steps['no']):.2f}"]
            for p in ("no", "bf16")]
    body = (f"{machine()}; {cfg.model.arch} at {cfg.data.image_size} px, {cfg.data.batch_size} crops per step; "
            f"CPU flags {flags}; `auto` resolves to **{native_precision('auto')}** here.\n\n"
            + table(["precision", "s/step (median)", "crops/s", "time vs fp32"], rows))
    report("precision_speed", "Training step time by precision", body)


if __name__ == "__main__":
    main()

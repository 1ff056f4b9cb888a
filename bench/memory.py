"""Peak resident memory of a short CPU training run at 224 px, batch 32, default path.

One command::

    python bench/memory.py --shards /tmp/ff_shards

Each measurement runs in a fresh process; its peak resident set size (``ru_maxrss`` of that
child, from ``os.wait4``) is reported. Two kinds of run, alternated ``--repeats`` times:

* ``loop``: the training loop only: ``load_split`` of the train split at ``--size`` px (uint8 in
  memory), the default path (bf16 autocast, channels_last, batched views) for ``--steps`` steps
  on full class-unique batches;
* ``train``: the real command, ``python -m symclr_ft.train --config configs/baseline.yaml``
  with ``train.max_steps=--steps`` (CPU, tracking off, a temporary run folder). It also loads
  the evaluation split, evaluates at the end (100 episodes) and writes the run files, so its
  peak includes evaluation. Needs ``symclr_ft.evaluate`` and ``symclr_ft.report``; skipped
  (and said so) when they are missing.

Target: at most 4 GiB.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, machine, report, table

GIB = 1024**3
TARGET_GIB = 4.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="shards", help="folder written by make-shards")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="training steps per run")
    p.add_argument("--repeats", type=int, default=1, help="fresh processes per kind of run")
    p.add_argument("--modes", nargs="+", default=["loop", "train"], choices=["loop", "train"])
    p.add_argument("--child-loop", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child_loop(args) -> None:
    """The body of a ``loop`` measurement (runs in the fresh child process)."""
    from benchlib import DefaultPath, bench_config, take_batches
    from symclr_ft.data import load_split

    crops = load_split(args.shards, "train", args.size)
    path = DefaultPath(crops.images, crops.labels, bench_config(args.size, args.batch_size))
    for epoch, step, batch in take_batches(crops.labels.numpy(), args.batch_size, args.steps):
        path.step(epoch, step, batch)


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Run ``cmd``; (peak RSS in bytes, wall seconds, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return usage.ru_maxrss * 1024, time.perf_counter() - start, proc.returncode  # KiB on Linux


def loop_cmd(args) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child-loop", "--shards", args.shards,
            "--size", str(args.size), "--batch-size", str(args.batch_size), "--steps", str(args.steps)]


def train_cmd(args, out_dir: str) -> list[str]:
    return [
        sys.executable, "-m", "symclr_ft.train", "--config", "configs/baseline.yaml",
        f"data.shards={Path(args.shards).resolve()}", f"data.image_size={args.size}",
        f"data.batch_size={args.batch_size}", f"train.max_steps={args.steps}",
        "run.tracking=none", f"run.out_dir={out_dir}", "run.name=memory",
    ]


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child_loop:
        child_loop(args)
        return
    modes = list(args.modes)
    notes = []
    missing = [m for m in ("symclr_ft.evaluate", "symclr_ft.report") if importlib.util.find_spec(m) is None]
    if "train" in modes and missing:
        modes.remove("train")
        notes.append(f"- `train` skipped: {', '.join(missing)} not available yet.")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true", WANDB_MODE="disabled")
    results: dict[str, list[tuple[float, float, int]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="symclr_mem_") as tmp:
        for rep in range(args.repeats):
            for mode in modes:
                out_dir = os.path.join(tmp, f"{mode}{rep}")
                cmd = loop_cmd(args) if mode == "loop" else train_cmd(args, out_dir)
                rss, wall, code = measure(cmd, env)
                results[mode].append((rss, wall, code))
                print(f"  rep {rep + 1}/{args.repeats}  {mode:<6} peak RSS {rss / GIB:.2f} GiB  "
                      f"{wall:.0f} s  exit {code}", flush=True)
    rows = []
    what = {
        "loop": "load_split + default training loop",
        "train": "`python -m symclr_ft.train` (baseline.yaml, incl. final evaluation)",
    }
    for mode, values in results.items():
        peaks = [v[0] / GIB for v in values]
        worst = max(peaks)
        ok = all(v[2] == 0 for v in values)
        verdict = ("within" if worst <= TARGET_GIB else f"**over by {worst - TARGET_GIB:.2f} GiB**")
        rows.append([
            what[mode], f"{max(peaks):.2f}", " / ".join(f"{p:.2f}" for p in peaks),
            f"{sum(v[1] for v in values) / len(values):.0f}",
            f"{verdict} {TARGET_GIB:.0f} GiB" if ok else "run failed (see stderr)",
        ])
    body = "\n".join([
        f"Machine: {machine('cpu')}.",
        f"{args.size} px, batch {args.batch_size}, {args.steps} steps, CPU, bf16 autocast, "
        f"channels_last; peak RSS of a fresh process (`os.wait4` ru_maxrss), {args.repeats} run(s) each.",
        "",
        table(["run", "peak RSS GiB (max)", "runs", "wall s", "target <= 4 GiB"], rows),
        *([""] + notes if notes else []),
    ])
    report("memory", "Peak memory of a short CPU training run", body)


if __name__ == "__main__":
    main()

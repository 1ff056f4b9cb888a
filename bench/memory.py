"""Peak resident memory of training (224 px, batch 32, default path), evaluation and prediction.

One command::

    python bench/memory.py --shards shards/firefighting

Each measurement runs in a fresh process; its peak resident set size (``ru_maxrss`` of that
child, from ``os.wait4``) is reported. Two kinds of run, alternated ``--repeats`` times:

* ``loop``: the training loop only: ``load_split`` of the train split at ``--size`` px (uint8 in
  memory), the default path (bf16 autocast, channels_last, batched views) for ``--steps`` steps
  on full class-unique batches;
* ``train``: the real command, ``python -m symclr_ft.train --config configs/baseline.yaml``
  with ``train.max_steps=--steps`` (CPU, tracking off, a temporary run folder). It also loads
  the evaluation split, evaluates at the end (100 episodes) and writes the run files, so its
  peak includes evaluation. Needs ``symclr_ft.eval.evaluate`` and ``symclr_ft.eval.report``; skipped
  (and said so) when they are missing.

Target: at most 4 GiB.

Evaluation memory (``--modes evaluate evaluate_in_memory``), on a large shard set at
``--eval-size`` px with ``--eval-model``:

* ``evaluate``: the real command, ``python -m symclr_ft.eval.evaluate`` (crops streamed batch by
  batch, only features kept);
* ``evaluate_in_memory``: the reference, what the command did before: ``load_split`` of both
  splits (every decoded crop held as uint8) and ``evaluate_model``.

``--eval-shards`` names a shard folder; ``--combine SRC`` first builds one (links, no copies)
whose train split is SRC's train + valid and whose test split is SRC's test (the muscima
shards give 33,398 support + 6,324 query crops = 39,722). Target: at most 1.5 GiB.

Prediction memory (``--modes predict``): ``python -m symclr_ft.use.predict`` with the valid split
of ``--shards`` as support and ``--predict-queries`` query crops: the train split of
``--shards`` written again under new keys (``--cycle-dir``) until there are that many. Target: at most
2 GiB for 100,000 queries. Its wall time also gives the end-to-end rate.
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
EVAL_TARGET_GIB = 1.5
PREDICT_TARGET_GIB = 2.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="shards", help="folder written by make-shards")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="training steps per run")
    p.add_argument("--repeats", type=int, default=1, help="fresh processes per kind of run")
    p.add_argument("--modes", nargs="+", default=["loop", "train"],
                   choices=["loop", "train", "evaluate", "evaluate_in_memory", "predict"])
    p.add_argument("--predict-queries", type=int, default=100_000)
    p.add_argument("--cycle-dir", default="runs/bench/ff_cycled")
    p.add_argument("--eval-shards", default="runs/bench/mus_37k")
    p.add_argument("--combine", default=None, help="build --eval-shards from this shard folder")
    p.add_argument("--eval-model", default="runs/fewshot_lite0_cpu/model.pt")
    p.add_argument("--eval-size", type=int, default=96)
    p.add_argument("--child-loop", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-eval-ref", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child_loop(args) -> None:
    """The body of a ``loop`` measurement (runs in the fresh child process)."""
    from benchlib import DefaultPath, bench_config, take_batches
    from symclr_ft.data.shardset import load_split

    crops = load_split(args.shards, "train", args.size)
    path = DefaultPath(crops.images, crops.labels, bench_config(args.size, args.batch_size))
    for epoch, step, batch in take_batches(crops.labels.numpy(), args.batch_size, args.steps):
        path.step(epoch, step, batch)


def combine_splits(src: Path, out: Path) -> None:
    """A shard folder of links: train = src train + valid (renumbered), test = src test."""
    from symclr_ft.io import read_json, write_json

    out.mkdir(parents=True, exist_ok=True)
    for split, sources in (("train", ("train", "valid")), ("test", ("test",))):
        tars = [t for name in sources for t in sorted(src.glob(f"{name}-[0-9]*.tar"))]
        for number, tar in enumerate(tars):
            link = out / f"{split}-{number:06d}.tar"
            link.unlink(missing_ok=True)
            link.symlink_to(tar.resolve())
    (out / "classes.json").write_bytes((src / "classes.json").read_bytes())
    stats = read_json(src / "stats.json", "shard statistics")
    splits = stats["splits"]
    merged = {"crops": splits["train"]["crops"] + splits["valid"]["crops"],
              "shards": splits["train"]["shards"] + splits["valid"]["shards"]}
    write_json(out / "stats.json", {**stats, "splits": {"train": merged, "test": splits["test"]},
                                    "source": f"{src} (train + valid as train)"})


def child_eval_ref(args) -> None:
    """The reference evaluation path: every decoded crop of both splits in memory."""
    import torch

    from symclr_ft.config import EvalConfig
    from symclr_ft.data.shardset import load_classes, load_split
    from symclr_ft.distributed import make_accelerator
    from symclr_ft.eval.fewshot import evaluate_model
    from symclr_ft.models.backbones import load_model_file

    net = load_model_file(args.eval_model).to(memory_format=torch.channels_last)
    support = load_split(args.eval_shards, "train", args.eval_size)
    queries = load_split(args.eval_shards, "test", args.eval_size)
    evaluate_model(make_accelerator(mixed_precision="no"), net, support, queries,
                   EvalConfig(split="test"), load_classes(args.eval_shards), None, "test")


def cycle_train_split(src: Path, out: Path, crops: int) -> int:
    """A shard folder whose test split is src's train split written again and again, each
    copy's keys prefixed ``c<copy>_`` (a shard set's keys are unique: a linked copy would be
    refused as a copied shard), until it holds at least ``crops`` crops; returns how many."""
    from symclr_ft.data.shardset import iter_shard, shard_paths
    from symclr_ft.io import read_json, write_json
    from symclr_ft.data.shardwriter import ShardSequence

    stats = read_json(src / "stats.json", "shard statistics")
    per_copy = stats["splits"]["train"]["crops"]
    copies = -(-crops // per_copy)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("test-*.tar"):
        old.unlink()
    shard = ShardSequence(out, "test", shard_size=per_copy)
    for copy in range(copies):
        for path in shard_paths(src, "train"):
            for key, fields in iter_shard(path):
                shard.write(f"c{copy}_{key}", fields)
    shard.close()
    (out / "classes.json").write_bytes((src / "classes.json").read_bytes())
    split = {"crops": shard.count, "shards": len(shard.files)}
    write_json(out / "stats.json", {**stats, "splits": {"test": split}})
    return shard.count


def predict_cmd(args, out_dir: str) -> list[str]:
    return [sys.executable, "-m", "symclr_ft.use.predict", "--model", args.eval_model,
            "--support", args.shards, "--support-split", "valid", "--query", args.cycle_dir,
            "--query-split", "test", "--out", f"{out_dir}/preds.csv"]


def eval_cmd(args, mode: str) -> list[str]:
    if mode == "evaluate":
        return [sys.executable, "-m", "symclr_ft.eval.evaluate", "--shards", args.eval_shards,
                "--split", "test", "--checkpoint", args.eval_model, "--image-size",
                str(args.eval_size)]
    return [sys.executable, str(Path(__file__).resolve()), "--child-eval-ref", "--eval-shards",
            args.eval_shards, "--eval-model", args.eval_model, "--eval-size", str(args.eval_size)]


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
    if args.child_eval_ref:
        child_eval_ref(args)
        return
    if args.combine:
        combine_splits(Path(args.combine), Path(args.eval_shards))
    if "predict" in args.modes:
        queries = cycle_train_split(Path(args.shards), Path(args.cycle_dir), args.predict_queries)
    modes = list(args.modes)
    notes = []
    missing = [m for m in ("symclr_ft.eval.evaluate", "symclr_ft.eval.report") if importlib.util.find_spec(m) is None]
    if "train" in modes and missing:
        modes.remove("train")
        notes.append(f"- `train` skipped: {', '.join(missing)} not available yet.")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true", WANDB_MODE="disabled")
    results: dict[str, list[tuple[float, float, int]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="symclr_mem_") as tmp:
        for rep in range(args.repeats):
            for mode in modes:
                out_dir = os.path.join(tmp, f"{mode}{rep}")
                if mode.startswith("evaluate"):
                    cmd = eval_cmd(args, mode)
                elif mode == "predict":
                    cmd = predict_cmd(args, out_dir)
                else:
                    cmd = loop_cmd(args) if mode == "loop" else train_cmd(args, out_dir)
                rss, wall, code = measure(cmd, env)
                results[mode].append((rss, wall, code))
                print(f"  rep {rep + 1}/{args.repeats}  {mode:<6} peak RSS {rss / GIB:.2f} GiB  "
                      f"{wall:.0f} s  exit {code}", flush=True)
    rows = []
    what = {
        "loop": "load_split + default training loop",
        "train": "`python -m symclr_ft.train` (baseline.yaml, incl. final evaluation)",
        "evaluate": f"`python -m symclr_ft.eval.evaluate` (streamed), {args.eval_size} px",
        "evaluate_in_memory": f"reference: load_split + evaluate_model, {args.eval_size} px",
        "predict": "`python -m symclr_ft.use.predict`, "
                   f"{queries if 'predict' in args.modes else 0:,} queries",
    }
    for mode, values in results.items():
        peaks = [v[0] / GIB for v in values]
        worst = max(peaks)
        ok = all(v[2] == 0 for v in values)
        target = {"evaluate": EVAL_TARGET_GIB, "evaluate_in_memory": EVAL_TARGET_GIB,
                  "predict": PREDICT_TARGET_GIB}.get(mode, TARGET_GIB)
        verdict = ("within" if worst <= target else f"**over by {worst - target:.2f} GiB**")
        rows.append([
            what[mode], f"{max(peaks):.2f}", " / ".join(f"{p:.2f}" for p in peaks),
            f"{sum(v[1] for v in values) / len(values):.0f}",
            f"{verdict} {target:g} GiB" if ok else "run failed (see stderr)",
        ])
    if results.get("predict"):
        wall = sum(v[1] for v in results["predict"]) / len(results["predict"])
        notes.append(f"- predict: {queries:,} queries in {wall:.0f} s, {queries / wall:.0f} "
                     "crops/s end to end (start-up and the support's embedding included).")
    settings = []
    if {"loop", "train"} & set(results):
        settings.append(f"Training runs: {args.size} px, batch {args.batch_size}, {args.steps} "
                        "steps, CPU, bf16 autocast, channels_last.")
    if {"evaluate", "evaluate_in_memory"} & set(results):
        settings.append(f"Evaluation runs: {args.eval_shards} (train = support, test = queries), "
                        f"{args.eval_model}.")
    if "predict" in results:
        settings.append(f"Prediction runs: {args.eval_model}, support the valid split of "
                        f"{args.shards}, queries {args.cycle_dir}.")
    body = "\n".join([
        f"Machine: {machine('cpu')}.",
        f"Peak RSS of a fresh process (`os.wait4` ru_maxrss), {args.repeats} run(s) each.",
        *settings,
        "",
        table(["run", "peak RSS GiB (max)", "runs", "wall s", "target"], rows),
        *([""] + notes if notes else []),
    ])
    report("memory", f"Peak memory: {', '.join(results)}", body)


if __name__ == "__main__":
    main()

"""Time to accuracy: the seed's recipe against the demo recipe, valid 1-shot against training time.

One command (both recipes, one after the other, on the same cores)::

    python bench/time_to_accuracy.py --shards shards --seed-epochs 1

(``--train demo`` then ``--train seed`` does the same in two sittings; the second reports.)

The img/s ratio of ``bench/train_speed.py`` is capped by the model step on a CPU; what a user
waits for is accuracy. So each recipe is trained by the package's own loop
(``python -m symclr_ft.train``) with an evaluation on the valid split after every epoch
(``train.eval_every=1``), and its starting weights are evaluated before training
(``symclr-evaluate``, time 0). The clock is the training loop's own: the per-epoch
``seconds`` of ``history.jsonl`` (views, forward, backward, optimiser steps), summed. It
excludes start-up (decoding the split once, building the model) and every evaluation, so the
evaluation protocol does not bend the curve; it is the package's (1-shot = nearest of one
random train crop per class, mean of ``--episodes`` draws; every valid crop a query) and costs
one embedding of the train and valid splits per epoch, which bounds it to one evaluation per
epoch (a few seconds at 80 px, about a minute at 224 px on 2 cores).

Recipes:

* ``seed``: ``configs/baseline.yaml`` (ResNet-18 from random weights, 224 px, the seed's SimCLR
  views, class-unique batches of 32 as the seed draws them, InfoNCE, Adam 3e-4) for its first
  ``--seed-epochs`` epochs: the seed holds its learning rate for 10 epochs, so these epochs are
  exactly the first epochs of its 50-epoch run.
* ``demo``: ``configs/demo_cpu.yaml`` (what ``bash launch/demo.sh`` trains), whole.

Early points of the demo recipe (``--demo-steps``): a run of the same recipe stopped by
``train.max_steps=k`` is exactly the first k steps of the full run (the schedule moves per
epoch, the batches and views are functions of (seed, epoch, step)), evaluated there; it costs
one start-up and one evaluation, not a new curve.

Reported: each recipe's curve, the seed's valid 1-shot at the end of its budget, the first
evaluated time at which the demo recipe is at least that accurate, and the ratio. Nothing is
evaluated between the points, so the demo's time is an upper bound and the ratio a lower bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchlib import REPO, machine, report, table

SEED_CONFIG = "configs/baseline.yaml"
DEMO_CONFIG = "configs/demo_cpu.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="shards", help="folder written by make-shards")
    p.add_argument("--seed-epochs", type=int, default=1, help="the seed recipe's budget in epochs")
    p.add_argument("--episodes", type=int, default=100, help="1-shot/5-shot support draws per evaluation")
    p.add_argument("--out", default="runs/time_to_accuracy", help="folder for both run folders")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides for both recipes (a smoke test: data.image_size=32 train.max_steps=2)")
    p.add_argument("--demo-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra overrides for the demo recipe (to try a variant)")
    p.add_argument("--demo-steps", type=int, nargs="*", default=[4],
                   help="also evaluate the demo recipe after this many steps of its first epoch")
    p.add_argument("--train", nargs="*", default=["seed", "demo"], choices=["seed", "demo"],
                   help="recipes to train now; the others are read from --out (none: report only)")
    return p.parse_args(argv)


def recipes(args) -> dict[str, dict]:
    """Per recipe: its config, overrides, and how to evaluate its untrained starting point."""
    common = [f"data.shards={args.shards}", "eval.split=valid", "train.eval_every=1",
              f"eval.episodes={args.episodes}", f"run.out_dir={args.out}", "run.tracking=none",
              "eval.tta_rot90=false", "eval.prototypes=false", "eval.centering=false", *args.set]
    return {
        "seed": {"config": SEED_CONFIG, "overrides": common + [f"train.epochs={args.seed_epochs}", "run.name=seed"]},
        "demo": {"config": DEMO_CONFIG, "overrides": common + ["run.name=demo"] + list(args.demo_set)},
    }


def resolved(config: str, overrides: list[str], keys: list[str]) -> list[str]:
    """Config values after overrides, through the package's own resolver."""
    gets = [a for k in keys for a in ("--get", k)]
    out = subprocess.run([sys.executable, "-m", "symclr_ft.config", "--config", config, *overrides, *gets],
                         check=True, capture_output=True, text=True, cwd=REPO)
    return out.stdout.split()


def evaluate_start(recipe: dict, args, out_dir: Path) -> dict:
    """Valid metrics of the weights training starts from (time 0)."""
    size, arch, norm, init, precision = resolved(
        recipe["config"], recipe["overrides"],
        ["data.image_size", "model.arch", "model.input_norm", "model.init", "train.mixed_precision"])
    subprocess.run([sys.executable, "-m", "symclr_ft.eval.evaluate", "--shards", args.shards, "--split", "valid",
                    "--checkpoint", init, "--arch", arch, "--input-norm", norm, "--image-size", size,
                    "--episodes", str(args.episodes), "--mixed-precision", precision, "--out", str(out_dir)],
                   check=True, cwd=REPO)
    return json.loads((out_dir / "metrics.json").read_text())


def train_recipe(recipe: dict) -> None:
    subprocess.run([sys.executable, "-m", "symclr_ft.train", "--config", recipe["config"],
                    *recipe["overrides"], "--overwrite"], check=True, cwd=REPO)


METRICS = ("one_shot", "five_shot", "full_knn")


def curve(start: dict, run_dir: Path) -> list[dict]:
    """(training seconds, point, valid accuracies) from time 0 to the last epoch."""
    points = [{"seconds": 0.0, "point": "start", **{k: start[k]["micro_mean"] for k in METRICS}}]
    total = 0.0
    for line in (run_dir / "history.jsonl").read_text().splitlines():
        row = json.loads(line)
        total += row["seconds"]
        points.append({"seconds": total, "point": f"epoch {row['epoch'] + 1}", **{k: row[k] for k in METRICS}})
    return points


def early_point(run_dir: Path, steps: int) -> dict:
    (line,) = (run_dir / "history.jsonl").read_text().splitlines()
    row = json.loads(line)
    return {"seconds": row["seconds"], "point": f"{steps} steps", **{k: row[k] for k in METRICS}}


def first_reaching(points: list[dict], accuracy: float) -> dict | None:
    return next((p for p in points if p["one_shot"] >= accuracy), None)


def summarise(curves: dict[str, list[dict]]) -> str:
    rows = [[name, p["point"], f"{p['seconds']:.0f}", f"{100 * p['one_shot']:.1f}",
             f"{100 * p['five_shot']:.1f}", f"{100 * p['full_knn']:.1f}"]
            for name, points in curves.items() for p in points]
    body = table(["recipe", "evaluated at", "training s", "valid 1-shot %", "5-shot %", "full k-NN %"], rows)
    seed_end = curves["seed"][-1]
    reach = first_reaching(curves["demo"], seed_end["one_shot"])
    goal = (f"The seed recipe ends its budget ({seed_end['point']}, {seed_end['seconds']:.0f} s of "
            f"training) at {100 * seed_end['one_shot']:.1f}% valid 1-shot. ")
    if reach is None:
        goal += "The demo recipe never reached it."
    elif reach["seconds"] == 0:
        first = curves["demo"][1]
        goal += (f"The demo recipe is there before any training (its ImageNet starting point: "
                 f"{100 * reach['one_shot']:.1f}%), so the ratio is unbounded; at its first trained "
                 f"point ({first['seconds']:.0f} s, {100 * first['one_shot']:.1f}%) it is "
                 f"{seed_end['seconds'] / first['seconds']:.1f}x sooner.")
    else:
        goal += (f"The demo recipe first is at or above it after {reach['seconds']:.0f} s ("
                 f"{reach['point']}, {100 * reach['one_shot']:.1f}%): "
                 f"**{seed_end['seconds'] / reach['seconds']:.1f}x sooner** (a lower bound: it was not "
                 f"evaluated in between).")
    return f"{body}\n\n{goal}\n\nMachine: {machine()}."


def run_recipe(name: str, recipe: dict, args, out: Path) -> None:
    """Evaluate the starting point, train the whole recipe, then (demo) its early points."""
    print(f"== {name}: untrained starting point, valid split", flush=True)
    evaluate_start(recipe, args, out / f"{name}_start")
    print(f"== {name}: training {recipe['config']} {' '.join(recipe['overrides'])}", flush=True)
    train_recipe(recipe)
    if name != "demo":
        return
    for steps in args.demo_steps:
        overrides = [o for o in recipe["overrides"] if not o.startswith("run.name=")]
        print(f"== demo: first {steps} steps only", flush=True)
        train_recipe({**recipe, "overrides": overrides + [f"train.max_steps={steps}", f"run.name=demo_{steps}steps"]})


def read_curve(name: str, args, out: Path) -> list[dict]:
    start = json.loads((out / f"{name}_start" / "metrics.json").read_text())
    points = curve(start, out / name)
    if name == "demo":
        points += [early_point(out / f"demo_{steps}steps", steps) for steps in args.demo_steps]
    return sorted(points, key=lambda p: p["seconds"])


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    for name, recipe in recipes(args).items():
        if name in args.train:
            run_recipe(name, recipe, args, out)
    ready = [name for name in recipes(args) if (out / name / "history.jsonl").is_file()]
    if ready != list(recipes(args)):
        print(f"only {', '.join(ready) or 'no recipe'} trained in {out}: no comparison yet")
        return 0
    curves = {name: read_curve(name, args, out) for name in ready}
    title = f"Time to accuracy: seed recipe ({args.seed_epochs} epochs) against the demo recipe"
    report("time_to_accuracy", title, summarise(curves))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as err:  # the command has printed its own error
        print(f"error: {' '.join(map(str, err.cmd[:4]))} ... exited with {err.returncode}", file=sys.stderr)
        sys.exit(err.returncode)

"""Music 1-shot along universe pretraining: does more training time, or more universe classes,
move transfer to symbols never seen? (issue 26: the curve that says why a target is out of reach)

    python bench/universe_curve.py --run universe=runs/universe,snapshots=runs/universe_epochs \
        --music shards/muscima --episodes 50 --support-cap 10 --query-cap 20 --out runs/universe_curve

A series per ``--run NAME=RUN_DIR[,snapshots=DIR][,classes=N]``: RUN_DIR is a training run folder
(the resolved ``config.yaml`` that train.py writes, its ``history.jsonl``); its points are

* minute 0: the network the run started from (``model.init`` of its config: the ImageNet
  weights for configs/universe.yaml);
* every saved training state: each folder under ``snapshots`` (default ``RUN_DIR_epochs``, the
  copies kept after each epoch) holding ``model.safetensors`` and ``progress.json``, and
  ``RUN_DIR/state`` itself; the same step twice counts once. The weights load into the run's
  network built with ``init=random`` (every key must fit).

x: training CPU-minutes of the state: the finished epochs' ``seconds`` in the run's history plus
``progress.seconds`` of the epoch under way (training steps only; no evaluation or saving).
y: music 1-shot and 5-shot (support the train split, queries ``--split``, valid by default: this
is for choosing), over all classes and over the classes that are not letters or digits
(bench/transfer.py's rule). Several runs on universes of different sizes give the second plot:
the last point of each run against its number of universe classes (``classes=N``, else counted
from the run's ``data.shards``). Writes ``OUT/curve.json``, ``curve.md`` and ``curve.png``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import transfer  # noqa: E402  (bench/transfer.py: domains, input rules, class subsets)
from symclr_ft.config import Config, load_config  # noqa: E402
from symclr_ft.errors import ArgumentParser, UserError, report_user_errors  # noqa: E402
from symclr_ft.io import read_json, write_json, write_text  # noqa: E402

STATE_WEIGHTS = "model.safetensors"
PROGRESS = "progress.json"
COLUMNS = ("all", "symbols")  # music over every class; over the classes that are not letters or digits


@dataclass
class Series:
    """One training run: its settings, history and saved states."""

    name: str
    run: Path
    cfg: Config
    history: list[dict]
    snapshots: list[Path]  # folders holding model.safetensors + progress.json
    classes: int | None  # universe classes the run trained on


# --------------------------------------------------------------------------- reading runs


def training_minutes(progress: dict, history: list[dict], where: str = "progress") -> float:
    """Training minutes up to a saved state: the seconds of every finished epoch (the run's
    history; ``progress.seconds`` restarts at 0 with each epoch) plus those of the epoch under
    way."""
    try:
        epoch, seconds = int(progress["epoch"]), float(progress["seconds"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{where}: not a training progress record (epoch, seconds)") from None
    done = {r["epoch"]: float(r.get("seconds", 0.0)) for r in history if r["epoch"] < epoch}
    missing = [e for e in range(epoch) if e not in done]
    if missing:
        raise UserError(f"{where}: epoch {missing[0]} is done but not in the run's history.jsonl")
    return (sum(done.values()) + seconds) / 60.0


def read_progress(folder: Path) -> dict:
    """The ``progress`` block of a saved state's progress.json (train.py writes it beside
    Accelerate's files)."""
    data = read_json(folder / PROGRESS, "training progress file")
    block = data.get("progress") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        raise UserError(f"{folder / PROGRESS}: no 'progress' record")
    return block


def snapshot_folders(snapshots: Path | None, run: Path) -> list[Path]:
    """Every saved state of a run: the folders under ``snapshots`` with weights and progress,
    then the run's own ``state/``."""
    found = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots and snapshots.is_dir() else []
    found.append(run / "state")
    return [p for p in found if (p / STATE_WEIGHTS).is_file() and (p / PROGRESS).is_file()]


def count_classes(cfg: Config) -> int | None:
    """The number of classes in the run's shards, None when they are not on this machine."""
    from symclr_ft.data.shardset import load_classes

    try:
        return len(load_classes(cfg.data.shards))
    except (UserError, OSError):
        return None


def parse_run(text: str) -> Series:
    """``NAME=RUN_DIR[,snapshots=DIR][,classes=N]`` (see the module docstring)."""
    from symclr_ft.tracking import RunFiles

    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UserError(f"--run {text}: expected NAME=RUN_DIR")
    path, *opts = rest.split(",")
    run = Path(path)
    snapshots, classes = run.parent / f"{run.name}_epochs", None
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "snapshots" and value:
            snapshots = Path(value)
        elif key == "classes" and value.isdigit() and int(value) > 0:
            classes = int(value)
        else:
            raise UserError(f"--run {text}: bad option {opt!r} (snapshots=DIR, classes=N)")
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run}: no config.yaml (a training run folder, as train.py writes it)")
    cfg = load_config(run / "config.yaml")
    folders = snapshot_folders(snapshots, run)
    if not folders:
        raise UserError(f"{run}: no saved state ({STATE_WEIGHTS} + {PROGRESS}) in {snapshots} or {run / 'state'}")
    history = RunFiles(run).read_history()
    return Series(name, run, cfg, history, folders, classes or count_classes(cfg))


# --------------------------------------------------------------------------- measuring


def run_rule(cfg: Config) -> transfer.InputRule:
    """The input rule the run trained with (bench/transfer.py's rule_from_config)."""
    return transfer.InputRule(cfg.eval.image_size or cfg.data.image_size, cfg.data.ink, cfg.data.letterbox)


def state_network(cfg: Config, folder: Path):
    """The run's network with the weights of one saved state."""
    from symclr_ft.models.backbones import build_model, load_state_weights

    return load_state_weights(build_model(replace(cfg.model, init="random")), folder / STATE_WEIGHTS).eval()


def measure(accelerator, net, music: transfer.Domain, rule: transfer.InputRule, cfg, split: str) -> dict:
    """Music 1-shot and 5-shot of one network over all classes and over the symbols only."""
    subsets = {"all": None} | ({"symbols": music.symbols} if music.symbols is not None else {})
    return transfer.evaluate_subsets(accelerator, net, music, rule, cfg, split, subsets)


def series_points(accelerator, series: Series, music: transfer.Domain, cfg, split: str,
                  cache: dict, skipped: list[str]) -> list[dict]:
    """The start and every saved state of one run, by training minutes; an unreadable state
    is skipped and listed (the others still count)."""
    from symclr_ft.models.backbones import build_model

    rule = run_rule(series.cfg)
    start = (repr(series.cfg.model), rule)  # runs from the same start share its point
    if start not in cache:
        cache[start] = measure(accelerator, build_model(series.cfg.model), music, rule, cfg, split)
    points = [curve_point(series, f"init {series.cfg.model.init}", {"epoch": 0, "global_step": 0}, 0.0, cache[start])]
    seen = set()
    for folder in series.snapshots:
        try:
            progress = read_progress(folder)
            step = progress.get("global_step")
            if step in seen:
                continue
            minutes = training_minutes(progress, series.history, str(folder / PROGRESS))
            numbers = measure(accelerator, state_network(series.cfg, folder), music, rule, cfg, split)
        except UserError as err:
            skipped.append(str(err))
            print(f"skipped: {err}", file=sys.stderr, flush=True)
            continue
        seen.add(step)
        points.append(curve_point(series, str(folder), progress, minutes, numbers))
        print(markdown_curve([points[-1]]).splitlines()[-1], file=sys.stderr, flush=True)
    return sorted(points, key=lambda p: (p["minutes"], p["step"]))


def curve_point(series: Series, state: str, progress: dict, minutes: float, numbers: dict) -> dict:
    return {"series": series.name, "classes": series.classes, "state": state,
            "epoch": int(progress.get("epoch", 0)), "step": int(progress.get("global_step", 0)),
            "minutes": minutes, **numbers}


# --------------------------------------------------------------------------- reporting


def _shot(block: dict | None, metric: str) -> str:
    if block is None:
        return "–"
    return f"{block[metric]['micro_mean']:.1f} ± {block[metric]['micro_ci95']:.1f}"


def markdown_curve(points: list[dict]) -> str:
    """One row per point: run, universe classes, state, epoch, step, minutes, then music 1-shot
    and 5-shot (± 95% interval) over all classes and over the symbols (not letters or digits)."""
    head = ["run", "universe classes", "state", "epoch", "step", "CPU-minutes", "music 1-shot", "music 5-shot",
            "1-shot w/o letters, digits", "5-shot w/o letters, digits"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        cells = [p["series"], "–" if p["classes"] is None else str(p["classes"]), p["state"], str(p["epoch"]),
                 str(p["step"]), f"{p['minutes']:.1f}",
                 *(_shot(p.get(c), m) for c in COLUMNS for m in ("one_shot", "five_shot"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def by_classes(points: list[dict]) -> list[dict]:
    """The last (longest trained) point of each run that knows its universe size, by size."""
    last = {}
    for p in sorted(points, key=lambda p: p["minutes"]):
        if p["classes"] is not None:
            last[p["series"]] = p
    return sorted(last.values(), key=lambda p: p["classes"])


def plot_curve(points: list[dict], path: Path) -> Path:
    """Left: music 1-shot against training CPU-minutes, a line per run (dashed: without letters
    and digits). Right: each run's last point against its number of universe classes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from symclr_ft.eval.report import save_figure

    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for k, name in enumerate(dict.fromkeys(p["series"] for p in points)):
        mine = [p for p in points if p["series"] == name]
        for column, style in zip(COLUMNS, ("-", "--")):
            xy = [(p["minutes"], p[column]["one_shot"]["micro_mean"]) for p in mine if column in p]
            if xy:
                label = name if column == "all" else f"{name}, w/o letters, digits"
                left.plot(*zip(*xy), style, marker="o", color=f"C{k}", label=label)
    sized = by_classes(points)
    for column, style in zip(COLUMNS, ("-", "--")):
        xy = [(p["classes"], p[column]["one_shot"]["micro_mean"]) for p in sized if column in p]
        if xy:
            right.plot(*zip(*xy), style, marker="o", color="C0",
                       label="all classes" if column == "all" else "w/o letters, digits")
    left.set_xlabel("training CPU-minutes")
    right.set_xlabel("universe classes (last state of each run)")
    for ax in (left, right):
        ax.set_ylabel("music 1-shot (%)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="bench/universe_curve.py", description="Music 1-shot along universe pretraining.")
    p.add_argument("--run", action="append", default=[], required=True,
                   help="NAME=RUN_DIR[,snapshots=DIR][,classes=N] (repeat for runs on other universe sizes)")
    p.add_argument("--music", default="shards/muscima", help="music shards folder or COCO export")
    p.add_argument("--cache", default="runs/transfer/domains", help="where a COCO export is made into shards")
    p.add_argument("--split", default="valid", help="query split (support: train)")
    p.add_argument("--support-cap", type=int, default=10,
                   help="max train crops per class (0: all; above 5, so that 5-shot episodes differ)")
    p.add_argument("--query-cap", type=int, default=20, help="max query crops per class (0: all)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"])
    p.add_argument("--out", default="runs/universe_curve")
    return p


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    from symclr_ft.config import EvalConfig
    from symclr_ft.distributed import make_accelerator

    args = build_parser().parse_args(argv)
    # Every run and the music shards are read and checked before anything is measured.
    runs = [parse_run(text) for text in args.run]
    shards = transfer.domain_shards("music", Path(args.music), Path(args.cache))
    music = transfer.load_domain("music", shards, args.split, args.support_cap, args.query_cap)
    accelerator = make_accelerator(mixed_precision=args.mixed_precision)
    cfg = EvalConfig(split=args.split, episodes=args.episodes, seed=args.seed)
    points, cache, skipped = [], {}, []
    for series in runs:
        points += series_points(accelerator, series, music, cfg, args.split, cache, skipped)
    out = Path(args.out)
    write_json(out / "curve.json", {
        "split": args.split, "episodes": args.episodes, "support_cap": args.support_cap, "query_cap": args.query_cap,
        "seed": args.seed, "command": " ".join(sys.argv), "symbol_classes": sorted(
            music.classes[i] for i in music.symbols) if music.symbols else None,
        "runs": [{"name": s.name, "run": str(s.run), "classes": s.classes, "init": s.cfg.model.init} for s in runs],
        "points": points, "skipped": skipped})
    table = markdown_curve(points)
    if skipped:
        table += "\nSkipped (unreadable):\n" + "".join(f"- {why}\n" for why in skipped)
    write_text(out / "curve.md", table)
    plot_curve(points, out / "curve.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

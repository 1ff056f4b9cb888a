"""Run comparison: the ``symclr-report`` table and chart (the figures of one run: ``eval.plots``).

``symclr-report runs/a runs/b --out runs/summary`` reads each run folder's ``metrics.json``
(and ``config.yaml`` for its name and settings) and writes ``summary.md`` (the table, also
printed) and ``summary.png`` (accuracies with their 95% intervals as error bars).

Figures are drawn by :mod:`symclr_ft.eval.plots` (Agg canvas, saved atomically). Accuracies are stored as fractions and shown as percentages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from symclr_ft.errors import ArgumentParser, UserError, report_user_errors
from symclr_ft.io import read_json, write_text
from symclr_ft.eval.metrics import LABELS, SEED_METRICS, option_blocks, percent
from symclr_ft.eval.plots import (  # noqa: F401  (plot_confusion, plot_history: also read from here)
    _figure, _number, plot_confusion, plot_history, plot_per_class, save_figure,
)


# --------------------------------------------------------------------------- runs


def _read_json(path: Path) -> Any:
    return read_json(path, "metrics.json", missing_hint="is this a run folder?")


def evaluation_blocks(metrics: Any, path: Path) -> list[tuple[str, dict]]:
    """The evaluation results in a metrics.json: the file itself when it is one evaluation
    (top-level ``one_shot``...), or each nested mapping that is one (e.g. ``valid``/``test``).
    Returns (split label, block) pairs; refuses files without a usable block."""
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: expected a JSON object")
    if "one_shot" in metrics:
        blocks = [(str(metrics.get("split", "")), metrics)]
    else:
        blocks = [
            (str(v.get("split", k)), v)
            for k, v in metrics.items()
            if isinstance(v, dict) and "one_shot" in v
        ]
    if not blocks:
        raise UserError(f"{path}: no evaluation results (expected one_shot, five_shot, full_knn)")
    for _, block in blocks:
        for name in SEED_METRICS:
            entry = block.get(name)
            for key in ("micro_mean", "micro_ci95", "macro_mean"):
                if not isinstance(entry, dict) or _number(entry.get(key)) is None:
                    raise UserError(f"{path}: {name}.{key} missing or not a number")
    return blocks


def load_run(run_dir: str | Path) -> dict:
    """``{"dir", "name", "config" (dict or None), "metrics"}`` of a run folder."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = _read_json(metrics_path)
    evaluation_blocks(metrics, metrics_path)  # validate early, naming the file
    config = None
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text())
        except (OSError, yaml.YAMLError):
            raise UserError(f"{config_path}: not valid YAML") from None
        if not isinstance(config, dict):
            raise UserError(f"{config_path}: expected a mapping of sections")
    run_section = (config or {}).get("run")
    if run_section is not None and not isinstance(run_section, dict):
        raise UserError(f"{config_path}: section run must be a mapping of keys")
    name = (run_section or {}).get("name") or run_dir.name
    return {"dir": run_dir, "name": str(name), "config": config, "metrics": metrics}


def settings_text(config: dict | None) -> str:
    """The settings that tell runs apart, short: arch, init, loss, sampler, views, epochs."""
    if not config:
        return ""

    def get(section: str, key: str):
        values = config.get(section)
        return values.get(key) if isinstance(values, dict) else None

    parts = [
        get("model", "arch"),
        get("model", "init"),
        get("loss", "name"),
        get("data", "sampler"),
        get("views", "preset"),
        f"{get('train', 'epochs')} ep" if get("train", "epochs") is not None else None,
        f"lr {get('optim', 'lr')}" if get("optim", "lr") is not None else None,
    ]
    return ", ".join(str(p) for p in parts if p not in (None, ""))


def _duration(seconds: Any) -> str:
    s = _number(seconds)
    if s is None:
        return ""
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


def table_rows(runs: list[dict]) -> list[dict]:
    """One row per (run, evaluation block): the label and the blocks, ready for tables/plots."""
    rows = []
    names = [r["name"] for r in runs]
    for run in runs:
        name = run["name"] if names.count(run["name"]) == 1 else str(run["dir"])
        path = run["dir"] / "metrics.json"
        blocks = evaluation_blocks(run["metrics"], path)
        for split, block in blocks:
            label = f"{name} ({split})" if len(blocks) > 1 and split else name
            rows.append({"label": label, "run": run, "split": split, "block": block})
    return rows


def extra_column(text: str, count: int) -> tuple[str, list[dict]]:
    """``LABEL=DIR,DIR,...`` (``--column``): one evaluation folder per run, in the runs' order,
    whose 1-shot accuracy becomes a column (the main job's music 1-shot beside firefighting)."""
    label, sep, dirs = text.partition("=")
    paths = [Path(d) for d in dirs.split(",") if d]
    if not sep or not label or len(paths) != count:
        raise UserError(f"--column {text}: expected LABEL=DIR,... with one folder per run ({count})")
    blocks = []
    for path in paths:
        metrics = _read_json(path / "metrics.json")
        blocks.append(evaluation_blocks(metrics, path / "metrics.json")[0][1])
    return label, blocks


def markdown_table(runs: list[dict], extra: list[tuple[str, list[dict]]] = ()) -> str:
    """The comparison table of the seed's metrics (percent; ± the 95% CI half-width), the
    1-shot accuracy of each ``extra`` column, then a table of the options (TTA, centring,
    prototypes) when any run has them."""
    rows = table_rows(runs)
    if extra and len(rows) != len(runs):
        raise UserError("--column needs run folders with one evaluation each")
    head = (
        "| run | split | size | 1-shot | 1-shot macro | 5-shot | 5-shot macro | full k-NN "
        "| full macro | " + "".join(f"{label} 1-shot | " for label, _ in extra)
        + "images/s | train time | settings |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for i, row in enumerate(rows):
        b = row["block"]
        train = row["run"]["metrics"].get("train") or {}
        ips = _number(train.get("images_per_s")) if isinstance(train, dict) else None
        seconds = train.get("seconds") if isinstance(train, dict) else None
        cells = [
            row["label"],
            row["split"],
            str(b.get("image_size", "")),
            percent(b["one_shot"], table=True),
            percent(b["one_shot"], "macro", ci=False, table=True),
            percent(b["five_shot"], table=True),
            percent(b["five_shot"], "macro", ci=False, table=True),
            percent(b["full_knn"], table=True),
            percent(b["full_knn"], "macro", ci=False, table=True),
            *(percent(blocks[i]["one_shot"], table=True) for _, blocks in extra),
            f"{ips:.0f}" if ips is not None else "",
            _duration(seconds),
            settings_text(row["run"]["config"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Accuracy in %, micro unless marked macro (class-balanced); ± is the 95% interval "
        "half-width: over episodes for 1-/5-shot, Wilson over queries for full k-NN."
    )
    options = [(row, name, block) for row in rows for name, block in option_blocks(row["block"])]
    if options:
        lines += ["", "Options (next to the seed's definitions, same episodes):", ""]
        lines += ["| run | metric | micro | macro |", "|---|---|---|---|"]
        for row, name, block in options:
            lines.append(
                f"| {row['label']} | {name} | {percent(block, table=True)} "
                f"| {percent(block, 'macro', ci=False, table=True)} |"
            )
    return "\n".join(lines) + "\n"


def plot_comparison(runs: list[dict], path: str | Path) -> Path:
    """Grouped bars (1-shot, 5-shot, full k-NN; one bar per run) with 95% CI error bars
    (the asymmetric Wilson bounds for full k-NN when present)."""
    rows = table_rows(runs)
    fig = _figure(max(6.0, 1.2 * len(rows) + 4.0), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(SEED_METRICS))
    for i, row in enumerate(rows):
        means, low, high = [], [], []
        for name in SEED_METRICS:
            block = row["block"][name]
            m = 100 * block["micro_mean"]
            lo = _number(block.get("micro_ci95_low"))
            hi = _number(block.get("micro_ci95_high"))
            if lo is None or hi is None:
                lo = block["micro_mean"] - block["micro_ci95"]
                hi = block["micro_mean"] + block["micro_ci95"]
            means.append(m)
            low.append(max(0.0, m - 100 * lo))
            high.append(max(0.0, 100 * hi - m))
        ax.bar(x + i * width, means, width, yerr=[low, high], capsize=3, label=row["label"])
    ax.set_xticks(x + width * (len(rows) - 1) / 2, labels=[LABELS[n] for n in SEED_METRICS])
    ax.set_ylabel("accuracy (%), 95% CI")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="symclr-report", description="Compare run folders side by side (markdown + PNG)."
    )
    p.add_argument("runs", nargs="+", help="run folders holding metrics.json")
    p.add_argument(
        "--out", default=None, help="output folder (default: <parent of first run>/summary)"
    )
    p.add_argument("--column", action="append", default=[], metavar="LABEL=DIR,...",
                   help="a 1-shot column from other evaluation folders, one per run in order "
                   "(e.g. music=runs/a_music,runs/b_music)")
    return p


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = [load_run(r) for r in args.runs]
    out = Path(args.out) if args.out else Path(args.runs[0]).parent / "summary"
    table = markdown_table(runs, [extra_column(c, len(runs)) for c in args.column])
    write_text(out / "summary.md", table)
    plot_comparison(runs, out / "summary.png")
    print(table, end="")
    print(f"wrote {out / 'summary.md'} and {out / 'summary.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

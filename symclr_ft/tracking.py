"""What a run writes about itself: local files in ``runs/<name>/`` and Weights & Biases.

Local files are the record (they need nothing but a disk); wandb mirrors the same numbers,
offline unless the user configured it online, so nothing fails without a network. Only the
main process writes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from symclr_ft.config import Config, dump_config
from symclr_ft.errors import UserError
from symclr_ft.io import write_json, write_text

PACKAGES = ("torch", "torchvision", "accelerate", "timm", "webdataset", "scikit-learn", "wandb", "numpy")


def git_commit() -> str | None:
    """The commit of the code that ran (with ``+dirty`` when the tree has changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if commit and dirty else commit or None


def environment(num_processes: int, device: str, mixed_precision: str) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "num_processes": num_processes,
        "device": device,
        "mixed_precision": mixed_precision,
        "command": sys.argv,
    }


class RunFiles:
    """The files of one run folder."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

    @property
    def history_path(self) -> Path:
        return self.dir / "history.jsonl"

    @property
    def model_path(self) -> Path:
        return self.dir / "model.pt"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    def write_config(self, cfg: Config) -> None:
        write_text(self.dir / "config.yaml", dump_config(cfg))

    def write_environment(self, env: dict) -> None:
        write_json(self.dir / "env.json", env)

    def read_history(self) -> list[dict]:
        if not self.history_path.exists():
            return []
        rows = []
        for number, line in enumerate(self.history_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                int(row["epoch"])
            except (ValueError, KeyError, TypeError, RecursionError):
                raise UserError(f"{self.history_path}: line {number} is not a history record") from None
            rows.append(row)
        return rows

    def write_history(self, rows: list[dict]) -> None:
        """Rewrite the whole history (atomic): after a resume it holds exactly the epochs that
        the saved state has trained, never a duplicate line from the interrupted run."""
        write_text(self.history_path, "".join(json.dumps(r) + "\n" for r in rows))

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.dir / "metrics.json", metrics)


def wandb_settings(cfg: Config, run_dir: Path) -> tuple[str | None, dict]:
    """(``log_with`` for the Accelerator, ``init_kwargs`` for ``init_trackers``).

    ``WANDB_MODE`` in the environment wins over ``run.wandb_mode``; when wandb cannot be
    imported, tracking falls back to the local files with a warning instead of failing.
    """
    if cfg.run.tracking == "none":
        return None, {}
    mode = os.environ.get("WANDB_MODE", cfg.run.wandb_mode)
    if mode == "disabled":
        return None, {}
    try:
        import wandb  # noqa: F401
    except ImportError:
        warnings.warn("wandb is not installed: logging to local files only", stacklevel=2)
        return None, {}
    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs = {"wandb": {"name": cfg.run.name, "dir": str(run_dir), "mode": mode}}
    return "wandb", kwargs

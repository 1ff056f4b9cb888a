"""What a run writes about itself: local files in ``runs/<name>/`` and Weights & Biases.

Local files are the record (they need nothing but a disk); wandb mirrors the same numbers,
offline unless the user configured it online, so nothing fails without a network. Only the
main process writes.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from symclr_ft.config import Config, dump_config
from symclr_ft.errors import UserError, library_message
from symclr_ft.io import OutputKind, ensure_writable_dir, read_json, replace_dir, write_json, write_text
from symclr_ft.models.backbones import save_model_file

PROGRESS_FILE = "progress.json"  # in state/: where training stands, as JSON (never a pickle)
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


# Everything a run writes into its folder, by name: --overwrite deletes these and nothing else.
RUN_ENTRIES = (
    "config.yaml", "env.json", "history.jsonl", "metrics.json", "model.pt", "loss.png", "lr.png",
    "accuracy.png", "eval", "state", "state.tmp", ".state.old", "wandb",
)
RUN_PATTERNS = ("batches-rank*.jsonl", ".*.tmp")  # batch logs; io's temporary files
# The same rule as every command's output folder (io.OutputKind): these entries and no others.
RUN_OUTPUT = OutputKind("symclr-train", RUN_ENTRIES, RUN_PATTERNS)


class RunFiles:
    """The files of one run folder ``run.out_dir/run.name``: what is there, starting, replacing
    and resuming it, and saving everything a run writes (only the main process writes)."""

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

    @property
    def progress_path(self) -> Path:
        return self.state_dir / PROGRESS_FILE

    # -- starting -----------------------------------------------------------------------------

    def own_entries(self) -> list[Path]:
        """The entries of the folder that a run wrote (names it can give in advance)."""
        return RUN_OUTPUT.entries_in(self.dir)

    def has_training(self) -> bool:
        """Whether anything trained was kept here (a saved state, history, model or metrics);
        a folder holding only the config and environment of a start that never reached its
        first step has none, and is simply started again."""
        return any((self.dir / n).exists() for n in ("state", "history.jsonl", "model.pt", "metrics.json"))

    def check_start(self, resume: bool, overwrite: bool) -> str:
        """How this run may start, decided before any input is read and before anything is
        deleted: ``resume``, ``replace`` (after the new run's inputs have been checked) or
        ``new``; ``restart`` for a folder whose earlier start never trained (replaced without
        --overwrite). Refuses the cases that would lose work, and a folder that cannot be made."""
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"{self.dir}: exists and is not a run folder")
        ensure_writable_dir(self.dir.parent)
        if resume:
            if not self.state_dir.is_dir():
                started = self.own_entries() and not self.has_training()
                hint = " (nothing was trained here yet)" if started else ""
                raise UserError(f"{self.dir}: nothing to resume (no saved state){hint}; start without --resume")
            return "resume"
        if not self.has_training():
            return "restart" if self.own_entries() else "new"
        if not overwrite:
            raise UserError(
                f"{self.dir}: run folder exists; use --resume to continue it, --overwrite to "
                "replace it, or another run.name"
            )
        return "replace"

    def start(self, how: str) -> None:
        """Create the folder; for ``replace`` and ``restart``, first delete what the earlier
        run wrote (only the entries the project names: anything else in the folder stays)."""
        if how == "restart":
            print(f"note: {self.dir}: an earlier start never reached its first step; starting again",
                  file=sys.stderr)
        if how in ("replace", "restart"):
            try:
                for path in self.own_entries():
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            except OSError as err:
                raise UserError(f"{self.dir}: cannot replace the earlier run ({err.strerror})") from None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"{self.dir}: cannot create the run folder ({err.strerror})") from None

    # -- run files ------------------------------------------------------------------------------

    def write_config(self, cfg: Config) -> None:
        write_text(self.dir / "config.yaml", dump_config(cfg))

    def write_environment(self, env: dict) -> None:
        write_json(self.dir / "env.json", env)

    def read_history(self) -> list[dict]:
        if not self.history_path.exists():
            return []
        try:
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{self.history_path}: cannot read the history ({library_message(err)})") from None
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            epoch = row.get("epoch") if isinstance(row, dict) else None
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise UserError(f"{self.history_path}: line {number} is not a history record") from None
            rows.append(row)
        return rows

    def write_history(self, rows: list[dict]) -> None:
        """Rewrite the whole history (atomic): after a resume it holds exactly the epochs that
        the saved state has trained, never a duplicate line from the interrupted run."""
        write_text(self.history_path, "".join(json.dumps(r) + "\n" for r in rows))

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.dir / "metrics.json", metrics)

    def read_metrics(self) -> dict:
        path = self.dir / "metrics.json"
        return read_json(path, "metrics file") if path.exists() else {}

    def save_model(self, net, epoch: int) -> None:
        """The portable model file; a failed write (disk full) keeps the previous one."""
        try:
            save_model_file(net, self.model_path, epoch)
        except (OSError, RuntimeError) as err:  # torch reports a full disk as RuntimeError
            raise UserError(f"{self.model_path}: cannot write the model file ({library_message(err)})") from None

    def log_batch(self, rank: int, row: dict) -> None:
        """Append one step's crops of one process (``train.log_batches``)."""
        with open(self.dir / f"batches-rank{rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    # -- resumable state ------------------------------------------------------------------------

    def save_state(self, accelerator, progress: dict) -> None:
        """Accelerate's state (weights, optimiser, random generators) plus ``progress`` as
        JSON, written into ``state.tmp/`` and swapped in only when complete: a failure or an
        interruption during the save keeps the previous state."""
        tmp = self.dir / "state.tmp"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()  # every process's files are in state.tmp/
            if accelerator.is_main_process:
                write_json(tmp / PROGRESS_FILE, progress)
                replace_dir(tmp, self.state_dir)
        except (OSError, RuntimeError, UserError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"{self.state_dir}: cannot save the training state ({library_message(err)}); "
                "the previous state is kept"
            ) from None
        accelerator.wait_for_everyone()

    def load_state(self, accelerator) -> dict:
        """Load a saved state; returns the ``progress`` saved with it. Nothing here is ever
        unpickled beyond plain tensors and containers (Accelerate reads its files weights-only),
        so a run folder copied from someone else cannot run code."""
        pickled = sorted(self.state_dir.glob("custom_checkpoint_*.pkl"))
        if pickled:
            raise UserError(
                f"{pickled[0]}: refused: resuming never unpickles objects (a crafted file could run "
                "code); this state was written by an older symclr_ft, start again with --overwrite"
            )
        progress = read_json(self.progress_path, "training progress file", "the state is incomplete")
        try:
            accelerator.load_state(str(self.state_dir))
        except Exception as err:  # noqa: BLE001  safetensors, torch and pickle each raise their own
            raise UserError(
                f"{self.state_dir}: saved state cannot be loaded ({library_message(err)})"
            ) from None
        if not isinstance(progress, dict):
            raise UserError(f"{self.progress_path}: not a training progress record")
        return progress


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
        import wandb  # noqa: F401  (only whether it can be imported)
    except ImportError:
        warnings.warn("wandb is not installed: logging to local files only", stacklevel=2)
        return None, {}
    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs = {"wandb": {"name": cfg.run.name, "dir": str(run_dir), "mode": mode}}
    return "wandb", kwargs

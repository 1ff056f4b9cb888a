"""examples/quickstart.py, the notebook-style walk through the whole flow, runs as a script on
generated drawings (what CI runs: about 20 s on 2 CPU cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for step in ("crops", "valid 1-shot accuracy", "test crops labelled correctly", "detections on"):
        assert step in out, (step, out)
    assert (tmp_path / "shards" / "classes.json").is_file()
    assert (tmp_path / "runs" / "quickstart" / "model.pt").is_file()
    assert (tmp_path / "index" / "features.safetensors").is_file()
    cells = (ROOT / "examples" / "quickstart.py").read_text().count("\n# %%")
    assert cells >= 6  # notebook cells: one per step

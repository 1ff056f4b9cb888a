"""bench/adapt.sh end to end on generated drawings: components of the train pages only, a short
adaptation from the universe weights, and the transfer table with the universe row beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_adapt_script_writes_the_row_and_its_comparison(synth_coco, synth_shards, tmp_path):
    components = tmp_path / "components"
    env = {**os.environ, "ADAPT_COMPONENTS": str(components), "OMP_NUM_THREADS": "1",
           "TRANSFER_ARGS": "--episodes 3 --mixed-precision no",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    overrides = ["data.image_size=32", "data.batch_size=8", "train.max_steps=2", "train.mixed_precision=no",
                 f"run.out_dir={tmp_path}", "run.name=adapt", "run.tracking=none"]
    result = subprocess.run(["bash", "bench/adapt.sh", str(synth_coco), str(synth_shards), *overrides],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((components / "stats.json").read_text())
    assert stats["source"].endswith("(train split)")
    assert all(name.startswith("train-") for name in stats["components"]["per_drawing"])  # train pages only
    table = json.loads((tmp_path / "adapt" / "transfer" / "transfer.json").read_text())
    assert [row["model"] for row in table["rows"]] == ["universe", "adapted"]
    assert table["split"] == "test" and all("music" in row for row in table["rows"])

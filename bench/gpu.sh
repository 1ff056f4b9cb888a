#!/usr/bin/env bash
# The seed baseline (configs/baseline.yaml: ResNet-18, 224 px, batch 32, 50 epochs, bf16) on one
# NVIDIA GPU: wall time, images/s and GPU utilisation, in one command that ends within 8 minutes.
#
#   bash bench/gpu.sh DATASET [section.key=value ...]
#
# DATASET: a COCO export (Roboflow layout: train/ valid/ test/) turned into shards in a temporary
# folder with make-shards, or a folder of shards already made (it has classes.json).
# Phases, each under `timeout`, all within BUDGET_S seconds (default 470, under 8 minutes):
#   1. make-shards;
#   2. training, `python -m symclr_ft.train --config configs/baseline.yaml` (one process, the
#      GPU through Accelerate), stopped with SIGTERM when its time is up: train.py then saves its
#      state and exits 3, and the completed epochs are in history.jsonl. 50 epochs do not fit
#      8 minutes; the report gives the epochs done and an extrapolation to 50;
#   3. (SPEED_S > 0, default 100 s) the side-by-side benchmark bench/train_speed.py at 224 and 64 px
#      on the GPU: default path vs the seed reference (SEED_WORKERS DataLoader workers, default 8).
# GPU utilisation: `nvidia-smi --query-gpu=utilization.gpu` sampled every second in the background
# during training; mean and median reported.
# Results: $OUT/gpu.md, $OUT/gpu.json, $OUT/train.log, $OUT/train_speed.txt when OUT is set;
# otherwise appended to bench/results/gpu.md (logs in the temporary folder, kept).
# Environment: PYTHON (default .venv/bin/python if present, else python3), BUDGET_S, SPEED_S,
# SEED_WORKERS.
set -uo pipefail

START=$(date +%s)
BUDGET_S=${BUDGET_S:-470}
SPEED_S=${SPEED_S:-100}
SEED_WORKERS=${SEED_WORKERS:-8}
if [ $# -lt 1 ] || [ ! -e "$1" ]; then
    echo "usage: bash bench/gpu.sh DATASET [section.key=value ...] (DATASET must exist)" >&2
    exit 2
fi
DATA=$(realpath "$1")  # absolute: the script works from the repository root
shift
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd); fi
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/symclr_gpu.XXXXXX")
if [ -n "${OUT:-}" ]; then RES=$OUT; OUT_SET=1; else RES=$WORK; OUT_SET=0; fi
mkdir -p "$RES"
SAMPLER_PID=""
cleanup() { [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null; }
trap cleanup EXIT

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "error: no NVIDIA GPU (nvidia-smi failed)" >&2
    exit 1
fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "GPU: $GPU_NAME; python: $PYTHON; work folder: $WORK; results: $RES"

# 1. Shards.
if [ -f "$DATA/classes.json" ]; then
    SHARDS=$DATA
    SHARD_S=0
else
    SHARDS=$WORK/shards
    T0=$(date +%s)
    timeout -k 10 $(( $(left) - 60 )) "$PYTHON" -m symclr_ft.data.shards --coco "$DATA" --out "$SHARDS" \
        || { echo "error: make-shards failed or timed out" >&2; exit 1; }
    SHARD_S=$(( $(date +%s) - T0 ))
fi

# 2. Training, with the GPU sampled every second.
TRAIN_S=$(( $(left) - SPEED_S - 30 ))  # 30 s: saving the state after SIGTERM + the report
if [ "$TRAIN_S" -lt 60 ]; then echo "error: only ${TRAIN_S}s left for training" >&2; exit 1; fi
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -i 0 -l 1 > "$WORK/util.csv" &
SAMPLER_PID=$!
T0=$(date +%s.%N)
timeout -s TERM -k 25 "$TRAIN_S" "$PYTHON" -m symclr_ft.train --config configs/baseline.yaml \
    "data.shards=$SHARDS" "run.out_dir=$WORK/runs" run.name=gpu_baseline run.tracking=none "$@" \
    > "$RES/train.log" 2>&1
TRAIN_RC=$?
T1=$(date +%s.%N)
kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; SAMPLER_PID=""
tail -5 "$RES/train.log"

# 3. Side by side: default path vs seed reference on this GPU.
SPEED_RC=skipped
if [ "$SPEED_S" -gt 0 ] && [ $(( $(left) - 15 )) -gt 30 ]; then
    timeout -s TERM -k 10 $(( $(left) - 15 )) "$PYTHON" bench/train_speed.py --shards "$SHARDS" \
        --sizes 224 64 --steps 30 60 --warmup 5 --repeats 3 --workers "$SEED_WORKERS" \
        > "$RES/train_speed.txt" 2>&1
    SPEED_RC=$?
fi

# Report.
"$PYTHON" - "$WORK" "$RES" "$GPU_NAME" "$TRAIN_RC" "$T0" "$T1" "$SHARD_S" "$SPEED_RC" "$OUT_SET" "$SHARDS" "$@" <<'EOF'
import json, statistics, sys, datetime
from pathlib import Path
work, res, gpu, rc, t0, t1, shard_s, speed_rc, out_set, shards = sys.argv[1:11]
overrides = sys.argv[11:]
wall = float(t1) - float(t0)
run = Path(work) / "runs" / "gpu_baseline"
hist = []
if (run / "history.jsonl").exists():
    hist = [json.loads(l) for l in (run / "history.jsonl").read_text().splitlines() if l.strip()]
util = []
for line in (Path(work) / "util.csv").read_text().splitlines():
    try:
        util.append(float(line.strip()))
    except ValueError:
        pass
busy = util[next((i for i, u in enumerate(util) if u > 0), len(util)):]  # from the first busy second
# Completed epochs from history.jsonl, plus the epoch cut short by the time limit from the saved
# Progress (train.py saves it with its Accelerate state when SIGTERM stops it).
train_s = sum(r["seconds"] for r in hist)
crops = sum(r["images_per_s"] * r["seconds"] for r in hist)
partial = None
state = run / "state"
if int(rc) != 0 and state.is_dir():
    import torch
    for path in sorted(state.glob("custom_checkpoint_*.pkl")):
        obj = torch.load(path, weights_only=True)
        if isinstance(obj, dict) and "crops" in obj and obj.get("epoch") == len(hist):
            partial = obj
if partial:
    train_s += partial["seconds"]
    crops += partial["crops"]
rate = crops / train_s if train_s else 0.0
done = len(hist)
try:
    per_epoch = json.loads((Path(shards) / "stats.json").read_text())["splits"]["train"]["crops"]
except (OSError, KeyError, ValueError):
    per_epoch = None
try:
    import yaml
    planned = int(yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"])
except (OSError, KeyError, TypeError, ValueError):
    planned = 50
evals = [r for r in hist if "one_shot" in r]
result = {
    "gpu": gpu, "config": "configs/baseline.yaml", "overrides": overrides,
    "exit_code": int(rc), "finished": int(rc) == 0, "epochs_planned": planned,
    "epochs_done": done, "steps_in_last_partial_epoch": partial["step"] if partial else 0,
    "wall_s_training_command": round(wall, 1), "make_shards_s": int(shard_s),
    "train_s_in_steps": round(train_s, 1), "crops_trained": int(crops),
    "crops_per_s": round(rate, 1), "images_per_s": round(2 * rate, 1),
    "extrapolated_all_epochs_training_s": round(planned * per_epoch / rate) if rate and per_epoch else None,
    "gpu_util_mean": round(statistics.mean(util), 1) if util else None,
    "gpu_util_mean_from_first_busy_s": round(statistics.mean(busy), 1) if busy else None,
    "gpu_util_median": statistics.median(util) if util else None,
    "gpu_util_samples": len(util),
    "last_eval": {k: evals[-1][k] for k in ("epoch", "one_shot", "five_shot", "full_knn")} if evals else None,
    "train_speed_exit": speed_rc,
}
status = "finished" if int(rc) == 0 else "stopped by the time limit" if int(rc) in (3, 124, 137) else f"exit {rc}"
md = [
    f"### GPU baseline ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}): {gpu}",
    "",
    f"`bash bench/gpu.sh DATASET {' '.join(overrides)}`".replace(" `", "`"),
    "",
    "| quantity | value |", "|---|---|",
    f"| epochs done / planned | {done} / {planned} + {result['steps_in_last_partial_epoch']} steps ({status}) |",
    f"| wall time of the training command | {wall:.0f} s (make-shards {shard_s} s before it) |",
    f"| time inside training steps | {train_s:.0f} s for {int(crops)} crops |",
    f"| throughput | {rate:.0f} crops/s = {2 * rate:.0f} images/s (2 views per crop) |",
    f"| {planned} epochs of training steps, extrapolated | {result['extrapolated_all_epochs_training_s'] or 'n/a'} s (without start-up and evaluation) |",
    f"| GPU utilisation (nvidia-smi, 1 s samples) | mean {result['gpu_util_mean']}% over the command, {result['gpu_util_mean_from_first_busy_s']}% from the first busy second; median {result['gpu_util_median']}%; {len(util)} samples |",
]
if evals:
    e = evals[-1]
    md.append(f"| last evaluation (epoch {e['epoch'] + 1}) | 1-shot {100 * e['one_shot']:.1f}%, 5-shot {100 * e['five_shot']:.1f}%, full {100 * e['full_knn']:.1f}% |")
speed = Path(res) / "train_speed.txt"
if speed.exists():
    text = speed.read_text()
    table = text[text.find("| px |"):] if "| px |" in text else text[-3000:]
    md += ["", f"Side by side (bench/train_speed.py, exit {speed_rc}):", "", table.strip()]
text = "\n".join(md) + "\n"
print("\n" + text)
(Path(res) / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
if out_set == "1":
    (Path(res) / "gpu.md").write_text(text)
else:
    Path("bench/results").mkdir(exist_ok=True)
    with open("bench/results/gpu.md", "a") as f:
        f.write(text + "\n")
EOF
echo "total $(elapsed) s"

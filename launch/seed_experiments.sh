#!/usr/bin/env bash
# The seed's seven experiments, one after another, then one comparison table.
#   bash launch/seed_experiments.sh [section.key=value ...]   # e.g. model.init=simclr:PATH train.epochs=5
# Uses `accelerate launch` (set ACCELERATE_CONFIG=launch/one_gpu.yaml etc.); expects shards/
# (bash launch/demo.sh, or make-shards, makes them).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh
EXPERIMENTS=(baseline high_temp low_temp strong_aug no_scheduler high_wd low_wd)
LAUNCH=(accelerate launch)
[ -n "${ACCELERATE_CONFIG:-}" ] && LAUNCH+=(--config_file "$ACCELERATE_CONFIG")
runs=()
for name in "${EXPERIMENTS[@]}"; do
  echo "== $name"
  "${LAUNCH[@]}" symclr_ft/train.py --config "configs/$name.yaml" --overwrite "$@"
  runs+=("runs/$name")
done
symclr-report "${runs[@]}" --out runs/seed_summary
echo "table: runs/seed_summary/summary.md, chart: runs/seed_summary/summary.png"

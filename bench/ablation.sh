#!/usr/bin/env bash
# Accuracy levers, each measured on the valid split at the same budget (EPOCHS, 64 px), then one
# table: bash bench/ablation.sh [EPOCHS]   -> runs/ablation/summary.md
# Evaluation-side levers (SimpleShot centring, 5-shot prototypes, rotation TTA) come from the
# eval options of every run and appear in the second table.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh
EPOCHS=${1:-8}
BASE=(--config configs/fewshot_cpu.yaml train.epochs=$EPOCHS eval.split=valid run.out_dir=runs/ablation --overwrite)
declare -A LEVERS=(
  [a_infonce_seed_views]="loss.name=infonce loss.mask_same_class=true data.sampler=random views.preset=simclr views.aug_strength=1.0 views.crop_scale_min=0.08 views.blur=true"
  [b_infonce_drawing_views]="loss.name=infonce loss.mask_same_class=true data.sampler=random"
  [c_supcon_drawing_views]=""
  [d_supcon_seed_views]="views.preset=simclr views.aug_strength=1.0 views.crop_scale_min=0.08 views.blur=true"
)
runs=()
for name in $(printf '%s\n' "${!LEVERS[@]}" | sort); do
  echo "== $name"
  # shellcheck disable=SC2086
  python -m symclr_ft.train "${BASE[@]}" run.name=$name ${LEVERS[$name]}
  runs+=("runs/ablation/$name")
done
symclr-report "${runs[@]}" --out runs/ablation/summary

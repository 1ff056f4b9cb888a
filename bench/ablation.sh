#!/usr/bin/env bash
# Accuracy levers, each measured on the valid split at the same budget (EPOCHS; 64 px unless the
# lever sets the size), then one table:
#   bash bench/ablation.sh [EPOCHS [NAME ...]]   -> runs/ablation/summary/summary.md
# (NAMEs: run only those levers, e.g. e_lite0_random_96; the table then covers those runs.)
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
  [e_lite0_random_96]="model.arch=tf_efficientnet_lite0 model.input_norm=imagenet data.image_size=96"
  [f_lite0_imagenet_64]="model.arch=tf_efficientnet_lite0 model.input_norm=imagenet model.init=efficientnet_lite0"
  [g_lite0_imagenet_96]="model.arch=tf_efficientnet_lite0 model.input_norm=imagenet model.init=efficientnet_lite0 data.image_size=96"
  [h_supcon_96]="data.image_size=96"
)
shift || true
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  mapfile -t names < <(printf '%s\n' "${!LEVERS[@]}" | sort)
fi
runs=()
for name in "${names[@]}"; do
  if [ -z "${LEVERS[$name]+x}" ]; then
    echo "error: bench/ablation.sh: unknown lever $name (known: ${!LEVERS[*]})" >&2
    exit 2
  fi
  echo "== $name"
  # shellcheck disable=SC2086
  python -m symclr_ft.train "${BASE[@]}" run.name=$name ${LEVERS[$name]}
  runs+=("runs/ablation/$name")
done
symclr-report "${runs[@]}" --out runs/ablation/summary

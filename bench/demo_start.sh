#!/usr/bin/env bash
# The main job's recipe from two starts, timed in one run (issue 26): the demo recipe
# (configs/demo_cpu.yaml, 5 epochs on firefighting) from the ImageNet weights and from the
# shipped universe weights (model.init=universe), each evaluated on the test split and on
# handwritten music (test split, symbols never trained on). One table: runs/demo_start/summary.md
#   bash bench/demo_start.sh [shards folder, default shards/firefighting] [music shards, default shards/muscima]
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh
SHARDS=${1:-shards/firefighting}
MUSIC=${2:-shards/muscima}
OUT=runs/demo_start
ROWS=(); MUSIC_ROWS=()
for init in efficientnet_lite0 universe; do
  name=demo_from_$init
  echo "== training the demo recipe from $init"
  python -m symclr_ft.train --config configs/demo_cpu.yaml data.shards="$SHARDS" model.init=$init \
    run.out_dir=$OUT run.name=$name eval.split=test --overwrite
  size=$(python -m symclr_ft.config --config $OUT/$name/config.yaml --get data.image_size)
  symclr-evaluate --shards "$MUSIC" --checkpoint $OUT/$name/model.pt --split test --image-size "$size" \
    --out $OUT/${name}_music > /dev/null
  ROWS+=("$OUT/$name"); MUSIC_ROWS+=("$OUT/${name}_music")
done
symclr-report "${ROWS[@]}" --column "music=$(IFS=,; echo "${MUSIC_ROWS[*]}")" --out $OUT/summary

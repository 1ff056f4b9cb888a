#!/usr/bin/env bash
# Adapting to unlabelled drawings, measured as its own row (issue 26): the ink components of the
# music TRAIN pages (symclr-components reads only their image list, never their labels) ->
# self-supervised SimCLR from the shipped universe weights (configs/adapt.yaml) -> bench/transfer.py
# on the music test split, with the universe weights alone as the row to compare with.
#   bash bench/adapt.sh [music COCO export, default ../shared/data/muscima] [music shards, default shards/muscima] [train overrides...]
# Writes shards/music_components ($ADAPT_COMPONENTS), the run (configs/adapt.yaml's run.out_dir/run.name,
# runs/adapt unless overridden) and the table in <run>/transfer/transfer.md. $TRANSFER_ARGS: extra
# bench/transfer.py options (e.g. --episodes 5 for a smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."
MUSIC=${1:-../shared/data/muscima}
MUSIC_SHARDS=${2:-shards/muscima}
shift $(( $# < 2 ? $# : 2 ))
COMPONENTS=${ADAPT_COMPONENTS:-shards/music_components}
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true

run() { echo "+ $*" >&2; "$@"; }
[ -f "$MUSIC_SHARDS/classes.json" ] || run python -m symclr_ft.data.shards --coco "$MUSIC" --out "$MUSIC_SHARDS"
run python -m symclr_ft.data.component_shards --drawings "$MUSIC" --split train --per-page 150 --out "$COMPONENTS"
TRAIN=(--config configs/adapt.yaml data.shards="$COMPONENTS" "$@")
run python -m symclr_ft.train "${TRAIN[@]}" --overwrite
read -r OUT_DIR NAME < <(python -m symclr_ft.config "${TRAIN[@]}" --get run.out_dir --get run.name)
# ${TRANSFER_ARGS} unquoted on purpose: several options in one variable
run python bench/transfer.py --model universe=universe --model adapted="$OUT_DIR/$NAME/model.pt" \
  --domain music="$MUSIC_SHARDS" --split test ${TRANSFER_ARGS:-} --out "$OUT_DIR/$NAME/transfer"

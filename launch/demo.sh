#!/usr/bin/env bash
# The main job, end to end: environment -> shards -> untrained baselines -> short training ->
# evaluation -> one table.
#
#   bash launch/demo.sh [section.key=value ...]      # overrides go to the training config
#
# Data: $SYMCLR_SHARDS (a folder written by make-shards, used as it is), else $SYMCLR_DATA, else
# ../shared/data/firefighting (the Roboflow COCO export unzipped there), else drawings generated
# by symclr-synth (said so on screen; $SYNTH_SCALE, default demo).
#
# Rows of the table, all at the demo's image size on the same split and with the same
# evaluation options:
#   untrained_random_<px>    the same network with random weights: what the architecture alone gives
#   untrained_<init>_<px>    the weights training starts from (ImageNet), not fine-tuned: the
#                            honest "before" of this recipe
#   <run.name>               after the short fine-tuning
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh

CONFIG=${CONFIG:-configs/demo_cpu.yaml}
if [ -n "${SYMCLR_SHARDS:-}" ]; then
  SHARDS=$SYMCLR_SHARDS
  echo "== data: shards $SHARDS (as they are, no make-shards)"
else
  DATA=${SYMCLR_DATA:-../shared/data/firefighting}
  if [ -d "$DATA" ]; then
    echo "== data: $DATA"
  else
    echo "== data: no dataset at $DATA: generating synthetic drawings in data/synthetic (see README: Data)"
    symclr-synth --out data/synthetic --scale "${SYNTH_SCALE:-demo}"
    DATA=data/synthetic
  fi
  echo "== make-shards"
  make-shards --coco "$DATA" --out shards
  SHARDS=shards
fi

# The run's settings, with the command line's overrides applied (they come last and win).
read -r NAME SIZE SPLIT ARCH NORM INIT PRECISION TTA PROTO EPISODES < <(
  python -m symclr_ft.config --config "$CONFIG" data.shards="$SHARDS" "$@" \
    --get run.name --get data.image_size --get eval.split --get model.arch --get model.input_norm \
    --get model.init --get train.mixed_precision --get eval.tta_rot90 --get eval.prototypes \
    --get eval.episodes)
OPTIONS=(--split "$SPLIT" --image-size "$SIZE" --arch "$ARCH" --mixed-precision "$PRECISION" --episodes "$EPISODES")
[ "$TTA" = True ] && OPTIONS+=(--tta-rot90)
[ "$PROTO" = True ] && OPTIONS+=(--prototypes)

ROWS=()
echo "== untrained: $ARCH with random weights, $SIZE px, $SPLIT split"
symclr-evaluate --shards "$SHARDS" --checkpoint random --input-norm "$NORM" "${OPTIONS[@]}" \
  --out "runs/untrained_random_$SIZE"
ROWS+=("runs/untrained_random_$SIZE")
CHECKPOINTS=(random)
if [ "$INIT" != random ]; then
  KIND=${INIT%%:*}
  echo "== untrained: $ARCH from $KIND weights, not fine-tuned (where training starts), $SIZE px"
  symclr-evaluate --shards "$SHARDS" --checkpoint "$INIT" --input-norm "$NORM" "${OPTIONS[@]}" \
    --out "runs/untrained_${KIND}_$SIZE"
  ROWS+=("runs/untrained_${KIND}_$SIZE")
  CHECKPOINTS+=("$INIT")
fi

UNTRAINED_S=$SECONDS
echo "== training $CONFIG"
python -m symclr_ft.train --config "$CONFIG" data.shards="$SHARDS" --overwrite "$@"

TRAINED_S=$((SECONDS - UNTRAINED_S))
ROWS+=("runs/$NAME")
CHECKPOINTS+=("runs/$NAME/model.pt")
# Symbols never trained on: handwritten music (MUSCIMA++, when it is on this machine), every
# row evaluated on its test split (support its train split), as a column of the table.
MUSIC=${SYMCLR_MUSIC:-../shared/data/muscima}
COLUMNS=()
if [ -f "$MUSIC/train/_annotations.coco.json" ]; then
  echo "== music: $MUSIC (symbols never trained on), every row on its test split"
  make-shards --coco "$MUSIC" --out shards/muscima
  MUSIC_ROWS=()
  for i in "${!ROWS[@]}"; do
    symclr-evaluate --shards shards/muscima --checkpoint "${CHECKPOINTS[$i]}" --input-norm "$NORM" \
      "${OPTIONS[@]}" --split test --out "${ROWS[$i]}_music" > /dev/null
    MUSIC_ROWS+=("${ROWS[$i]}_music")
  done
  COLUMNS=(--column "music=$(IFS=,; echo "${MUSIC_ROWS[*]}")")
else
  echo "== music: no MUSCIMA++ export at $MUSIC (set SYMCLR_MUSIC): table without the music column"
fi

echo "== results"
symclr-report "${ROWS[@]}" "${COLUMNS[@]}" --out runs/summary
echo
echo "wall clock: ${UNTRAINED_S} s to here from the start (set-up, shards, untrained rows), ${TRAINED_S} s training + evaluation (training alone: 'train time' above)"
echo "report: runs/summary/summary.md, runs/summary/summary.png; run folder: runs/$NAME (plots, metrics.json, model.pt)"
if [ -d "runs/$NAME/wandb" ]; then echo "wandb (offline): wandb sync runs/$NAME/wandb/offline-run-*"; fi

#!/usr/bin/env bash
# The transfer issue's lever runs, in order, on VALID splits only, then the one test run.
#   FF=shards MUS=muscima_shards MAIN=runs/lite0/model.pt FOLDS=runs/novel_lite0 OUT=runs/transfer bash bench/transfer_levers.sh
# MAIN: configs/fewshot_lite0_cpu.yaml as it was before this issue (stretch, colours, 40 classes);
# FOLDS: bench/novel_classes.py output for it. Heavy: run it under the team's CPU lock.
set -euo pipefail
FF=${FF:-shards}; MUS=${MUS:-muscima_shards}; MAIN=${MAIN:?model file}; FOLDS=${FOLDS:-}; OUT=${OUT:-runs/transfer}
V="--split valid --support-cap 20 --query-cap 40 --ff-shards $FF --domain music=$MUS"
F=""; [ -n "$FOLDS" ] && F="--folds main=$FOLDS --folds main_w05=$FOLDS --folds main_w03=$FOLDS"
# 1. evaluation-time levers on the untrained ImageNet features and the current model
python bench/transfer.py $V --imagenet --model in_canon=efficientnet_lite0,ink=canonical \
  --model in_box=efficientnet_lite0,box=1 --out $OUT/levers_imagenet
python bench/transfer.py $V $F --model main=$MAIN --model main_w05=$MAIN,wise=0.5 --model main_w03=$MAIN,wise=0.3 \
  --model main_canon=$MAIN,ink=canonical --model main_inv=$MAIN,ink=invert --out $OUT/levers_main
# 2. training levers: canonical ink + 120 procedural glyph classes, 7 epochs
python -m symclr_ft.glyphs --shards $FF --out $OUT/ff_glyphs120 --classes 120 --per-class 8
python -m symclr_ft.train --config configs/fewshot_lite0_cpu.yaml data.shards=$OUT/ff_glyphs120 train.epochs=7 \
  data.ink=canonical model.wise_alpha=1.0 run.out_dir=$OUT run.name=t1 run.tracking=none eval.tta_rot90=false --overwrite
T=$OUT/t1/model.pt
python bench/transfer.py $V $F --model main=$MAIN --model main_w05=$MAIN,wise=0.5 --model main_w03=$MAIN,wise=0.3 \
  --model t1=$T --model t1_w07=$T,wise=0.7 --model t1_w05=$T,wise=0.5 --out $OUT/levers_t1
# 3. the choice (valid numbers, rule in bench/transfer_choose.py), then the test split once
CHOICE=$(python bench/transfer_choose.py $OUT/levers_t1/transfer.json $T $MAIN "$FOLDS")
CUR=""; [ -n "$FOLDS" ] && CUR="--folds current=$FOLDS"
python bench/transfer.py --split test --support-cap 50 --ff-shards $FF --domain music=$MUS \
  --imagenet --model current=$MAIN $CUR $CHOICE --out $OUT/final_test

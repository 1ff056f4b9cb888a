#!/usr/bin/env bash
# The transfer issue's lever runs on VALID splits, the pre-registered choice, then the test split.
#   FF=shards MUS=muscima_shards MAIN=runs/lite0/model.pt FOLDS=runs/novel_lite0 OUT=runs/transfer bash bench/transfer_levers.sh
# MAIN: the recipe before issue 17 (configs/fewshot_lite0_cpu.yaml without model.feature_layers);
# FOLDS: bench/novel_classes.py output for it (fold{k}/model.pt + summary.json).
# Heavy (about 10 minutes of CPU for the levers, 10 for T1, 6 for the test run on 2 cores):
# run it under the team's CPU lock. Each lever row is also one short command (docs/RESULTS.md).
set -euo pipefail
FF=${FF:-shards}; MUS=${MUS:-muscima_shards}; MAIN=${MAIN:?model file}; FOLDS=${FOLDS:?fold folder}; OUT=${OUT:-runs/transfer}
V="--split valid --support-cap 20 --query-cap 40 --ff-shards $FF --domain music=$MUS"
# 1. evaluation-time levers (ImageNet features, the current model)
python bench/transfer.py $V --imagenet --model in_canon=efficientnet_lite0,ink=canonical \
  --model in_box=efficientnet_lite0,box=1 --model in_l45h=efficientnet_lite0,ink=canonical,layers=4+5+head --out $OUT/levers_imagenet
python bench/transfer.py $V --folds main=$FOLDS --folds main_w07=$FOLDS --folds main_l45h=$FOLDS \
  --model main=$MAIN --model main_w07=$MAIN,wise=0.7 --model main_w05=$MAIN,wise=0.5 --model main_inv=$MAIN,ink=invert \
  --model main_l45h=$MAIN,layers=4+5+head --model main_l345h=$MAIN,layers=3+4+5+head --out $OUT/levers_main
# 2. the training lever T1: canonical ink + 120 procedural glyph classes, 7 epochs
# (the glyphs of docs/RESULTS.md were drawn by glyphs.py, now symclr_ft/data/universe.py's procedural source,
#  rendered with its richer instance model: a rerun draws other crops)
symclr-universe --mix-with $FF --out $OUT/ff_glyphs120 --classes 120 --per-class 8 --procedural 1
python -m symclr_ft.train --config configs/fewshot_lite0_cpu.yaml data.shards=$OUT/ff_glyphs120 train.epochs=7 \
  data.ink=canonical run.out_dir=$OUT run.name=t1 run.tracking=none eval.tta_rot90=false --overwrite
T=$OUT/t1/model.pt
python bench/transfer.py $V --model t1=$T --model t1_head=$T,layers=head --model t1_w07=$T,wise=0.7 --out $OUT/levers_t1
# 3. the choice (valid numbers only), then the test split once
CHOICE=$(python bench/transfer_choose.py $OUT/levers_t1/transfer.json $OUT/levers_main/transfer.json)
python bench/transfer.py --split test --support-cap 50 --ff-shards $FF --domain music=$MUS --imagenet \
  --model current=$MAIN --folds current=$FOLDS --model current_l45h=$MAIN,layers=4+5+head --folds current_l45h=$FOLDS \
  $CHOICE --out $OUT/final_test

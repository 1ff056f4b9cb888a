#!/usr/bin/env bash
# Rerun a table of docs/RESULTS.md by its heading id: the anchor of the heading above the table
# (GitHub's: lower case, punctuation dropped, spaces as hyphens, a repeated heading gets -1).
#
#   bash bench/reproduce.sh --list                 # every id, with its heading
#   bash bench/reproduce.sh ID [--dry-run]         # the commands that made that table (printed, then run)
#
# The commands are the ones printed next to the table, with the paths RESULTS uses, all inside
# the repository: shards/firefighting, shards/muscima, runs/... What a table needs first is made
# when missing: shards from $SYMCLR_DATA (default ../shared/data/firefighting) and
# $SYMCLR_MUSCIMA (default ../shared/data/muscima), the shared models of "The models this
# round's benchmarks share". Most tables take minutes to hours on 2 CPU cores; speed tables
# are only comparable on the same machine. Exit 3: the table cannot be rerun from the
# repository (the reason is printed). tests/test_docs.py checks every table has an id here.
set -euo pipefail
cd "$(dirname "$0")/.."
SYMCLR_DATA=${SYMCLR_DATA:-../shared/data/firefighting}
SYMCLR_MUSCIMA=${SYMCLR_MUSCIMA:-../shared/data/muscima}
DRY_RUN=""
M=runs/lite0_main/model.pt      # the main model of this round's benchmarks
N=runs/novel_lite0              # its held-out fold models (test folds)

run() { echo "+ $*"; if [ -z "$DRY_RUN" ]; then "$@"; fi; }
not_reproducible() { echo "not reproducible from the repository: $*" >&2; exit 3; }

# ------------------------------------------------------------------ what tables need first
need_shards() {  # need_shards DIR: the firefighting shards at DIR
  [ -f "$1/classes.json" ] || run make-shards --coco "$SYMCLR_DATA" --out "$1"
}
need_muscima() { [ -f shards/muscima/classes.json ] || run make-shards --coco "$SYMCLR_MUSCIMA" --out shards/muscima; }
need_main_model() {
  need_shards shards/firefighting
  [ -f "$M" ] || run python -m symclr_ft.train --config configs/fewshot_lite0_cpu.yaml \
    data.shards=shards/firefighting run.out_dir=runs run.name=lite0_main run.tracking=none --overwrite
}
need_folds() {  # need_folds test|valid
  need_shards shards/firefighting
  local out=$N
  [ "$1" = valid ] && out=runs/novel_lite0_valid
  [ -f "$out/fold2/model.pt" ] || run python bench/novel_classes.py --config configs/fewshot_lite0_cpu.yaml \
    data.shards=shards/firefighting run.tracking=none train.epochs=6 --split "$1" --out "$out"
}

# ------------------------------------------------------------------ one function per table
t_make_shards() {
  run command time -f "%e s wall, %M KiB max RSS" make-shards --coco "$SYMCLR_DATA" --out shards/firefighting_t
}
t_processes() {
  run symclr-synth --out runs/smoke/coco --scale small
  run make-shards --coco runs/smoke/coco --out runs/smoke/shards
  local A=(--config configs/demo_cpu.yaml data.shards=runs/smoke/shards data.image_size=32 data.batch_size=16
           train.epochs=1 train.max_steps=6 run.tracking=none run.out_dir=runs/smoke train.mixed_precision=no --overwrite)
  run torchrun --nproc_per_node 2 -m symclr_ft.train "${A[@]}" run.name=two
  run env OMP_NUM_THREADS=1 python -m symclr_ft.train "${A[@]}" run.name=one
}
t_train_speed() { need_shards shards/firefighting; run python bench/train_speed.py --shards shards/firefighting; }
t_precision_speed() { need_shards shards/firefighting; run python bench/precision_speed.py --shards shards/firefighting; }
t_input_pipeline() {
  need_shards shards/firefighting
  run python bench/input_pipeline.py --shards shards/firefighting --steps 4 --model-steps 1 --repeats 3
}
t_eval_speed() {
  need_shards shards/firefighting
  run python bench/eval_speed.py --shards shards/firefighting --images 256 --repeats 3 --knn-splits test
}
t_memory() { need_shards shards/firefighting; run python bench/memory.py --shards shards/firefighting --steps 3; }
t_lite0_final() {
  need_shards shards
  run python -m symclr_ft.train --config configs/fewshot_lite0_cpu.yaml run.name=lite0_96_e10 --overwrite
  run symclr-evaluate --shards shards --split test --checkpoint runs/lite0_96_e10/model.pt \
    --centering --prototypes --tta-rot90 --mixed-precision bf16 --out runs/lite0_96_e10/test
  run python -m symclr_ft.train --config configs/fewshot_lite0_cpu.yaml run.name=lite0_96_e6 train.epochs=6 --overwrite
  run python -m symclr_ft.train --config configs/fewshot_lite0_cpu.yaml run.name=lite0_128_e6 \
    data.image_size=128 train.epochs=6 --overwrite
}
t_levers() {
  need_shards shards
  run bash bench/ablation.sh 6
  run symclr-evaluate --shards shards --split valid --checkpoint efficientnet_lite0 --arch tf_efficientnet_lite0 \
    --input-norm imagenet --image-size 96 --mixed-precision bf16 --centering --prototypes --tta-rot90
}
t_resnet18() {
  need_shards shards
  run python -m symclr_ft.train --config configs/fewshot_cpu.yaml run.name=fewshot_cpu_45 --overwrite
  run symclr-evaluate --shards shards --split test --checkpoint runs/fewshot_cpu_45/model.pt \
    --centering --prototypes --tta-rot90 --mixed-precision bf16 --out runs/fewshot_cpu_45/test
}
t_novel() { need_shards shards; run python bench/novel_classes.py --config configs/fewshot_lite0_cpu.yaml --out runs/novel_lite0; }
t_novel_levers() {
  need_shards shards
  local V=(--config configs/fewshot_lite0_cpu.yaml --split valid)
  run python bench/novel_classes.py "${V[@]}" --out runs/novel_valid_lr1e-3
  run python bench/novel_classes.py "${V[@]}" --out runs/novel_valid_lr3e-4 optim.lr=3e-4
  run python bench/novel_classes.py "${V[@]}" --out runs/novel_valid_nce05 loss.infonce_weight=0.5
  run python bench/novel_classes.py "${V[@]}" --out runs/novel_valid_128e6 data.image_size=128 train.epochs=6
  run python bench/window_pretrain.py --out runs/window_pretrain train.epochs=2 optim.hold_epochs=0
  run python bench/novel_classes.py "${V[@]}" --out runs/novel_valid_win model.init=simclr:runs/window_pretrain/run/model.pt
  run python bench/novel_classes.py --config configs/fewshot_lite0_cpu.yaml --out runs/novel_lite0_128e6 \
    data.image_size=128 train.epochs=6
}
t_streaming() {
  need_shards shards
  run python bench/streaming.py --source shards --work runs/stream_bench --sizes 100000 1000000 --steps 200
}
t_shared_models() { need_muscima; need_main_model; need_folds test; }
t_fixed_seed() { run python -m pytest tests/test_train.py -k fixed_seed; }
t_readme_predict() {
  need_main_model
  run symclr-predict --model "$M" --support "$SYMCLR_DATA" --support-split train --shots 5 \
    --query "$SYMCLR_DATA/test" --out runs/predict/preds.csv --reject auto
}
t_open_set_first() {
  need_main_model; need_folds test
  run python bench/open_set.py --shards shards/firefighting --split valid --model "$M" --draws 1 --scores max margin
  run python bench/open_set.py --shards shards/firefighting --split test --novel "$N" --draws 3 --scores max
}
t_eval_memory() {
  need_muscima; need_main_model
  run python bench/memory.py --modes evaluate --combine shards/muscima --eval-shards runs/mus_37k \
    --eval-model "$M" --eval-size 96
}
t_demo_choice() {  # the 80 px recipe of that day: configs/demo_cpu.yaml at 80 px
  need_shards shards/firefighting
  run python bench/time_to_accuracy.py --shards shards/firefighting --train demo
}
t_demo80_test() { need_shards shards/firefighting; run env SYMCLR_SHARDS=shards/firefighting bash launch/demo.sh data.image_size=80; }
t_demo_test() { need_shards shards/firefighting; run env SYMCLR_SHARDS=shards/firefighting bash launch/demo.sh; }
t_demo_alone() {
  need_shards shards/firefighting
  run python -m symclr_ft.train --config configs/demo_cpu.yaml data.shards=shards/firefighting \
    run.out_dir=runs/demo_clean run.tracking=none --overwrite
}
t_demo72_choice() {
  need_shards shards/firefighting
  local A=(--config configs/demo_cpu.yaml data.shards=shards/firefighting eval.split=valid
           run.out_dir=runs/s3/demo_choice run.tracking=none --overwrite)
  run python -m symclr_ft.train "${A[@]}" run.name=e4_80 data.image_size=80 train.epochs=4
  run python -m symclr_ft.train "${A[@]}" run.name=e5_72 data.image_size=72
}
t_time_to_accuracy() {
  need_shards shards/firefighting
  run python bench/time_to_accuracy.py --shards shards/firefighting --seed-epochs 1 --out runs/s3/tta
}
t_open_set_valid() {
  need_folds valid
  local S=(--shards shards/firefighting --split valid --novel runs/novel_lite0_valid --draws 3)
  run python bench/open_set.py "${S[@]}" --mixed-precision no --scores max margin classnorm zscore \
    energy0.02 energy0.05 energy0.1 views_max views_proto
  run python bench/open_set.py "${S[@]}" --mixed-precision no --scores max support_views views_max_t views_proto_t
  run python bench/open_set.py "${S[@]}" --scores max support_views views_proto_t
  run python bench/open_set.py "${S[@]}" --scores max support_views --feature-layers 4+5+head
}
t_open_set_test() {
  need_folds test
  run python bench/open_set.py --shards shards/firefighting --split test --novel "$N" --draws 3 --scores max support_views
}
t_predict_speed() {
  need_main_model
  run python bench/eval_speed.py --shards shards/firefighting --predict-model "$M" --repeats 3
  run python bench/bf16_agree.py --shards shards/firefighting --model "$M"
}
t_predict_memory() {
  need_main_model
  run python bench/memory.py --modes predict --shards shards/firefighting --eval-model "$M" \
    --predict-queries 100000 --cycle-dir runs/s3/cycle100k
}
t_transfer_levers() {
  need_muscima; need_main_model; need_folds test
  local C=(--split valid --support-cap 20 --query-cap 40) F=(--ff-shards shards/firefighting) D=(--domain music=shards/muscima)
  run python bench/transfer.py "${C[@]}" "${F[@]}" "${D[@]}" --imagenet --out runs/transfer/probe_in
  run python bench/transfer.py "${C[@]}" "${F[@]}" "${D[@]}" --model in_canon=efficientnet_lite0,ink=canonical --out runs/transfer/probe_in_canon
  run python bench/transfer.py "${C[@]}" "${F[@]}" "${D[@]}" --model in_box=efficientnet_lite0,box=1 --out runs/transfer/probe_in_box
  run python bench/transfer.py "${C[@]}" "${F[@]}" "${D[@]}" --model main="$M" --out runs/transfer/probe_main
  run python bench/transfer.py "${C[@]}" "${F[@]}" "${D[@]}" --model main_w05="$M",wise=0.5 --out runs/transfer/probe_main_w05
  run python bench/transfer.py "${C[@]}" "${D[@]}" --model main_inv="$M",ink=invert --out runs/transfer/probe_main_inv
  run python bench/transfer.py "${C[@]}" "${F[@]}" --folds main="$N" --folds main_w07="$N" --model main="$M" \
    --model main_w07="$M",wise=0.7 --out runs/transfer/probe_folds
  run python bench/transfer.py "${C[@]}" "${F[@]}" "${D[@]}" --model in_l45h=efficientnet_lite0,ink=canonical,layers=4+5+head --out runs/transfer/probe_in_l45h
  run python bench/transfer.py "${C[@]}" "${F[@]}" "${D[@]}" --model main_l45h="$M",layers=4+5+head --out runs/transfer/probe_main_l45h
  run python bench/transfer.py "${C[@]}" "${F[@]}" "${D[@]}" --model main_l345h="$M",layers=3+4+5+head --out runs/transfer/probe_main_l345h
  run python bench/transfer.py "${C[@]}" "${F[@]}" --folds main_l45h="$N" --model main_l45h="$M",layers=4+5+head --out runs/transfer/probe_folds_l45h
}
t_transfer_test() {
  need_muscima; need_main_model; need_folds test
  run python bench/transfer.py --split test --support-cap 50 --ff-shards shards/firefighting --domain music=shards/muscima \
    --imagenet --model current="$M" --folds current="$N" \
    --model current_l45h="$M",layers=4+5+head --folds current_l45h="$N" --out runs/transfer/final_test
}
SPOT_MODELS=(--model "$M" --folds "$N/summary.json")  # the shared models (RESULTS, "Spotting")
t_spot_tune() { need_main_model; run python bench/spotting.py "${SPOT_MODELS[@]}" --split valid --tune --draws 2 --out runs/spot_bench; }
t_spot_test() {
  need_main_model; need_folds test; need_muscima
  [ -f runs/spot_bench/tune_valid.json ] || t_spot_tune
  local T=("${SPOT_MODELS[@]}" --split test --choose-from runs/spot_bench/tune_valid.json)
  run python bench/spotting.py "${T[@]}" --draws 10 --template-draws 2 --speed 5 --skip folds music --out runs/spot_bench/trained
  run python bench/spotting.py "${T[@]}" --draws 10 --skip trained music --out runs/spot_bench/folds
  run python bench/spotting.py "${T[@]}" --draws 3 --skip trained folds --out runs/spot_bench/music
  run python bench/spotting.py "${SPOT_MODELS[@]}" --split test --skip trained folds music --big --out runs/spot_bench/big
}

# issue 27's tables before grey looks and the drawing's own ink threshold became the defaults
# (2026-12-07): rerun with the settings of that time
BEFORE_LOOKS=(grey_looks=false adaptive_ink_threshold=false)
# and the tables before grey and coloured drawings were scored apart (the last spotting table,
# t_spot_looks_scoring): one template weight, 0.75, for every drawing
BEFORE_GREY=(template_weight=0.75 'grey_scoring={}')
t_template_source() {  # the final rows (the earlier rows used reduction ladders the code no longer has)
  need_shards shards/firefighting
  run python bench/spotting.py --data "$SYMCLR_DATA" --split valid --recall --max-drawings 6 --robustness scan scale0.7 \
    --set "${BEFORE_LOOKS[@]}" --out runs/spot_source
  run python bench/spotting.py --data "$SYMCLR_DATA" --split valid --recall --max-drawings 6 --set template_min_side=8 template_blur=0.6 "${BEFORE_LOOKS[@]}" \
    --out runs/spot_source_side8
}
t_spot_recall() {
  need_shards shards/firefighting
  run python bench/spotting.py --data "$SYMCLR_DATA" --split valid --recall --robustness all --set "${BEFORE_LOOKS[@]}" --out runs/spot_recall
}
t_spot_speed() {
  need_shards shards/firefighting
  local S=(python bench/spotting.py --data "$SYMCLR_DATA" --skip trained folds music)
  run "${S[@]}" --speed 10 --set "${BEFORE_LOOKS[@]}" --out runs/spot_speed
  run "${S[@]}" --speed 10 --set templates=false "${BEFORE_LOOKS[@]}" --out runs/spot_speed_no_templates
  run "${S[@]}" --big --out runs/spot_big
  run "${S[@]}" --pdf-set 20 --out runs/spot_pdf
}

U=runs/demo_start/demo_from_universe/model.pt   # the demo recipe from the universe weights (issue 27's model)
t_demo_start() { need_shards shards/firefighting; need_muscima; run bash bench/demo_start.sh shards/firefighting shards/muscima; }
t_spot_choose() {
  [ -f "$U" ] || t_demo_start
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --tune --draws 2 \
    --robustness scan scale0.7 --skip folds music --set "${BEFORE_LOOKS[@]}" --out runs/spotting/tune
}
t_spot_percls() {
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --choose-from runs/spotting/tune/tune_valid.json \
    --skip folds music --per-class --draws 2 --template-draws 0 --set "${BEFORE_LOOKS[@]}" calibration_source=sheet --out runs/spotting/percls_valid --set "${BEFORE_GREY[@]}"
}
t_spot_robust() {
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --choose-from runs/spotting/tune/tune_valid.json \
    --draws 2 --template-draws 1 --robustness scale0.7 scale1.4 turn90 thicker thinner --speed 10 --skip folds music \
    --set "${BEFORE_LOOKS[@]}" --out runs/spotting/test_robust --set "${BEFORE_GREY[@]}"
}
t_spot_test26() {
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --choose-from runs/spotting/tune/tune_valid.json \
    --draws 5 --template-draws 2 --robustness scan --skip folds music --set "${BEFORE_LOOKS[@]}" --out runs/spotting/test --set "${BEFORE_GREY[@]}"
}

t_spot_looks() {  # grey looks and the drawing's own ink threshold, chosen on valid
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  local S=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --choose-from runs/spotting/tune/tune_valid.json
           --draws 2 --template-draws 0 --skip folds music)
  run "${S[@]}" --robustness scan thinner thicker scale0.7 --set grey_looks=false adaptive_ink_threshold=false --out runs/spotting/looks_valid_base --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --skip trained folds music --robustness scan --set grey_looks=true adaptive_ink_threshold=false --out runs/spotting/looks_valid_grey --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --robustness scan thinner thicker scale0.7 --set grey_looks=true adaptive_ink_threshold=true --out runs/spotting/looks_valid_adaptive --set "${BEFORE_GREY[@]}"
  run python bench/spot_probes.py stats --data "$SYMCLR_DATA" --set "${BEFORE_GREY[@]}"
  run python bench/spot_probes.py counts --data "$SYMCLR_DATA" --model "$U" --copy scan --draw 1 --set "${BEFORE_GREY[@]}"
  run python bench/spot_probes.py wire --data "$SYMCLR_DATA" --draws 10 --set "${BEFORE_GREY[@]}"
}
t_spot_folds_universe() {
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  [ -f runs/novel_universe/fold2/model.pt ] || run python bench/novel_classes.py --config configs/demo_cpu.yaml \
    data.shards=shards/firefighting model.init=universe --out runs/novel_universe
  local S=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --choose-from runs/spotting/tune/tune_valid.json
           --folds runs/novel_universe/summary.json --skip trained music)
  run "${S[@]}" --draws 5 --out runs/spotting/folds_universe --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --draws 10 --out runs/spotting/folds10 --set "${BEFORE_GREY[@]}"
}
t_spot_test_looks() {
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  local S=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --choose-from runs/spotting/tune/tune_valid.json)
  run "${S[@]}" --skip trained folds music --speed 10 --out runs/spotting/speed_looks --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --draws 5 --template-draws 1 --robustness all --skip folds music --out runs/spotting/test_looks --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --draws 10 --template-draws 2 --skip folds music --out runs/spotting/test10 --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --draws 10 --template-draws 2 --robustness scan thinner --skip trained folds music --out runs/spotting/test10_scan_thinner --set "${BEFORE_GREY[@]}"
  run python bench/spotting.py --data "$SYMCLR_DATA" --skip trained folds music --big --out runs/spot_big_looks --set "${BEFORE_GREY[@]}"
}
t_spot_own() {  # the drawing's own exemplars, valid (not chosen)
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  local S=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --choose-from runs/spotting/tune/tune_valid.json
           --template-draws 0 --skip folds music --draws 2 --robustness scan thinner)
  run "${S[@]}" --set own_exemplars=false --out runs/spotting/own_valid_off --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --set own_exemplars=true own_exemplar_score=0.8 --out runs/spotting/own_valid_0.8 --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --set own_exemplars=true own_exemplar_score=0.9 --out runs/spotting/own_valid_0.9 --set "${BEFORE_GREY[@]}"
}
t_spot_errors() {  # where the valid errors come from; the candidate's boxes against the exemplar's
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  run python bench/spot_probes.py errors --data "$SYMCLR_DATA" --model "$U" --copy clean --draw 0 --set "${BEFORE_GREY[@]}"
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --choose-from runs/spotting/tune/tune_valid.json \
    --template-draws 0 --skip folds music --draws 2 --robustness scan thinner thicker scale0.7 --set box_mode=candidate \
    --out runs/spotting/box_candidate_valid --set "${BEFORE_GREY[@]}"
}
t_spot_percls_drawings() {  # per-class count thresholds from the exemplars' split's drawings, valid
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  local S=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --choose-from runs/spotting/tune/tune_valid.json
           --template-draws 0 --skip folds music --draws 2 --per-class)
  # calibrate_boxes=false: these ran before box sizes were calibrated (t_spot_boxes)
  run "${S[@]}" --robustness scan thinner --set calibration_source=drawings calibrate_boxes=false --out runs/spotting/percls_drawings_valid --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --set calibration_source=drawings calibration_drawings=30 calibrate_boxes=false --out runs/spotting/percls_drawings30_valid --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --set calibration_source=drawings calibration_drawings=30 calibration_shift=0.25 calibrate_boxes=false --out runs/spotting/percls_drawings30_shift_valid --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --draws 4 --set calibration_source=drawings calibration_drawings=30 calibration_rule=f1 calibrate_boxes=false --out runs/spotting/percls_rule_f1_valid --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --draws 4 --set calibration_source=drawings calibration_drawings=30 calibration_rule=exact calibrate_boxes=false --out runs/spotting/percls_rule_exact_valid --set "${BEFORE_GREY[@]}"
}
t_spot_test10_other() {  # 10 draws of the 0.7x, 1.4x, turned and thicker copies, test
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --choose-from runs/spotting/tune/tune_valid.json \
    --draws 10 --template-draws 2 --robustness scale0.7 scale1.4 turn90 thicker --skip trained folds music --out runs/spotting/test10_other --set "${BEFORE_GREY[@]}"
}
t_spot_test_percls() {  # the chosen per-class thresholds on test
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --choose-from runs/spotting/tune/tune_valid.json \
    --draws 10 --template-draws 0 --per-class --skip folds music --set calibrate_boxes=false --out runs/spotting/test10_percls --set "${BEFORE_GREY[@]}"
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --choose-from runs/spotting/tune/tune_valid.json \
    --skip trained folds music --speed 10 --out runs/spotting/speed_scoring --set "${BEFORE_GREY[@]}"
}
t_spot_boxes() {  # box sizes calibrated on the exemplars' split; the small model of the evidence (valid)
  local S=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --template-draws 0 --per-class)
  run "${S[@]}" --skip folds music --draws 4 --out runs/spotting/boxes_valid --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --skip folds music --draws 4 --set calibration_drawings=60 --out runs/spotting/boxes60_valid --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --skip trained folds music --draws 2 --robustness scan thinner --out runs/spotting/boxes_valid_copies --set "${BEFORE_GREY[@]}"
  run python bench/spot_probes.py learned --data "$SYMCLR_DATA" --model "$U" --draws 2 --set "${BEFORE_GREY[@]}"
}
t_spot_test_boxes() {  # calibrated box sizes on test, run once
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --draws 10 --template-draws 0 --per-class \
    --skip folds music --out runs/spotting/test10_boxes --set "${BEFORE_GREY[@]}"
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --draws 2 --template-draws 0 --per-class \
    --skip trained folds music --robustness scan thinner thicker --out runs/spotting/test_boxes_copies --set "${BEFORE_GREY[@]}"
}
t_spot_feature_match() {  # feature matching at a 15-megapixel budget: its weight chosen on valid, then test once
  [ -f "$U" ] || t_demo_start
  local S=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --feature-match --draws 2 --template-draws 0)
  run "${S[@]}" --split valid --skip folds music --robustness scan --set feature_match_budget=15 feature_match_weight=0.25 --out runs/spotting/fm15_valid --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --split valid --skip trained folds music --robustness scan thinner --set feature_match_budget=15 feature_match_weight=0.25 --out runs/spotting/fm15_valid_copies --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --split valid --skip folds music --robustness scan thinner --set feature_match_budget=15 feature_match_weight=0.5 --out runs/spotting/fm15w50_valid --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --split valid --skip folds music --robustness scan thinner --set feature_match_budget=15 feature_match_weight=0.75 --out runs/spotting/fm15w75_valid --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --split test --skip folds music --robustness scan thinner thicker --out runs/spotting/fm_test --set "${BEFORE_GREY[@]}"
}
t_spot_count_errors() {  # where the calibrated counts go wrong, valid, exemplar draw 0
  [ -f "$U" ] || t_demo_start
  run python bench/spot_probes.py errors --data "$SYMCLR_DATA" --model "$U" --copy clean --draw 0 --per-class --top 20 --set "${BEFORE_GREY[@]}"
  run python bench/spot_probes.py errors --data "$SYMCLR_DATA" --model "$U" --copy scan --draw 0 --per-class --top 20 --set "${BEFORE_GREY[@]}"
}
t_spot_looks_scoring() {  # grey and coloured drawings scored apart: each look's template weight on valid, then test once
  [ -f "$U" ] || t_demo_start
  local V=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --tune --draws 2 --skip folds music)
  run "${V[@]}" --robustness scan --grid objectness_weight=0,0.5 box_mode=exemplar nms_iou=0.5 score_rule=sum,max \
    template_weight=0.5,0.75,0.875,1.0 template_floor=0.3,0.4,0.5 --out runs/spotting/tune_grey
  run "${V[@]}" --robustness scan --feature-match --grid objectness_weight=0 box_mode=exemplar nms_iou=0.5 score_rule=sum \
    template_weight=0.75,0.875,1.0 template_floor=0.4,0.5 feature_match_weight=0.25,0.5,0.75 --out runs/spotting/tune_grey_fm
  run "${V[@]}" --robustness scale0.7 thinner thicker --grid objectness_weight=0,0.5 box_mode=exemplar nms_iou=0.5 score_rule=sum \
    template_weight=0.375,0.5,0.625,0.75 template_floor=0.4,0.5 --out runs/spotting/tune_coloured
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --draws 2 --template-draws 0 --skip folds music \
    --robustness scan thinner thicker scale0.7 --out runs/spotting/looks_scoring_valid
  local T=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test)
  run "${T[@]}" --draws 10 --template-draws 0 --per-class --skip folds music --out runs/spotting/looks_test10
  run "${T[@]}" --draws 2 --template-draws 0 --per-class --skip trained folds music \
    --robustness scan thinner thicker scale0.7 scale1.4 turn90 --out runs/spotting/looks_test_copies
  run "${T[@]}" --draws 2 --template-draws 0 --feature-match --skip trained folds music --robustness scan thinner --out runs/spotting/looks_test_fm
  run "${T[@]}" --draws 10 --template-draws 0 --skip trained folds music --robustness scan thinner thicker --out runs/spotting/looks_test10_copies
  [ -f runs/novel_universe/fold2/model.pt ] || run python bench/novel_classes.py --config configs/demo_cpu.yaml \
    data.shards=shards/firefighting model.init=universe --out runs/novel_universe
  run "${T[@]}" --folds runs/novel_universe/summary.json --skip trained music --draws 10 --out runs/spotting/looks_folds10
  run "${T[@]}" --music "$SYMCLR_MUSCIMA" --draws 3 --skip trained folds --out runs/spotting/looks_music
  local F=(--draws 2 --template-draws 0 --feature-match --per-class --skip trained folds music --robustness scan)
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid "${F[@]}" --out runs/spotting/looks_fm_percls_valid
  run "${T[@]}" "${F[@]}" --out runs/spotting/looks_fm_percls_test
}
t_spot_fine() {  # levers measured on valid, not chosen: a count threshold for scans, feature matching on thicker lines, finer templates
  [ -f "$U" ] || t_demo_start
  local V=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --tune --draws 2 --skip folds music)
  local C=(objectness_weight=0 box_mode=exemplar nms_iou=0.5 score_rule=sum template_weight=0.625 template_floor=0.5)
  local G=(objectness_weight=0 box_mode=exemplar nms_iou=0.5 score_rule=sum template_weight=0.875 template_floor=0.5)
  local COUNTS=(--count-scores 0.4 0.45 0.5 0.55 0.6 0.65 0.7 0.75 0.8)
  run "${V[@]}" --robustness scan "${COUNTS[@]}" --grid "${G[@]}" --out runs/spotting/tune_grey_count
  run "${V[@]}" --robustness scan "${COUNTS[@]}" --feature-match --grid "${G[@]}" feature_match_weight=0.5 --out runs/spotting/tune_grey_count_fm
  run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --draws 2 --template-draws 2 --feature-match \
    --per-class --skip trained folds music --robustness thicker --out runs/spotting/thicker_fm_valid
  run "${V[@]}" --robustness scan --count-scores 0.7 --grid "${G[@]}" --set template_scales=0.7,0.85,1.0,1.2,1.4 --out runs/spotting/tune_tmscales5
  for s in 12 16 24; do
    run "${V[@]}" --robustness scale0.7 thinner thicker --count-scores 0.7 --grid "${C[@]}" --set template_min_side=$s \
      --out runs/spotting/tune_coloured_side$s
  done
  run "${V[@]}" --robustness scale0.7 thinner thicker --count-scores 0.7 --grid "${C[@]}" --set template_min_side=24 template_blur=2 \
    --out runs/spotting/tune_coloured_side24_blur2
  for s in 16 24; do
    run "${V[@]}" --robustness scan --count-scores 0.7 --grid "${G[@]}" --set template_min_side=$s --out runs/spotting/tune_tmside$s
  done
  run "${V[@]}" --robustness scan --count-scores 0.7 --feature-match --grid "${G[@]}" feature_match_weight=0.5 \
    --set template_min_side=24 --out runs/spotting/tune_grey_fm_side24
  for s in 12 16 24; do
    run python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --skip trained folds music --speed 10 \
      --set template_min_side=$s --out runs/spotting/speed_side$s
  done
  run python bench/spot_probes.py scales
}
t_spot_refine() {  # refined template correlation: valid (choosing), test (run once), speed in alternation
  [ -f "$U" ] || t_demo_start
  local V=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split valid --tune --draws 2 --skip folds music)
  local C=(objectness_weight=0 box_mode=exemplar nms_iou=0.5 score_rule=sum template_weight=0.625 template_floor=0.5)
  local G=(objectness_weight=0 box_mode=exemplar nms_iou=0.5 score_rule=sum template_weight=0.875 template_floor=0.5)
  local FAST=(template_refine=true template_refine_classes=2 template_refine_scales=0.88,1.0,1.13)
  run "${V[@]}" --robustness scale0.7 thinner thicker --count-scores 0.7 --grid "${C[@]}" --out runs/spotting/tune_coloured_base
  run "${V[@]}" --robustness scale0.7 thinner thicker --count-scores 0.7 --grid "${C[@]}" --set template_refine=true \
    --out runs/spotting/tune_coloured_refine_nosize
  run "${V[@]}" --robustness scale0.7 thinner thicker --count-scores 0.7 --grid "${C[@]}" --set template_refine=true \
    template_refine_sizes=true --out runs/spotting/tune_coloured_refine_size
  run "${V[@]}" --robustness scale0.7 thinner thicker --count-scores 0.7 --grid "${C[@]}" --set "${FAST[@]}" \
    --out runs/spotting/tune_coloured_refine_fast
  run "${V[@]}" --robustness scan --count-scores 0.7 --grid "${G[@]}" --out runs/spotting/tune_scan_base
  run "${V[@]}" --robustness scan --count-scores 0.7 --grid "${G[@]}" --set template_refine=true --out runs/spotting/tune_scan_refine_nosize
  run "${V[@]}" --robustness scan --count-scores 0.7 --grid "${G[@]}" --set "${FAST[@]}" --out runs/spotting/tune_scan_refine_fast
  local M=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --split test --draws 2 --template-draws 0 --skip trained folds music)
  run "${M[@]}" --per-class --robustness scan thinner thicker --set template_refine=true --out runs/spotting/refine_test_copies
  run "${M[@]}" --per-class --robustness scan thinner thicker --out runs/spotting/base_test_copies
  run "${M[@]}" --feature-match --per-class --robustness scan --set template_refine=true --out runs/spotting/refine_fm_percls_test
  local S=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --skip trained folds music --speed 10)
  for i in 1 2; do
    run "${S[@]}" --out runs/spotting/speed_alt_base$i
    run "${S[@]}" --set template_refine=true --out runs/spotting/speed_alt_refine$i
  done
}
t_spot_music() {
  [ -f runs/spotting/tune/tune_valid.json ] || t_spot_choose
  local S=(python bench/spotting.py --model "$U" --data "$SYMCLR_DATA" --music "$SYMCLR_MUSCIMA"
           --choose-from runs/spotting/tune/tune_valid.json --draws 3 --skip trained folds)
  run "${S[@]}" --split valid --set grey_looks=false --out runs/spotting/music_valid_no_looks --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --split valid --out runs/spotting/music_valid_looks --set "${BEFORE_GREY[@]}"
  run "${S[@]}" --split test --out runs/spotting/music --set "${BEFORE_GREY[@]}"
}

need_universe() {
  [ -f shards/universe/classes.json ] || run symclr-universe --out shards/universe --classes 3000 --per-class 16 --valid-per-class 2
}
t_universe_curve() {
  need_universe; need_muscima
  run python -m symclr_ft.train --config configs/universe.yaml views.preset=drawing train.epochs=3 run.name=universe
  run python -m symclr_ft.train --config configs/universe.yaml train.epochs=2 run.name=universe_upright
  run python bench/universe_curve.py --run universe=runs/universe,snapshots=runs/universe_epochs \
    --run upright=runs/universe_upright,snapshots=runs/universe_upright_epochs \
    --music shards/muscima --episodes 50 --support-cap 10 --query-cap 20 --out runs/universe_curve
}
t_universe_classes() {
  need_muscima
  for spec in 300:160 10000:5; do
    local n=${spec%%:*} m=${spec##*:}
    [ -f shards/universe_c$n/classes.json ] || run symclr-universe --out shards/universe_c$n --classes $n --per-class $m --valid-per-class 2
    [ -f runs/universe_c$n/state/progress.json ] || run python -m symclr_ft.train --config configs/universe.yaml \
      data.shards=shards/universe_c$n train.max_steps=375 eval.split=none run.name=universe_c$n
  done
  run python bench/universe_curve.py --run c300=runs/universe_c300 --run c10000=runs/universe_c10000 \
    --music shards/muscima --episodes 50 --support-cap 10 --query-cap 20 --out runs/universe_classes_curve
}
t_recommended_choice() {
  need_shards shards/firefighting; need_muscima
  [ -f runs/demo_start/demo_from_universe/model.pt ] || t_demo_start
  [ -f shards/ff_universe/classes.json ] || run symclr-universe --out shards/ff_universe --classes 500 --per-class 8 --mix-with shards/firefighting
  [ -f shards/ff_u100/classes.json ] || run symclr-universe --out shards/ff_u100 --classes 100 --per-class 8 --mix-with shards/firefighting
  run python -m symclr_ft.train --config configs/universe.yaml data.shards=shards/ff_universe model.init=universe views.preset=drawing \
    optim.lr=5e-4 train.epochs=4 eval.episodes=100 eval.tta_rot90=true eval.prototypes=true run.name=recommended --overwrite
  run python -m symclr_ft.train --config configs/demo_cpu.yaml model.init=universe data.shards=shards/ff_u100 eval.split=valid run.name=demo_mix100 --overwrite
  run symclr-evaluate --config runs/demo_start/demo_from_universe/config.yaml --checkpoint runs/demo_start/demo_from_universe/model.pt \
    --shards shards/firefighting --split valid --episodes 100 --tta-rot90 --prototypes --out runs/demo_from_universe_valid
  run python bench/universe_curve.py --run from_universe=runs/demo_start/demo_from_universe --run mix100=runs/demo_mix100 \
    --run recommended=runs/recommended --music shards/muscima --episodes 50 --support-cap 10 --query-cap 20 --out runs/recommended_music_valid
}
t_adapt() { need_muscima; run bash bench/adapt.sh "$SYMCLR_MUSCIMA" shards/muscima; }
t_universe_transfer() {
  need_muscima; need_shards shards/firefighting
  run python bench/novel_classes.py --config configs/demo_cpu.yaml data.shards=shards/firefighting --classes-only --out runs/novel_classes_test
  [ -f runs/universe_upright/model.pt ] || { need_universe; run python -m symclr_ft.train --config configs/universe.yaml train.max_steps=375 run.name=universe_upright; }
  run python bench/transfer.py --imagenet --imagenet-size 64 --model universe=runs/universe_upright/model.pt,untrained_ff=1 \
    --fold-classes runs/novel_classes_test --ff-shards shards/firefighting --domain music=shards/muscima --split test \
    --out runs/transfer_universe
}

# ------------------------------------------------------------------ id -> (function, heading)
TABLES=(
  "make-shards-on-the-firefighting-data|t_make_shards|make-shards on the firefighting data"
  "one-process-versus-two-cpu-gloo|t_processes|One process versus two (CPU, gloo)"
  "the-previous-main-job-bash-launchdemosh-with-the-resnet-18-demo-before-this-round|-|ran configs/demo_cpu.yaml as it was before the EfficientNet-lite0 recipe (ResNet-18, 64 px, 12 epochs): check out that earlier commit and run bash launch/demo.sh"
  "end-to-end-training-benchtrain_speedpy|t_train_speed|End-to-end training (bench/train_speed.py)"
  "mixed-precision-on-a-cpu-without-native-bf16-2026-12-07|t_precision_speed|Mixed precision on a CPU without native bf16"
  "input-pipeline-against-the-model-step-benchinput_pipelinepy|t_input_pipeline|Input pipeline against the model step"
  "evaluation-bencheval_speedpy|t_eval_speed|Evaluation (bench/eval_speed.py)"
  "memory-benchmemorypy|t_memory|Memory (bench/memory.py)"
  "final-choice-configsfewshot_lite0_cpuyaml-96-px-10-epochs-107-minutes-of-training|t_lite0_final|Final choice: configs/fewshot_lite0_cpu.yaml"
  "levers-valid-split-6-epochs-each|t_levers|Levers, valid split, 6 epochs each"
  "resnet-18-from-random-weights-configsfewshot_cpuyaml-45-epochs-140-minutes|t_resnet18|ResNet-18 from random weights"
  "novel-classes-1-shot-and-5-shot-10-way-on-classes-never-trained-on|t_novel|Novel classes, 10-way"
  "levers-for-novel-classes-chosen-on-the-valid-splits-folds|t_novel_levers|Levers for novel classes (valid folds)"
  "larger-than-memory-streaming-from-shards|t_streaming|Larger than memory: streaming from shards"
  "the-models-this-rounds-benchmarks-share-2026-11-29|t_shared_models|The models this round's benchmarks share"
  "training-loop-restructured-the-same-numbers-train-engineer|t_fixed_seed|Training loop restructured: the pinned fixed-seed run"
  "use-a-trained-model-on-your-own-symbols-the-readme-example|t_readme_predict|The README's symclr-predict example"
  "memory-of-embedding-what-the-numbers-are-made-of|-|one-off measurements with GNU time and resource.getrusage in short processes; no script was kept"
  "open-set-on-held-out-classes-benchopen_setpy|t_open_set_first|Open set on held-out classes (first round)"
  "evaluation-memory-streamed-measured-by-the-coordinator-2242-2249-utc|t_eval_memory|Evaluation memory, streamed"
  "choosing-the-recipe-valid-split|t_demo_choice|Choosing the demo recipe (valid split)"
  "the-main-job-on-the-test-split-run-once|t_demo80_test|The main job on the test split (the 80 px demo of 2026-11-29)"
  "the-demo-recipes-training-alone-on-the-2-cores-coordinator-2253-2258-utc|t_demo_alone|The demo recipe's training alone"
  "choosing-valid-split|t_demo72_choice|Choosing the 72 px demo (valid split)"
  "the-main-job-on-the-test-split-run-once-1|t_demo_test|The main job at 72 px on the test split"
  "time-to-accuracy-benchtime_to_accuracypy-both-recipes-in-one-run|t_time_to_accuracy|Time to accuracy, both recipes"
  "open-set-choosing-the-score-on-the-valid-folds-fairly|t_open_set_valid|Open set: choosing the score on the valid folds"
  "open-set-on-the-test-folds-run-once|t_open_set_test|Open set on the test folds"
  "prediction-speed-bencheval_speedpy---predict-model|t_predict_speed|Prediction speed"
  "levers-valid-splits-choosing|t_transfer_levers|Transfer: levers, valid splits"
  "test-splits-run-once|t_transfer_test|Transfer: test splits"
  "method-and-why-valid-split-evidence|-|candidate recall was measured with small scripts outside the repository that were not kept"
  "valid-split-choosing-the-scoring-settings|t_spot_tune|Spotting: choosing the scoring settings (valid)"
  "test-split-run-once-settings-from-valid-lock-acquired-2213-load-23|t_spot_test|Spotting: test split"
  "pretraining-curve-music-1-shot-against-cpu-minutes-valid-split-choosing|t_universe_curve|Symbol universe: pretraining curve"
  "pretraining-curve-music-1-shot-against-the-number-of-universe-classes-valid-split-choosing|t_universe_classes|Symbol universe: curve against the number of classes"
  "universe-weights-against-imagenet-test-splits-run-once|t_universe_transfer|Symbol universe: transfer, test splits"
  "adapting-to-unlabelled-drawings-benchadaptsh-music-test-split-run-once|t_adapt|Symbol universe: adapting to unlabelled drawings"
  "the-recipe-for-your-own-symbols-universe-classes-mixed-in-or-not-valid-split-choosing|t_recommended_choice|Symbol universe: the recipe for your own symbols (valid)"
  "the-main-job-from-the-shipped-weights-benchdemo_startsh-test-split-run-once|t_demo_start|Symbol universe: the main job from the shipped weights"
  "choosing-the-scoring-on-valid-benchspottingpy---tune|t_spot_choose|Spotting (issue 27): choosing the scoring on valid"
  "per-class-count-thresholds-from-the-exemplars-valid-split-choosing|t_spot_percls|Spotting (issue 27): per-class count thresholds (valid)"
  "test-split-run-once-the-settings-chosen-on-valid|t_spot_test26|Spotting (issue 27): test split, clean and scan"
  "the-other-robustness-copies-and-speed-test-split-run-once-the-settings-chosen-on-valid|t_spot_robust|Spotting (issue 27): the other robustness copies, speed"
  "grey-looks-and-the-drawings-own-ink-threshold-valid-split-choosing-2026-12-07|t_spot_looks|Spotting (issue 27): grey looks, the drawing's own ink threshold (valid)"
  "held-out-folds-with-the-universe-fold-models-test-split-run-once|t_spot_folds_universe|Spotting (issue 27): held-out folds, universe fold models (test)"
  "the-chosen-settings-on-the-test-split-clean-and-every-robustness-copy-and-speed-run-once-2026-12-07|t_spot_test_looks|Spotting (issue 27): the chosen settings on test, every copy, speed"
  "music-pages-test-split-run-once|t_spot_music|Spotting (issue 27): music pages (test)"
  "the-drawings-own-exemplars-valid-split-choosing-2026-12-07-not-chosen|t_spot_own|Spotting (issue 27): the drawing's own exemplars (valid)"
  "where-the-valid-errors-come-from-and-box-sizes-per-class-valid-split-choosing|t_spot_errors|Spotting (issue 27): where the valid errors come from, box sizes per class (valid)"
  "per-class-count-thresholds-from-the-exemplars-own-split-valid-split-choosing|t_spot_percls_drawings|Spotting (issue 27): per-class thresholds from the exemplars' split (valid)"
  "feature-matchings-choice-not-run-to-the-end-and-10-draws-of-every-copy|t_spot_test10_other|Spotting (issue 27): 10 draws of the other copies (test)"
  "per-class-count-thresholds-on-the-test-split-run-once|t_spot_test_percls|Spotting (issue 27): per-class thresholds on test"
  "box-sizes-calibrated-on-the-exemplars-split-and-a-small-model-of-the-evidence-valid-split-choosing|t_spot_boxes|Spotting (issue 27): calibrated box sizes, a small model (valid)"
  "calibrated-box-sizes-on-the-test-split-run-once|t_spot_test_boxes|Spotting (issue 27): calibrated box sizes on test"
  "feature-matching-measured-a-smaller-budget-chosen-on-valid-then-test-2026-12-07|t_spot_feature_match|Spotting (issue 27): feature matching, its weight on valid, then test"
  "where-the-calibrated-counts-go-wrong-valid-exemplar-draw-0|t_spot_count_errors|Spotting (issue 27): where the calibrated counts go wrong (valid)"
  "scoring-grey-and-coloured-drawings-apart-valid-choosing-then-test-run-once-2026-12-07|t_spot_looks_scoring|Spotting (issue 27): grey and coloured drawings scored apart, valid then test"
  "refined-template-correlation-valid-choosing-then-test-run-once-2026-12-07|t_spot_refine|Spotting (issue 27): refined template correlation, valid then test, and its speed"
  "finer-templates-and-a-scan-count-threshold-valid-choosing-2026-12-07-not-chosen|t_spot_fine|Spotting (issue 27): finer templates and a count threshold for scans (valid): not chosen"
  "template-matching-as-a-candidate-source-valid-split-no-model-involved|t_template_source|Spotting: template matching as a candidate source (valid)"
  "candidate-recall-by-source-whole-valid-split-benchspottingpy---recall|t_spot_recall|Spotting: candidate recall by source (valid)"
  "speed-large-sheets-pdf-sets-generated-drawings-imagenet-efficientnet-lite0-at-96-px|t_spot_speed|Spotting: speed, large sheets, PDF sets"
)

case "${1:-}" in
  --list)
    for entry in "${TABLES[@]}"; do
      IFS='|' read -r id fn heading <<<"$entry"
      [ "$fn" = - ] && heading="(not reproducible) $heading"
      printf '%s\t%s\n' "$id" "$heading"
    done
    exit 0 ;;
  ""|-h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
[ "${2:-}" = --dry-run ] && DRY_RUN=1
for entry in "${TABLES[@]}"; do
  IFS='|' read -r id fn heading <<<"$entry"
  if [ "$id" = "$1" ]; then
    [ "$fn" = - ] && not_reproducible "$heading"
    "$fn"
    exit 0
  fi
done
echo "error: $1: no table with this id in docs/RESULTS.md (bash bench/reproduce.sh --list)" >&2
exit 2

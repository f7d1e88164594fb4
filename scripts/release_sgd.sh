#!/bin/bash
# MIXER against XENT with the release's optimisation throughout (spec section 7): plain SGD at
# lr 0.2 on batches of 32 sentences, gradient norm clipped at 10, the lr divided by 1.2 after
# every epoch whose validation BLEU did not improve, --mixer-loss-scaling release. As in the
# release, one training run goes from XENT to MIXER's stages with its lr and plateau state
# carried on: the MIXER and control phases continue the XENT phase's last checkpoint
# (fairseq's --restore-file), MIXER in stages of 2 epochs (s = 22, 19, 16, 13, counted back
# from each reference's end), the control in the XENT stage, 8 epochs each.
#
# Usage, from the repository root (one phase per call, so that MIXER and its control can run
# side by side, one per core):
#   bash scripts/release_sgd.sh DATA_BIN WORKDIR xent       # 15 epochs of XENT
#   bash scripts/release_sgd.sh DATA_BIN WORKDIR mixer      # epochs 16-23, MIXER
#   bash scripts/release_sgd.sh DATA_BIN WORKDIR control    # epochs 16-23, XENT
#   bash scripts/release_sgd.sh DATA_BIN WORKDIR evaluate   # beams 1 and 5, test and test1
# DATA_BIN is the binarised Multi30k of scripts/recipes/multi30k.json (its text/ folder beside
# it holds the references). Set CPU= (empty) to train on a GPU; PY picks the interpreter;
# XENT_EPOCHS, MIXER_EPOCHS and SUBSETS change the 15, 8 and "test test1" above; MODEL the
# model flags (default: the release's size, "--arch mixer_paper --embed-dim 256 ...").
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: bash scripts/release_sgd.sh DATA_BIN WORKDIR xent|mixer|control|evaluate" >&2
  exit 2
fi
DATA=$1 WORK=$2 PHASE=$3
compgen -G "$DATA/dict.*.txt" > /dev/null || {
  echo "release_sgd.sh: $DATA is not a binarised data folder (no dict.*.txt)" >&2; exit 2; }
PY=${PY:-.venv/bin/python}; CPU=${CPU---cpu}
read -ra MODEL <<< "${MODEL:---arch mixer_paper --embed-dim 256 --hidden-size 256 --dropout 0.2}"
BIN=$(dirname "$PY"); XENT_EPOCHS=${XENT_EPOCHS:-15}; MIXER_EPOCHS=${MIXER_EPOCHS:-8}
COMMON=(
  "$DATA" --user-dir fairseq_mixer --task mixer --log-format json
  --optimizer sgd --lr 0.2 --batch-size 32 --max-tokens 4000 --clip-norm 10 --seed 1
  --lr-scheduler reduce_lr_on_plateau --lr-shrink 0.8333 --log-interval 100 --num-workers 0
  "${MODEL[@]}"
  --criterion mixer --label-smoothing 0.1 --mixer-loss-scaling release
  --eval-bleu --eval-bleu-detok space --best-checkpoint-metric bleu
  --maximize-best-checkpoint-metric $CPU
)
LAST=$((XENT_EPOCHS + MIXER_EPOCHS))

continue_from_xent() {  # FOLDER [criterion flags]: epochs 16-23 from the XENT phase's last model
  local folder=$WORK/$1; shift
  [ -f "$WORK/xent/checkpoint_last.pt" ] || {
    echo "release_sgd.sh: no $WORK/xent/checkpoint_last.pt: run the xent phase first" >&2; exit 2; }
  mkdir -p "$folder"
  [ -e "$folder/checkpoint_last.pt" ] || cp "$WORK/xent/checkpoint_last.pt" "$folder/"
  "$BIN/fairseq-train" "${COMMON[@]}" --save-dir "$folder" --max-epoch $LAST "$@" \
    > "$folder.log" 2>&1
}

# The checkpoint of the epoch with the best validation BLEU in a phase's log.
best_epoch_checkpoint() {
  "$PY" - "$WORK/$1.log" "$WORK/$1" <<'EOF'
import json, sys
rows = [json.loads(line.split("| valid | ", 1)[1]) for line in open(sys.argv[1]) if "| valid | " in line]
if not rows:
    sys.exit(f"release_sgd.sh: {sys.argv[1]} has no validation yet: let its phase finish an epoch")
best = max(rows, key=lambda row: float(row["valid_bleu"]))
print(f"{sys.argv[2]}/checkpoint{best['epoch']}.pt")
EOF
}

case $PHASE in
  xent)
    mkdir -p "$WORK/xent"
    "$BIN/fairseq-train" "${COMMON[@]}" --save-dir "$WORK/xent" --no-epoch-checkpoints \
      --mixer-xent-epochs 100 --max-epoch $XENT_EPOCHS > "$WORK/xent.log" 2>&1 ;;
  mixer)
    continue_from_xent mixer --mixer-xent-epochs $XENT_EPOCHS --mixer-epochs-per-stage 2 \
      --mixer-unroll-steps 25 --mixer-delta 3 --mixer-schedule per_sentence \
      --reward sentence_bleu --mixer-baseline-bias-scale 1 ;;
  control)
    continue_from_xent control --mixer-xent-epochs 100 ;;
  evaluate)
    for phase in xent mixer control; do
      [ -f "$WORK/$phase.log" ] || {
        echo "release_sgd.sh: no $WORK/$phase.log: run the $phase phase first" >&2; exit 2; }
    done
    TEXT=$(dirname "$DATA")/text
    for subset in ${SUBSETS:-test test1}; do
      "$PY" scripts/evaluate.py --data "$DATA" --gen-subset $subset \
        --reference-text "$TEXT/$subset.en" --beams 1 5 --batch-size 128 $CPU \
        --checkpoint "$WORK/xent/checkpoint_last.pt" "$(best_epoch_checkpoint mixer)" \
        "$(best_epoch_checkpoint control)" \
        --name "XENT (SGD)" "MIXER (SGD)" "XENT control (SGD)" \
        --out-json "$WORK/results.jsonl" --out-md "$WORK/results.md"
    done ;;
  *) echo "unknown phase $PHASE (xent, mixer, control, evaluate)" >&2; exit 2 ;;
esac

#!/bin/bash
# The GPU checks of docs/performance.md and docs/results.md, in one call of the lent GPU
# machine (Python 3.12, torch with CUDA, no network), within GPU_CHECK_SECONDS (default 555):
#   1. builds the extensions of fairseq-fixed it needs from its sdist, installs the wheels in .whl/;
#   2. the Multi30k recipe with the larger model (scripts/recipes/multi30k_gpu.json): XENT, then
#   3. MIXER from that XENT model for 1 epoch with --bf16 (fairseq-mixer-train) and --fp16, then
#      the recipe's MIXER, its XENT control and the evaluation at beams 1/5/10 on test (2016)
#      and test1 (2017);
#   4. the benchmark on CUDA, full when time is left, else --quick (and again with the flags
#      of the code before, for before/after figures from one machine);
#   5. beside 2-3, the XENT step of START_RECIPE (default scripts/recipes/multi30k.json, the
#      256-unit CPU recipe), whose best checkpoint, without its optimizer state, comes back in
#      $OUT as start_xent.pt.part-* (15 MiB pieces: cat them) for MIXER runs on a CPU.
#   6. the tests that need CUDA (those of tests/test_transformer_step.py, test_lstm_step.py,
#      test_packed_transformer_pass.py and test_rewards.py named *cuda*).
# STAGES (default "recipe half bench") picks 2 and the rest of 3 (recipe), the half-precision
# runs of 3 (half), 4 (bench, with BENCH_FLAGS, by default none; bench_before: the bench again
# with BEFORE_FLAGS, by default none: the plugin's defaults, to compare BENCH_FLAGS with),
# 5 (start) and 6 (tests_cuda). The CUDA-graph loops (both models in two passes), not yet
# measured, against the launch-bound loops of the same rollout:
#   OUT=DIR STAGES="tests_cuda bench bench_before" BENCH_FLAGS="--cuda-loop graph --rollout two_pass" \
#       BEFORE_FLAGS="--rollout two_pass" bash scripts/gpu/check.sh
# (bench.py takes only options of the plugin: --rollout, --stage-s, --cuda-loop; the switches
# that gave the figures of replaced code, such as --teacher-forced padded, are gone.)
# Everything is logged under /tmp/gpu_logs and packed into $OUT/gpu_run.tar.gz after each stage.
# Prepare .whl/ (git-ignored) on a machine with pip access:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform any -d .whl hydra-core==1.3.2 omegaconf==2.3.0 bitarray nltk sacrebleu==2.6.0
#   .venv/bin/python -m pip download --no-deps --no-build-isolation --no-binary=:all: -d .whl \
#       antlr4-python3-runtime==4.9.3 fairseq-fixed==0.12.3.1 rouge-score==0.1.2
# (numba, whose llvmlite wheel alone outgrows what a call may carry, stays behind: the GPU
# image has its own, which the compiled rewards use on the host; where it does not import, the
# rewards run their tensor code on CUDA) and carry the binarised Multi30k of
# `run_recipe.py scripts/recipes/multi30k.json` (its data step) as work/multi30k/data.
# Run from the repository root:
#   OUT=DIR bash scripts/gpu/check.sh
# DEVICE=cpu PY=.venv/bin/python runs the same plumbing on a CPU (with RECIPE=another recipe).
set -u
T0=$(date +%s); LIMIT=${GPU_CHECK_SECONDS:-555}
DEVICE=${DEVICE:-cuda}; PY=${PY:-python3}; RECIPE=${RECIPE:-scripts/recipes/multi30k_gpu.json}
REPO=$(pwd); W=$REPO/.whl; S=/tmp/src; LOGS=/tmp/gpu_logs; WORK=/tmp/m30k
START_RECIPE=${START_RECIPE:-scripts/recipes/multi30k.json}; START_WORK=/tmp/m30k_start
left() { echo $((T0 + LIMIT - $(date +%s))); }
# pack may run in two processes at once (stage 5 runs beside the recipe): flock orders them.
pack() { flock /tmp/pack.lock tar czf "$OUT/gpu_run.tar.gz" -C "$(dirname $LOGS)" "$(basename $LOGS)"; }
stamp() { echo "[$(($(date +%s) - T0)) s] $*"; }
rm -rf $LOGS $WORK $START_WORK && mkdir -p $LOGS $WORK
CPU_FLAG=(); [ "$DEVICE" = cpu ] && CPU_FLAG=(--cpu)
STAGES=${STAGES:-recipe half bench}
has() { [[ " $STAGES " == *" $1 "* ]]; }

if [ "$DEVICE" = cuda ]; then
  unset CUDA_HOME
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $LOGS/gpu.txt 2>&1
  ( set -e
    $PY -m pip install --no-index --no-deps -q $W/*.whl $W/antlr4-python3-runtime-4.9.3.tar.gz \
        $W/rouge_score-0.1.2.tar.gz
    mkdir -p $S && tar xzf $W/fairseq_fixed-0.12.3.1.tar.gz -C $S
    cd $S/fairseq_fixed-0.12.3.1 && timeout 150 $PY $REPO/scripts/gpu/build_fairseq_extensions.py
  ) > $LOGS/install.log 2>&1 || { echo INSTALL FAILED; tail -20 $LOGS/install.log; }
  export PYTHONPATH=$S/fairseq_fixed-0.12.3.1:$REPO
  # run_recipe.py and evaluate.py call fairseq-train / fairseq-generate beside the interpreter.
  BIN=$($PY -c "import os, sys; print(os.path.dirname(sys.executable))")
  for tool in train generate; do
    printf '#!%s\nfrom fairseq_cli.%s import cli_main\ncli_main()\n' "$BIN/$(basename $PY)" $tool \
      > "$BIN/fairseq-$tool" && chmod +x "$BIN/fairseq-$tool"
  done
fi
$PY --version >> $LOGS/gpu.txt 2>&1
$PY -c "import torch, fairseq, fairseq.libbleu, sacrebleu; print('torch', torch.__version__, 'fairseq', fairseq.__version__, 'sacrebleu', sacrebleu.__version__)" >> $LOGS/gpu.txt 2>&1
cat $LOGS/gpu.txt; pack; stamp installed

# 2. XENT of the recipe with the larger model; 3. MIXER in half precision from it; then the
# rest of the recipe (a failed step is reported and the next ones still run).
recipe_step() {
  timeout $(left) $PY scripts/run_recipe.py $RECIPE --workdir $WORK --steps $1 "${CPU_FLAG[@]}" \
    > $LOGS/recipe_$1.out 2>&1 || { echo "RECIPE $1 FAILED"; tail -5 $LOGS/recipe_$1.out; }
  cp $WORK/*.log $WORK/results.* $LOGS/ 2>/dev/null
  grep -h '| valid |' $WORK/$1.log 2>/dev/null | grep -o '"epoch": [0-9]*\|"valid_bleu": "[0-9.]*"' | paste -sd' '
  pack; stamp "recipe step $1"
}
# 5. In the background: the start recipe's XENT model, for CPU runs.
start_xent() {
  mkdir -p $START_WORK && cp -r work/multi30k/data $START_WORK/data
  timeout $(left) $PY scripts/run_recipe.py $START_RECIPE --workdir $START_WORK --steps xent \
    "${CPU_FLAG[@]}" > $LOGS/start_xent.out 2>&1 || echo "START XENT FAILED"
  cp $START_WORK/xent.log $LOGS/start_xent.log 2>/dev/null
  cp $START_WORK/.done/xent.json $LOGS/start_xent_marker.json 2>/dev/null
  $PY -c "import sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False); c['last_optimizer_state'] = None; torch.save(c, sys.argv[2])" \
    $START_WORK/xent/checkpoint_best.pt /tmp/start_xent.pt \
    && split -b 15M /tmp/start_xent.pt "$OUT/start_xent.pt.part-" && sha256sum /tmp/start_xent.pt > $LOGS/start_xent.sha256
  pack; stamp "start recipe xent"
}
has start && { start_xent & }

if has recipe; then
mkdir -p $WORK && cp -r work/multi30k/data $WORK/data
recipe_step xent
fi

# MIXER in half precision from that XENT model, one epoch (s = 22).
if has half; then
FLAGS=$($PY scripts/run_recipe.py $RECIPE --workdir $WORK --show \
  | $PY -c "import json, sys; r = json.load(sys.stdin); print(' '.join(r['train'] + r['model'] + r['mixer']))")
for P in bf16 fp16; do
  [ "$DEVICE" = cpu ] && [ $P = fp16 ] && continue
  [ $(left) -lt 200 ] && { echo "no time left for --$P"; continue; }
  TRAIN=fairseq_cli.train; [ $P = bf16 ] && TRAIN=fairseq_mixer.train_cli
  timeout $(( $(left) < 60 ? $(left) : 60 )) $PY -m $TRAIN $WORK/data/bin --user-dir fairseq_mixer \
    --task mixer --log-format json $FLAGS --max-epoch 1 --no-save \
    --finetune-from-model $WORK/xent/checkpoint_best.pt --$P "${CPU_FLAG[@]}" \
    > $LOGS/mixer_$P.log 2>&1 || { echo "MIXER --$P FAILED"; tail -5 $LOGS/mixer_$P.log; }
  grep -E '\| (train|valid) \|' $LOGS/mixer_$P.log | cut -c1-400
  pack; stamp "mixer --$P"
done
fi

if has recipe; then
for step in mixer xent_more evaluate; do recipe_step $step; done
cat $WORK/results.md 2>/dev/null
fi

wait  # for the start recipe's XENT

# 6. (run before the benchmark, to fail fast) The tests that need CUDA: the CUDA-graph
# sampling loop against the launch-bound one, the rewards of CUDA tensors.
if has tests_cuda; then
  timeout $(( $(left) < 160 ? $(left) - 10 : 150 )) $PY -m pytest -q -rs -x tests/test_transformer_step.py tests/test_lstm_step.py tests/test_packed_transformer_pass.py tests/test_rewards.py tests/test_sampling.py -k cuda \
    > $LOGS/tests_cuda.log 2>&1 || echo "tests_cuda FAILED"
  tail -15 $LOGS/tests_cuda.log; pack; stamp tests_cuda
fi

# 4. The benchmark on this device: full when there is time for it; with the stage
# bench_before, then again with BEFORE_FLAGS.
bench_run() {  # NAME [bench.py flags]
  local name=$1 L MODE=--quick; shift; L=$(left); [ $L -gt 170 ] && MODE=
  [ $L -gt 45 ] || { echo "no time left for $name"; return; }
  timeout $((L - 5)) $PY scripts/bench.py --device $DEVICE $MODE --json $LOGS/$name.json "$@" \
    > $LOGS/$name.txt 2> $LOGS/$name.err || { echo "$name FAILED"; tail -5 $LOGS/$name.err; }
  tail -25 $LOGS/$name.txt; pack; stamp $name
}
# shellcheck disable=SC2086  # BENCH_FLAGS is a list of flags
has bench && bench_run bench ${BENCH_FLAGS:-}
# shellcheck disable=SC2086  # BEFORE_FLAGS is a list of flags
has bench_before && bench_run bench_before ${BEFORE_FLAGS:-}
pack; stamp done

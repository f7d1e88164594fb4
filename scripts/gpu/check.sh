#!/bin/bash
# The GPU checks of docs/performance.md, as run on the lent H100 (Python 3.12, torch 2.11, no
# network): builds fairseq-fixed's two Cython extensions from its sdist, trains MIXER with --fp16
# and --bf16 on synthetic data, then runs the full benchmark on CUDA. Results go to $OUT.
# Prepare the offline packages in .whl/ (git-ignored) on a machine with pip access:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform any -d .whl hydra-core==1.3.2 omegaconf==2.3.0 bitarray nltk
#   .venv/bin/python -m pip download --no-deps --no-build-isolation --no-binary=:all: -d .whl \
#       antlr4-python3-runtime==4.9.3 fairseq-fixed==0.12.3.1 rouge-score==0.1.2
# then run `OUT=DIR bash scripts/gpu/check.sh` from the repository root on the GPU machine.
set -u
W=$(pwd)/.whl; S=/tmp/src; HERE=$(pwd)/scripts/gpu
unset CUDA_HOME
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/gpu.txt 2>&1
python3 --version >> $OUT/gpu.txt; python3 -c "import torch;print('torch', torch.__version__)" >> $OUT/gpu.txt
( set -e
  python3 -m pip install --no-index --no-deps -q $W/*.whl $W/antlr4-python3-runtime-4.9.3.tar.gz $W/rouge_score-0.1.2.tar.gz
  mkdir -p $S && tar xzf $W/fairseq_fixed-0.12.3.1.tar.gz -C $S
  cd $S/fairseq_fixed-0.12.3.1 && timeout 120 python3 $HERE/build_fairseq_cython.py > $OUT/build.log 2>&1 ) || { echo INSTALL FAILED; tail -30 $OUT/build.log; }
export PYTHONPATH=$S/fairseq_fixed-0.12.3.1:$(pwd)
python3 -c "import fairseq, fairseq_mixer; print('fairseq', fairseq.__version__)" 2>&1 | tail -2
T="python3 -m fairseq_cli.train"
python3 -m data_prep.synthetic --dest /tmp/syn --train 3000 --valid 200 --test 200 --seed 1 --workers 8 > /dev/null 2>&1 || echo SYNTHETIC FAILED
C="/tmp/syn/bin --user-dir fairseq_mixer --task mixer --arch lstm --optimizer adam --max-tokens 4000 --no-epoch-checkpoints --log-format json --log-interval 10 --seed 1 --num-workers 0 --required-batch-size-multiple 1"
timeout 60 $T $C --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --lr 0.003 --max-epoch 4 --save-dir /tmp/xent > $OUT/xent.log 2>&1 || echo XENT FAILED
for P in fp16 bf16; do
  timeout 60 $T $C --criterion mixer --reward sentence_bleu --mixer-xent-epochs 0 --mixer-epochs-per-stage 1 --mixer-unroll-steps 25 --mixer-delta 8 --mixer-schedule per_sentence --mixer-baseline-bias-scale 100 --lr 0.0005 --max-epoch 3 --finetune-from-model /tmp/xent/checkpoint_best.pt --save-dir /tmp/mixer_$P --$P --ddp-backend legacy_ddp --eval-bleu --eval-bleu-detok space > $OUT/mixer_$P.log 2>&1 || echo MIXER $P FAILED
  grep -E '"train"|"valid"' $OUT/mixer_$P.log | cut -c1-330
done
timeout 170 python3 scripts/bench.py --device cuda --json $OUT/bench_cuda_full.json > $OUT/bench_full.txt 2> $OUT/bench_full.err || { echo FULL BENCH FAILED; tail -5 $OUT/bench_full.err; }
cat $OUT/bench_full.txt

#!/bin/bash
# One device call when a GPU is lent (docs/development.md). In parallel on the one GPU: SNIP under the
# SNIP paper's schedule on LeNet-5 (experiment=snip_lenet5_paper, 6 runs of 100k steps, started first:
# the longest), the GPU tests, and then the LeNet-5 zoo under its preset (clipping at 1.0), method by
# method, as many as fit. Every step ends inside END_S seconds from the start.
#
# Prepare here, once, in the repo root (the folder is ignored and travels with `carry: [".gpu"]`):
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/whl .gpu/datasets/MNIST/raw
#   cp ../shared/datasets/MNIST/raw/*.gz .gpu/datasets/MNIST/raw/
#   pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .gpu/whl hydra-core==1.3.8 omegaconf==2.3.1
#   pip wheel -q --no-deps -w .gpu/whl antlr4-python3-runtime==4.9.3
# Run there:  END_S=540 bash benchmarks/gpu_session.sh
#   SNIP_PAPER=0 skips the SNIP runs; ZOO_METHODS="imp" runs only those zoo methods (2026-12-04 ran all
#   but imp: the call ran out of time; the next session's open part is ZOO_METHODS=imp).
# Back in $OUT: gpu_tests.log, snip_lenet5.tgz and zoo_lenet5.tgz (run dirs without checkpoints).
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
END_S=${END_S:-540}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 SPARSE_LAB_DATA=$PWD/.gpu/datasets SPARSE_LAB_CACHE=/tmp/slcache
nvidia-smi -L
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())"
python3 -c "
from sparse_lab.data import MNISTDataModule as M
d = M(data_dir='$SPARSE_LAB_DATA'); d.prepare_data(); d.setup('fit')"  # extract once, before the parallel runs
mkdir -p /tmp/snip /tmp/zoo
echo "== snip_lenet5_paper at $(el) s"
[ "${SNIP_PAPER:-1}" = 1 ] && for s in 0.98 0.99; do for k in 0 1 2; do
  ( OMP_NUM_THREADS=1 timeout $(( END_S - $(el) - 10 )) python3 -m sparse_lab experiment=snip_lenet5_paper hardware=gpu \
      sparsity=$s seed=$k callbacks.progress_bar=null hydra.run.dir=/tmp/snip/runs/snip_s${s}_seed$k \
      > /tmp/snip/snip_${s}_$k.log 2>&1; echo "snip $s $k rc=$? at $(el) s" ) &
done; done
echo "== tests at $(el) s"
timeout ${TESTS_S:-150} python3 -m pytest -q -p no:cacheprovider -n ${TESTS_P:-4} tests/test_gpu.py > $OUT/gpu_tests.log 2>&1
echo "tests rc=$? at $(el) s"; tail -5 $OUT/gpu_tests.log
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
echo "== zoo at $(el) s"
for m in ${ZOO_METHODS:-full snip synflow rigl set grasp random gmp imp}; do for s in 0.98 0.99; do for k in 0 1 2; do
  echo "$m $s $k"; done; done; done > /tmp/zoo/jobs
run_one() { set -- $1; log=/tmp/zoo/$1_$2_$3.log
  OMP_NUM_THREADS=1 python3 -m sparse_lab experiment=sparse_zoo_lenet5 hardware=gpu method=$1 sparsity=$2 seed=$3 \
    callbacks.progress_bar=null hydra.run.dir=/tmp/zoo/runs/$1_s$2_seed$3 > $log 2>&1 \
    && echo "done $1 $2 $3 at $(( $(date +%s) - T0 )) s" || echo "FAILED $1 $2 $3: $(tail -3 $log | tr '\n' ' ')"; }
export -f run_one; export T0
timeout $(( END_S - $(el) - 10 )) xargs -P ${ZOO_P:-6} -I{} bash -c 'run_one "{}"' < /tmp/zoo/jobs; echo "zoo rc=$? at $(el) s"
wait
for d in snip zoo; do [ -d /tmp/$d/runs ] && (cd /tmp/$d && tar czf $OUT/${d}_lenet5.tgz --exclude='*.ckpt' --exclude='*.pt' --exclude='events.out*' runs *.log); done
echo "== end at $(el) s"

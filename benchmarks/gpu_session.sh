#!/bin/bash
# One device call when a GPU is lent (docs/development.md): the GPU tests, then the LeNet-5 zoo
# (12 runs at a time on the one GPU), then the MNIST epoch times, each step within its time budget.
#
# Prepare here, once, in the repo root (the folder is ignored and travels with `carry: [".gpu"]`):
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/whl .gpu/datasets/MNIST/raw
#   cp ../shared/datasets/MNIST/raw/*.gz .gpu/datasets/MNIST/raw/
#   pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .gpu/whl hydra-core==1.3.8 omegaconf==2.3.1
#   pip wheel -q --no-deps -w .gpu/whl antlr4-python3-runtime==4.9.3
# Run there:  TESTS_S=110 ZOO_S=320 TOTAL_S=500 bash benchmarks/gpu_session.sh
# Back in $OUT: gpu_tests.log, zoo_lenet5.tgz (run dirs without checkpoints), gpu_epoch_times_mnist.json.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 SPARSE_LAB_DATA=$PWD/.gpu/datasets SPARSE_LAB_CACHE=/tmp/slcache
nvidia-smi -L
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())"
echo "== tests at $(el) s"
timeout ${TESTS_S:-150} python3 -m pytest -q -p no:cacheprovider -n 6 tests/test_gpu.py > $OUT/gpu_tests.log 2>&1
echo "tests rc=$? at $(el) s"; tail -20 $OUT/gpu_tests.log
echo "== zoo at $(el) s"
python3 -c "
from sparse_lab.data import MNISTDataModule as M
d = M(data_dir='$SPARSE_LAB_DATA'); d.prepare_data(); d.setup('fit')"  # extract once, before the parallel runs
mkdir -p /tmp/zoo
{ for s in 0.98 0.99; do for k in 0 1 2; do echo "imp $s $k"; done; done  # the longest first
  for m in snip rigl full grasp synflow random set gmp; do for s in 0.98 0.99; do for k in 0 1 2; do echo "$m $s $k"; done; done; done
} > /tmp/zoo/jobs
run_one() { set -- $1; log=/tmp/zoo/$1_$2_$3.log
  OMP_NUM_THREADS=1 python3 -m sparse_lab experiment=sparse_zoo_lenet5 hardware=gpu method=$1 sparsity=$2 seed=$3 \
    callbacks.progress_bar=null hydra.run.dir=/tmp/zoo/runs/$1_s$2_seed$3 > $log 2>&1 \
    && echo "done $1 $2 $3 at $(( $(date +%s) - T0 )) s" || echo "FAILED $1 $2 $3: $(tail -3 $log | tr '\n' ' ')"; }
export -f run_one; export T0
timeout ${ZOO_S:-300} xargs -P ${ZOO_P:-12} -I{} bash -c 'run_one "{}"' < /tmp/zoo/jobs; echo "zoo rc=$? at $(el) s"
(cd /tmp/zoo && tar czf $OUT/zoo_lenet5.tgz --exclude='*.ckpt' --exclude='*.pt' --exclude='events.out*' runs *.log)
left=$(( ${TOTAL_S:-560} - $(el) ))
if [ $left -gt 60 ]; then
  timeout $left python3 benchmarks/gpu_epoch_times.py --datasets mnist --out $OUT/gpu_epoch_times_mnist.json 2>&1 | tail -12
fi
echo "== end at $(el) s"

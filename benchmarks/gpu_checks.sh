#!/usr/bin/env bash
# The GPU checks of issue 25, as one command for a lent GPU machine (the `device` tool's `run`), writing under
# $OUT: the GPU-relevant tests with DFERCLIP_DEVICE=cuda, then label latency, re-score, explain and a training
# step with the real-size ViT-B/32. Copy the figures into BENCHMARKS.md with the machine named. Not yet run:
# no GPU has been lent to this project so far.
#   usage (repo root, packages installed): OUT=/some/folder bash benchmarks/gpu_checks.sh
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PY:-python3}
export DFERCLIP_DEVICE=cuda PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 300 $PY -m pytest -q -x -p no:randomly -m "not slow" tests/test_precision.py tests/test_conformance.py \
  tests/test_predict.py tests/test_model.py tests/test_explain.py tests/test_zero_gpu.py tests/test_workbench.py \
  tests/test_train.py 2>&1 | tee "$OUT/tests.log"
timeout 120 $PY benchmarks/bench_app.py --repeats 3 --json "$OUT/app.json" 2>&1 | tail -30 | tee "$OUT/bench.log"
timeout 90 $PY benchmarks/bench_workbench.py --out "$OUT/workbench.json" --clips 200 2>&1 | tail -20 | tee -a "$OUT/bench.log"
timeout 60 $PY benchmarks/bench_explain.py --json "$OUT/explain.json" 2>&1 | tail -20 | tee -a "$OUT/bench.log"
timeout 90 $PY benchmarks/bench_train.py --json "$OUT/train.json" 2>&1 | tail -20 | tee -a "$OUT/bench.log"

#!/usr/bin/env bash
# The CUDA measurements (bench/gpu.py): ONE JSON object on stdout, progress on stderr.
#   bench/gpu.sh --out bench/results/gpu.json   # a CUDA machine: training fp32 vs AMP, infer pin_memory off vs on
#   bench/gpu.sh --device cpu --quick           # the same code on the CPU (tests/test_bench_gpu.py)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
[[ -x $PY ]] || PY=python3
exec "$PY" bench/gpu.py "$@"

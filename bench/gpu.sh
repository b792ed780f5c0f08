#!/usr/bin/env bash
# The CUDA measurements of this project (bench/gpu.py): ONE JSON object on stdout, progress on stderr.
#   bench/gpu.sh                     # every part, on the visible GPUs (< 8 min on one H100)
#   bench/gpu.sh --quick             # a smoke run
#   bench/gpu.sh --device cpu --quick --parts train,infer,mining
# Exit 2 (with {"error": "CUDA not available", ...}) when --device cuda (the default) has no GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi
exec "$PY" bench/gpu.py "$@"

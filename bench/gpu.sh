#!/usr/bin/env bash
# bench/gpu.py (the CUDA measurements) with this checkout's venv: ONE JSON object on stdout, progress on stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
[[ -x $PY ]] || PY=python3
exec "$PY" bench/gpu.py "$@"

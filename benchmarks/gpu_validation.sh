#!/usr/bin/env bash
# The GPU validation in one command (benchmarks/gpu_validation.py has the details; docs/gpu-validation.md).
# On the GPU machine (the device tool, from the repository root), after `python scripts/fetch_gpu_wheels.py` here:
#   bash benchmarks/gpu_validation.sh --out "$OUT"          carry: [".wheels/gpu"]
# Dry run on a CPU, in seconds (the lab venv's python, for Hydra):
#   bash benchmarks/gpu_validation.sh --dry-run
# Env: GPUVAL_PYTHON = the machine's interpreter with torch + transformers (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --dry-run "* ]] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=${GPUVAL_PYTHON:-$(command -v python3 || command -v python)}
fi
exec "$PY" benchmarks/gpu_validation.py "$@"

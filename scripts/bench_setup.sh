#!/usr/bin/env bash
# Set up the PyTorch side of scripts/bench.py: a separate Python 3.11 venv (.venv-torch) with the
# CPU build of PyTorch.  PyTorch is not a bntrain dependency (setup.cfg's optional `bench` extra
# names it for a single-venv install); bench.py runs it under .venv-torch/bin/python by default.
#
#   scripts/bench_setup.sh            # creates .venv-torch if it is missing
#   BENCH_TORCH_PYTHON=python3.12 scripts/bench_setup.sh
#
# On these machines pip finds the CPU build of torch 2.13.0 for Python 3.11 on local disk; elsewhere,
# point pip at PyTorch's CPU wheel index (PIP_EXTRA_INDEX_URL) to avoid the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${BENCH_TORCH_PYTHON:-python3.11}
if [ -x .venv-torch/bin/python ] && .venv-torch/bin/python -c 'import torch, numpy' 2>/dev/null; then
  echo "bench_setup: .venv-torch already has torch $(.venv-torch/bin/python -c 'import torch; print(torch.__version__)')"
  exit 0
fi
command -v "$PY" >/dev/null 2>&1 || { echo "bench_setup: $PY not found; set BENCH_TORCH_PYTHON" >&2; exit 2; }
"$PY" -m venv .venv-torch
.venv-torch/bin/pip install -q torch==2.13.0 numpy
.venv-torch/bin/python -c 'import torch; print("bench_setup: torch", torch.__version__)'

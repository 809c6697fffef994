#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and no network (see docs/benchmarks.md, "GPU").
#
#   scripts/gpu_check.sh [RESULTS_DIR]        # default: $OUT, else ./gpu_results
#
# 1. installs bntrain with its `test` and `gpu` extras into .venv-gpu from the wheels carried in
#    .whl/ (pip --no-index; prepare them on a networked machine as docs/benchmarks.md shows;
#    a CUDA build of torch among them makes the PyTorch columns run on CUDA too),
# 2. runs the GPU tests (pytest -m gpu),
# 3. runs scripts/bench.py --device gpu (bntrain on JAX/CUDA, PyTorch on CUDA) and --traffic,
# writing logs and tables under RESULTS_DIR, all within 5 minutes (each step has its own timeout).
# Exit status: 0 when every step passed, else the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
RES=${1:-${OUT:-./gpu_results}}
mkdir -p "$RES"
RES=$(cd "$RES" && pwd)
WHEELS=${BNTRAIN_WHEELS:-.whl}
ROUNDS=${BENCH_ROUNDS:-1}
failed=0
T_START=$(date +%s)
log() { echo "[gpu_check +$(( $(date +%s) - T_START ))s] $*" | tee -a "$RES/gpu_check.log"; }
step() {  # step NAME TIMEOUT_S CMD... : run with a timeout, output to $RES/NAME.txt
  local name=$1 limit=$2; shift 2
  log "$name: $*"
  timeout --kill-after=10 "$limit" "$@" >"$RES/$name.txt" 2>&1
  local rc=$?
  log "$name: exit $rc"
  tail -n 30 "$RES/$name.txt"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
  return "$rc"
}

{ nvidia-smi || echo "nvidia-smi not found"; lscpu | grep -E '^(Model name|CPU\(s\))'; } >"$RES/machine.txt" 2>&1

PY=""
CANDIDATES=("${BNTRAIN_PYTHON:-}" python3.12 python3.13 python3)
if command -v pyenv >/dev/null 2>&1; then
  for v in "$(pyenv root)"/versions/3.1[2-9]*; do CANDIDATES+=("$v/bin/python"); done
fi
for c in "${CANDIDATES[@]}"; do
  [ -n "$c" ] || continue
  if command -v "$c" >/dev/null 2>&1 &&
     "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
    PY=$(command -v "$c"); break
  fi
done
if [ -z "$PY" ]; then log "error: no Python >= 3.12 (set BNTRAIN_PYTHON)"; exit 2; fi
if [ ! -d "$WHEELS" ]; then log "error: no wheel folder '$WHEELS' (see docs/benchmarks.md)"; exit 2; fi

VENV=.venv-gpu
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
EXTRA=()
TORCH_ARGS=(--torch-python /nonexistent)  # no CUDA torch among the wheels: PyTorch columns n/a
if compgen -G "$WHEELS/torch-*.whl" >/dev/null; then EXTRA=(torch); fi
step install 100 "$VENV/bin/python" -m pip install --no-index --find-links "$WHEELS" \
  ".[test,gpu]" "${EXTRA[@]}" || { log "install failed: see $RES/install.txt"; exit 2; }
"$VENV/bin/python" -m pip freeze >"$RES/pip_freeze.txt" 2>&1
if "$VENV/bin/python" -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1; then
  TORCH_ARGS=(--torch-python "$VENV/bin/python")
else
  log "no CUDA build of torch in $WHEELS: the PyTorch columns will read n/a"
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch processes take memory as they need it
"$VENV/bin/python" -c 'import jax; print(jax.devices())' >>"$RES/machine.txt" 2>&1

# budget: install 100 s + tests 45 s + bench 120 s + traffic 30 s stays under 5 minutes
step pytest_gpu 45 "$VENV/bin/python" -m pytest -q -m gpu -p no:cacheprovider tests -rs
step bench_gpu 120 "$VENV/bin/python" scripts/bench.py --device gpu --rounds "$ROUNDS" \
  --no-quickstart --timeout 60 "${TORCH_ARGS[@]}" --json "$RES/bench_gpu.json"
step traffic_gpu 30 "$VENV/bin/python" scripts/bench.py --device gpu --traffic \
  --json "$RES/traffic_gpu.json"
log "done: $failed failed step(s); results in $RES"
exit "$failed"

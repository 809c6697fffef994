#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and no network (see docs/benchmarks.md, "GPU").
#
#   scripts/gpu_check.sh [RESULTS_DIR]        # default: $OUT, else ./gpu_results
#
# The machine brings Python >= 3.12 with JAX's CUDA plugin (and, for the PyTorch columns, a CUDA
# build of torch); bntrain's other dependencies travel as wheels in .whl/ (BNTRAIN_WHEELS), made
# on a networked machine with scripts/gpu_wheels.sh. The script
# 1. installs bntrain and those wheels into a private folder (pip --no-index --target; nothing
#    of the machine's own Python is changed) and records the versions and the GPU,
# 2. runs scripts/bench.py --device gpu (bntrain on JAX/CUDA against PyTorch eager on CUDA),
# 3. runs the GPU tests (pytest -m gpu: conv Ops against a float64 reference, fit /
#    recompute-stats / eval on the GPU against the CPU, a GPU run resumed on the CPU) and the
#    host<->device traffic report, and the data-parallel check (tests/_dist_child.py: on a
#    machine with several GPUs every GPU against one, on a machine with one GPU that one),
# 4. with the time left of BNTRAIN_GPU_BUDGET seconds (default 280): the benchmark at batch 512
#    and the whole test suite on the GPU machine.
# Every step has its own timeout; logs and JSON go to RESULTS_DIR.
# Exit status: 0 when every step that ran passed, else the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RES=${1:-${OUT:-./gpu_results}}
mkdir -p "$RES"
RES=$(cd "$RES" && pwd)
WHEELS=${BNTRAIN_WHEELS:-.whl}
BUDGET=${BNTRAIN_GPU_BUDGET:-280}
SITE=${BNTRAIN_SITE:-/tmp/bntrain-site}
failed=0
T_START=$(date +%s)
elapsed() { echo $(( $(date +%s) - T_START )); }
log() { echo "[gpu_check +$(elapsed)s] $*" | tee -a "$RES/gpu_check.log"; }
step() {  # step NAME TIMEOUT_S CMD... : run with a timeout, output to $RES/NAME.txt
  local name=$1 limit=$2; shift 2
  log "$name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$RES/$name.txt" 2>&1
  local rc=$?
  log "$name: exit $rc"
  tail -n 25 "$RES/$name.txt"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
  return "$rc"
}
optional() {  # optional NAME WANT_S CMD... : run only if WANT_S seconds of the budget are left
  local name=$1 want=$2 left=$(( BUDGET - $(elapsed) )); shift 2
  if [ "$left" -lt "$want" ]; then log "$name: skipped (${left}s of the budget left, wants ${want}s)"; return 0; fi
  step "$name" "$left" "$@"
}

PY=""
for c in "${BNTRAIN_PYTHON:-}" python3 python3.12 python3.13; do
  [ -n "$c" ] || continue
  if command -v "$c" >/dev/null 2>&1 &&
     "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
    PY=$(command -v "$c"); break
  fi
done
if [ -z "$PY" ]; then log "error: no Python >= 3.12 (set BNTRAIN_PYTHON)"; exit 2; fi
if [ ! -d "$WHEELS" ]; then log "error: no wheel folder '$WHEELS' (make it with scripts/gpu_wheels.sh)"; exit 2; fi

# 1. install into $SITE: the carried wheels, then bntrain itself (built here, no network)
rm -rf "$SITE"
step install 120 "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir \
  --target "$SITE" "$WHEELS"/*.whl || { log "install failed: see $RES/install.txt"; exit 2; }
if ! step install_bntrain 60 "$PY" -m pip install --no-index --no-deps --no-build-isolation \
    --no-compile --no-cache-dir --target "$SITE" "$ROOT"; then
  log "could not build bntrain here: using the source tree on PYTHONPATH"
  failed=$((failed - 1)); export PYTHONPATH="$ROOT"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch processes take memory as they need it
export PYTHONUNBUFFERED=1
{
  nvidia-smi || echo "nvidia-smi not found"
  lscpu | grep -E '^(Model name|CPU\(s\))'
  echo "python: $PY"
  "$PY" -W ignore - <<'EOF'
import importlib, jax
for name in ("bntrain", "pytensor", "jax", "jaxlib", "numba", "numpy", "scipy", "h5py", "pydantic", "torch"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')} from {m.__file__}")
    except Exception as exc:  # report and go on: a missing torch only empties the PyTorch column
        print(f"{name}: {type(exc).__name__}: {exc}")
print("jax devices:", jax.devices())
EOF
} >"$RES/machine.txt" 2>&1
cat "$RES/machine.txt"
TORCH=(--torch-python "$PY")
if ! "$PY" -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1; then
  log "no CUDA build of torch here: the PyTorch columns will read n/a"; TORCH=(--torch-python /nonexistent)
fi
XDIST=()
if "$PY" -c 'import xdist' >/dev/null 2>&1; then XDIST=(-n 6); fi  # one worker per GPU test
ALL=("${XDIST[@]}")
[ ${#XDIST[@]} -eq 0 ] || ALL=(-n 8)

# 2. the benchmark first (its figures matter most), 3. the GPU tests and the traffic report
step bench_gpu 170 "$PY" scripts/bench.py --device gpu --rounds 1 --timeout 80 "${TORCH[@]}" \
  --json "$RES/bench_gpu.json"
step pytest_gpu 200 "$PY" -m pytest -q -m gpu -p no:cacheprovider "${XDIST[@]}" -rs tests
step traffic_gpu 40 "$PY" scripts/bench.py --device gpu --traffic --json "$RES/traffic_gpu.json"
# data parallelism (tests/_dist_child.py): with N >= 2 GPUs, N against one (fit sync/ghost BN,
# recompute-stats, eval, resume 1 -> N -> N/2); with one GPU the same checks through the
# data-parallel path on that one device (devices 1, resume 1 -> 1 -> 1); none without a GPU
NGPU=$("$PY" -W ignore -c 'import jax; print(sum(d.platform == "gpu" for d in jax.devices()))' 2>/dev/null || echo 0)
if [ "${NGPU:-0}" -ge 2 ]; then
  mkdir -p "$RES/dist"
  step dist_gpu 240 env BNTRAIN_DIST_GPUS="$NGPU" "$PY" -W ignore tests/_dist_child.py "$RES/dist"
elif [ "${NGPU:-0}" -eq 1 ]; then
  mkdir -p "$RES/dist"
  step dist_gpu_one 180 env BNTRAIN_DIST_GPUS=1 "$PY" -W ignore tests/_dist_child.py "$RES/dist"
else
  log "dist_gpu: skipped (no GPU here)"
fi
# 4. what the budget leaves room for
optional bench_gpu_b512 90 "$PY" scripts/bench.py --device gpu --rounds 1 --batch 512 \
  --models cnn resnet --no-recompute --no-quickstart --timeout 60 "${TORCH[@]}" \
  --json "$RES/bench_gpu_b512.json"
optional pytest_all 100 "$PY" -m pytest -q -p no:cacheprovider "${ALL[@]}" -rf tests
log "done: $failed failed step(s); results in $RES"
exit "$failed"

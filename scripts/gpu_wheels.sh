#!/usr/bin/env bash
# Prepare the wheels scripts/gpu_check.sh installs on a GPU machine without network.
#
#   scripts/gpu_wheels.sh [NAME==VERSION ...]      # run on a machine with the package index
#
# Downloads, into .whl/ (BNTRAIN_WHEELS), x86-64 wheels for CPython 3.12 (BNTRAIN_WHEEL_PYTHON) of
# bntrain's dependencies that a CUDA machine image usually lacks (PyTensor, pydantic and theirs),
# at the versions installed in .venv, plus any NAME==VERSION given (e.g. jax-cuda12-plugin==...
# where the machine has no JAX CUDA plugin). About 5 MB; the machine must already have NumPy,
# SciPy, Numba, JAX with its CUDA plugin, h5py, click, PyYAML, tqdm and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${BNTRAIN_WHEELS:-.whl}
PYVER=${BNTRAIN_WHEEL_PYTHON:-3.12}
source scripts/_env.sh >/dev/null
pins=$("$VENV/bin/python" - <<'PY'
from importlib.metadata import version
names = ["pytensor", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
         "typing-extensions"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
rm -rf "$WHEELS"
# shellcheck disable=SC2086
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" $pins "$@"
du -sh "$WHEELS"

#!/usr/bin/env bash
# Set up bntrain (.venv with Python >= 3.12) and run the main job on the built-in digits:
# train, recompute whole-training-set BN statistics, evaluate on the test set.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
"$VENV/bin/bntrain" fit configs/digits_mlp.yaml --force "$@"

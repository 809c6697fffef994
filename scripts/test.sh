#!/usr/bin/env bash
# Set up bntrain from scratch (virtual environment with Python >= 3.12, '.[test]')
# and run the test suite, then the fast subset of the mutation tests (scripts/mutate.py
# --fast; docs/testing.md).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
"$VENV/bin/python" -m ruff check bntrain tests scripts
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
"$VENV/bin/python" scripts/mutate.py --fast

# Sourced by scripts/*.sh: find Python >= 3.12, create .venv, install bntrain[test].
find_python() {
  local candidates=("${BNTRAIN_PYTHON:-}" python3.13 python3.12 python3)
  if command -v pyenv >/dev/null 2>&1; then
    local root; root=$(pyenv root)
    for v in "$root"/versions/3.1[2-9]*; do candidates+=("$v/bin/python"); done
  fi
  for c in "${candidates[@]}"; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 &&
       "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}
VENV=${BNTRAIN_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  PY=$(find_python) || { echo "error: bntrain needs Python >= 3.12; install one (e.g. 'pyenv install 3.12') or set BNTRAIN_PYTHON=/path/to/python3.12" >&2; exit 2; }
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2> >(grep -v "^WARNING: Location 'file:" >&2)
fi
# (this machine's pip config names a local index folder that may be missing: drop that noise)
"$VENV/bin/python" -m pip install -q -e ".[test]" 2> >(grep -v "^WARNING: Location 'file:" >&2)

"""How bntrain is started: ``python -m bntrain`` and ``scripts/gpu_check.sh``'s refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bntrain

ROOT = Path(__file__).resolve().parent.parent


def test_python_dash_m_is_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "bntrain", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"bntrain, version {bntrain.__version__}\n"


def test_gpu_check_without_wheels_says_so_in_one_line(tmp_path):
    env = dict(
        os.environ, BNTRAIN_WHEELS=str(tmp_path / "no-wheels"), BNTRAIN_PYTHON=sys.executable
    )
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stdout.endswith(
        f"error: no wheel folder '{tmp_path / 'no-wheels'}' (make it with scripts/gpu_wheels.sh)\n"
    )
    log = (tmp_path / "results" / "gpu_check.log").read_text()
    assert log.count("\n") == 1 and "no wheel folder" in log

"""SIGINT/SIGTERM stop training between steps; a kill between best.h5 and last.h5 loses nothing.

Both run ``bntrain fit`` in a child process (tests/_fit_child.py).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bntrain.checkpoint import TMP_PREFIX, read_checkpoint
from bntrain.config import load_config
from bntrain.train import fit

from .conftest import TINY_MLP
from .test_reliability import arrays, assert_same

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "_fit_child.py"


def _child(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


@pytest.fixture
def cfg_path(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_MLP)
    return path


@pytest.mark.slow
def test_sigint_and_sigterm_stop_between_steps(tmp_path, cfg_path):
    """5 x SIGINT and 5 x SIGTERM at random moments of training (every step writes last.h5)."""
    sigs = [signal.SIGINT, signal.SIGTERM] * 5
    sets = ["training.epochs=1000", "training.checkpoint_every_steps=1"]
    sets += ["training.recompute_stats=false"]
    proc = _child("signals", cfg_path, len(sigs), *[f"--set={s}" for s in sets], cwd=tmp_path)
    rng = np.random.default_rng(0)
    try:
        for i, sig in enumerate(sigs):
            run_dir = tmp_path / f"run{i}"
            last = run_dir / "last.h5"
            while not last.exists():  # training has started (every step writes last.h5)
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.2))  # into a step, a checkpoint write or validation
            proc.send_signal(sig)
            while not (line := proc.stdout.readline()).startswith("exit "):
                assert line.startswith("epoch "), line
            _, code, err = line.split(" ", 2)
            err = json.loads(err)
            assert int(code) == 128 + sig, err
            m = re.fullmatch(
                rf"Error: {sig.name} received: training stopped after step (\d+); the last good "
                rf"checkpoint is '{re.escape(str(last))}'; continue with --resume "
                rf"{re.escape(str(run_dir))}\n",
                err,
            )
            assert m, err  # one line, no traceback, no "Exception ignored"
            assert not [p for p in run_dir.iterdir() if p.name.startswith(TMP_PREFIX)]
            # the step finished and was checkpointed (the last step of an epoch is saved
            # with the epoch's end, which the stop may come before)
            assert int(m.group(1)) - read_checkpoint(last).step in (0, 1)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode is not None


def test_kill_between_best_and_last_loses_nothing(tmp_path, cfg_path):
    """SIGKILL right after the first checkpoint of epoch 2 (which improves) lands on disk."""
    sets = ["training.recompute_stats=false", "training.best_metric=val_loss"]
    straight = fit(load_config(cfg_path, [*sets, "output.dir=straight"]))
    assert straight.best_epoch == 2  # so epoch 2 ends with two writes: best.h5 and last.h5
    proc = _child("kill-at-epoch", cfg_path, 2, *[f"--set={s}" for s in sets], cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, out + err
    run_dir = tmp_path / "run"
    ts = read_checkpoint(run_dir / "last.h5").train_state
    # what last.h5 records as best is on disk in best.h5 (or newer)
    assert read_checkpoint(run_dir / "best.h5").epoch >= ts["best_epoch"]
    fit(load_config(cfg_path, sets), resume=run_dir)
    for name in ("best.h5", "last.h5"):
        assert_same(arrays(tmp_path / "straight" / name), arrays(run_dir / name))

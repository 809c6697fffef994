"""Checkpoints that survive SIGKILL and failing disks; resume that equals an uninterrupted run.

Figures quoted in docs/reliability.md come from ``pytest -s`` on this module
(the kill tests print them).
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import bntrain.checkpoint as C
import bntrain.fileio as F
import bntrain.train as T
from bntrain.checkpoint import TMP_PREFIX, clean_temp_files, read_checkpoint
from bntrain.cli import main
from bntrain.config import load_config
from bntrain.errors import CheckpointError, TrainingError
from bntrain.nn import layers as L
from bntrain.train import fit

from .conftest import TINY_MLP, h5_datasets

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "_kill_child.py"
EVERY = 7  # training.checkpoint_every_steps of the runs below
STEPS_PER_EPOCH = 1258 // 64  # digits train split, shuffled: the short last batch is dropped
BASE_SETS = ["training.recompute_stats=false", f"training.checkpoint_every_steps={EVERY}"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result, code: int) -> str:
    """Assert a failed command: exit ``code``, exactly one ``Error:`` line, no success line."""
    assert result.exit_code == code, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def arrays(path) -> dict:
    """Every dataset of a checkpoint plus the resume attributes, for bit-for-bit comparison."""
    out = h5_datasets(path)
    with h5py.File(path, "r") as f:
        out["optimizer.lr"] = f["optimizer"].attrs["lr"]
        out["step"] = f.attrs["step"]
        out["epoch"] = f.attrs["epoch"]
        for key in ("epoch", "batch", "step", "lr", "best_value", "best_epoch"):
            out[f"train_state.{key}"] = f["train_state"].attrs[key]
        for name in f["rng"]:
            out[f"rng.{name}"] = f["rng"][name].attrs["state"]
    return out


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def differing(a: dict, b: dict) -> list[str]:
    return [k for k in a if not np.array_equal(a[k], b[k])]


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rel")
    path = folder / "tiny.yaml"
    path.write_text(TINY_MLP)
    return path


def config(cfg_path, out: str, *sets):
    return load_config(cfg_path, [*BASE_SETS, *sets, f"output.dir={out}"])


@pytest.fixture(scope="module")
def straight(cfg_path) -> Path:
    """2 epochs uninterrupted, writing last.h5 every 7 steps too (the reference run)."""
    saves = []
    real = T.TrainState.to_checkpoint

    def spy(state, path):
        saves.append((state.epoch, state.step))
        real(state, path)

    T.TrainState.to_checkpoint = spy
    try:
        fit(config(cfg_path, "straight"))
    finally:
        T.TrainState.to_checkpoint = real
    run_dir = cfg_path.parent / "straight"
    n = 2 * STEPS_PER_EPOCH
    # mid-epoch saves at every multiple of 7 except at an epoch's end, plus one per epoch
    mids = [s for s in range(EVERY, n + 1, EVERY) if s % STEPS_PER_EPOCH]
    assert sorted(s for _, s in saves) == sorted(mids + [STEPS_PER_EPOCH, n])
    return run_dir


# --------------------------------------------------------------------------- kill test


class _Writer:
    """Drives tests/_kill_child.py: fork a checkpoint writer, SIGKILL it, reap it."""

    def __init__(self, folder: Path, mode: str):
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(folder), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=30)


def _consistent(ckpt, epoch_expected_at_least: int) -> bool:
    e = ckpt.epoch
    dense = ckpt.params["dense"]
    return (
        e >= epoch_expected_at_least
        and ckpt.step == 10 * e
        and ckpt.train_state["epoch"] == e
        and ckpt.config_text == f"epoch: {e}\n"
        and bool(np.all(dense["W"] == e))
        and bool(np.all(dense["b"] == e))
        and bool(np.all(ckpt.optimizer["dense.W.velocity"] == e))
    )


def _kill_many(folder: Path, mode: str, kills: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    writer = _Writer(folder, mode)
    stats = {"kills": 0, "survived": 0, "mid_write": 0, "advanced": 0, "broken": 0}
    try:
        assert writer.ask("init") == "ok"
        epoch = 0
        for _ in range(kills):
            pid = int(writer.ask(f"fork {epoch + 1}"))
            time.sleep(rng.uniform(0.0, 0.06))
            os.kill(pid, signal.SIGKILL)
            assert writer.ask(f"wait {pid}") == "done"
            stats["kills"] += 1
            if any(p.name.startswith(TMP_PREFIX) for p in folder.iterdir()):
                stats["mid_write"] += 1
            try:
                ckpt = read_checkpoint(folder / "last.h5")
                ok = _consistent(ckpt, epoch)
            except CheckpointError:
                ok = False
            if not ok:
                stats["broken"] += 1
                continue
            stats["survived"] += 1
            stats["advanced"] += ckpt.epoch > epoch
            epoch = ckpt.epoch
            clean_temp_files(folder)
    finally:
        writer.close()
    stats["final_epoch"] = epoch
    print(f"\nkill test ({mode}): {stats}")
    return stats


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_loses_the_checkpoint(tmp_path):
    stats = _kill_many(tmp_path, "atomic", kills=150, seed=0)
    assert stats["kills"] == 150
    assert stats["survived"] == 150 and stats["broken"] == 0
    # the kills really landed inside writes, and writes really happened between kills
    assert stats["mid_write"] >= 30
    assert stats["advanced"] >= 30
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.mark.slow
def test_kill_test_catches_an_in_place_writer(tmp_path):
    """The same test against h5py.File(path, 'w') in place: some kill leaves a broken file."""
    stats = _kill_many(tmp_path, "inplace", kills=100, seed=1)
    assert stats["broken"] >= 1


# --------------------------------------------------------------------------- temporary files


def test_leftover_temporary_files_are_refused_and_cleaned(tmp_path, cfg_path, straight):
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    stale = run_dir / f"{TMP_PREFIX}last.h5.abc123.h5"
    stale.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # a write killed early
    whole = run_dir / f"{TMP_PREFIX}last.h5.def456.h5"
    shutil.copyfile(straight / "last.h5", whole)  # killed after the write, before the rename
    keep = run_dir / ".tmp-notes.txt"
    keep.write_text("not ours")
    with pytest.raises(CheckpointError, match="temporary file of an unfinished checkpoint"):
        read_checkpoint(whole)
    assert run("eval", whole).exit_code == 2
    # resume cleans them up before training; a resume with nothing left to do trains nothing
    result = run(
        "fit",
        cfg_path,
        "--quiet",
        *[f"--set={s}" for s in BASE_SETS],
        "--set=output.dir=run",
        "--resume",
        run_dir,
    )
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not whole.exists() and keep.exists()
    assert clean_temp_files(tmp_path / "nothing") == []


# --------------------------------------------------------------------------- injected failures


def _fail_on_call(n: int, exc: OSError, real):
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= n:
            raise exc
        return real(*args, **kwargs)

    return fake


@pytest.mark.parametrize(
    "target, exc",
    [
        ("_write_model", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))),
        ("fsync", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))),
        ("replace", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))),
        ("create", PermissionError(errno.EACCES, os.strerror(errno.EACCES))),
        ("copyfile", PermissionError(errno.EACCES, os.strerror(errno.EACCES))),
    ],
)
def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch, target, exc):
    sys.path.insert(0, str(CHILD.parent))
    try:
        import _kill_child as K
    finally:
        sys.path.pop(0)
    layers = K.build_layers()
    path = tmp_path / "last.h5"
    K.write_epoch(path, layers, 1)
    C.atomic_copy(path, tmp_path / "best.h5")
    before = path.read_bytes()
    if target == "_write_model":
        monkeypatch.setattr(C, "_write_model", _fail_on_call(1, exc, C._write_model))
    elif target in ("fsync", "replace"):
        monkeypatch.setattr(C.os, target, _fail_on_call(1, exc, getattr(os, target)))
    elif target == "create":
        monkeypatch.setattr(F, "_create_temp", _fail_on_call(1, exc, F._create_temp))
    else:
        monkeypatch.setattr(C.shutil, "copyfile", _fail_on_call(1, exc, shutil.copyfile))
    with pytest.raises(CheckpointError) as e:
        if target == "copyfile":
            C.atomic_copy(path, tmp_path / "best.h5")
        else:
            K.write_epoch(path, layers, 2)
    assert "\n" not in str(e.value) and exc.strerror in str(e.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert read_checkpoint(path).epoch == 1 and read_checkpoint(tmp_path / "best.h5").epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.h5", "last.h5"]


def test_disk_full_mid_run_fails_cleanly_through_the_cli(cfg_path, monkeypatch):
    """ENOSPC at the 3rd checkpoint write (epoch 1's end: best.h5 comes first): exit 2, one
    line, the 2nd last.h5 kept."""
    real = C._write_model
    monkeypatch.setattr(
        C, "_write_model", _fail_on_call(3, OSError(errno.ENOSPC, "No space left on device"), real)
    )
    run_dir = cfg_path.parent / "full"
    result = run(
        "fit", cfg_path, "--quiet", *[f"--set={s}" for s in BASE_SETS], "--set=output.dir=full"
    )
    line = one_error_line(result, 2)
    assert line == (
        f"Error: cannot write checkpoint '{run_dir / 'best.h5'}': No space left on device"
    )
    ckpt = read_checkpoint(run_dir / "last.h5")
    assert (ckpt.epoch, ckpt.step, ckpt.train_state["batch"]) == (0, 2 * EVERY, 2 * EVERY)
    assert not [p for p in run_dir.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_unwritable_run_folder_fails_cleanly(cfg_path, monkeypatch):
    """EACCES (root ignores chmod, so the failure is injected) on metrics.csv and config.yaml."""
    real_open = open

    def deny_metrics(file, mode="r", *args, **kwargs):
        if str(file).endswith("metrics.csv") and "a" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny_metrics)
    run_dir = cfg_path.parent / "denied"
    result = run(
        "fit", cfg_path, "--quiet", *[f"--set={s}" for s in BASE_SETS], "--set=output.dir=denied"
    )
    line = one_error_line(result, 1)
    assert line == (
        f"Error: cannot write to run folder '{run_dir}': Permission denied; "
        f"the last checkpoint written stays valid"
    )
    assert read_checkpoint(run_dir / "last.h5").epoch == 1


def _hold_open(path: Path, how: str) -> subprocess.Popen:
    """A child process that opens ``path`` for writing and waits (or is killed while open)."""
    code = {
        "lock": f"import h5py, time; f = h5py.File({str(path)!r}, 'r+'); print('open', flush=True); time.sleep(60)",
        "flag": (
            "import h5py, time\n"
            f"src = h5py.File({str(path) + '.src'!r}, 'r')\n"
            f"f = h5py.File({str(path)!r}, 'w', libver='latest')\n"
            "for k, v in src.attrs.items(): f.attrs[k] = v\n"
            "for k in src: src.copy(src[k], f, name=k)\n"
            "f.flush(); print('open', flush=True); time.sleep(60)\n"
        ),
    }[how]
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    return proc


def test_locked_checkpoint_is_refused_by_eval_and_recompute(tmp_path, straight):
    path = tmp_path / "last.h5"
    shutil.copyfile(straight / "last.h5", path)
    proc = _hold_open(path, "lock")
    before = path.read_bytes()  # as the holder left it: bntrain must not change it
    try:
        for args in (["eval", path], ["recompute-stats", path, "--quiet"]):
            line = one_error_line(run(*args), 2)
            assert line == (
                f"Error: '{path}' is locked by another process (HDF5 file locking); wait for it "
                f"to finish or stop it, then try again"
            )
    finally:
        proc.kill()
        proc.wait()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.h5"]


def test_checkpoint_left_open_for_write_is_refused(tmp_path, straight):
    path = tmp_path / "last.h5"
    shutil.copyfile(straight / "last.h5", str(path) + ".src")
    proc = _hold_open(path, "flag")
    proc.send_signal(signal.SIGKILL)  # dies with the file open: the flag stays set
    proc.wait()
    for args in (["eval", path], ["recompute-stats", path, "--quiet"]):
        line = one_error_line(run(*args), 2)
        assert line.startswith(f"Error: '{path}' was left marked 'open for write' by a process")
        assert f"h5clear -s {path}" in line


# --------------------------------------------------------------------------- resume


def _interrupt_at_call(n: int):
    real = T.build_train_step

    def build(*args, **kwargs):
        step = real(*args, **kwargs)
        inner, calls = step.fn, {"n": 0}

        def fn(x, y):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt  # as if killed before this step
            return inner(x, y)

        step.fn = fn
        return step

    return build


@pytest.fixture(scope="module")
def killed_mid_epoch(cfg_path):
    """A run stopped during step 31 (epoch 2); its last checkpoint is from step 28."""
    mp = pytest.MonkeyPatch()
    mp.setattr(T, "build_train_step", _interrupt_at_call(31))
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(config(cfg_path, "killed"))
    finally:
        mp.undo()
    run_dir = cfg_path.parent / "killed"
    ts = read_checkpoint(run_dir / "last.h5").train_state
    assert (ts["epoch"], ts["batch"], ts["step"]) == (1, 28 - STEPS_PER_EPOCH, 28)
    return run_dir


def test_run_killed_mid_epoch_resumes_bit_for_bit(tmp_path, cfg_path, straight, killed_mid_epoch):
    run_dir = tmp_path / "killed"
    shutil.copytree(killed_mid_epoch, run_dir)
    result = run(
        "fit",
        cfg_path,
        *[f"--set={s}" for s in BASE_SETS],
        f"--set=output.dir={run_dir}",
        "--resume",
        run_dir,
    )
    assert result.exit_code == 0, result.output
    assert f"resuming {run_dir} after epoch 1 and batch 9 (step 28)" in result.output
    a, b = arrays(straight / "last.h5"), arrays(run_dir / "last.h5")
    assert_same(a, b)
    assert any(k.startswith("optimizer/") for k in a) and any(k.startswith("rng.") for k in a)
    with open(straight / "metrics.csv") as f1, open(run_dir / "metrics.csv") as f2:
        keep = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
        rows1 = [[r[k] for k in keep] for r in csv.DictReader(f1)]
        rows2 = [[r[k] for k in keep] for r in csv.DictReader(f2)]
    assert rows1 == rows2 and len(rows1) == 2
    assert read_checkpoint(run_dir / "best.h5").epoch == read_checkpoint(straight / "best.h5").epoch


@pytest.mark.parametrize("skip", ["rng", "position"])
def test_equality_check_catches_a_missing_restore(
    tmp_path, cfg_path, straight, killed_mid_epoch, monkeypatch, skip
):
    """Break one part of resume on purpose: the bit-for-bit comparison above notices."""
    run_dir = tmp_path / "killed"
    shutil.copytree(killed_mid_epoch, run_dir)
    if skip == "rng":
        from bntrain.graphs import TrainStep

        monkeypatch.setattr(TrainStep, "set_rng_state", lambda self, layer, state: None)
    else:
        real = T.BatchIterator
        monkeypatch.setattr(
            T, "BatchIterator", lambda *a, start_batch=0, **k: real(*a, start_batch=0, **k)
        )
    fit(config(cfg_path, str(run_dir)), resume=run_dir)
    diff = differing(arrays(straight / "last.h5"), arrays(run_dir / "last.h5"))
    assert any(k.startswith("model/layers/dense") for k in diff), diff


@pytest.mark.parametrize("section", ["rng", "optimizer", "train_state"])
def test_resume_refuses_a_checkpoint_without_a_section(tmp_path, cfg_path, straight, section):
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    with h5py.File(run_dir / "last.h5", "r+") as f:
        del f[section]
    before = (run_dir / "last.h5").read_bytes()
    result = run(
        "fit",
        cfg_path,
        *[f"--set={s}" for s in BASE_SETS],
        "--set=training.epochs=3",
        f"--set=output.dir={run_dir}",
        "--resume",
        run_dir,
    )
    line = one_error_line(result, 2)
    why = {
        "rng": "has no /rng section; dropout masks would differ",
        "optimizer": "has no /optimizer section; cannot resume exactly",
        "train_state": "has no /train_state section",
    }[section]
    assert line == f"Error: --resume: '{run_dir / 'last.h5'}' {why}"
    assert (run_dir / "last.h5").read_bytes() == before


def test_best_is_not_overwritten_by_a_worse_epoch_after_resume(cfg_path, monkeypatch):
    """Scripted val accuracy 0.5, 0.9 | resume | 0.7, 0.95, 0.8: best is epoch 2, then 4."""
    script = iter([0.5, 0.9, 0.7, 0.95, 0.8])

    def metrics(probs, labels, n_classes):
        return {"loss": 1.0, "accuracy": next(script)}

    monkeypatch.setattr(T, "classification_metrics", metrics)
    run_dir = cfg_path.parent / "best"
    fit(config(cfg_path, "best", "training.epochs=2"))
    best_bytes = (run_dir / "best.h5").read_bytes()
    assert read_checkpoint(run_dir / "best.h5").epoch == 2
    copies = []
    real_copy = T.atomic_copy
    monkeypatch.setattr(
        T, "atomic_copy", lambda a, b: (copies.append(read_checkpoint(a).epoch), real_copy(a, b))
    )
    resumed = fit(config(cfg_path, "best", "training.epochs=3"), resume=run_dir)
    assert copies == [] and (run_dir / "best.h5").read_bytes() == best_bytes
    assert (resumed.best_epoch, resumed.best_value) == (2, 0.9)
    resumed = fit(config(cfg_path, "best", "training.epochs=5"), resume=run_dir)
    assert copies == [4] and read_checkpoint(run_dir / "best.h5").epoch == 4
    assert (resumed.best_epoch, resumed.best_value) == (4, 0.95)


# --------------------------------------------------------------------------- NaN/Inf in training


NO_DROPOUT = (
    "model.layers=[{type: dense, units: 16, nonlinearity: relu}, "
    "{type: dense, units: 10, nonlinearity: softmax}]"
)


def test_skip_policy_with_dropout_leaves_every_tensor_unchanged(cfg_path):
    from bntrain.graphs import build_train_step
    from bntrain.model import build_network

    cfg = config(cfg_path, "unused", "training.nan_policy=skip")
    network = build_network(cfg.model, (64,), seed=0)
    step = build_train_step(network, cfg.training, "NUMBA")
    shared = L.get_all_params(network.output_layer) + list(step.optimizer_state.values())
    before = [v.get_value().copy() for v in shared]
    x = np.full((8, 64), np.nan, np.float32)
    loss, _ = step.fn(x, np.zeros(8, np.int32))
    assert not np.isfinite(loss)
    for v, old in zip(shared, before, strict=True):
        np.testing.assert_array_equal(v.get_value(), old, err_msg=v.name)
    loss, _ = step.fn(np.ones((8, 64), np.float32), np.zeros(8, np.int32))
    assert np.isfinite(loss)
    assert any(
        not np.array_equal(v.get_value(), old) for v, old in zip(shared, before, strict=True)
    )


def _nan_batches(nan_steps: set[int]):
    """Replace the examples of the given (1-based, global) steps with NaN: a real NaN loss."""
    real = T.BatchIterator
    count = {"n": 0}

    class Poisoned:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def __iter__(self):
            for x, y in self.inner:
                count["n"] += 1
                if count["n"] in nan_steps:
                    x = np.full_like(x, np.nan)
                yield x, y

        def close(self):
            self.inner.close()

    return Poisoned


def _watch_steps(log: list):
    real = T.build_train_step

    def build(network, *args, **kwargs):
        step = real(network, *args, **kwargs)
        inner = step.fn

        shared = L.get_all_params(network.output_layer) + list(step.optimizer_state.values())

        def fn(x, y):
            before = [v.get_value() for v in shared]
            loss, acc = inner(x, y)
            after = [v.get_value() for v in shared]
            same = all(np.array_equal(u, v) for u, v in zip(before, after, strict=True))
            log.append((bool(np.isnan(x).any()), float(loss), same))
            return loss, acc

        step.fn = fn
        return step

    return build


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nan_detector_fires_and_no_checkpoint_follows(cfg_path, monkeypatch, policy):
    nan_steps = {9, 22, 23, 24}  # one lone NaN, then three in a row in epoch 2
    steps, saves = [], []
    monkeypatch.setattr(T, "BatchIterator", _nan_batches(nan_steps))
    monkeypatch.setattr(T, "build_train_step", _watch_steps(steps))
    real_save = T.TrainState.to_checkpoint
    monkeypatch.setattr(
        T.TrainState,
        "to_checkpoint",
        lambda state, path: (saves.append(state.step), real_save(state, path)),
    )
    out = f"nan_{policy}"
    cfg = config(
        cfg_path,
        out,
        f"training.nan_policy={policy}",
        "training.max_consecutive_nan=3",
        NO_DROPOUT,  # see test_skip_policy_with_dropout
    )
    with pytest.raises(TrainingError) as e:
        fit(cfg)
    first_nan = 9 if policy == "stop" else 22
    stop_at = 9 if policy == "stop" else 24
    # losses are read back IN_FLIGHT steps late, so a few more steps may run before the NaN is seen
    assert stop_at <= len(steps) <= stop_at + T._Results.IN_FLIGHT
    assert [i + 1 for i, (has_nan, _, _) in enumerate(steps) if has_nan] == sorted(
        s for s in nan_steps if s <= len(steps)
    )
    for has_nan, loss, same in steps[:stop_at]:  # (after a NaN under "stop", all is NaN)
        assert np.isfinite(loss) != has_nan  # the detector sees every NaN, and only those
        if has_nan and policy == "skip":
            assert same  # a skipped step changes no parameter or optimizer slot
        if not has_nan:
            assert not same
    assert saves and max(saves) < first_nan
    last = cfg_path.parent / out / "last.h5"
    assert read_checkpoint(last).step == max(saves)
    why = "" if policy == "stop" else " for 3 consecutive steps (training.max_consecutive_nan)"
    epoch = 1 if policy == "stop" else 2
    assert str(e.value) == (
        f"loss became NaN/Inf at epoch {epoch}, step {stop_at}{why}; training stopped and the "
        f"last good checkpoint is '{last}'; try a lower training.optimizer.lr or "
        f"training.optimizer.grad_clip_norm"
    )

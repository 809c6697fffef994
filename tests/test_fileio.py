"""bntrain.fileio: atomic replacement, file modes, temporary names, and every writer using it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import bntrain.fileio as F
from bntrain import checkpoint as C
from bntrain.commands.recompute import _write_json_atomic
from bntrain.data import write_hdf5_dataset
from bntrain.evaluate import write_predictions
from bntrain.export import _write_bytes as export_bytes
from bntrain.nn import layers as L
from bntrain.plots import plot_confusion


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test; restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


def _save_tiny_checkpoint(path: Path) -> None:
    inp = L.InputLayer((None, 3), name="input")
    dense = L.DenseLayer(inp, 2, name="dense")
    C.save_checkpoint(path, layers=[inp, dense], config_text="x: 1\n", epoch=1, step=1)


WRITERS = {
    "checkpoint": _save_tiny_checkpoint,
    "bn_stats report": lambda p: _write_json_atomic(p, {"a": 1}),
    "predictions": lambda p: write_predictions(p, np.full((2, 3), 1 / 3), None),
    "hdf5 dataset": lambda p: write_hdf5_dataset(p, np.zeros((4, 2), np.float32)),
    "text": lambda p: F.atomic_write_text(p, "hello\n"),
    "picture": lambda p: plot_confusion([[1, 0], [0, 1]], p),
    "export": lambda p: export_bytes(p, b"onnx"),
}


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_new_file_gets_the_mode_a_plain_open_gives(tmp_path, umask, writer, mask):
    """#11 A.7: checkpoints (and every other written file) get the run's ordinary file mode."""
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what config.yaml and metrics.csv get
    target = tmp_path / "out.bin"
    WRITERS[writer](target)
    assert _mode(target) == _mode(plain) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "plain.txt"]


def test_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "ck.h5"
    _save_tiny_checkpoint(target)
    target.chmod(0o600)
    C.atomic_copy(target, target)
    _save_tiny_checkpoint(target)
    assert _mode(target) == 0o600


def test_atomic_path_replaces_and_removes_the_temporary_on_failure(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    seen = []

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), F.atomic_path(target) as tmp:
        seen.append(tmp)
        tmp.write_text("half")
        raise Boom
    assert target.read_text() == "old"
    assert not seen[0].exists() and F.is_temp_name(seen[0].name)
    assert seen[0].parent == tmp_path
    with F.atomic_open(target) as fh:
        json.dump({"new": True}, fh)
    assert json.loads(target.read_text()) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_every_write_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", Path(b).name))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    F.atomic_write_text(tmp_path / "m.csv", "a,b\n")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert F.is_temp_name(events[0][1])
    assert events[1:] == [("replace", "m.csv"), ("fsync", tmp_path.name)]


def test_clean_temp_files_removes_only_temporary_names(tmp_path):
    with pytest.raises(KeyboardInterrupt), F.atomic_path(tmp_path / "last.h5") as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt  # Ctrl-C mid-write: the temporary file goes too
    assert list(tmp_path.iterdir()) == []
    # a SIGKILL leaves the temporary file: one of each naming generation
    new = tmp_path / f"{F.TMP_PREFIX}last.h5.0123abcd{F.TMP_SUFFIX}"
    old = tmp_path / f"{F.TMP_PREFIX}best.h5.x1y2z3.h5"
    keep = [tmp_path / ".tmp-notes.txt", tmp_path / "last.h5", tmp_path / "tmp-x.tmp"]
    for p in (new, old, *keep):
        p.write_text("x")
    assert F.clean_temp_files(tmp_path) == [old, new]
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert F.clean_temp_files(tmp_path / "missing") == []
    assert C.clean_temp_files is F.clean_temp_files and C.TMP_PREFIX == F.TMP_PREFIX

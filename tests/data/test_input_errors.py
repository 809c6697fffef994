"""#11 A.6/A.7, data side: bad data input is one ``Error:`` line and exit 2, where users meet it.

``data.val_split`` too small for the data, channels-last images for a
channels-first model, a misspelt ``--y-key``, a FIFO or device file as a data
path, and a checkpoint holding NaN/Inf weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.data import load_digits

from ..test_evaluate import make_checkpoint, mlp_yaml

MODEL = """\
model:
  input_shape: INPUT
  layers:
    - {type: dense, units: 8, nonlinearity: relu}
    - {type: dense, units: 10, nonlinearity: softmax}
training: {epochs: 1, batch_size: 16, optimizer: {name: sgd, lr: 0.1}}
output: {dir: run}
"""


def _config(folder: Path, data: str, input_shape: str = "null") -> Path:
    path = folder / "t.yaml"
    path.write_text(f"data:\n{data}" + MODEL.replace("INPUT", input_shape))
    return path


def _run(*args) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output.splitlines()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A checkpoint of a digits MLP (input shape (64,))."""
    path = tmp_path_factory.mktemp("ckpt") / "ck.h5"
    make_checkpoint(path, mlp_yaml())
    return path


# ----------------------------------------------------------------------------- val_split


@pytest.mark.parametrize("command", ["check", "fit"])
def test_val_split_that_leaves_no_validation_example(tmp_path, command):
    cfg = _config(tmp_path, "  train: {builtin: digits, split: train}\n  val_split: 0.0001\n")
    n = len(load_digits("train"))
    assert round(0.0001 * n) == 0 and round(float(f"{1 / n:.2g}") * n) == 1
    assert _run(command, cfg) == (
        2,
        [
            f"Error: data.val_split: 0.0001 of {n} examples leaves no validation example; use "
            f"a larger fraction (one example is {1 / n:.2g})"
        ],
    )


def test_val_split_that_leaves_no_training_example(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((5, 64), np.float32), y=np.arange(5))
    cfg = _config(tmp_path, "  train: {path: d.npz}\n  val_split: 0.95\n")
    assert _run("check", cfg) == (
        2,
        [
            "Error: data.val_split: 0.95 of 5 examples leaves no training example; use a "
            "smaller fraction"
        ],
    )


# ----------------------------------------------------------------------------- channels last


def test_channels_last_data_is_refused_with_the_transpose(tmp_path, ckpt):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "hwc.npz", X=x, y=np.arange(20) % 10)
    cfg = _config(tmp_path, "  train: {path: hwc.npz}\n", "[3, 4, 4]")
    line = (
        "Error: data.train: 'hwc.npz' holds channels-last examples of shape [4, 4, 3] but "
        "model.input_shape is [3, 4, 4] (channels first); transpose X to (N, 3, 4, 4), e.g. "
        "np.transpose(X, (0, 3, 1, 2))"
    )
    assert _run("check", cfg) == (2, [line])
    assert _run("fit", cfg) == (2, [line])
    # the transposed data is accepted; one channel is a plain reshape
    np.savez(tmp_path / "chw.npz", X=x.transpose(0, 3, 1, 2), y=np.arange(20) % 10)
    assert _run("check", _config(tmp_path, "  train: {path: chw.npz}\n", "[3, 4, 4]"))[0] == 0
    np.savez(tmp_path / "hw1.npz", X=x[..., :1], y=np.arange(20) % 10)
    assert _run("check", _config(tmp_path, "  train: {path: hw1.npz}\n", "[1, 4, 4]"))[0] == 0


def test_eval_channels_last(tmp_path):
    rng = np.random.default_rng(1)
    ck = tmp_path / "ck.h5"
    make_checkpoint(ck, mlp_yaml(), input_shape=(3, 2, 5))
    data = tmp_path / "hwc.npz"
    np.savez(data, X=rng.normal(size=(6, 2, 5, 3)).astype(np.float32), y=np.arange(6))
    assert _run("eval", ck, "--data", data, "--stats", "ema") == (
        2,
        [
            f"Error: --data: '{data}' holds channels-last examples of shape [2, 5, 3] but the "
            f"checkpoint's network takes [3, 2, 5] (channels first); transpose X to "
            f"(N, 3, 2, 5), e.g. np.transpose(X, (0, 3, 1, 2))"
        ],
    )


# ----------------------------------------------------------------------------- --y-key


def test_misspelt_y_key_is_an_error_like_a_misspelt_x_key(tmp_path, ckpt):
    data = tmp_path / "d.npz"
    np.savez(data, X=np.ones((6, 64), np.float32), labels=np.arange(6))
    for option, key, field in (("--x-key", "XX", "x"), ("--y-key", "lables", "y")):
        args = ["--y-key", "labels"] if option == "--x-key" else []
        assert _run("eval", ckpt, "--data", data, "--stats", "ema", option, key, *args) == (
            2,
            [
                f"Error: --data: '{data}' has no array '{key}' (arrays: X, labels); use --{field}-key"
            ],
        )
    # without --y-key, a file without an array 'y' is still evaluated without labels
    code, lines = _run("eval", ckpt, "--data", data, "--stats", "ema")
    assert code == 0 and "no labels: loss and accuracy not computed" in lines


# ----------------------------------------------------------------------------- FIFO, device


_UNBLOCK = """
import errno, os, sys, time
while True:
    try:
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)
    except OSError as err:
        if err.errno != errno.ENXIO:  # ENXIO: no reader
            raise
        time.sleep(0.01)
        continue
    os.close(fd)
    print("reader", flush=True)
"""


class _UnblockReaders:
    """In another process, open ``fifo`` for writing whenever a reader waits on it, then close it.

    A reader blocked in ``open()`` (h5py holds the GIL there, so this cannot be a
    thread) then sees end of file instead of hanging the test; ``readers`` counts
    how often that happened (0 when nothing opened the FIFO).
    """

    def __init__(self, fifo: Path) -> None:
        self.fifo, self.readers = fifo, 0

    def __enter__(self) -> _UnblockReaders:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _UNBLOCK, str(self.fifo)], stdout=subprocess.PIPE, text=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        out, _ = self._proc.communicate()
        self.readers = out.count("reader")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_fifo_or_device_as_data_path_is_refused_without_opening_it(tmp_path, ckpt, kind):
    name = "pipe.h5" if kind == "fifo" else "zero.h5"
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
        what = "a FIFO (named pipe)"
    else:
        path.symlink_to("/dev/zero")
        what = "a device file"
    fix = "not a data file; write the data to a regular HDF5 (.h5) or NPZ (.npz) file first"
    cfg = _config(tmp_path, f"  train: {{path: {name}}}\n")

    def refused() -> None:
        assert _run("check", cfg) == (2, [f"Error: data.train: '{name}' is {what}, {fix}"])
        assert _run("eval", ckpt, "--data", path, "--stats", "ema") == (
            2,
            [f"Error: --data: '{path}' is {what}, {fix}"],
        )

    if kind == "fifo":
        with _UnblockReaders(path) as guard:
            refused()
            message = f"Error: '{path}' is not a regular file, so not a checkpoint"
            assert _run("eval", path) == (2, [message])  # as the checkpoint
        assert guard.readers == 0
    else:
        refused()


# ----------------------------------------------------------------------------- NaN weights


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_checkpoint_with_non_finite_weights_is_refused_when_loaded(tmp_path, value):
    path = tmp_path / "ck.h5"
    network = make_checkpoint(path, mlp_yaml())
    bn = network.bn_layers[0].name
    dataset = f"/model/layers/{bn}/inv_std" if value == np.inf else None
    dense = next(layer.name for layer in network.layers if hasattr(layer, "W"))
    dataset = dataset or f"/model/layers/{dense}/W"
    with h5py.File(path, "r+") as f:
        array = f[dataset]
        flat = array[()].ravel()
        flat[3] = value
        array[...] = flat.reshape(array.shape)
    message = (
        f"Error: '{path}': {dataset} holds a non-finite value ({value}); these weights cannot "
        f"be used: take an earlier checkpoint or train again"
    )
    assert _run("eval", path, "--stats", "ema") == (2, [message])
    assert _run("recompute-stats", path) == (2, [message])

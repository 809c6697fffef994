"""Checkpoint writer for the SIGKILL test (tests/test_reliability.py); not a test module.

Run as ``python tests/_kill_child.py FOLDER MODE`` with MODE ``atomic`` (the real
:func:`bntrain.checkpoint.save_checkpoint`) or ``inplace`` (the same writer with
``atomic_write`` replaced by a plain in-place ``h5py.File(path, "w")``, to show the
test catches a non-atomic write).  The process imports bntrain once and then
obeys one command per line on stdin, answering one line on stdout:

``init``      write ``FOLDER/last.h5`` for epoch 0 and answer ``ok``;
``fork E``    fork a writer that saves epochs E, E+1, ... forever (until killed) and
              answer its pid;
``wait PID``  reap that writer and answer ``done``;
``quit``      exit.

Forking after the imports makes each writer start in about a millisecond, so the
test can kill hundreds of them quickly.  Every saved epoch ``e`` has ``W == e``,
``b == e``, ``/train_state`` epoch ``e`` and ``/optimizer`` slot ``== e``, so a
reader can tell a consistent file from a mix of two writes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np

from bntrain import checkpoint
from bntrain.nn import layers as L

__all__ = ["SHAPE", "build_layers", "write_epoch"]

SHAPE = (64, 512)


def build_layers():
    """The tiny network the writer saves: an input and one dense layer."""
    inp = L.InputLayer((None, SHAPE[0]), name="input")
    dense = L.DenseLayer(inp, SHAPE[1], name="dense")
    return [inp, dense]


def write_epoch(path: Path, layers, epoch: int) -> None:
    """Save ``layers`` with every value set to ``epoch``."""
    dense = layers[1]
    dense.W.set_value(np.full(SHAPE, epoch, dtype=np.float32))
    dense.b.set_value(np.full(SHAPE[1], epoch, dtype=np.float32))
    checkpoint.save_checkpoint(
        path,
        layers=layers,
        config_text=f"epoch: {epoch}\n",
        epoch=epoch,
        step=10 * epoch,
        optimizer_state={"dense.W.velocity": np.full(SHAPE, epoch, dtype=np.float32)},
        optimizer_attrs={"name": "momentum", "lr": 0.1, "step": 10 * epoch},
        train_state={"epoch": epoch, "batch": 0, "step": 10 * epoch},
    )


def _inplace_write(path, write, *, start_from=None) -> None:
    with h5py.File(path, "w") as f:
        write(f)


def main() -> None:
    folder, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "inplace":
        checkpoint.atomic_write = _inplace_write
    elif mode != "atomic":
        raise SystemExit(f"unknown mode {mode!r}")
    layers = build_layers()
    path = folder / "last.h5"
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "init":
            write_epoch(path, layers, 0)
            answer = "ok"
        elif cmd == "fork":
            start = int(args[0])
            pid = os.fork()
            if pid == 0:  # the writer: runs until SIGKILL
                try:
                    epoch = start
                    while True:
                        write_epoch(path, layers, epoch)
                        epoch += 1
                finally:
                    os._exit(3)
            answer = str(pid)
        elif cmd == "wait":
            os.waitpid(int(args[0]), 0)
            answer = "done"
        elif cmd == "quit":
            return
        else:
            answer = f"unknown command {cmd!r}"
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Convert the CIFAR-10 "python version" batches into HDF5 files that bntrain reads.

Usage::

    python scripts/convert_cifar10.py CIFAR_DIR OUT_DIR

CIFAR_DIR holds data_batch_1 .. data_batch_5 and test_batch (the contents of
cifar-10-python.tar.gz; the folder cifar-10-batches-py itself or its parent).
Writes OUT_DIR/cifar10_train.h5 (50000 examples) and OUT_DIR/cifar10_test.h5
(10000) with ``X`` uint8 of shape (N, 3, 32, 32) and ``y`` int64.

The batches are Python pickles.  Unpickling can run arbitrary code, so they are
read with a restricted unpickler that resolves only the three globals these files
use to rebuild a NumPy array (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``); dicts, lists, ints and bytes need no
globals.  Anything else is refused.  Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
from pathlib import Path

import numpy as np

from bntrain.data.h5write import ConvertError, run_converter, write_hdf5_dataset

__all__ = ["ConvertError", "Refused", "RestrictedUnpickler", "load_batch", "convert", "main"]

_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]


def _reconstruct() -> object:
    try:
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class Refused(pickle.UnpicklingError):
    """The pickle asks for something the restricted unpickler does not allow."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild NumPy arrays."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise Refused(
                f"refusing to load global '{module}.{name}' (not needed by CIFAR-10 batches)"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise Refused("refusing to load persistent ids")


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch: X uint8 (N, 3, 32, 32) and y int64 (N,)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConvertError(f"cannot read '{path}': {err}") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Refused as err:
        raise ConvertError(f"'{path}': {err}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        RecursionError,
        MemoryError,
    ) as err:
        raise ConvertError(f"'{path}' is not a CIFAR-10 batch (unreadable pickle: {err})") from None
    if not isinstance(obj, dict):
        raise ConvertError(f"'{path}' is not a CIFAR-10 batch (a {type(obj).__name__}, not a dict)")
    entries = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in entries or "labels" not in entries:
        raise ConvertError(f"'{path}' is not a CIFAR-10 batch (no 'data' and 'labels' entries)")
    data = entries["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ConvertError(f"'{path}': 'data' must be a uint8 array of shape (N, 3072)")
    if data.shape[1] != 3 * 32 * 32:
        raise ConvertError(f"'{path}': 'data' has rows of {data.shape[1]} values, expected 3072")
    try:
        labels = np.asarray(entries["labels"], dtype=np.int64)
    except (TypeError, ValueError):
        raise ConvertError(f"'{path}': 'labels' must be a list of ints") from None
    if labels.shape != (data.shape[0],):
        raise ConvertError(f"'{path}': {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ConvertError(f"'{path}': labels must be in 0..9")
    # Each row: 1024 red, then 1024 green, then 1024 blue values, each 32x32 row-major.
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels


def convert(cifar_dir: Path, out_dir: Path) -> list[Path]:
    """Convert train and test parts; returns the written paths."""
    if not cifar_dir.is_dir():
        raise ConvertError(f"CIFAR_DIR '{cifar_dir}' is not a directory")
    if not (cifar_dir / "test_batch").is_file() and (cifar_dir / "cifar-10-batches-py").is_dir():
        cifar_dir = cifar_dir / "cifar-10-batches-py"
    parts = {}
    for part, names in (("train", _TRAIN), ("test", _TEST)):
        xs, ys = [], []
        for name in names:
            path = cifar_dir / name
            if not path.is_file():
                raise ConvertError(f"'{cifar_dir}' has no {name}")
            x, y = load_batch(path)
            xs.append(x)
            ys.append(y)
        parts[part] = (np.concatenate(xs), np.concatenate(ys))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for part, (x, y) in parts.items():
        path = out_dir / f"cifar10_{part}.h5"
        attrs = {"source": f"CIFAR-10 {part} set (python batches)", "layout": "NCHW"}
        write_hdf5_dataset(path, x, y, attrs=attrs)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Convert CIFAR-10 python batches to cifar10_train.h5 / cifar10_test.h5."
    )
    parser.add_argument("cifar_dir", type=Path, help="folder with data_batch_1..5 and test_batch")
    parser.add_argument("out_dir", type=Path, help="folder to write the .h5 files to")
    args = parser.parse_args(argv)
    return run_converter(convert, args.cifar_dir, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())

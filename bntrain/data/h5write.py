"""Write a dataset (X and optional y) to an HDF5 file in the layout bntrain reads."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ..errors import DataError
from ..fileio import atomic_path

__all__ = ["ConvertError", "write_hdf5_dataset", "run_converter"]


def write_hdf5_dataset(
    path: str | os.PathLike[str],
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    attrs: Mapping[str, str] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
    chunk_bytes: int = 64 << 10,
    compression: str | None = "gzip",
) -> None:
    """Write ``X`` (and ``y`` as int64) to ``path``, replacing it atomically.

    Parameters
    ----------
    path : path-like
        Destination ``.h5`` file, replaced atomically (:func:`bntrain.fileio.atomic_path`).
    x : numpy.ndarray
        Examples, shape ``(N, ...)``.
    y : numpy.ndarray, optional
        Integer labels, shape ``(N,)``; stored as int64.
    attrs : mapping of str to str, optional
        File attributes (e.g. the data source).
    extra : mapping of str to numpy.ndarray, optional
        Further per-example arrays (shape ``(N, ...)``) stored under their names.
    chunk_bytes : int
        Approximate size of one chunk of ``X`` (whole examples).  Small chunks keep
        shuffled reads cheap.
    compression : str or None
        h5py compression filter (``'gzip'`` at level 4) or None.
    """
    import h5py

    x = np.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(
            f"write_hdf5_dataset: X must have shape (N, ...) with N > 0, got {x.shape}"
        )
    if y is not None:
        y = np.asarray(y)
        if y.shape != (x.shape[0],):
            raise ValueError(
                f"write_hdf5_dataset: y must have shape ({x.shape[0]},), got {y.shape}"
            )
    row = max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize)
    rows = max(1, min(x.shape[0], int(chunk_bytes) // row))
    opts = (
        {"compression": compression, "compression_opts": 4}
        if compression == "gzip"
        else {"compression": compression}
    )
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("X", data=x, chunks=(rows, *x.shape[1:]), **opts)
        if y is not None:
            f.create_dataset("y", data=y.astype(np.int64), chunks=(min(y.shape[0], 8192),), **opts)
        for key, value in (extra or {}).items():
            f.create_dataset(key, data=np.asarray(value), **opts)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


class ConvertError(DataError):
    """Bad converter input; printed as one line, exit status 2."""


def run_converter(convert, *args) -> int:
    """Run a converter's ``convert(*args)`` for its ``main``; print what it wrote.

    Returns the exit status: 0, 2 for a :class:`~bntrain.errors.DataError` (bad input), 1 for
    an :class:`OSError` (the disk); the error goes to stderr as one line.
    """
    import sys

    try:
        written = convert(*args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0

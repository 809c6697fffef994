#!/usr/bin/env python
"""Convert the MNIST IDX files into HDF5 files that bntrain reads.

Usage::

    python scripts/convert_mnist.py IDX_DIR OUT_DIR [--images]

IDX_DIR holds train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally gzipped,
``.gz``; the dotted names ``train-images.idx3-ubyte`` also work).  Writes
OUT_DIR/mnist_train.h5 and OUT_DIR/mnist_test.h5 with ``X`` uint8 of shape
(N, 784) (or (N, 1, 28, 28) with --images) and ``y`` int64, chunked (about
64 KiB per chunk) and gzip-compressed.  Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

from bntrain.data.h5write import ConvertError, run_converter, write_hdf5_dataset

__all__ = ["ConvertError", "read_idx", "find_idx", "convert", "main"]

# IDX type codes -> big-endian NumPy dtypes.
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_PARTS = {"train": "train", "test": "t10k"}


def find_idx(idx_dir: Path, stem: str, kind: str) -> Path:
    """Find ``{stem}-{kind}`` in ``idx_dir`` (also ``.gz`` and the dotted variant)."""
    kind_dotted = kind.replace("-", ".", 1)  # images-idx3-ubyte -> images.idx3-ubyte
    names = [f"{stem}-{kind}", f"{stem}-{kind_dotted}"]
    for name in names:
        for candidate in (name, name + ".gz"):
            path = idx_dir / candidate
            if path.is_file():
                return path
    raise ConvertError(f"'{idx_dir}' has no {names[0]} (or {names[0]}.gz)")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in .gz) into a native-endian array."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ConvertError(f"cannot read '{path}': {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ConvertError(f"'{path}' is not an IDX file (bad magic number)")
    dtype = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ConvertError(f"'{path}' is not an IDX file (bad header)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ConvertError(
            f"'{path}' holds {len(raw) - header} data bytes but its header {shape} "
            f"needs {expected} (truncated?)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def convert(idx_dir: Path, out_dir: Path, images: bool) -> list[Path]:
    """Convert both parts; returns the written paths."""
    if not idx_dir.is_dir():
        raise ConvertError(f"IDX_DIR '{idx_dir}' is not a directory")
    loaded = {}
    for part, stem in _PARTS.items():
        x = read_idx(find_idx(idx_dir, stem, "images-idx3-ubyte"))
        y = read_idx(find_idx(idx_dir, stem, "labels-idx1-ubyte"))
        if x.ndim != 3 or x.dtype != np.uint8:
            raise ConvertError(
                f"{stem} images: expected uint8 (N, rows, cols), got {x.dtype} {x.shape}"
            )
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ConvertError(f"{stem} labels: expected integer (N,), got {y.dtype} {y.shape}")
        if x.shape[0] != y.shape[0]:
            raise ConvertError(f"{stem}: {x.shape[0]} images but {y.shape[0]} labels")
        n, rows, cols = x.shape
        loaded[part] = (x.reshape(n, 1, rows, cols) if images else x.reshape(n, rows * cols), y)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for part, (x, y) in loaded.items():
        path = out_dir / f"mnist_{part}.h5"
        attrs = {"source": f"MNIST {part} set (IDX files)", "layout": "NCHW" if images else "flat"}
        write_hdf5_dataset(path, x, y, attrs=attrs)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Convert MNIST IDX files to mnist_train.h5 / mnist_test.h5 for bntrain."
    )
    parser.add_argument("idx_dir", type=Path, help="folder with the four MNIST IDX files")
    parser.add_argument("out_dir", type=Path, help="folder to write the .h5 files to")
    parser.add_argument(
        "--images", action="store_true", help="store X as (N, 1, 28, 28) instead of (N, 784)"
    )
    args = parser.parse_args(argv)
    return run_converter(convert, args.idx_dir, args.out_dir, args.images)


if __name__ == "__main__":
    sys.exit(main())

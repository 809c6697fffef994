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

``builtin: mnist`` in a config downloads and converts MNIST by itself (into the
cache, as (N, 1, 28, 28)); this script is for IDX files you already have.  It
uses the same reader (:mod:`bntrain.data.standard`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bntrain.data.h5write import ConvertError, run_converter, write_hdf5_dataset
from bntrain.data.standard import idx_pair
from bntrain.data.standard import read_idx_file as read_idx

__all__ = ["ConvertError", "read_idx", "find_idx", "convert", "main"]

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


def convert(idx_dir: Path, out_dir: Path, images: bool) -> list[Path]:
    """Convert both parts; returns the written paths."""
    if not idx_dir.is_dir():
        raise ConvertError(f"IDX_DIR '{idx_dir}' is not a directory")
    loaded = {}
    for part, stem in _PARTS.items():
        x, y = idx_pair(
            read_idx(find_idx(idx_dir, stem, "images-idx3-ubyte")),
            read_idx(find_idx(idx_dir, stem, "labels-idx1-ubyte")),
            stem,
        )
        loaded[part] = (x if images else x.reshape(len(x), -1), y)
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

#!/usr/bin/env python
"""Convert the CIFAR-10 binary archive into HDF5 files that bntrain reads.

Usage::

    python scripts/convert_cifar10.py cifar-10-binary.tar.gz OUT_DIR

Reads the *binary* distribution (``cifar-10-binary.tar.gz``, as downloaded; it is
read member by member, nothing is extracted and no pickle is ever loaded) and
writes OUT_DIR/cifar10_train.h5 (50000 examples) and OUT_DIR/cifar10_test.h5
(10000) with ``X`` uint8 of shape (N, 3, 32, 32) and ``y`` int64.  Exit status 2
on bad input.

``builtin: cifar10`` in a config downloads and converts CIFAR-10 by itself (into
the cache); this script is for an archive you already have and uses the same
reader (:mod:`bntrain.data.standard`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bntrain.data.h5write import ConvertError, run_converter, write_hdf5_dataset
from bntrain.data.standard import STANDARD, STANDARD_SPLITS

__all__ = ["convert", "main"]

ARCHIVE = "cifar-10-binary.tar.gz"


def convert(archive: Path, out_dir: Path) -> list[Path]:
    """Convert the train and test parts of ``archive``; returns the written paths."""
    if not archive.is_file():
        raise ConvertError(f"'{archive}' is not a file (expected {ARCHIVE})")
    spec = STANDARD["cifar10"]
    parts = {split: spec.read({ARCHIVE: archive}, split) for split in STANDARD_SPLITS}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, arrays in parts.items():
        path = out_dir / f"cifar10_{split}.h5"
        attrs = {"source": f"CIFAR-10 {split} set (binary version)", "layout": "NCHW"}
        write_hdf5_dataset(path, arrays["X"], arrays["y"], attrs=attrs)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Convert cifar-10-binary.tar.gz to cifar10_train.h5 / cifar10_test.h5."
    )
    parser.add_argument("archive", type=Path, help=f"the {ARCHIVE} file")
    parser.add_argument("out_dir", type=Path, help="folder to write the .h5 files to")
    args = parser.parse_args(argv)
    return run_converter(convert, args.archive, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())

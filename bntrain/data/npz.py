"""NPZ datasets: NumPy ``.npz`` files, checked header by header and then loaded whole."""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from bntrain.data.base import ArrayDataset, _check_x, _check_y, _hint_for, _listing
from bntrain.errors import DataError

__all__ = ["open_npz"]


def open_npz(
    path: Path,
    shown: str,
    x_key: str,
    y_key: str | None,
    where: str,
    *,
    y_optional: bool = False,
) -> ArrayDataset:
    """Load an NPZ file (whole, after checking the headers) into an :class:`ArrayDataset`.

    Parameters
    ----------
    path : Path
        The file to read.
    shown : str
        The path as the user gave it (used in messages).
    x_key, y_key : str
        Names of the example and label arrays; ``y_key=None`` for unlabeled data.
    where : str
        Config key path (or command option) used in messages.
    y_optional : bool
        Load a file without the array ``y_key`` as unlabeled instead of refusing it.

    Raises
    ------
    bntrain.errors.DataError
        An unreadable file, a missing array, pickled objects, or arrays of the
        wrong dtype or shape.
    """
    corrupt = f"{where}: '{shown}' is not a readable NPZ file (truncated or corrupt?)"
    try:
        zf = zipfile.ZipFile(path)
    except PermissionError:
        raise DataError(f"{where}: '{shown}' cannot be read (permission denied)") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise DataError(corrupt) from None
    arrays: dict[str, np.ndarray] = {}
    with zf:
        members = {
            info.filename[: -len(".npy")]: info
            for info in zf.infolist()
            if info.filename.endswith(".npy")
        }
        names = sorted(members)
        if y_optional and y_key not in members:
            y_key = None
        wanted = [("x", x_key)] + ([("y", y_key)] if y_key is not None else [])
        for field, key in wanted:
            if key not in members:
                raise DataError(
                    f"{where}: '{shown}' has no array '{key}' (arrays: {_listing(names)}); "
                    f"{_hint_for(where, field)}"
                )
            info = members[key]
            try:
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    shape, fortran, dtype = _read_npy_header(fh, version)
                    header_len = fh.tell()
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error):
                raise DataError(corrupt) from None
            if dtype.hasobject:
                raise DataError(
                    f"{where}: array '{key}' in '{shown}' holds pickled Python objects, which "
                    f"bntrain does not load; save it as a numeric array "
                    f"(e.g. np.savez(f, {key}=np.asarray(a, dtype=np.float32)))"
                )
            what = f"array '{key}' in '{shown}'"
            if field == "x":
                _check_x(where, what, dtype, shape)
            else:
                _check_y(where, what, dtype, shape, arrays["x"].shape[0])
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes != info.file_size - header_len:
                raise DataError(corrupt)
            if nbytes > _memory_limit():
                raise DataError(
                    f"{where}: {what} needs {nbytes / 2**30:.1f} GiB of memory; NPZ files are "
                    f"loaded whole: convert it to HDF5 (chunked) for data larger than memory"
                )
            try:
                with zf.open(info) as fh:
                    arr = np.lib.format.read_array(fh, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error):
                raise DataError(corrupt) from None
            arrays[field] = arr
    y = arrays.get("y")
    return ArrayDataset(arrays["x"], y, name=shown, where=where)


def _read_npy_header(fh: Any, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    if version == (1, 0):
        return fmt.read_array_header_1_0(fh)
    if version == (2, 0):
        return fmt.read_array_header_2_0(fh)
    return fmt._read_array_header(fh, version)  # noqa: SLF001 - version 3.0 has no public reader


def _memory_limit() -> int:
    """Half the physical memory (a generous bound for loading one NPZ array)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30

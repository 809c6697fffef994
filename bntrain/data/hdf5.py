"""HDF5 datasets, read lazily example by example with h5py.

Reading
-------
``read`` takes a slice or an increasing index array (any other index array is
sorted and de-duplicated internally, then put back in the caller's order).  A
slice, and an index array that covers at most twice its length, are read as one
contiguous block.  Otherwise a contiguous (unchunked) array is read with one
h5py point selection, and a chunked array one chunk-run at a time (a slice from
the first to the last wanted row of each touched chunk), so that every chunk is
decompressed at most once per batch; a 256 MiB chunk cache keeps decompressed
chunks across batches.  For shuffled training on compressed data larger than
that cache, prefer small chunks (our converters use about 64 KiB) or no
compression.

Only the opened file is ever read: an array path is followed link by link
inside the file (soft links included) and refused if any step is an external
link, so neither ``X`` nor a group above it can point into another file;
arrays with external or virtual storage are refused too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bntrain.data.base import (
    _SCAN_BYTES,
    Dataset,
    _check_integral,
    _check_x,
    _check_y,
    _first_line,
    _hint_for,
    _listing,
    _to_labels,
)
from bntrain.errors import DataError

__all__ = ["HDF5Dataset", "H5_SUFFIXES"]

#: File name extensions read as HDF5.
H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
_CHUNK_CACHE_BYTES = 256 << 20
_CHUNK_CACHE_SLOTS = 100003  # a prime, as HDF5 recommends
_MAX_LINK_HOPS = 40  # soft links followed for one path (a cycle ends here)


class HDF5Dataset(Dataset):
    """Examples stored in an HDF5 file, read lazily with h5py (use :func:`open_dataset`).

    The file is opened read-only with h5py's defaults, plus a 256 MiB chunk cache.
    Datasets whose data lives outside the file (external storage, virtual datasets,
    external links) are refused.  With ``y_optional``, a file in which ``y_key``
    names nothing is opened without labels.
    """

    def __init__(
        self,
        path: Path,
        shown: str,
        x_key: str,
        y_key: str | None,
        where: str,
        *,
        y_optional: bool = False,
    ) -> None:
        import h5py

        self.name = shown
        self.where = where
        try:
            with open(path, "rb"):
                pass
        except PermissionError:
            raise DataError(f"{where}: '{shown}' cannot be read (permission denied)") from None
        try:
            self._file = h5py.File(
                path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES, rdcc_nslots=_CHUNK_CACHE_SLOTS
            )
        except (OSError, ValueError) as err:
            if "unable to lock file" in str(err).lower():
                raise DataError(
                    f"{where}: '{shown}' is locked by another process (still being written?); "
                    f"wait for it to finish, or set HDF5_USE_FILE_LOCKING=FALSE"
                ) from None
            raise DataError(
                f"{where}: '{shown}' is not a readable HDF5 file (truncated or corrupt?)"
            ) from None
        try:
            self._x = self._dataset(x_key, "x")
            shape = tuple(int(s) for s in self._x.shape)
            _check_x(where, f"array '{x_key}' in '{shown}'", self._x.dtype, shape)
            self._y = None
            if y_key is not None and not (y_optional and self._missing(y_key)):
                self._y = self._dataset(y_key, "y")
                what = f"array '{y_key}' in '{shown}'"
                _check_y(where, what, self._y.dtype, tuple(self._y.shape), shape[0])
                if self._y.dtype.kind == "f":
                    step = max(1, _SCAN_BYTES // 8)
                    for start in range(0, shape[0], step):
                        part = self._guard(lambda s=start: self._y[s : s + step])
                        _check_integral(where, what, part, start)
        except BaseException:
            self._file.close()
            raise
        self._n = shape[0]
        self.example_shape = shape[1:]
        self.x_dtype = np.dtype(self._x.dtype)
        self.has_labels = self._y is not None

    def _missing(self, key: str) -> bool:
        hard, external = _resolve_in_file(self._file, key)
        return hard is None and external is None

    def _dataset(self, key: str, field: str) -> Any:
        import h5py

        where, shown = self.where, self.name
        hard, external = _resolve_in_file(self._file, key)
        if external is not None:
            via = "is" if external == key.strip("/") else f"leads through '{external}', which is"
            raise DataError(
                f"{where}: '{key}' in '{shown}' {via} an external link to another file; bntrain "
                f"reads only self-contained HDF5 files (copy the data into '{shown}')"
            )
        try:
            obj = self._file.get(hard) if hard is not None else None
        except (OSError, KeyError, ValueError, RuntimeError):
            obj = None
        if obj is not None and obj.id.fileno != self._file.id.fileno:  # pragma: no cover
            raise DataError(  # hard links never leave a file; this guards the resolver above
                f"{where}: '{key}' in '{shown}' lies in another file; bntrain reads only "
                f"self-contained HDF5 files (copy the data into '{shown}')"
            )
        if obj is None:
            arrays = _h5_arrays(self._file)
            raise DataError(
                f"{where}: '{shown}' has no array '{key}' (arrays: {_listing(arrays)}); "
                f"{_hint_for(where, field)}"
            )
        if not isinstance(obj, h5py.Dataset):
            arrays = _h5_arrays(self._file)
            raise DataError(
                f"{where}: '{key}' in '{shown}' is a group, not an array "
                f"(arrays: {_listing(arrays)}); {_hint_for(where, field)}"
            )
        if obj.is_virtual or obj.external:
            raise DataError(
                f"{where}: array '{key}' in '{shown}' keeps its data in other files "
                f"(external or virtual dataset); bntrain reads only self-contained HDF5 files"
            )
        _check_storage(obj, where, key, shown)
        return obj

    def _guard(self, fn: Any) -> np.ndarray:
        try:
            return fn()
        except (OSError, RuntimeError) as err:
            raise DataError(
                f"{self.where}: reading '{self.name}' failed ({_first_line(err)}); "
                f"the file may be truncated or corrupt"
            ) from None

    def _get_x(self, sel: slice | np.ndarray) -> np.ndarray:
        return self._guard(lambda: _read_rows(self._x, sel))

    def _get_y(self, sel: slice | np.ndarray) -> np.ndarray:
        return _to_labels(self._guard(lambda: _read_rows(self._y, sel)))

    def close(self) -> None:
        """Close the HDF5 file (idempotent)."""
        if not self._closed:
            self._closed = True
            self._file.close()


def _check_storage(dset: Any, where: str, key: str, shown: str) -> None:
    """Refuse an array that declares more data than the file stores.

    A contiguous array must store all its bytes; a chunked one must have every
    chunk written (unwritten chunks would read back as fill values).  This keeps
    a file that declares a huge shape from being scanned or trained on.
    """
    n_bytes = int(np.prod(dset.shape, dtype=np.float64)) * dset.dtype.itemsize
    if n_bytes == 0:
        return
    try:
        if dset.chunks is None:
            complete = dset.id.get_storage_size() >= n_bytes
        else:
            per_axis = [
                -(-size // chunk) for size, chunk in zip(dset.shape, dset.chunks, strict=True)
            ]
            complete = dset.id.get_num_chunks() >= int(np.prod(per_axis, dtype=np.float64))
    except (OSError, RuntimeError, ValueError):
        complete = False
    if not complete:
        raise DataError(
            f"{where}: array '{key}' in '{shown}' declares shape {list(dset.shape)} but the file "
            f"does not store all of it (truncated or never written); re-create the file"
        )


def h5_array_names(path: Path) -> list[str]:
    """Names of the arrays in the HDF5 file ``path`` (OSError if it cannot be read)."""
    import h5py

    with h5py.File(path, "r") as f:
        return _h5_arrays(f)


def _h5_arrays(f: Any) -> list[str]:
    import h5py

    names: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            names.append(name)

    try:
        f.visititems(visit)
    except (OSError, RuntimeError, KeyError):
        pass
    return names


def _read_rows(dset: Any, sel: slice | np.ndarray) -> np.ndarray:
    """Read rows ``sel`` (slice with step 1, or increasing indices) of an h5py dataset."""
    if isinstance(sel, slice):
        return dset[sel.start : sel.stop]
    first, last = int(sel[0]), int(sel[-1])
    span = last - first + 1
    if span <= 2 * sel.size:
        block = dset[first : last + 1]
        return block if span == sel.size else block[sel - first]
    chunks = dset.chunks
    if chunks is None:
        return dset[sel]
    # Chunked: one slice per run of indices that fall in the same chunk.
    cid = sel // chunks[0]
    cuts = np.flatnonzero(cid[1:] != cid[:-1]) + 1
    out = np.empty((sel.size, *dset.shape[1:]), dtype=dset.dtype)
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, sel.size], strict=True):
        a, b = int(sel[lo]), int(sel[hi - 1])
        block = dset[a : b + 1]
        out[lo:hi] = block[sel[lo:hi] - a]
    return out


def _resolve_in_file(f: Any, key: str) -> tuple[str | None, str | None]:
    """Follow ``key`` through ``f`` one link at a time, never leaving the file.

    Soft links are replaced by their targets; no external link is traversed.

    Returns
    -------
    hard : str or None
        The path of the object through hard links only, or None when ``key``
        names nothing (or a soft link dangles or loops).
    external : str or None
        The path of the first external link met (then ``hard`` is None).
    """
    import h5py

    parts = [p for p in key.split("/") if p not in ("", ".")]
    current, hops = "", 0
    while parts:
        path = f"{current}/{parts.pop(0)}"
        try:
            link = f.get(path, getlink=True)
        except (OSError, KeyError, ValueError, RuntimeError):
            link = None
        if link is None:
            return None, None
        if isinstance(link, h5py.ExternalLink):
            return None, path.lstrip("/")
        if isinstance(link, h5py.SoftLink):
            hops += 1
            if hops > _MAX_LINK_HOPS:
                return None, None
            target = link.path
            if target.startswith("/"):
                current = ""
            parts[:0] = [p for p in target.split("/") if p not in ("", ".")]
            continue
        current = path
    return current or "/", None

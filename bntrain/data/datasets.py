"""Datasets: the built-in digits, HDF5 and NPZ files, read lazily example by example.

A :class:`Dataset` is a sequence of examples ``X[i]`` (all of one shape and
numeric dtype) with optional integer class labels ``y[i]``.  Files are opened
with :func:`open_dataset`; HDF5 arrays are never loaded whole, so a training set
larger than memory works.  Every user-caused problem raises
:class:`bntrain.errors.DataError` with one line that names the config key path
(``where``), the file and, where possible, the fix.

Reading from HDF5
-----------------
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
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bntrain.errors import ConfigError, DataError

__all__ = [
    "Dataset",
    "ArrayDataset",
    "HDF5Dataset",
    "SubsetDataset",
    "ReshapeDataset",
    "open_dataset",
    "load_digits",
    "digits_split_indices",
    "validate_dataset",
    "split_indices",
    "DIGITS_SPLIT_SEED",
    "DIGITS_SPLIT_FRACTIONS",
    "DIGITS_SHA256",
]

#: Seed of the fixed, stratified train/val/test split of the built-in digits.
DIGITS_SPLIT_SEED = 20150211
#: Fractions of each class that go to train, val and test (the rest of a class goes to test).
DIGITS_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
#: sha256 of ``bntrain/data/digits.csv.gz`` (as shipped by scikit-learn).
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"

_SPLITS = ("train", "val", "test", "all")
_SPEC_KEYS = ("builtin", "split", "path", "x", "y")
_H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
_CHUNK_CACHE_BYTES = 256 << 20
_CHUNK_CACHE_SLOTS = 100003  # a prime, as HDF5 recommends
_SCAN_BYTES = 16 << 20  # bytes of X per read when scanning a whole dataset
_MAX_LISTED = 12


# ----------------------------------------------------------------------------- base class


class Dataset:
    """A sequence of examples with optional labels, read on demand.

    Subclasses set ``_n``, ``example_shape``, ``x_dtype``, ``has_labels``,
    ``name`` and ``where`` and implement ``_get_x(sel)`` / ``_get_y(sel)``, where
    ``sel`` is either a ``slice(start, stop)`` with step 1 inside ``[0, len)``
    or a strictly increasing int64 array of valid indices.

    Attributes
    ----------
    name : str
        Human-readable name used in messages (usually the file path as configured).
    where : str
        Config key path used in messages, e.g. ``'data.train'``.
    example_shape : tuple of int
        Shape of one example ``X[i]``.
    x_dtype : numpy.dtype
        dtype of X as stored.
    has_labels : bool
        Whether the dataset has labels ``y``.
    """

    name: str = "dataset"
    where: str = "data"
    example_shape: tuple[int, ...] = ()
    x_dtype: np.dtype = np.dtype(np.float32)
    has_labels: bool = False
    _n: int = 0
    _closed: bool = False

    # -- public API -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._n)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def read(
        self, indices: slice | Iterable[int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Read the examples at ``indices``.

        Parameters
        ----------
        indices : slice or 1-D integer array
            A slice (any step), or example indices.  Increasing indices are fastest;
            others are sorted for reading and returned in the order given.

        Returns
        -------
        x : numpy.ndarray
            Shape ``(k, *example_shape)``, dtype :attr:`x_dtype`.
        y : numpy.ndarray or None
            int64 labels of shape ``(k,)``, or None if the dataset has no labels.
        """
        sel, inverse = self._normalize(indices)
        x = self._fetch_x(sel, inverse)
        y = self._fetch_y(sel, inverse) if self.has_labels else None
        return x, y

    def read_x(self, indices: slice | Iterable[int] | np.ndarray) -> np.ndarray:
        """Read only the examples (see :meth:`read`)."""
        sel, inverse = self._normalize(indices)
        return self._fetch_x(sel, inverse)

    def read_y(self, indices: slice | Iterable[int] | np.ndarray) -> np.ndarray:
        """Read only the int64 labels (see :meth:`read`); ValueError if there are none."""
        if not self.has_labels:
            raise ValueError(f"{type(self).__name__} '{self.name}': the dataset has no labels")
        sel, inverse = self._normalize(indices)
        return self._fetch_y(sel, inverse)

    def scan_batch_size(self) -> int:
        """Examples per read when streaming the whole dataset (about 16 MiB of X)."""
        per = max(1, math.prod(self.example_shape) * self.x_dtype.itemsize)
        return max(1, min(len(self), _SCAN_BYTES // per)) if len(self) else 1

    def sha256(self, batch_size: int | None = None) -> str:
        """Hex sha256 of X's bytes in stored order, read ``batch_size`` examples at a time.

        Equals ``hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest()`` for
        the full array ``X`` (in its stored dtype and byte order).
        """
        step = int(batch_size) if batch_size else self.scan_batch_size()
        if step < 1:
            raise ValueError(f"{type(self).__name__}.sha256: batch_size must be >= 1, got {step}")
        h = hashlib.sha256()
        for start in range(0, len(self), step):
            h.update(np.ascontiguousarray(self.read_x(slice(start, start + step))).data)
        return h.hexdigest()

    def subset(self, indices: Iterable[int] | np.ndarray) -> SubsetDataset:
        """A view holding the examples at ``indices`` (in that order)."""
        return SubsetDataset(self, indices)

    def reshape_examples(self, shape: Iterable[int]) -> ReshapeDataset:
        """A view whose examples have ``shape`` (same number of values), e.g. (64,) -> (1, 8, 8)."""
        return ReshapeDataset(self, shape)

    def close(self) -> None:
        """Release the underlying file (idempotent)."""
        self._closed = True

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"example_shape={self.example_shape}, x_dtype={self.x_dtype}, "
            f"has_labels={self.has_labels})"
        )

    # -- to implement -----------------------------------------------------------------
    def _get_x(self, sel: slice | np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _get_y(self, sel: slice | np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------
    def _fetch_x(self, sel: slice | np.ndarray, inverse: np.ndarray | None) -> np.ndarray:
        if _sel_len(sel) == 0:
            return np.empty((0, *self.example_shape), dtype=self.x_dtype)
        x = self._get_x(sel)
        return x if inverse is None else x[inverse]

    def _fetch_y(self, sel: slice | np.ndarray, inverse: np.ndarray | None) -> np.ndarray:
        if _sel_len(sel) == 0:
            return np.empty((0,), dtype=np.int64)
        y = self._get_y(sel)
        return y if inverse is None else y[inverse]

    def _normalize(self, indices: Any) -> tuple[slice | np.ndarray, np.ndarray | None]:
        """Turn ``indices`` into (slice with step 1 | increasing array, inverse or None)."""
        if self._closed:
            raise ValueError(f"{type(self).__name__} '{self.name}' is closed")
        n = len(self)
        if isinstance(indices, slice):
            start, stop, step = indices.indices(n)
            if step == 1:
                return slice(start, max(start, stop)), None
            indices = np.arange(start, stop, step, dtype=np.int64)
        if isinstance(indices, int | np.integer):
            raise TypeError(
                f"{type(self).__name__} '{self.name}': read() takes a slice or an index array, "
                f"not the single index {int(indices)} (use [{int(indices)}])"
            )
        idx = np.asarray(indices)
        if idx.size == 0:
            return np.empty(0, dtype=np.int64), None
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise TypeError(
                f"{type(self).__name__} '{self.name}': indices must be a slice or a 1-D integer "
                f"array, got dtype {idx.dtype} and shape {idx.shape}"
            )
        idx = idx.astype(np.int64, copy=False)
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise IndexError(
                f"{type(self).__name__} '{self.name}': index {bad} is out of range for {n} examples"
            )
        if idx.size == 1 or bool(np.all(idx[1:] > idx[:-1])):
            return idx, None
        uniq, inverse = np.unique(idx, return_inverse=True)
        return uniq, inverse


def _sel_len(sel: slice | np.ndarray) -> int:
    if isinstance(sel, slice):
        return sel.stop - sel.start
    return int(sel.size)


# ----------------------------------------------------------------------------- checks


def _dtype_label(dtype: np.dtype) -> str:
    if dtype.names is not None:
        return "compound"
    if dtype.kind in "SUa":
        return "string"
    if dtype.kind == "O":
        h5 = _h5py_or_none()
        if h5 is not None and h5.check_string_dtype(dtype) is not None:
            return "string"
        return "object"
    if dtype.kind == "V":
        return "opaque"
    if dtype.kind == "c":
        return "complex"
    return str(dtype)


def _h5py_or_none() -> Any:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        return None
    return h5py


def _check_x(where: str, what: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Validate X's dtype and shape (``what`` describes it, e.g. "array 'X' in 'f.h5'")."""
    if dtype.names is not None or dtype.kind not in "biuf":
        raise DataError(
            f"{where}: {what} has {_dtype_label(dtype)} dtype; X must be a numeric array "
            f"(integers or floating point)"
        )
    if len(shape) < 2:
        raise DataError(
            f"{where}: {what} has shape {tuple(shape)}; X needs one row per example, "
            f"shape (N, ...) (for one feature per example store shape (N, 1))"
        )
    if shape[0] == 0:
        raise DataError(f"{where}: {what} has no examples (shape {tuple(shape)})")
    if math.prod(shape[1:]) == 0:
        raise DataError(f"{where}: {what} has empty examples (shape {tuple(shape)})")


def _check_y(where: str, what: str, dtype: np.dtype, shape: tuple[int, ...], n: int) -> None:
    if dtype.names is not None or dtype.kind not in "iuf":
        raise DataError(
            f"{where}: {what} has {_dtype_label(dtype)} dtype; y must hold integer class "
            f"labels (store it as int64)"
        )
    if len(shape) != 1:
        raise DataError(
            f"{where}: {what} has shape {tuple(shape)}; y must be 1-D, one class index per "
            f"example (one-hot labels are not supported: store argmax)"
        )
    if shape[0] != n:
        raise DataError(f"{where}: X has {n} examples but y has {shape[0]}")


def _check_integral(where: str, what: str, values: np.ndarray, offset: int) -> None:
    """Float labels must be finite whole numbers."""
    bad = ~(np.isfinite(values) & (np.floor(values) == values))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: {what} has the non-integer label {float(values[i])!r} at example "
            f"{offset + i}; labels must be class indices 0, 1, ..."
        )


def _to_labels(y: np.ndarray) -> np.ndarray:
    return np.asarray(y).astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- in memory


class ArrayDataset(Dataset):
    """A dataset over in-memory arrays.

    Parameters
    ----------
    x : numpy.ndarray
        Examples, shape ``(N, ...)``, numeric dtype.
    y : numpy.ndarray, optional
        Integer labels, shape ``(N,)``.
    name : str
        Name used in messages.
    where : str
        Config key path used in messages.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None = None,
        *,
        name: str = "arrays",
        where: str = "data",
    ) -> None:
        x = np.asarray(x)
        self.name = name
        self.where = where
        _check_x(where, f"X of '{name}'", x.dtype, x.shape)
        if y is not None:
            y = np.asarray(y)
            _check_y(where, f"y of '{name}'", y.dtype, y.shape, x.shape[0])
            if y.dtype.kind == "f":
                _check_integral(where, f"y of '{name}'", y, 0)
            y = _to_labels(y)
        self._x = x
        self._y = y
        self._n = int(x.shape[0])
        self.example_shape = tuple(int(s) for s in x.shape[1:])
        self.x_dtype = x.dtype
        self.has_labels = y is not None

    def _get_x(self, sel: slice | np.ndarray) -> np.ndarray:
        return np.array(self._x[sel])

    def _get_y(self, sel: slice | np.ndarray) -> np.ndarray:
        return np.array(self._y[sel])

    def close(self) -> None:
        """Mark closed and drop the arrays."""
        self._closed = True


# ----------------------------------------------------------------------------- HDF5


class HDF5Dataset(Dataset):
    """Examples stored in an HDF5 file, read lazily with h5py (use :func:`open_dataset`).

    The file is opened read-only with h5py's defaults, plus a 256 MiB chunk cache.
    Datasets whose data lives outside the file (external storage, virtual datasets,
    external links) are refused.
    """

    def __init__(self, path: Path, shown: str, x_key: str, y_key: str | None, where: str) -> None:
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
            if y_key is not None:
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

    def _dataset(self, key: str, field: str) -> Any:
        import h5py

        where, shown = self.where, self.name
        try:
            link = self._file.get(key, getlink=True)
        except (OSError, KeyError, ValueError, RuntimeError):
            link = None
        if isinstance(link, h5py.ExternalLink):
            raise DataError(
                f"{where}: '{key}' in '{shown}' is an external link to another file; bntrain "
                f"reads only self-contained HDF5 files (copy the data into '{shown}')"
            )
        try:
            obj = self._file.get(key) if link is not None else None
        except (OSError, KeyError, ValueError, RuntimeError):
            obj = None  # a dangling soft link
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


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


def array_names(path: str | os.PathLike[str]) -> list[str]:
    """Names of the arrays in an HDF5 or NPZ file; empty when it cannot be read."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npz":
            with zipfile.ZipFile(path) as zf:
                return sorted(n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy"))
        h5py = _h5py_or_none()
        if h5py is None:
            return []
        with h5py.File(path, "r") as f:
            return _h5_arrays(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return []


def _hint_for(where: str, field: str) -> str:
    """How to name another array: a config key, or the command's ``--x-key``/``--y-key`` option."""
    return f"use --{field}-key" if where.startswith("--") else f"set {where}.{field}"


def _listing(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... ({len(names)} in all)"
    return shown


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


# ----------------------------------------------------------------------------- NPZ


def _open_npz(path: Path, shown: str, x_key: str, y_key: str | None, where: str) -> ArrayDataset:
    """Load an NPZ file (whole, after checking the headers) into an :class:`ArrayDataset`."""
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


# ----------------------------------------------------------------------------- views


class SubsetDataset(Dataset):
    """A view of ``base`` holding the examples at ``indices`` (see :meth:`Dataset.subset`).

    The view shares the base's file: closing the view closes the base.
    """

    def __init__(self, base: Dataset, indices: Iterable[int] | np.ndarray) -> None:
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64).reshape(0)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise TypeError(
                f"SubsetDataset of '{base.name}': indices must be a 1-D integer array, got "
                f"dtype {idx.dtype} and shape {idx.shape}"
            )
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(base)):
            bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
            raise IndexError(
                f"SubsetDataset of '{base.name}': index {bad} is out of range for "
                f"{len(base)} examples"
            )
        self.base = base
        self.indices = idx
        self.name = base.name
        self.where = base.where
        self._n = int(idx.size)
        self.example_shape = base.example_shape
        self.x_dtype = base.x_dtype
        self.has_labels = base.has_labels

    def _get_x(self, sel: slice | np.ndarray) -> np.ndarray:
        return self.base.read_x(self.indices[sel])

    def _get_y(self, sel: slice | np.ndarray) -> np.ndarray:
        return self.base.read_y(self.indices[sel])

    def close(self) -> None:
        """Close the view and its base."""
        self._closed = True
        self.base.close()


class ReshapeDataset(Dataset):
    """A view of ``base`` whose examples are reshaped (see :meth:`Dataset.reshape_examples`).

    The view shares the base's file: closing the view closes the base.
    """

    def __init__(self, base: Dataset, shape: Iterable[int]) -> None:
        try:
            new = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise TypeError(
                f"ReshapeDataset of '{base.name}': shape must be a sequence of ints, got {shape!r}"
            ) from None
        if any(s <= 0 for s in new):
            raise ValueError(
                f"ReshapeDataset of '{base.name}': shape must be positive, got {list(new)}"
            )
        old = base.example_shape
        if math.prod(new) != math.prod(old):
            raise DataError(
                f"{base.where}: cannot reshape examples of shape {old} ({math.prod(old)} values) "
                f"to {list(new)} ({math.prod(new)} values)"
            )
        self.base = base
        self.name = base.name
        self.where = base.where
        self._n = len(base)
        self.example_shape = new
        self.x_dtype = base.x_dtype
        self.has_labels = base.has_labels

    def _get_x(self, sel: slice | np.ndarray) -> np.ndarray:
        x = self.base.read_x(sel)
        return x.reshape((x.shape[0], *self.example_shape))

    def _get_y(self, sel: slice | np.ndarray) -> np.ndarray:
        return self.base.read_y(sel)

    def close(self) -> None:
        """Close the view and its base."""
        self._closed = True
        self.base.close()


# ----------------------------------------------------------------------------- digits


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    raw = resources.files("bntrain.data").joinpath("digits.csv.gz").read_bytes()
    if hashlib.sha256(raw).hexdigest() != DIGITS_SHA256:
        raise DataError(
            "builtin digits: bntrain/data/digits.csv.gz is damaged (sha256 mismatch); "
            "reinstall bntrain"
        )
    table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",")
    x = table[:, :64].astype(np.uint8)
    y = table[:, 64].astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def digits_split_indices(split: str) -> np.ndarray:
    """Sorted indices of the built-in digits that belong to ``split``.

    The split is stratified by class and fixed: each class's indices are shuffled
    with ``np.random.default_rng(DIGITS_SPLIT_SEED)`` (classes in order 0..9, one
    generator), then the first ``round(0.7 * n_c)`` go to train, the next
    ``round(0.1 * n_c)`` to val and the rest to test.  ``'all'`` is every example.
    """
    if split not in _SPLITS:
        raise ValueError(f"digits_split_indices: split must be one of {_SPLITS}, got {split!r}")
    _, y = _digits_arrays()
    if split == "all":
        return np.arange(y.size, dtype=np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(int(y.max()) + 1):
        members = rng.permutation(np.flatnonzero(y == c))
        n_train = round(DIGITS_SPLIT_FRACTIONS[0] * members.size)
        n_val = round(DIGITS_SPLIT_FRACTIONS[1] * members.size)
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train : n_train + n_val])
        parts["test"].append(members[n_train + n_val :])
    return np.sort(np.concatenate(parts[split])).astype(np.int64)


def load_digits(split: str = "all", *, where: str = "data") -> ArrayDataset:
    """The built-in 8x8 digits (UCI, as shipped by scikit-learn): X uint8 (N, 64) in 0..16.

    Parameters
    ----------
    split : {'train', 'val', 'test', 'all'}
        Which part of the fixed split (see :func:`digits_split_indices`);
        1797 examples in all.
    where : str
        Config key path used in messages.
    """
    idx = digits_split_indices(split)
    x, y = _digits_arrays()
    return ArrayDataset(x[idx], y[idx], name=f"builtin:digits[{split}]", where=where)


# ----------------------------------------------------------------------------- opening


def _spec_fields(spec: Any, where: str) -> dict[str, Any]:
    defaults = {"builtin": None, "split": None, "path": None, "x": "X", "y": "y"}
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(_SPEC_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key '{unknown[0]}' (expected one of: {', '.join(_SPEC_KEYS)})"
            )
        return {k: spec.get(k, v) for k, v in defaults.items()}
    return {k: getattr(spec, k, v) for k, v in defaults.items()}


def open_dataset(spec: Any, base_dir: str | os.PathLike[str] | None, where: str) -> Dataset:
    """Open the dataset that a config entry describes.

    Parameters
    ----------
    spec : object or mapping
        Has ``builtin`` ('digits' or None), ``split`` ('train'|'val'|'test'|'all'|None,
        builtin only; None means 'all'), ``path`` (an .h5/.hdf5 or .npz file, relative
        paths resolved against ``base_dir``), ``x`` (array name, default 'X') and
        ``y`` (array name, default 'y'; None for unlabeled data).
    base_dir : path or None
        Folder that relative paths are resolved against (the config file's folder);
        None means the current directory.
    where : str
        Config key path for messages, e.g. ``'data.train'``.

    Returns
    -------
    Dataset
        Close it (or use it as a context manager) when done.

    Raises
    ------
    bntrain.errors.DataError
        Missing, unreadable or malformed file or arrays.
    bntrain.errors.ConfigError
        An inconsistent spec (both or neither of builtin and path, unknown split).
    """
    f = _spec_fields(spec, where)
    builtin, path, split = f["builtin"], f["path"], f["split"]
    if (builtin is None) == (path is None):
        raise ConfigError(f"{where}: set exactly one of {where}.builtin and {where}.path")
    if builtin is not None:
        if builtin != "digits":
            raise ConfigError(f"{where}.builtin: unknown dataset {builtin!r} (available: digits)")
        split = "all" if split is None else split
        if split not in _SPLITS:
            raise ConfigError(f"{where}.split: must be one of {', '.join(_SPLITS)}, got {split!r}")
        return load_digits(split, where=where)
    if split is not None:
        raise ConfigError(f"{where}.split: only applies to builtin datasets; remove it")
    x_key, y_key = f["x"], f["y"]
    if not isinstance(x_key, str) or not x_key:
        raise ConfigError(f"{where}.x: must be an array name, got {x_key!r}")
    if y_key is not None and (not isinstance(y_key, str) or not y_key):
        raise ConfigError(f"{where}.y: must be an array name or null, got {y_key!r}")
    shown = os.fspath(path)
    full = Path(shown).expanduser()
    if not full.is_absolute():
        full = Path(base_dir if base_dir is not None else ".") / full
    if not full.exists():
        raise DataError(f"{where}: file '{shown}' not found")
    if full.is_dir():
        raise DataError(f"{where}: '{shown}' is a directory, not a data file")
    suffix = full.suffix.lower()
    if suffix in _H5_SUFFIXES:
        return HDF5Dataset(full, shown, x_key, y_key, where)
    if suffix == ".npz":
        return _open_npz(full, shown, x_key, y_key, where)
    raise DataError(
        f"{where}: '{shown}' has the unknown extension '{full.suffix}'; use an HDF5 (.h5, .hdf5) "
        f"or NumPy (.npz) file"
    )


# ----------------------------------------------------------------------------- checks


def validate_dataset(
    ds: Dataset,
    input_shape: Iterable[int],
    n_classes: int | None,
    where: str,
    *,
    check_values: bool = True,
    require_labels: bool = False,
) -> None:
    """Check that ``ds`` fits the model before training or evaluating.

    Parameters
    ----------
    ds : Dataset
    input_shape : sequence of int
        The model's input shape without the batch axis (``model.input_shape``).
    n_classes : int or None
        Labels must lie in ``[0, n_classes)``; None skips the label check.
    where : str
        Config key path for messages.
    check_values : bool
        Also stream through the data (chunk by chunk) to check label ranges and
        that X has no NaN/Inf; False checks shapes only.
    require_labels : bool
        Raise if the dataset has no labels.

    Raises
    ------
    bntrain.errors.DataError
        The first problem found.
    """
    shape = tuple(int(s) for s in input_shape)
    if tuple(ds.example_shape) != shape:
        raise DataError(
            f"{where}: examples have shape {tuple(ds.example_shape)} but model.input_shape "
            f"is {list(shape)}"
        )
    if require_labels and not ds.has_labels:
        raise DataError(f"{where}: '{ds.name}' has no labels (y is null); set {where}.y")
    if not check_values:
        return
    if n_classes is not None and ds.has_labels:
        step = max(1, _SCAN_BYTES // 8)
        for start in range(0, len(ds), step):
            y = ds.read_y(slice(start, start + step))
            bad = (y < 0) | (y >= n_classes)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{where}: label {int(y[i])} at example {start + i} is outside "
                    f"[0, {n_classes}) (the model has {n_classes} classes)"
                )
    if ds.x_dtype.kind == "f":
        step = ds.scan_batch_size()
        for start in range(0, len(ds), step):
            x = ds.read_x(slice(start, start + step))
            finite = np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
            if not finite.all():
                i = int(np.flatnonzero(~finite)[0])
                row = x[i].ravel()
                value = row[~np.isfinite(row)][0]
                raise DataError(
                    f"{where}: X has a non-finite value ({value}) in example {start + i}; "
                    f"fix or drop that example"
                )


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` at random into train and validation indices.

    Parameters
    ----------
    n : int
        Number of examples.
    fraction : float
        Fraction for validation, in (0, 1); the validation part has ``round(fraction * n)``
        examples, which must leave at least one on each side.
    seed : int
        Seed of ``np.random.default_rng(seed)``.

    Returns
    -------
    train_idx, val_idx : numpy.ndarray
        Sorted, disjoint int64 arrays covering ``range(n)``.
    """
    n = int(n)
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split_indices: fraction must be in (0, 1), got {fraction}")
    n_val = round(fraction * n)
    if n_val < 1 or n_val > n - 1:
        raise ValueError(
            f"split_indices: fraction {fraction} of {n} examples gives {n_val} validation "
            f"examples; both parts need at least one"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)

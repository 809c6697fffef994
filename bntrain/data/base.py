"""The dataset interface, in-memory arrays, views, and the checks every format shares.

A :class:`Dataset` is a sequence of examples ``X[i]`` (all of one shape and
numeric dtype) with optional integer class labels ``y[i]``.  The formats live in
their own modules (:mod:`bntrain.data.hdf5`, :mod:`bntrain.data.npz`,
:mod:`bntrain.data.digits`); :func:`bntrain.data.open_dataset` picks one.  Every
user-caused problem raises :class:`bntrain.errors.DataError` with one line that
names the config key path (``where``), the file and, where possible, the fix.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from bntrain.errors import DataError

__all__ = [
    "Dataset",
    "ArrayDataset",
    "SubsetDataset",
    "ReshapeDataset",
    "SPLITS",
]

#: The splits a built-in dataset offers (``'all'`` is every example).
SPLITS = ("train", "val", "test", "all")
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
    if dtype.kind == "O":  # h5py marks its variable-length strings in the dtype's metadata
        return "string" if (dtype.metadata or {}).get("vlen") in (str, bytes) else "object"
    if dtype.kind == "V":
        return "opaque"
    if dtype.kind == "c":
        return "complex"
    return str(dtype)


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


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

"""Open a dataset from a config entry or a file, check it against a model, split it.

:func:`open_dataset` picks the format: a built-in dataset (:data:`BUILTINS`), an
HDF5 file (:mod:`bntrain.data.hdf5`) or an NPZ file (:mod:`bntrain.data.npz`).
A data path must name a regular file: a FIFO, socket or device is refused
before anything opens it (opening a FIFO would wait for a writer forever).
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bntrain.data.base import _SCAN_BYTES, SPLITS, Dataset
from bntrain.data.digits import load_digits
from bntrain.data.hdf5 import H5_SUFFIXES, HDF5Dataset, h5_array_names
from bntrain.data.npz import open_npz
from bntrain.data.standard import STANDARD_LOADERS
from bntrain.errors import ConfigError, DataError

__all__ = [
    "BUILTINS",
    "open_dataset",
    "validate_dataset",
    "fit_examples",
    "split_indices",
    "array_names",
    "regular_file",
]

#: Built-in datasets by name: ``load(split, *, where) -> Dataset``, ``split`` one of
#: ``'train'``, ``'val'``, ``'test'``, ``'all'`` (the downloaded standard datasets of
#: :mod:`bntrain.data.standard` offer ``'train'`` and ``'test'`` only).  A new built-in
#: dataset is one module holding its loader plus one entry here.
BUILTINS: dict[str, Callable[..., Dataset]] = {"digits": load_digits, **STANDARD_LOADERS}

_SPEC_KEYS = ("builtin", "split", "path", "x", "y")


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


def regular_file(
    path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None, where: str
) -> Path:
    """Resolve a data path and check that it names a regular file, without opening it.

    Parameters
    ----------
    path : path-like
        As the user gave it; a relative path is resolved against ``base_dir``.
    base_dir : path-like or None
        The config file's folder; None means the current directory.
    where : str
        Config key path (or command option) used in messages.

    Returns
    -------
    Path
        The resolved path.

    Raises
    ------
    bntrain.errors.DataError
        The file is missing, a directory, or not a regular file (a FIFO, socket
        or device file, which could block or never end).
    """
    shown = os.fspath(path)
    full = Path(shown).expanduser()
    if not full.is_absolute():
        full = Path(base_dir if base_dir is not None else ".") / full
    try:
        mode = full.stat().st_mode  # follows symbolic links: the target is what would be read
    except FileNotFoundError:
        raise DataError(f"{where}: file '{shown}' not found") from None
    except OSError as err:
        raise DataError(f"{where}: cannot read '{shown}' ({err.strerror or err})") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{where}: '{shown}' is a directory, not a data file")
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode)
            else "a device file"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise DataError(
            f"{where}: '{shown}' is {kind}, not a data file; write the data to a regular "
            f"HDF5 (.h5) or NPZ (.npz) file first"
        )
    return full


def open_dataset(
    spec: Any,
    base_dir: str | os.PathLike[str] | None,
    where: str,
    *,
    y_optional: bool = False,
) -> Dataset:
    """Open the dataset that a config entry describes.

    Parameters
    ----------
    spec : object or mapping
        Has ``builtin`` (a name in :data:`BUILTINS` or None), ``split``
        ('train'|'val'|'test'|'all'|None, builtin only; None means 'all'),
        ``path`` (an .h5/.hdf5 or .npz file, relative paths resolved against
        ``base_dir``), ``x`` (array name, default 'X') and ``y`` (array name,
        default 'y'; None for unlabeled data).
    base_dir : path or None
        Folder that relative paths are resolved against (the config file's folder);
        None means the current directory.
    where : str
        Config key path for messages, e.g. ``'data.train'``.
    y_optional : bool
        Open a file that has no array ``y`` without labels instead of refusing it.

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
        if builtin not in BUILTINS:
            raise ConfigError(
                f"{where}.builtin: unknown dataset {builtin!r} (available: {', '.join(BUILTINS)})"
            )
        split = "all" if split is None else split
        if split not in SPLITS:
            raise ConfigError(f"{where}.split: must be one of {', '.join(SPLITS)}, got {split!r}")
        return BUILTINS[builtin](split, where=where)
    if split is not None:
        raise ConfigError(f"{where}.split: only applies to builtin datasets; remove it")
    x_key, y_key = f["x"], f["y"]
    if not isinstance(x_key, str) or not x_key:
        raise ConfigError(f"{where}.x: must be an array name, got {x_key!r}")
    if y_key is not None and (not isinstance(y_key, str) or not y_key):
        raise ConfigError(f"{where}.y: must be an array name or null, got {y_key!r}")
    shown = os.fspath(path)
    full = regular_file(shown, base_dir, where)
    suffix = full.suffix.lower()
    if suffix in H5_SUFFIXES:
        return HDF5Dataset(full, shown, x_key, y_key, where, y_optional=y_optional)
    if suffix == ".npz":
        return open_npz(full, shown, x_key, y_key, where, y_optional=y_optional)
    raise DataError(
        f"{where}: '{shown}' has the unknown extension '{full.suffix}'; use an HDF5 (.h5, .hdf5) "
        f"or NumPy (.npz) file"
    )


def array_names(path: str | os.PathLike[str]) -> list[str]:
    """Names of the arrays in an HDF5 or NPZ file; empty when it cannot be read.

    Only a regular file is opened (a FIFO or device file gives an empty list).
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return []
        if path.suffix.lower() == ".npz":
            with zipfile.ZipFile(path) as zf:
                return sorted(n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy"))
        return h5_array_names(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return []


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


def fit_examples(ds: Dataset, input_shape: Iterable[int], *, wanted: str, mismatch: str) -> Dataset:
    """``ds`` viewed with examples of ``input_shape``, or a DataError.

    Examples of another shape with as many values are reshaped (e.g. the
    digits' ``(64,)`` to ``(1, 8, 8)``), except channels-last images
    ``(H, W, C)`` for a channels-first ``(C, H, W)``, which a reshape would
    scramble: they are refused with the transpose that fixes them.

    Parameters
    ----------
    ds : Dataset
    input_shape : sequence of int
        The network's input shape without the batch axis.
    wanted : str
        What asks for ``input_shape``, completing the message ``... but <wanted>
        [3, 32, 32]``, e.g. ``'model.input_shape is'``.
    mismatch : str
        The message when the number of values differs.

    Raises
    ------
    bntrain.errors.DataError
        Naming ``ds.where``; ``ds`` is left open.
    """
    shape, target = tuple(ds.example_shape), tuple(int(s) for s in input_shape)
    if shape == target:
        return ds
    if len(shape) == len(target) >= 3 and shape[-1] == target[0] > 1 and shape[:-1] == target[1:]:
        axes = (0, len(shape), *range(1, len(shape)))
        raise DataError(
            f"{ds.where}: '{ds.name}' holds channels-last examples of shape {list(shape)} but "
            f"{wanted} {list(target)} (channels first); transpose X to (N, "
            f"{', '.join(map(str, target))}), e.g. np.transpose(X, {axes})"
        )
    if int(np.prod(shape)) == int(np.prod(target)):
        return ds.reshape_examples(target)
    raise DataError(mismatch)


def split_indices(
    n: int, fraction: float, seed: int, *, where: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
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
    where : str, optional
        Config key path of ``fraction`` (e.g. ``'data.val_split'``): a fraction
        that leaves a side empty is then a :class:`~bntrain.errors.DataError`
        naming it; without it, a ValueError.

    Returns
    -------
    train_idx, val_idx : numpy.ndarray
        Sorted, disjoint int64 arrays covering ``range(n)``.
    """
    n = int(n)
    fraction = float(fraction)
    error, prefix = (ValueError, "split_indices") if where is None else (DataError, where)
    if not 0.0 < fraction < 1.0:
        raise error(f"{prefix}: fraction must be in (0, 1), got {fraction}")
    n_val = round(fraction * n)
    if n_val < 1:
        raise error(
            f"{prefix}: {fraction} of {n} examples leaves no validation example; use a larger "
            f"fraction (one example is {1 / n:.2g})"
        )
    if n_val > n - 1:
        raise error(
            f"{prefix}: {fraction} of {n} examples leaves no training example; use a smaller "
            f"fraction"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)

"""The built-in 8x8 digits (UCI, as shipped by scikit-learn), with a fixed stratified split.

A built-in dataset is one module like this one, with a loader
``load(split, *, where) -> Dataset``, plus one entry in
:data:`bntrain.data.open.BUILTINS`.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from importlib import resources

import numpy as np

from bntrain.data.base import SPLITS, ArrayDataset
from bntrain.errors import DataError

__all__ = [
    "load_digits",
    "digits_split_indices",
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
    if split not in SPLITS:
        raise ValueError(f"digits_split_indices: split must be one of {SPLITS}, got {split!r}")
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

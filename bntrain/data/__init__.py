"""Data for bntrain: datasets (built-in digits, HDF5, NPZ), validation, preprocessing, batches.

One module per job: :mod:`~bntrain.data.base` (the :class:`Dataset` interface,
in-memory arrays, views, shared checks), :mod:`~bntrain.data.hdf5`,
:mod:`~bntrain.data.npz`, :mod:`~bntrain.data.digits` (the built-in digits),
:mod:`~bntrain.data.open` (opening a config entry, checking it against a model,
splitting), :mod:`~bntrain.data.preprocess`, :mod:`~bntrain.data.batches` and
:mod:`~bntrain.data.h5write`.

Uses NumPy and h5py only (no PyTensor).  Every user-caused problem raises
:class:`bntrain.errors.DataError` with a one-line message naming the config key
path and the file.
"""

from bntrain.data.augment import Augmenter
from bntrain.data.base import SPLITS, ArrayDataset, Dataset, ReshapeDataset, SubsetDataset
from bntrain.data.batches import BatchIterator
from bntrain.data.digits import (
    DIGITS_SHA256,
    DIGITS_SPLIT_FRACTIONS,
    DIGITS_SPLIT_SEED,
    digits_split_indices,
    load_digits,
)
from bntrain.data.h5write import write_hdf5_dataset
from bntrain.data.hdf5 import HDF5Dataset
from bntrain.data.open import (
    BUILTINS,
    array_names,
    fit_examples,
    open_dataset,
    regular_file,
    split_indices,
    validate_dataset,
)
from bntrain.data.preprocess import STD_FLOOR, Preprocessor

__all__ = [
    "Augmenter",
    "ArrayDataset",
    "BUILTINS",
    "BatchIterator",
    "DIGITS_SHA256",
    "DIGITS_SPLIT_FRACTIONS",
    "DIGITS_SPLIT_SEED",
    "Dataset",
    "HDF5Dataset",
    "Preprocessor",
    "ReshapeDataset",
    "STD_FLOOR",
    "SPLITS",
    "SubsetDataset",
    "array_names",
    "digits_split_indices",
    "fit_examples",
    "load_digits",
    "open_dataset",
    "regular_file",
    "split_indices",
    "validate_dataset",
    "write_hdf5_dataset",
]

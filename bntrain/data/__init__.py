"""Data for bntrain: datasets (built-in digits, HDF5, NPZ), validation, preprocessing, batches.

Uses NumPy and h5py only (no PyTensor).  Every user-caused problem raises
:class:`bntrain.errors.DataError` with a one-line message naming the config key
path and the file.
"""

from bntrain.data.batches import BatchIterator
from bntrain.data.datasets import (
    DIGITS_SHA256,
    DIGITS_SPLIT_FRACTIONS,
    DIGITS_SPLIT_SEED,
    ArrayDataset,
    Dataset,
    HDF5Dataset,
    ReshapeDataset,
    SubsetDataset,
    array_names,
    digits_split_indices,
    load_digits,
    open_dataset,
    split_indices,
    validate_dataset,
)
from bntrain.data.h5write import write_hdf5_dataset
from bntrain.data.preprocess import STD_FLOOR, Preprocessor

__all__ = [
    "ArrayDataset",
    "BatchIterator",
    "DIGITS_SHA256",
    "DIGITS_SPLIT_FRACTIONS",
    "DIGITS_SPLIT_SEED",
    "Dataset",
    "HDF5Dataset",
    "Preprocessor",
    "ReshapeDataset",
    "STD_FLOOR",
    "SubsetDataset",
    "array_names",
    "digits_split_indices",
    "load_digits",
    "open_dataset",
    "split_indices",
    "validate_dataset",
    "write_hdf5_dataset",
]

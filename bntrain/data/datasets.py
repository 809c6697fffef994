"""The names ``bntrain.data.datasets`` used to hold, now split by format.

Kept so that existing imports work; new code imports from :mod:`bntrain.data`
(or :mod:`bntrain.data.base`, :mod:`~bntrain.data.hdf5`, :mod:`~bntrain.data.npz`,
:mod:`~bntrain.data.digits`, :mod:`~bntrain.data.open`).
"""

from bntrain.data.base import ArrayDataset, Dataset, ReshapeDataset, SubsetDataset
from bntrain.data.digits import (
    DIGITS_SHA256,
    DIGITS_SPLIT_FRACTIONS,
    DIGITS_SPLIT_SEED,
    digits_split_indices,
    load_digits,
)
from bntrain.data.hdf5 import HDF5Dataset
from bntrain.data.open import array_names, open_dataset, split_indices, validate_dataset

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
    "array_names",
    "DIGITS_SPLIT_SEED",
    "DIGITS_SPLIT_FRACTIONS",
    "DIGITS_SHA256",
]

"""Make float32 the default before anything builds a graph.

PyTensor's ``floatX`` defaults to float64, which silently doubles the cost of
every graph.  Importing :mod:`bntrain.nn` switches it to float32 unless the
user chose a value explicitly through ``PYTENSOR_FLAGS``.
"""

import os

import pytensor

__all__ = ["floatX", "ensure_float32"]


def _flag_set_by_user() -> bool:
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    return any(part.strip().startswith("floatX") for part in flags.split(","))


def ensure_float32() -> None:
    """Set ``pytensor.config.floatX`` to float32 unless the user set it."""
    if not _flag_set_by_user():
        pytensor.config.floatX = "float32"


def floatX() -> str:
    """Return the current ``floatX`` dtype name."""
    return pytensor.config.floatX


ensure_float32()

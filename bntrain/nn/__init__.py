"""A Lasagne-compatible layer library on PyTensor.

Port a Lasagne script by changing its imports::

    import bntrain.nn as lasagne
    import pytensor as theano

Importing this package sets PyTensor's ``floatX`` to float32 unless
``PYTENSOR_FLAGS`` names another value.  It knows nothing of YAML, HDF5 or the
command line.
"""

from . import (
    _floatx,  # noqa: F401  (first: floatX before any graph)
    init,
    layers,
    nonlinearities,
    objectives,
    random,
    regularization,
    updates,
    utils,
)

__all__ = [
    "init",
    "layers",
    "nonlinearities",
    "objectives",
    "random",
    "regularization",
    "updates",
    "utils",
]

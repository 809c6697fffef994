"""Custom PyTensor Ops (N-d convolution) with per-backend implementations.

Importing this package registers the Numba and JAX implementations of the Ops
in :mod:`bntrain.nn.ops.conv` with PyTensor's dispatchers.
"""

from . import jax_impl, numba_impl  # noqa: F401  (registration happens on import)
from .conv import (
    Conv2d,
    Conv2dGradInputs,
    Conv2dGradWeights,
    ConvNd,
    ConvNdGradInputs,
    ConvNdGradWeights,
    conv,
    conv2d,
    conv_output_shape,
)

__all__ = [
    "ConvNd",
    "ConvNdGradInputs",
    "ConvNdGradWeights",
    "Conv2d",
    "Conv2dGradInputs",
    "Conv2dGradWeights",
    "conv",
    "conv2d",
    "conv_output_shape",
]

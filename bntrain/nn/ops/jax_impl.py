"""JAX implementations of the convolution Ops (``mode="JAX"``).

The forward pass is ``jax.lax.conv_general_dilated`` in NCHW/OIHW layout.  The
two gradients are the exact transposes of the forward map in the input and in
the filters, obtained with ``jax.linear_transpose`` from the *shapes* of the
reference inputs only (no forward pass is traced), so XLA sees the same
dilated-convolution primitives JAX's own autodiff would emit.
"""

from __future__ import annotations

import jax
from jax import lax
from pytensor.link.jax.dispatch import jax_funcify

from .conv import Conv2d, Conv2dGradInputs, Conv2dGradWeights

__all__ = ["make_conv2d"]

_DIMENSION_NUMBERS = ("NCHW", "OIHW", "NCHW")


def make_conv2d(stride, pad, filter_flip):
    """Return a JAX function ``f(x, w)`` computing :class:`~bntrain.nn.ops.conv.Conv2d`."""
    stride = tuple(stride)
    padding = tuple((p, p) for p in pad)

    def conv2d(x, w):
        if filter_flip:
            w = w[:, :, ::-1, ::-1]
        return lax.conv_general_dilated(
            x, w, window_strides=stride, padding=padding, dimension_numbers=_DIMENSION_NUMBERS
        )

    return conv2d


@jax_funcify.register(Conv2d)
def jax_funcify_Conv2d(op, node=None, **kwargs):
    """Forward convolution on ``lax.conv_general_dilated``."""
    return make_conv2d(op.stride, op.pad, op.filter_flip)


@jax_funcify.register(Conv2dGradInputs)
def jax_funcify_Conv2dGradInputs(op, node=None, **kwargs):
    """Transpose of the forward map in the input."""
    forward = make_conv2d(op.stride, op.pad, op.filter_flip)

    def conv2d_grad_inputs(w, g, x_ref):
        spec = jax.ShapeDtypeStruct(x_ref.shape, g.dtype)
        (gx,) = jax.linear_transpose(lambda x: forward(x, w), spec)(g)
        return gx

    return conv2d_grad_inputs


@jax_funcify.register(Conv2dGradWeights)
def jax_funcify_Conv2dGradWeights(op, node=None, **kwargs):
    """Transpose of the forward map in the filters."""
    forward = make_conv2d(op.stride, op.pad, op.filter_flip)

    def conv2d_grad_weights(x, g, w_ref):
        spec = jax.ShapeDtypeStruct(w_ref.shape, g.dtype)
        (gw,) = jax.linear_transpose(lambda w: forward(x, w), spec)(g)
        return gw

    return conv2d_grad_weights

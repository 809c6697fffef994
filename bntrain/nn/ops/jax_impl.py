"""JAX implementations of the convolution Ops (``mode="JAX"``).

The forward pass is ``jax.lax.conv_general_dilated`` in NCHW/OIHW layout.  The
two gradients are the exact transposes of the forward map in the input and in
the filters, obtained with ``jax.linear_transpose`` from the *shapes* of the
reference inputs only (no forward pass is traced), so XLA sees the same
dilated-convolution primitives JAX's own autodiff would emit.

The output gradient ``g`` enters both gradient convolutions through
``lax.optimization_barrier``.  XLA's CPU backend lowers convolutions in a
channels-last layout and otherwise fuses the transpose of ``g`` into the
elementwise fusion that produces it (typically the batch-norm backward), which
its loop emitter runs with strided reads: about 9 ms of a 50 ms CNN-BN step for
the first layer's weight gradient alone.  With the barrier ``g`` is written
once in its natural layout and transposed by a plain copy.  The barrier is an
identity: the arithmetic is unchanged, only XLA's fusion (and so at most the
float32 rounding of its fused reductions) differs.  It is applied when JAX
compiles for the CPU only; on a GPU, XLA's own fusion is what was measured.
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


def _barrier_on_cpu(g):
    """``g`` behind an optimization barrier when compiling for the CPU (module docstring)."""
    return lax.optimization_barrier(g) if jax.default_backend() == "cpu" else g


@jax_funcify.register(Conv2dGradInputs)
def jax_funcify_Conv2dGradInputs(op, node=None, **kwargs):
    """Transpose of the forward map in the input."""
    forward = make_conv2d(op.stride, op.pad, op.filter_flip)

    def conv2d_grad_inputs(w, g, x_ref):
        g = _barrier_on_cpu(g)
        spec = jax.ShapeDtypeStruct(x_ref.shape, g.dtype)
        (gx,) = jax.linear_transpose(lambda x: forward(x, w), spec)(g)
        return gx

    return conv2d_grad_inputs


@jax_funcify.register(Conv2dGradWeights)
def jax_funcify_Conv2dGradWeights(op, node=None, **kwargs):
    """Transpose of the forward map in the filters."""
    forward = make_conv2d(op.stride, op.pad, op.filter_flip)

    def conv2d_grad_weights(x, g, w_ref):
        g = _barrier_on_cpu(g)
        spec = jax.ShapeDtypeStruct(w_ref.shape, g.dtype)
        (gw,) = jax.linear_transpose(lambda w: forward(x, w), spec)(g)
        return gw

    return conv2d_grad_weights

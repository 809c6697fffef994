"""JAX implementations of the convolution Ops (``mode="JAX"``).

The forward pass is ``jax.lax.conv_general_dilated`` in NC(D)HW/OI(D)HW layout,
with filter dilation and channel groups (``feature_group_count``).  The
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

from .conv import ConvNd, ConvNdGradInputs, ConvNdGradWeights

__all__ = ["make_conv"]

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def make_conv(stride, pad, filter_flip, dilation, num_groups):
    """Return a JAX function ``f(x, w)`` computing :class:`~bntrain.nn.ops.conv.ConvNd`."""
    stride = tuple(stride)
    padding = tuple((p, p) for p in pad)
    spatial = _SPATIAL[len(stride)]
    numbers = ("NC" + spatial, "OI" + spatial, "NC" + spatial)
    flip = (slice(None), slice(None)) + (slice(None, None, -1),) * len(stride)

    def conv(x, w):
        if filter_flip:
            w = w[flip]
        return lax.conv_general_dilated(
            x,
            w,
            window_strides=stride,
            padding=padding,
            rhs_dilation=tuple(dilation),
            dimension_numbers=numbers,
            feature_group_count=num_groups,
        )

    return conv


def _forward(op):
    return make_conv(op.stride, op.pad, op.filter_flip, op.dilation, op.num_groups)


@jax_funcify.register(ConvNd)
def jax_funcify_ConvNd(op, node=None, **kwargs):
    """Forward convolution on ``lax.conv_general_dilated``."""
    return _forward(op)


def _barrier_on_cpu(g):
    """``g`` behind an optimization barrier when compiling for the CPU (module docstring)."""
    return lax.optimization_barrier(g) if jax.default_backend() == "cpu" else g


@jax_funcify.register(ConvNdGradInputs)
def jax_funcify_ConvNdGradInputs(op, node=None, **kwargs):
    """Transpose of the forward map in the input."""
    forward = _forward(op)

    def conv_grad_inputs(w, g, x_ref):
        g = _barrier_on_cpu(g)
        shape = (g.shape[0], w.shape[1] * op.num_groups, *x_ref.shape[2:])
        (gx,) = jax.linear_transpose(lambda x: forward(x, w), jax.ShapeDtypeStruct(shape, g.dtype))(
            g
        )
        return gx

    return conv_grad_inputs


@jax_funcify.register(ConvNdGradWeights)
def jax_funcify_ConvNdGradWeights(op, node=None, **kwargs):
    """Transpose of the forward map in the filters."""
    forward = _forward(op)

    def conv_grad_weights(x, g, w_ref):
        g = _barrier_on_cpu(g)
        shape = (g.shape[1], x.shape[1] // op.num_groups, *w_ref.shape[2:])
        (gw,) = jax.linear_transpose(lambda w: forward(x, w), jax.ShapeDtypeStruct(shape, g.dtype))(
            g
        )
        return gw

    return conv_grad_weights

"""Pooling layers (``lasagne.layers.pool``).

Pooling is built from plain tensor operations, picking the cheaper of two forms:

* non-overlapping windows (``stride == pool_size``, no padding, and either
  ``ignore_border=True`` or sizes that divide): crop, reshape to
  ``(N, C, rows, pool_rows, cols, pool_cols)`` and reduce;
* otherwise: pad (``-inf`` for max, zeros for averages) and reduce the
  ``pool_rows * pool_cols`` strided views elementwise.

Semantics follow Theano's ``pool_2d`` as Lasagne used it: max pooling never
picks padding; ``'average_inc_pad'`` divides by the window area,
``'average_exc_pad'`` by the number of input values in the window; with
``ignore_border=False`` the last windows may be cut short by the border and
average over what they cover.

Examples
--------
>>> from bntrain.nn.layers import InputLayer, MaxPool2DLayer, GlobalPoolLayer
>>> l_in = InputLayer((None, 8, 7, 7))
>>> MaxPool2DLayer(l_in, 2).output_shape
(None, 8, 3, 3)
>>> MaxPool2DLayer(l_in, 2, ignore_border=False).output_shape
(None, 8, 4, 4)
>>> GlobalPoolLayer(l_in).output_shape
(None, 8)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from .base import Layer
from .conv import _int_pair
from .special import _check_kwargs, _label
from .upscale import (  # noqa: F401  (Lasagne's lasagne.layers.pool holds these too)
    FeaturePoolLayer,
    FeatureWTALayer,
    Upscale1DLayer,
    Upscale2DLayer,
    Upscale3DLayer,
)

__all__ = [
    "Pool2DLayer",
    "MaxPool2DLayer",
    "GlobalPoolLayer",
    "pool_output_length",
    "pool_2d",
]

_MODES = ("max", "average_inc_pad", "average_exc_pad")


def pool_output_length(input_length, pool_size: int, stride: int, pad: int, ignore_border: bool):
    """Length of a pooling output along one axis (as Lasagne and Theano compute it).

    Parameters
    ----------
    input_length : int or None
        The input length; ``None`` gives ``None``.
    pool_size, stride, pad : int
        Window length, stride, and zero padding on both sides.
    ignore_border : bool
        ``True``: only windows that fit in the padded input; ``False``: also the
        partial windows at the end (requires ``pad == 0``).

    Returns
    -------
    int or None

    Raises
    ------
    ValueError
        If ``pad`` is non-zero while ``ignore_border`` is False.
    """
    if input_length is None or pool_size is None:
        return None
    if ignore_border:
        return (input_length + 2 * pad - pool_size + stride) // stride
    if pad != 0:
        raise ValueError(
            f"pool_output_length: pad must be 0 with ignore_border=False, got pad={pad!r}"
        )
    if stride >= pool_size:
        return (input_length + stride - 1) // stride
    return max(0, (input_length - pool_size + stride - 1) // stride) + 1


def _sym_out_length(size, k: int, s: int, p: int, ignore_border: bool):
    """:func:`pool_output_length` for a symbolic ``size``."""
    if ignore_border:
        return (size + 2 * p - k + s) // s
    if s >= k:
        return (size + s - 1) // s
    return pt.maximum(0, (size - k + s - 1) // s) + 1


def _max(a, b):
    if isinstance(a, Variable) or isinstance(b, Variable):
        return pt.maximum(a, b)
    return max(a, b)


def pool_2d(
    input,
    pool_size,
    stride=None,
    pad=(0, 0),
    ignore_border: bool = True,
    mode: str = "max",
    input_hw=(None, None),
):
    """Pool the last two axes of a 4D tensor (Theano's ``pool_2d`` semantics).

    Parameters
    ----------
    input : tensor
        ``(batch, channels, rows, cols)``.
    pool_size : pair of int
        Window height and width.
    stride : pair of int or None
        Strides; ``None`` means ``pool_size``.
    pad : pair of int
        Zero padding on both sides (each smaller than the window).
    ignore_border : bool
        See :func:`pool_output_length`.
    mode : {'max', 'average_inc_pad', 'average_exc_pad'}
        The reduction.
    input_hw : pair of int or None
        Static rows and cols when known (lets the graph use constants).

    Returns
    -------
    TensorVariable
    """
    ws = tuple(pool_size)
    st = ws if stride is None else tuple(stride)
    pad = tuple(pad)
    if mode not in _MODES:
        raise ValueError(f"pool_2d: mode must be one of {_MODES}, got {mode!r}")
    if not ignore_border and any(pad):
        raise ValueError(f"pool_2d: pad must be (0, 0) with ignore_border=False, got {pad!r}")
    hw = tuple(input.shape[2 + i] if input_hw[i] is None else int(input_hw[i]) for i in range(2))
    out = tuple(
        pool_output_length(hw[i], ws[i], st[i], pad[i], ignore_border)
        if isinstance(hw[i], int)
        else _sym_out_length(hw[i], ws[i], st[i], pad[i], ignore_border)
        for i in range(2)
    )
    divisible = all(isinstance(hw[i], int) and hw[i] % ws[i] == 0 for i in range(2))
    if st == ws and not any(pad) and (ignore_border or divisible):
        return _pool_blocks(input, ws, hw, out, mode)
    return _pool_views(input, ws, st, pad, hw, out, ignore_border, mode)


def _pool_blocks(x, ws, hw, out, mode):
    """Non-overlapping windows: crop to whole windows, reshape, reduce."""
    (kh, kw), (oh, ow) = ws, out
    if not all(isinstance(h, int) and h == o * k for h, o, k in zip(hw, out, ws, strict=True)):
        x = x[:, :, : oh * kh, : ow * kw]
    blocks = x.reshape((x.shape[0], x.shape[1], oh, kh, ow, kw), ndim=6)
    if mode == "max":
        return blocks.max(axis=(3, 5))
    # accumulate in the input dtype (PyTensor's default float64 accumulator upcasts in JAX)
    return blocks.sum(axis=(3, 5), acc_dtype=x.dtype) / np.asarray(kh * kw, dtype=x.dtype)


def _pool_views(x, ws, st, pad, hw, out, ignore_border, mode):
    """General windows: pad, then reduce the ``kh * kw`` strided views."""
    (kh, kw), (sh, sw), (ph, pw), (h, w), (oh, ow) = ws, st, pad, hw, out
    # extent (in padded coordinates) that the windows cover, and that holds the input
    span_h, span_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    need_h, need_w = _max(span_h, ph + h), _max(span_w, pw + w)
    fill = -np.inf if mode == "max" else 0.0
    fits = all(isinstance(v, int) for v in (h, w, span_h, span_w)) and span_h <= h and span_w <= w
    padded = bool(ph or pw) or not (ignore_border or fits)
    if padded:
        canvas = pt.full((x.shape[0], x.shape[1], need_h, need_w), np.asarray(fill, dtype=x.dtype))
        x = pt.set_subtensor(canvas[:, :, ph : ph + h, pw : pw + w], x)

    def views(t):
        for a in range(kh):
            for b in range(kw):
                yield t[:, :, a : a + (oh - 1) * sh + 1 : sh, b : b + (ow - 1) * sw + 1 : sw]

    if mode == "max":
        result = None
        for v in views(x):
            result = v if result is None else pt.maximum(result, v)
        return result
    total = pt.add(*views(x)) if kh * kw > 1 else next(views(x))
    if (mode == "average_inc_pad" and ignore_border) or not padded:
        return total / np.asarray(kh * kw, dtype=x.dtype)
    # values of the input each window covers (padding and the cut border excluded)
    mask = pt.zeros((1, 1, need_h, need_w), dtype=x.dtype)
    mask = pt.set_subtensor(mask[:, :, ph : ph + h, pw : pw + w], np.asarray(1, dtype=x.dtype))
    count = pt.add(*views(mask)) if kh * kw > 1 else next(views(mask))
    return total / count


class Pool2DLayer(Layer):
    """2D pooling over the last two axes.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one; its output is ``(batch, channels, rows, cols)``.
    pool_size : int or pair of int
        Window size.
    stride : int, pair of int or None
        Strides; ``None`` means ``pool_size`` (non-overlapping).
    pad : int or pair of int
        Zero padding on both sides; each must be smaller than the window, and
        0 unless ``ignore_border``.
    ignore_border : bool
        ``True``: drop partial windows at the border; ``False``: keep them.
    mode : {'max', 'average_inc_pad', 'average_exc_pad'}
        The reduction; see the module docstring.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        pool_size,
        stride=None,
        pad=(0, 0),
        ignore_border: bool = True,
        mode: str = "max",
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        if len(self.input_shape) != 4:
            raise ValueError(
                f"{where}: tried to create a 2D pooling layer with input shape {self.input_shape!r}; "
                f"expected 4 input dimensions (batch, channels, rows, cols)"
            )
        self.pool_size = _int_pair(where, "pool_size", pool_size, 1)
        self.stride = self.pool_size if stride is None else _int_pair(where, "stride", stride, 1)
        self.pad = _int_pair(where, "pad", pad, 0)
        self.ignore_border = bool(ignore_border)
        if mode not in _MODES:
            raise ValueError(f"{where}: mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        if any(p >= k for p, k in zip(self.pad, self.pool_size, strict=True)):
            raise ValueError(
                f"{where}: pad {self.pad!r} must be smaller than pool_size {self.pool_size!r}"
            )
        if not self.ignore_border and any(self.pad):
            raise ValueError(
                f"{where}: pad must be (0, 0) with ignore_border=False, got {self.pad!r}"
            )
        rows, cols = self.output_shape[2:]
        if (rows is not None and rows < 1) or (cols is not None and cols < 1):
            raise ValueError(
                f"{where}: input shape {self.input_shape!r} is smaller than pool_size {self.pool_size!r}"
            )

    def get_output_shape_for(self, input_shape):
        """Return ``(batch, channels, out_rows, out_cols)``."""
        spatial = tuple(
            pool_output_length(
                input_shape[2 + i],
                self.pool_size[i],
                self.stride[i],
                self.pad[i],
                self.ignore_border,
            )
            for i in range(2)
        )
        return (*input_shape[:2], *spatial)

    def get_output_for(self, input, **kwargs):
        """Return the pooled input."""
        if input.ndim != 4:
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: expected a 4-dimensional input, got ndim={input.ndim}"
            )
        # the declared shape makes the reshape sizes constants (JAX needs them)
        input = pt.specify_shape(input, self.input_shape)
        return pool_2d(
            input,
            self.pool_size,
            self.stride,
            self.pad,
            self.ignore_border,
            self.mode,
            input_hw=self.input_shape[2:],
        )


class MaxPool2DLayer(Pool2DLayer):
    """2D max pooling: :class:`Pool2DLayer` with ``mode='max'``."""

    def __init__(
        self, incoming, pool_size, stride=None, pad=(0, 0), ignore_border: bool = True, **kwargs
    ) -> None:
        super().__init__(incoming, pool_size, stride, pad, ignore_border, mode="max", **kwargs)


class GlobalPoolLayer(Layer):
    """Pool each channel over all trailing axes: ``(batch, channels, ...) -> (batch, channels)``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, with at least 3 dimensions.
    pool_function : callable
        Reduction called as ``pool_function(x, axis=2)`` on the input flattened
        to 3 dimensions; ``pytensor.tensor.mean`` by default (``pt.max`` etc.).
    **kwargs
        ``name``.
    """

    def __init__(self, incoming, pool_function: Callable = pt.mean, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        if len(self.input_shape) < 3:
            raise ValueError(
                f"{where}: needs an input with at least 3 dimensions (batch, channels, ...), "
                f"got input shape {self.input_shape!r}"
            )
        if not callable(pool_function):
            raise TypeError(f"{where}: pool_function must be callable, got {pool_function!r}")
        self.pool_function = pool_function

    def get_output_shape_for(self, input_shape):
        """Return ``(batch, channels)``."""
        return tuple(input_shape[:2])

    def get_output_for(self, input, **kwargs):
        """Return ``pool_function(input.flatten(3), axis=2)``."""
        if input.ndim < 3:
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: expected at least 3 input dimensions, got ndim={input.ndim}"
            )
        return self.pool_function(pt.flatten(input, 3), axis=2)

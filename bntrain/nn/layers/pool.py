"""Pooling layers (``lasagne.layers.pool``): 1D, 2D, 3D, global and spatial pyramid.

Pooling is built from plain tensor operations, picking the cheapest of three forms:

* non-overlapping windows (``stride == pool_size``, no padding, and either
  ``ignore_border=True`` or sizes that divide): crop, reshape to
  ``(N, C, rows, pool_rows, cols, pool_cols, ...)`` and reduce;
* other integer windows: pad (``-inf`` for max, zeros for averages) and reduce
  the ``prod(pool_size)`` strided views elementwise;
* symbolic windows (:class:`SpatialPyramidPoolingLayer` on an input of unknown
  size): gather the windows with index arrays and reduce.

Semantics follow Theano's ``pool_2d``/``pool_3d`` as Lasagne used them: max
pooling never picks padding; ``'average_inc_pad'`` divides by the window size,
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

import itertools
from collections.abc import Callable

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from .base import Layer
from .conv import _check_rank, _int_tuple, _spatial_input
from .special import _check_kwargs, _label
from .upscale import (  # noqa: F401  (Lasagne's lasagne.layers.pool holds these too)
    FeaturePoolLayer,
    FeatureWTALayer,
    Upscale1DLayer,
    Upscale2DLayer,
    Upscale3DLayer,
)

__all__ = [
    "Pool1DLayer",
    "Pool2DLayer",
    "Pool3DLayer",
    "MaxPool1DLayer",
    "MaxPool2DLayer",
    "MaxPool3DLayer",
    "GlobalPoolLayer",
    "SpatialPyramidPoolingLayer",
    "pool_output_length",
    "pool_nd",
    "pool_2d",
    "pool_3d",
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


def _static_int(v):
    """``v`` as a Python int if it is one (or a NumPy integer), else ``None``."""
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        return int(v)
    return None


def _entries(value, n: int, what: str):
    """``value`` (an int, a sequence, or a symbolic vector) as ``n`` ints or symbolic scalars."""
    if isinstance(value, Variable) and value.ndim == 1:
        return [value[i] for i in range(n)]
    if isinstance(value, Variable) or _static_int(value) is not None:
        return [value] * n
    entries = list(value)
    if len(entries) != n:
        raise ValueError(f"pool: {what} must have {n} entries, got {value!r}")
    return [_static_int(v) if _static_int(v) is not None else v for v in entries]


def _check_window(where: str, mode: str, pad, ignore_border: bool) -> None:
    """Refuse an unknown ``mode``, and padding (any non-zero or symbolic entry) without ``ignore_border``."""
    if mode not in _MODES:
        raise ValueError(f"{where}: mode must be one of {_MODES}, got {mode!r}")
    if not ignore_border and any(not isinstance(p, int) or p for p in pad):
        raise ValueError(
            f"{where}: pad must be {(0,) * len(pad)!r} with ignore_border=False, got {tuple(pad)!r}"
        )


def pool_nd(input, ws, ignore_border: bool = True, stride=None, pad=None, mode: str = "max"):
    """Pool the last ``len(ws)`` axes of ``input`` (Theano's ``pool_2d``/``pool_3d`` semantics).

    Parameters
    ----------
    input : tensor
        ``(..., *spatial)``: any leading axes, then the pooled axes.
    ws : sequence of int or symbolic scalars
        Window size per pooled axis.
    ignore_border : bool
        See :func:`pool_output_length`.
    stride : sequence or None
        Strides; ``None`` means ``ws``.
    pad : sequence of int or None
        Zero padding on both sides (each smaller than the window); ``None`` is 0.
    mode : {'max', 'average_inc_pad', 'average_exc_pad'}
        The reduction.

    Returns
    -------
    TensorVariable

    Notes
    -----
    Integer windows, strides and paddings build strided views (or a reshape
    for non-overlapping windows) reduced elementwise.  Symbolic ones (the
    window of a spatial pyramid over an input of unknown size) gather the
    windows with index arrays instead: slower, but any size works.
    """
    n = len(ws) if not isinstance(ws, Variable) else 2
    ws = _entries(ws, n, "ws")
    st = ws if stride is None else _entries(stride, n, "stride")
    pad = [0] * n if pad is None else _entries(pad, n, "pad")
    _check_window("pool", mode, pad, ignore_border)
    input = pt.as_tensor_variable(input)
    static = input.type.shape[input.ndim - n :]
    sizes = [input.shape[input.ndim - n + i] if static[i] is None else static[i] for i in range(n)]
    known = all(isinstance(v, int) for v in (*ws, *st, *pad))
    out = [
        pool_output_length(sizes[i], ws[i], st[i], pad[i], ignore_border)
        if known and isinstance(sizes[i], int)
        else _sym_out_length(sizes[i], ws[i], st[i], pad[i], ignore_border)
        for i in range(n)
    ]
    if not known:
        return _pool_gather(input, ws, st, pad, sizes, out, ignore_border, mode)
    divisible = all(isinstance(sizes[i], int) and sizes[i] % ws[i] == 0 for i in range(n))
    if st == ws and not any(pad) and (ignore_border or divisible):
        return _pool_blocks(input, ws, sizes, out, mode)
    return _pool_views(input, ws, st, pad, sizes, out, ignore_border, mode)


def pool_2d(input, ws=None, ignore_border: bool = True, stride=None, pad=(0, 0), mode: str = "max"):
    """Pool the last two axes (Theano's ``pool_2d``, which ``lasagne.layers.pool`` exposes).

    See :func:`pool_nd`; ``ws`` may be a symbolic integer vector.
    """
    if ws is None:
        raise TypeError("pool_2d: ws (the window size) is required")
    if not isinstance(ws, Variable) and len(ws) != 2:
        raise ValueError(f"pool_2d: ws must have 2 entries, got {ws!r}")
    return pool_nd(input, ws, ignore_border, stride, pad, mode)


def pool_3d(
    input, ws=None, ignore_border: bool = True, stride=None, pad=(0, 0, 0), mode: str = "max"
):
    """Pool the last three axes (Theano's ``pool_3d``); see :func:`pool_nd`."""
    if ws is None or isinstance(ws, Variable) or len(ws) != 3:
        raise ValueError(f"pool_3d: ws must be 3 ints or symbolic scalars, got {ws!r}")
    return pool_nd(input, ws, ignore_border, stride, pad, mode)


def _lead(x, n):
    return [x.shape[i] for i in range(x.ndim - n)]


def _pool_blocks(x, ws, sizes, out, mode):
    """Non-overlapping windows: crop to whole windows, reshape, reduce."""
    n = len(ws)
    if not all(isinstance(s, int) and s == o * k for s, o, k in zip(sizes, out, ws, strict=True)):
        x = x[(Ellipsis, *(slice(0, o * k) for o, k in zip(out, ws, strict=True)))]
    lead = x.ndim - n
    shape = _lead(x, n) + [d for o, k in zip(out, ws, strict=True) for d in (o, k)]
    blocks = x.reshape(shape, ndim=lead + 2 * n)
    axes = tuple(lead + 2 * i + 1 for i in range(n))
    if mode == "max":
        return blocks.max(axis=axes)
    # accumulate in the input dtype (PyTensor's default float64 accumulator upcasts in JAX)
    return blocks.sum(axis=axes, acc_dtype=x.dtype) / np.asarray(np.prod(ws), dtype=x.dtype)


def _canvas(x, pad, sizes, need, fill):
    """``x`` placed at offset ``pad`` in a ``need``-sized canvas of ``fill`` (last axes)."""
    n = len(pad)
    canvas = pt.full(_lead(x, n) + list(need), np.asarray(fill, dtype=x.dtype))
    inner = tuple(slice(p, p + s) for p, s in zip(pad, sizes, strict=True))
    return pt.set_subtensor(canvas[(Ellipsis, *inner)], x)


def _extent(ws, st, pad, sizes, out):
    """Per axis: the padded extent the windows cover and holds the input."""
    return [
        _max((o - 1) * s + k, p + size)
        for k, s, p, size, o in zip(ws, st, pad, sizes, out, strict=True)
    ]


def _pool_views(x, ws, st, pad, sizes, out, ignore_border, mode):
    """General integer windows: pad, then reduce the ``prod(ws)`` strided views."""
    spans = [(o - 1) * s + k for k, s, o in zip(ws, st, out, strict=True)]
    fill = -np.inf if mode == "max" else 0.0
    fits = all(isinstance(v, int) for v in (*sizes, *spans)) and all(
        span <= size for span, size in zip(spans, sizes, strict=True)
    )
    padded = any(pad) or not (ignore_border or fits)
    need = _extent(ws, st, pad, sizes, out)
    if padded:
        x = _canvas(x, pad, sizes, need, fill)

    def views(t):
        for tap in itertools.product(*(range(k) for k in ws)):
            yield t[
                (
                    Ellipsis,
                    *(
                        slice(a, a + (o - 1) * s + 1, s)
                        for a, s, o in zip(tap, st, out, strict=True)
                    ),
                )
            ]

    if mode == "max":
        result = None
        for v in views(x):
            result = v if result is None else pt.maximum(result, v)
        return result
    total = pt.add(*views(x)) if np.prod(ws) > 1 else next(views(x))
    if (mode == "average_inc_pad" and ignore_border) or not padded:
        return total / np.asarray(np.prod(ws), dtype=x.dtype)
    # values of the input each window covers (padding and the cut border excluded)
    ones = pt.ones([1] * (x.ndim - len(ws)) + list(sizes), dtype=x.dtype)
    mask = _canvas(ones, pad, sizes, need, 0.0)
    count = pt.add(*views(mask)) if np.prod(ws) > 1 else next(views(mask))
    return total / count


def _pool_gather(x, ws, st, pad, sizes, out, ignore_border, mode):
    """Symbolic windows: pad, gather each axis's windows with an index array, reduce."""
    n = len(ws)
    lead = x.ndim - n
    fill = -np.inf if mode == "max" else 0.0
    need = _extent(ws, st, pad, sizes, out)
    x = _canvas(x, pad, sizes, need, fill)

    def windows(t):
        for i in range(n):
            index = pt.arange(out[i])[:, None] * st[i] + pt.arange(ws[i])[None, :]
            t = pt.take(t, index, axis=lead + 2 * i)
        return t

    axes = tuple(lead + 2 * i + 1 for i in range(n))
    if mode == "max":
        return windows(x).max(axis=axes)
    total = windows(x).sum(axis=axes, acc_dtype=x.dtype)
    if mode == "average_inc_pad" and ignore_border:
        area = pt.prod(pt.stack([pt.as_tensor_variable(k) for k in ws]))
        return total / pt.cast(area, x.dtype)
    ones = pt.ones([1] * lead + list(sizes), dtype=x.dtype)
    count = windows(_canvas(ones, pad, sizes, need, 0.0)).sum(axis=axes, acc_dtype=x.dtype)
    return total / count


class _PoolLayer(Layer):
    """N-d pooling over the trailing ``_rank`` axes (the base of Pool1D/2D/3DLayer)."""

    _rank = 2

    def __init__(
        self,
        incoming,
        pool_size,
        stride=None,
        pad=0,
        ignore_border: bool = True,
        mode: str = "max",
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        n = self._rank
        where = _label(type(self).__name__, self.name)
        _check_rank(where, "pooling", self.input_shape, n)
        self.pool_size = _int_tuple(where, "pool_size", pool_size, n, 1)
        self.stride = (
            self.pool_size if stride is None else _int_tuple(where, "stride", stride, n, 1)
        )
        self.pad = _int_tuple(where, "pad", pad, n, 0)
        self.ignore_border = bool(ignore_border)
        _check_window(where, mode, self.pad, self.ignore_border)
        self.mode = mode
        if any(p >= k for p, k in zip(self.pad, self.pool_size, strict=True)):
            raise ValueError(
                f"{where}: pad {self.pad!r} must be smaller than pool_size {self.pool_size!r}"
            )
        if any(o is not None and o < 1 for o in self.output_shape[2:]):
            raise ValueError(
                f"{where}: input shape {self.input_shape!r} is smaller than pool_size {self.pool_size!r}"
            )

    def get_output_shape_for(self, input_shape):
        """Return ``(batch, channels, *out_spatial)``."""
        spatial = tuple(
            pool_output_length(
                input_shape[2 + i],
                self.pool_size[i],
                self.stride[i],
                self.pad[i],
                self.ignore_border,
            )
            for i in range(self._rank)
        )
        return (*input_shape[:2], *spatial)

    def get_output_for(self, input, **kwargs):
        """Return the pooled input."""
        input = _spatial_input(self, input, self._rank)
        # the declared shape makes the reshape sizes constants (JAX needs them)
        input = pt.specify_shape(input, self.input_shape)
        return pool_nd(input, self.pool_size, self.ignore_border, self.stride, self.pad, self.mode)


class Pool1DLayer(_PoolLayer):
    """1D pooling over the last axis of ``(batch, channels, length)``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one.
    pool_size : int
        Window size.
    stride : int or None
        Stride; ``None`` means ``pool_size`` (non-overlapping).
    pad : int
        Zero padding on both sides; smaller than the window, and 0 unless
        ``ignore_border``.
    ignore_border : bool
        ``True``: drop partial windows at the border; ``False``: keep them.
    mode : {'max', 'average_inc_pad', 'average_exc_pad'}
        The reduction; see the module docstring.
    **kwargs
        ``name``.
    """

    _rank = 1


class Pool2DLayer(_PoolLayer):
    """2D pooling over the last two axes; parameters as :class:`Pool1DLayer`, per axis."""


class Pool3DLayer(_PoolLayer):
    """3D pooling over the last three axes; parameters as :class:`Pool1DLayer`, per axis."""

    _rank = 3


class _MaxPool:
    """Mixin of the MaxPool layers: their pooling layer with ``mode='max'`` and no ``mode``."""

    def __init__(
        self, incoming, pool_size, stride=None, pad=0, ignore_border: bool = True, **kwargs
    ) -> None:
        super().__init__(incoming, pool_size, stride, pad, ignore_border, mode="max", **kwargs)


class MaxPool1DLayer(_MaxPool, Pool1DLayer):
    """1D max pooling: :class:`Pool1DLayer` with ``mode='max'``."""


class MaxPool2DLayer(_MaxPool, Pool2DLayer):
    """2D max pooling: :class:`Pool2DLayer` with ``mode='max'``."""


class MaxPool3DLayer(_MaxPool, Pool3DLayer):
    """3D max pooling: :class:`Pool3DLayer` with ``mode='max'``."""


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
        if not callable(pool_function):
            raise TypeError(f"{where}: pool_function must be callable, got {pool_function!r}")
        self.pool_function = pool_function

    def get_output_shape_for(self, input_shape):
        """Return ``(batch, channels)``.

        The input is checked here rather than at construction: as in Lasagne,
        the layer may be built before the shape it will see is known.
        """
        if len(input_shape) < 3:
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: needs an input with at least 3 "
                f"dimensions (batch, channels, ...), got input shape {tuple(input_shape)!r}"
            )
        return tuple(input_shape[:2])

    def get_output_for(self, input, **kwargs):
        """Return ``pool_function(input.flatten(3), axis=2)``."""
        if input.ndim < 3:
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: expected at least 3 input dimensions, got ndim={input.ndim}"
            )
        return self.pool_function(pt.flatten(input, 3), axis=2)


def _pyramid_bins(input, sizes, level: int, mode: str) -> list:
    """Kaiming He's ``level x level`` bins: bin ``i`` spans ``[floor(i*L/n), ceil((i+1)*L/n))``."""
    reduce = pt.max if mode == "max" else pt.mean
    bounds = [[((i * s) // level, -((-(i + 1) * s) // level)) for i in range(level)] for s in sizes]
    return [
        reduce(input[:, :, r0:r1, c0:c1], axis=(2, 3)).dimshuffle(0, 1, "x")
        for r0, r1 in bounds[0]
        for c0, c1 in bounds[1]
    ]


class SpatialPyramidPoolingLayer(Layer):
    """Pool ``(batch, channels, rows, cols)`` to a fixed ``(batch, channels, sum(p*p))`` (He et al. 2015).

    Each pyramid level ``p`` pools the input into ``p x p`` regions whatever its
    size, so inputs of any size give the same number of features.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one; rows and cols may be unknown (``None``).
    pool_dims : list of int
        The pyramid levels.
    mode : {'max', 'average_inc_pad', 'average_exc_pad'}
        The reduction (both averages are the plain mean: nothing is padded).
    implementation : {'fast', 'kaiming'}
        ``'fast'``: a pooling with window ``ceil(L / p)`` and stride
        ``floor(L / p)`` per axis (for some sizes this gives more than ``p``
        windows, as in Lasagne); ``'kaiming'``: exactly ``p x p`` bins, bin
        ``i`` covering ``[floor(i L / p), ceil((i + 1) L / p))``.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        pool_dims=(4, 2, 1),
        mode: str = "max",
        implementation: str = "fast",
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        if len(self.input_shape) != 4:
            raise ValueError(
                f"{where}: tried to create a SPP layer with input shape {self.input_shape!r}. "
                f"Expected 4 input dimensions (batch, channels, 2 spatial dimensions)"
            )
        if mode not in _MODES:
            raise ValueError(
                f"{where}: Mode must be either 'max', 'average_inc_pad' or 'average_exc_pad'. "
                f"Got {mode!r}"
            )
        if implementation not in ("fast", "kaiming"):
            raise ValueError(
                f"{where}: implementation must be 'fast' or 'kaiming', got {implementation!r}"
            )
        dims = list(pool_dims)
        if not dims or not all(_static_int(p) is not None and p >= 1 for p in dims):
            raise ValueError(f"{where}: pool_dims must be positive ints, got {pool_dims!r}")
        self.pool_dims = [int(p) for p in dims]
        self.mode = mode
        self.implementation = implementation

    def get_output_shape_for(self, input_shape):
        """Return ``(batch, channels, sum(p * p for p in pool_dims))``."""
        return (input_shape[0], input_shape[1], sum(p * p for p in self.pool_dims))

    def get_output_for(self, input, **kwargs):
        """Return the pyramid's features, level by level, each level's bins row-major."""
        # the declared shape makes the sizes constants where known (JAX needs them)
        input = pt.specify_shape(pt.as_tensor_variable(input), self.input_shape)
        sizes = [
            known if known is not None else input.shape[2 + i]
            for i, known in enumerate(self.input_shape[2:])
        ]
        parts = []
        for level in self.pool_dims:
            if self.implementation == "kaiming":
                parts += _pyramid_bins(input, sizes, level, self.mode)
            else:
                ws = [(s + level - 1) // level for s in sizes]
                stride = [s // level for s in sizes]
                pooled = pool_2d(input, ws, True, stride, None, self.mode)
                windows = [
                    pool_output_length(s, w, st, 0, True) if isinstance(s, int) else None
                    for s, w, st in zip(sizes, ws, stride, strict=True)
                ]
                # a static length lets JAX split the concatenation's gradient
                count = None if None in windows else windows[0] * windows[1]
                parts.append(pt.specify_shape(pt.flatten(pooled, 3), (None, None, count)))
        return pt.concatenate(parts, axis=2)

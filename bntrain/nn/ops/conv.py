"""2D convolution as three PyTensor Ops: the forward pass and its two gradients.

:class:`Conv2d` maps an input ``(N, C, H, W)`` and filters ``(F, C, kh, kw)`` to
``(N, F, OH, OW)`` with ``OH = (H + 2 * ph - kh) // sh + 1`` (likewise ``OW``),
using symmetric explicit zero padding ``pad = (ph, pw)`` and strides
``stride = (sh, sw)``.  ``filter_flip=True`` computes a true convolution (the
filters are flipped in both spatial axes, Lasagne's ``flip_filters=True``);
``filter_flip=False`` a cross-correlation.

Its pullback is expressed with :class:`Conv2dGradInputs` and
:class:`Conv2dGradWeights`.  Both take a *reference* tensor as their last input
whose only role is to supply the shape of the result (the input spatial shape
cannot be recovered from the output shape when a stride is larger than one);
that input is disconnected for gradients.  Convolution is bilinear, so the
gradient Ops have exact pullbacks of their own in terms of the three Ops.

The ``perform`` methods are the NumPy reference implementations.  Fast
implementations are registered per backend: :mod:`bntrain.nn.ops.jax_impl`
(``jax.lax.conv_general_dilated``) and :mod:`bntrain.nn.ops.numba_impl`
(im2col into one contiguous buffer and a single BLAS matrix product).  The C
backend (``mode="C"``) has no C code for these Ops and falls back to
``perform``.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from numpy.lib.stride_tricks import sliding_window_view
from pytensor.gradient import DisconnectedType, disconnected_type
from pytensor.graph.basic import Apply, Variable
from pytensor.graph.op import Op
from pytensor.scalar import upcast
from pytensor.tensor.type import TensorType

__all__ = [
    "Conv2d",
    "Conv2dGradInputs",
    "Conv2dGradWeights",
    "conv2d",
    "conv_output_shape",
]


def _pair(value, what: str, op_name: str, minimum: int) -> tuple[int, int]:
    try:
        pair = tuple(value)
    except TypeError:
        pair = (value, value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) for v in pair):
        raise TypeError(f"{op_name}: {what} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{op_name}: {what} entries must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_shape(input_hw, filter_hw, stride, pad) -> tuple:
    """Spatial output shape of :class:`Conv2d` (works on ints and symbolic scalars).

    Parameters
    ----------
    input_hw, filter_hw : pair
        ``(H, W)`` and ``(kh, kw)``; ``None`` entries propagate as ``None``.
    stride, pad : pair of int
        Strides and symmetric zero padding.

    Returns
    -------
    tuple
        ``(OH, OW)``.
    """
    out = []
    for size, k, s, p in zip(input_hw, filter_hw, stride, pad, strict=True):
        if size is None or k is None:
            out.append(None)
        else:
            out.append((size + 2 * p - k) // s + 1)
    return tuple(out)


def _static(dim):
    return None if dim is None else int(dim)


def _conv_windows(x, kernel, stride, pad):
    """Strided windows ``(N, C, OH, OW, kh, kw)`` of the zero-padded input (a view)."""
    (ph, pw), (sh, sw) = pad, stride
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(x, kernel, axis=(2, 3))
    return windows[:, :, ::sh, ::sw]


class _ConvBase(Op):
    __props__ = ("stride", "pad", "filter_flip")

    def __init__(self, stride=(1, 1), pad=(0, 0), filter_flip: bool = True):
        name = type(self).__name__
        self.stride = _pair(stride, "stride", name, 1)
        self.pad = _pair(pad, "pad", name, 0)
        if not isinstance(filter_flip, bool | np.bool_):
            raise TypeError(f"{name}: filter_flip must be a bool, got {filter_flip!r}")
        self.filter_flip = bool(filter_flip)

    def _as_float4(self, *variables) -> list[Variable]:
        name = type(self).__name__
        tensors = [pt.as_tensor_variable(v) for v in variables]
        for t in tensors:
            if t.type.ndim != 4:
                raise ValueError(
                    f"{name}: expected 4-dimensional tensors, got {t} with ndim={t.type.ndim}"
                )
        dtype = upcast(*(t.type.dtype for t in tensors))
        if not dtype.startswith("float"):
            raise TypeError(
                f"{name}: expected floating-point tensors, got dtypes {[t.type.dtype for t in tensors]}"
            )
        return [t if t.type.dtype == dtype else pt.cast(t, dtype) for t in tensors]

    def _check_channels(self, what: str, got, expected) -> None:
        if got is not None and expected is not None and got != expected:
            raise ValueError(
                f"{type(self).__name__}: {what} has {got} channels, expected {expected}"
            )

    def _check_spatial(self, x_shape, kernel) -> tuple[int, int]:
        out = conv_output_shape(x_shape[2:], kernel, self.stride, self.pad)
        if any(o < 1 for o in out):
            raise ValueError(
                f"{type(self).__name__}: input spatial shape {tuple(x_shape[2:])} with pad "
                f"{self.pad} is smaller than the filter {tuple(kernel)}"
            )
        return out

    def _flip(self, w):
        return w[:, :, ::-1, ::-1] if self.filter_flip else w


class Conv2d(_ConvBase):
    """Forward 2D convolution ``(N, C, H, W) x (F, C, kh, kw) -> (N, F, OH, OW)``.

    Parameters
    ----------
    stride : int or pair of int
        Strides ``(sh, sw)``.
    pad : int or pair of int
        Symmetric zero padding ``(ph, pw)`` added on both sides.
    filter_flip : bool
        ``True``: true convolution (flip the filters); ``False``: cross-correlation.

    Notes
    -----
    Fast on the Numba (default) and JAX backends; ``mode="C"`` runs :meth:`perform`.
    """

    def make_node(self, x, w) -> Apply:
        x, w = self._as_float4(x, w)
        n, c, h, wd = (_static(d) for d in x.type.shape)
        f, c2, kh, kw = (_static(d) for d in w.type.shape)
        self._check_channels("input", c, c2)
        oh, ow = conv_output_shape((h, wd), (kh, kw), self.stride, self.pad)
        if (oh is not None and oh < 1) or (ow is not None and ow < 1):
            self._check_spatial((n, c, h, wd), (kh, kw))
        out = TensorType(x.type.dtype, shape=(n, f, oh, ow))()
        return Apply(self, [x, w], [out])

    def perform(self, node, inputs, output_storage):
        x, w = inputs
        self._check_channels("input", x.shape[1], w.shape[1])
        self._check_spatial(x.shape, w.shape[2:])
        windows = _conv_windows(x, w.shape[2:], self.stride, self.pad)
        out = np.tensordot(windows, self._flip(w), axes=([1, 4, 5], [1, 2, 3]))
        output_storage[0][0] = np.ascontiguousarray(
            out.transpose(0, 3, 1, 2), dtype=node.outputs[0].dtype
        )

    def infer_shape(self, node, input_shapes):
        (n, _, h, wd), (f, _, kh, kw) = input_shapes
        oh, ow = conv_output_shape((h, wd), (kh, kw), self.stride, self.pad)
        return [(n, f, oh, ow)]

    def pullback(self, inputs, outputs, cotangents):
        x, w = inputs
        (g,) = cotangents
        if isinstance(g.type, DisconnectedType):
            return [disconnected_type(), disconnected_type()]
        props = (self.stride, self.pad, self.filter_flip)
        return [Conv2dGradInputs(*props)(w, g, x), Conv2dGradWeights(*props)(x, g, w)]


class Conv2dGradInputs(_ConvBase):
    """Gradient of :class:`Conv2d` with respect to its input.

    Inputs are ``(filters, grad_output, input_ref)``; the result has the shape of
    ``input_ref``, whose values are never read (it only fixes ``H`` and ``W``,
    which a stride larger than one makes ambiguous).
    """

    def make_node(self, w, g, x_ref) -> Apply:
        w, g, x_ref = self._as_float4(w, g, x_ref)
        self._check_channels("grad_output", g.type.shape[1], w.type.shape[0])
        out = TensorType(
            g.type.dtype, shape=(g.type.shape[0], w.type.shape[1], *x_ref.type.shape[2:])
        )()
        return Apply(self, [w, g, x_ref], [out])

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def perform(self, node, inputs, output_storage):
        w, g, x_ref = inputs
        n, c, h, wd = x_ref.shape
        f, _, kh, kw = w.shape
        self._check_channels("grad_output", g.shape[1], f)
        oh, ow = self._check_spatial(x_ref.shape, (kh, kw))
        if g.shape[2:] != (oh, ow) or g.shape[0] != n:
            raise ValueError(
                f"{type(self).__name__}: grad_output shape {g.shape} does not match {(n, f, oh, ow)}"
            )
        (sh, sw), (ph, pw) = self.stride, self.pad
        # cols[n, i, j, c, a, b] = sum_f g[n, f, i, j] * w[f, c, a, b]
        cols = np.tensordot(g, self._flip(w), axes=([1], [0])).transpose(0, 3, 4, 5, 1, 2)
        gxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=node.outputs[0].dtype)
        for a in range(kh):
            for b in range(kw):
                gxp[:, :, a : a + sh * oh : sh, b : b + sw * ow : sw] += cols[:, :, a, b]
        output_storage[0][0] = np.ascontiguousarray(gxp[:, :, ph : ph + h, pw : pw + wd])

    def infer_shape(self, node, input_shapes):
        w_shape, g_shape, x_shape = input_shapes
        return [(g_shape[0], w_shape[1], x_shape[2], x_shape[3])]

    def pullback(self, inputs, outputs, cotangents):
        w, g, x_ref = inputs
        (c,) = cotangents
        # <GI(w, g), c> = <conv(c, w), g>, bilinear in (w, g).
        props = (self.stride, self.pad, self.filter_flip)
        return [Conv2dGradWeights(*props)(c, g, w), Conv2d(*props)(c, w), disconnected_type()]


class Conv2dGradWeights(_ConvBase):
    """Gradient of :class:`Conv2d` with respect to its filters.

    Inputs are ``(input, grad_output, filters_ref)``; the result has the shape of
    ``filters_ref``, whose values are never read.
    """

    def make_node(self, x, g, w_ref) -> Apply:
        x, g, w_ref = self._as_float4(x, g, w_ref)
        self._check_channels("input", x.type.shape[1], w_ref.type.shape[1])
        self._check_channels("grad_output", g.type.shape[1], w_ref.type.shape[0])
        out = TensorType(g.type.dtype, shape=w_ref.type.shape)()
        return Apply(self, [x, g, w_ref], [out])

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def perform(self, node, inputs, output_storage):
        x, g, w_ref = inputs
        f, c, kh, kw = w_ref.shape
        self._check_channels("input", x.shape[1], c)
        self._check_channels("grad_output", g.shape[1], f)
        oh, ow = self._check_spatial(x.shape, (kh, kw))
        if g.shape != (x.shape[0], f, oh, ow):
            raise ValueError(
                f"{type(self).__name__}: grad_output shape {g.shape} does not match {(x.shape[0], f, oh, ow)}"
            )
        windows = _conv_windows(x, (kh, kw), self.stride, self.pad)
        gw = np.tensordot(g, windows, axes=([0, 2, 3], [0, 2, 3]))
        output_storage[0][0] = np.ascontiguousarray(self._flip(gw), dtype=node.outputs[0].dtype)

    def infer_shape(self, node, input_shapes):
        return [input_shapes[2]]

    def pullback(self, inputs, outputs, cotangents):
        x, g, w_ref = inputs
        (c,) = cotangents
        # <GW(x, g), c> = <conv(x, c), g>, bilinear in (x, g).
        props = (self.stride, self.pad, self.filter_flip)
        return [Conv2dGradInputs(*props)(c, g, x), Conv2d(*props)(x, c), disconnected_type()]


def conv2d(input, filters, stride=(1, 1), pad=(0, 0), filter_flip: bool = True) -> Variable:
    """Symbolic 2D convolution of ``input`` (N, C, H, W) with ``filters`` (F, C, kh, kw).

    Parameters
    ----------
    input, filters : tensor-like
        4-dimensional floating-point tensors.
    stride : int or pair of int
        Strides.
    pad : int or pair of int
        Symmetric explicit zero padding.
    filter_flip : bool
        ``True`` for true convolution, ``False`` for cross-correlation.

    Returns
    -------
    TensorVariable
        The ``(N, F, OH, OW)`` result.
    """
    return Conv2d(stride, pad, filter_flip)(input, filters)

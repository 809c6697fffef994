"""N-d convolution (1, 2 or 3 spatial axes) as three PyTensor Ops: the forward pass and its gradients.

:class:`ConvNd` maps an input ``(N, C, *S)`` and filters ``(F, C // G, *k)`` to
``(N, F, *O)`` with, per spatial axis, ``O = (S + 2 * p - d * (k - 1) - 1) // s + 1``:
symmetric explicit zero padding ``pad``, strides ``stride``, filter dilation
``dilation`` (``d - 1`` zeros between filter taps) and ``num_groups`` groups ``G``
(input channel group ``g`` feeds only output channel group ``g``).
``filter_flip=True`` computes a true convolution (the filters are flipped along
every spatial axis, Lasagne's ``flip_filters=True``); ``filter_flip=False`` a
cross-correlation.

Its pullback is expressed with :class:`ConvNdGradInputs` and
:class:`ConvNdGradWeights`, which are also the transposed (fractionally strided)
convolution and the dilated convolution Lasagne builds from a convolution's
gradients.  Both take a *reference* tensor as their last input that only
supplies the spatial shape of the result (the input spatial shape cannot be
recovered from the output shape when a stride is larger than one); its values,
batch and channel sizes are never read, and it is disconnected for gradients.
Convolution is bilinear, so the gradient Ops have exact pullbacks of their own
in terms of the three Ops.

The ``perform`` methods are the NumPy reference implementations.  Fast
implementations are registered per backend: :mod:`bntrain.nn.ops.jax_impl`
(``jax.lax.conv_general_dilated``) and :mod:`bntrain.nn.ops.numba_impl`
(im2col into one contiguous buffer and one BLAS matrix product per group).  The
C backend (``mode="C"``) has no C code for these Ops and falls back to
``perform``.  ``Conv2d``, ``Conv2dGradInputs`` and ``Conv2dGradWeights`` are the
same classes under their former names (the spatial rank follows the length of
``stride``/``pad``, default 2).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type
from pytensor.graph.basic import Apply, Variable
from pytensor.graph.op import Op
from pytensor.scalar import upcast
from pytensor.tensor.type import TensorType

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


def _ints(value, what: str, op_name: str, minimum: int, ndim: int) -> tuple[int, ...]:
    try:
        values = tuple(value)
    except TypeError:
        values = (value,) * ndim
    if len(values) != ndim or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values
    ):
        raise TypeError(f"{op_name}: {what} must be an int or {ndim} ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{op_name}: {what} entries must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in values)


def _spatial_rank(*values) -> int:
    """The number of spatial axes: the length of the first sequence among ``values``, else 2."""
    for v in values:
        if isinstance(v, list | tuple):
            return len(v)
    return 2


def conv_output_shape(input_shape, filter_shape, stride, pad, dilation=None) -> tuple:
    """Spatial output shape of :class:`ConvNd` (works on ints and symbolic scalars).

    Parameters
    ----------
    input_shape, filter_shape : sequence
        Spatial input and filter sizes; ``None`` entries propagate as ``None``.
    stride, pad : sequence of int
        Strides and symmetric zero padding.
    dilation : sequence of int, optional
        Filter dilation; ``None`` means 1 everywhere.

    Returns
    -------
    tuple
        The spatial output sizes.
    """
    if dilation is None:
        dilation = (1,) * len(stride)
    out = []
    for size, k, s, p, d in zip(input_shape, filter_shape, stride, pad, dilation, strict=True):
        if size is None or k is None:
            out.append(None)
        else:
            out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
    return tuple(out)


def _static(dim):
    return None if dim is None else int(dim)


class _ConvBase(Op):
    __props__ = ("stride", "pad", "filter_flip", "dilation", "num_groups")

    def __init__(
        self, stride=(1, 1), pad=(0, 0), filter_flip: bool = True, dilation=1, num_groups: int = 1
    ):
        name = type(self).__name__
        ndim = _spatial_rank(stride, pad, dilation)
        if ndim not in (1, 2, 3):
            raise ValueError(f"{name}: 1, 2 or 3 spatial axes are supported, got {ndim}")
        self.stride = _ints(stride, "stride", name, 1, ndim)
        self.pad = _ints(pad, "pad", name, 0, ndim)
        self.dilation = _ints(dilation, "dilation", name, 1, ndim)
        if not isinstance(filter_flip, bool | np.bool_):
            raise TypeError(f"{name}: filter_flip must be a bool, got {filter_flip!r}")
        self.filter_flip = bool(filter_flip)
        if isinstance(num_groups, bool) or not isinstance(num_groups, int | np.integer):
            raise TypeError(f"{name}: num_groups must be an int, got {num_groups!r}")
        if num_groups < 1:
            raise ValueError(f"{name}: num_groups must be >= 1, got {num_groups!r}")
        self.num_groups = int(num_groups)

    @property
    def ndim(self) -> int:
        """The number of spatial axes."""
        return len(self.stride)

    def _props(self) -> tuple:
        return (self.stride, self.pad, self.filter_flip, self.dilation, self.num_groups)

    def _as_float(self, *variables) -> list[Variable]:
        name = type(self).__name__
        rank = self.ndim + 2
        tensors = [pt.as_tensor_variable(v) for v in variables]
        for t in tensors:
            if t.type.ndim != rank:
                raise ValueError(
                    f"{name}: expected {rank}-dimensional tensors, got {t} with ndim={t.type.ndim}"
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

    def _check_groups(self, what: str, channels) -> None:
        if channels is not None and channels % self.num_groups:
            raise ValueError(
                f"{type(self).__name__}: {what} has {channels} channels, not divisible by "
                f"num_groups={self.num_groups}"
            )

    def _out_shape(self, spatial, kernel) -> tuple:
        return conv_output_shape(spatial, kernel, self.stride, self.pad, self.dilation)

    def _check_spatial(self, spatial, kernel) -> tuple[int, ...]:
        out = self._out_shape(spatial, kernel)
        if any(o < 1 for o in out):
            raise ValueError(
                f"{type(self).__name__}: input spatial shape {tuple(spatial)} with pad "
                f"{self.pad} is smaller than the filter {tuple(kernel)} (dilation {self.dilation})"
            )
        return out

    def _flip(self, w):
        return (
            w[(slice(None), slice(None)) + (slice(None, None, -1),) * self.ndim]
            if self.filter_flip
            else w
        )

    def _windows(self, padded_shape, kernel, out):
        """Per filter tap: ``(tap index, slices of the padded input it meets at every output)``."""
        for tap in itertools.product(*(range(k) for k in kernel)):
            slices = tuple(
                slice(a * d, a * d + s * (o - 1) + 1, s)
                for a, d, s, o in zip(tap, self.dilation, self.stride, out, strict=True)
            )
            yield tap, (slice(None), slice(None), *slices)

    def _grouped(self, t, axis: int):
        """``t`` with ``axis`` split into ``(num_groups, size // num_groups)``."""
        shape = t.shape
        return t.reshape(
            shape[:axis] + (self.num_groups, shape[axis] // self.num_groups) + shape[axis + 1 :]
        )


class ConvNd(_ConvBase):
    """Forward convolution ``(N, C, *S) x (F, C // G, *k) -> (N, F, *O)``.

    Parameters
    ----------
    stride : int or sequence of int
        Strides; the length of the first sequence among ``stride``, ``pad`` and
        ``dilation`` fixes the number of spatial axes (2 if all are ints).
    pad : int or sequence of int
        Symmetric zero padding added on both sides.
    filter_flip : bool
        ``True``: true convolution (flip the filters); ``False``: cross-correlation.
    dilation : int or sequence of int
        Filter dilation (1: none).
    num_groups : int
        Channel groups ``G``; ``C`` and ``F`` must be divisible by it.

    Notes
    -----
    Fast on the Numba (default) and JAX backends; ``mode="C"`` runs :meth:`perform`.
    """

    def make_node(self, x, w) -> Apply:
        x, w = self._as_float(x, w)
        n, c, *spatial = (_static(d) for d in x.type.shape)
        f, cg, *kernel = (_static(d) for d in w.type.shape)
        self._check_groups("input", c)
        self._check_groups("filters", f)
        self._check_channels("input", c, None if cg is None else cg * self.num_groups)
        out = self._out_shape(spatial, kernel)
        if any(o is not None and o < 1 for o in out):
            self._check_spatial(spatial, kernel)
        out_type = TensorType(x.type.dtype, shape=(n, f, *out))()
        return Apply(self, [x, w], [out_type])

    def perform(self, node, inputs, output_storage):
        x, w = inputs
        self._check_groups("input", x.shape[1])
        self._check_groups("filters", w.shape[0])
        self._check_channels("input", x.shape[1], w.shape[1] * self.num_groups)
        out = self._check_spatial(x.shape[2:], w.shape[2:])
        pads = ((0, 0), (0, 0), *((p, p) for p in self.pad))
        xp = self._grouped(np.pad(x, pads), 1)  # (N, G, Cg, *S)
        wg = self._grouped(self._flip(w), 0)  # (G, Fg, Cg, *k)
        result = np.zeros((x.shape[0], self.num_groups, w.shape[0] // self.num_groups, *out))
        for tap, window in self._windows(xp.shape[3:], w.shape[2:], out):
            patch = xp[(slice(None), *window)]
            result += np.einsum("ngc...,gfc->ngf...", patch, wg[(Ellipsis, *tap)])
        output_storage[0][0] = np.ascontiguousarray(
            result.reshape((x.shape[0], w.shape[0], *out)), dtype=node.outputs[0].dtype
        )

    def infer_shape(self, node, input_shapes):
        (n, _, *spatial), (f, _, *kernel) = input_shapes
        return [(n, f, *self._out_shape(spatial, kernel))]

    def pullback(self, inputs, outputs, cotangents):
        x, w = inputs
        (g,) = cotangents
        if isinstance(g.type, DisconnectedType):
            return [disconnected_type(), disconnected_type()]
        props = self._props()
        return [ConvNdGradInputs(*props)(w, g, x), ConvNdGradWeights(*props)(x, g, w)]


class ConvNdGradInputs(_ConvBase):
    """Gradient of :class:`ConvNd` with respect to its input (the transposed convolution).

    Inputs are ``(filters, grad_output, input_ref)``; the result is
    ``(N, C, *S)`` with ``N`` from ``grad_output``, ``C = filters.shape[1] * G``
    and ``S`` the spatial shape of ``input_ref``, whose values are never read.
    """

    def make_node(self, w, g, x_ref) -> Apply:
        w, g, x_ref = self._as_float(w, g, x_ref)
        self._check_groups("filters", w.type.shape[0])
        self._check_channels("grad_output", g.type.shape[1], w.type.shape[0])
        cg = w.type.shape[1]
        out = TensorType(
            g.type.dtype,
            shape=(
                g.type.shape[0],
                None if cg is None else cg * self.num_groups,
                *x_ref.type.shape[2:],
            ),
        )()
        return Apply(self, [w, g, x_ref], [out])

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def perform(self, node, inputs, output_storage):
        w, g, x_ref = inputs
        spatial, kernel = x_ref.shape[2:], w.shape[2:]
        self._check_groups("filters", w.shape[0])
        self._check_channels("grad_output", g.shape[1], w.shape[0])
        out = self._check_spatial(spatial, kernel)
        if g.shape[2:] != out:
            raise ValueError(
                f"{type(self).__name__}: grad_output spatial shape {g.shape[2:]} does not match {out}"
            )
        n, groups = g.shape[0], self.num_groups
        padded = tuple(s + 2 * p for s, p in zip(spatial, self.pad, strict=True))
        gxp = np.zeros((n, groups, w.shape[1], *padded))
        gg = self._grouped(g, 1)  # (N, G, Fg, *O)
        wg = self._grouped(self._flip(w), 0)  # (G, Fg, Cg, *k)
        for tap, window in self._windows(padded, kernel, out):
            gxp[(slice(None), *window)] += np.einsum("ngf...,gfc->ngc...", gg, wg[(Ellipsis, *tap)])
        crop = tuple(slice(p, p + s) for p, s in zip(self.pad, spatial, strict=True))
        gx = gxp[(slice(None), slice(None), slice(None), *crop)]
        output_storage[0][0] = np.ascontiguousarray(
            gx.reshape((n, groups * w.shape[1], *spatial)), dtype=node.outputs[0].dtype
        )

    def infer_shape(self, node, input_shapes):
        w_shape, g_shape, x_shape = input_shapes
        return [(g_shape[0], w_shape[1] * self.num_groups, *x_shape[2:])]

    def pullback(self, inputs, outputs, cotangents):
        w, g, x_ref = inputs
        (c,) = cotangents
        # <GI(w, g), c> = <conv(c, w), g>, bilinear in (w, g).
        props = self._props()
        return [ConvNdGradWeights(*props)(c, g, w), ConvNd(*props)(c, w), disconnected_type()]


class ConvNdGradWeights(_ConvBase):
    """Gradient of :class:`ConvNd` with respect to its filters.

    Inputs are ``(input, grad_output, filters_ref)``; the result is
    ``(F, C // G, *k)`` with ``F`` from ``grad_output``, ``C`` from ``input`` and
    ``k`` the spatial shape of ``filters_ref``, whose values are never read.
    """

    def make_node(self, x, g, w_ref) -> Apply:
        x, g, w_ref = self._as_float(x, g, w_ref)
        c, f = x.type.shape[1], g.type.shape[1]
        self._check_groups("input", c)
        self._check_groups("grad_output", f)
        out = TensorType(
            g.type.dtype,
            shape=(f, None if c is None else c // self.num_groups, *w_ref.type.shape[2:]),
        )()
        return Apply(self, [x, g, w_ref], [out])

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def perform(self, node, inputs, output_storage):
        x, g, w_ref = inputs
        kernel = w_ref.shape[2:]
        self._check_groups("input", x.shape[1])
        self._check_groups("grad_output", g.shape[1])
        out = self._check_spatial(x.shape[2:], kernel)
        if g.shape[0] != x.shape[0] or g.shape[2:] != out:
            raise ValueError(
                f"{type(self).__name__}: grad_output shape {g.shape} does not match the input "
                f"batch {x.shape[0]} and output spatial shape {out}"
            )
        pads = ((0, 0), (0, 0), *((p, p) for p in self.pad))
        xp = self._grouped(np.pad(x, pads), 1)  # (N, G, Cg, *S)
        gflat = self._grouped(g, 1).reshape(g.shape[:1] + (self.num_groups, -1, int(np.prod(out))))
        groups, fg, cg = (
            self.num_groups,
            g.shape[1] // self.num_groups,
            x.shape[1] // self.num_groups,
        )
        gw = np.zeros((groups, fg, cg, *kernel))
        for tap, window in self._windows(xp.shape[3:], kernel, out):
            patch = xp[(slice(None), *window)].reshape(xp.shape[:3] + (-1,))
            gw[(Ellipsis, *tap)] = np.einsum("ngfp,ngcp->gfc", gflat, patch)
        gw = self._flip(gw.reshape((groups * fg, cg, *kernel)))
        output_storage[0][0] = np.ascontiguousarray(gw, dtype=node.outputs[0].dtype)

    def infer_shape(self, node, input_shapes):
        x_shape, g_shape, w_shape = input_shapes
        return [(g_shape[1], x_shape[1] // self.num_groups, *w_shape[2:])]

    def pullback(self, inputs, outputs, cotangents):
        x, g, w_ref = inputs
        (c,) = cotangents
        # <GW(x, g), c> = <conv(x, c), g>, bilinear in (x, g).
        props = self._props()
        return [ConvNdGradInputs(*props)(c, g, x), ConvNd(*props)(x, c), disconnected_type()]


# the former 2D names: the same Ops (the rank follows stride/pad, 2 by default)
Conv2d = ConvNd
Conv2dGradInputs = ConvNdGradInputs
Conv2dGradWeights = ConvNdGradWeights


def conv(
    input, filters, stride=1, pad=0, filter_flip: bool = True, dilation=1, num_groups: int = 1
) -> Variable:
    """Symbolic N-d convolution of ``input`` ``(N, C, *S)`` with ``filters`` ``(F, C // G, *k)``.

    The number of spatial axes is ``input.ndim - 2`` (1, 2 or 3).

    Parameters
    ----------
    input, filters : tensor-like
        Floating-point tensors of the same rank.
    stride, pad, dilation : int or sequence of int
        Strides, symmetric zero padding and filter dilation.
    filter_flip : bool
        ``True`` for true convolution, ``False`` for cross-correlation.
    num_groups : int
        Channel groups.

    Returns
    -------
    TensorVariable
        The ``(N, F, *O)`` result.
    """
    ndim = pt.as_tensor_variable(input).type.ndim - 2
    stride, pad, dilation = (
        (v,) * ndim if isinstance(v, int | np.integer) else v for v in (stride, pad, dilation)
    )
    return ConvNd(stride, pad, filter_flip, dilation, num_groups)(input, filters)


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
    return ConvNd(stride, pad, filter_flip)(input, filters)

"""Convolution layers (``lasagne.layers.conv``): 1D, 2D, 3D, transposed and dilated.

Every layer is built on the N-d convolution Ops of :mod:`bntrain.nn.ops.conv`
(fast Numba and JAX implementations): :class:`Conv1DLayer`,
:class:`Conv2DLayer` and :class:`Conv3DLayer` on the forward Op, the transposed
convolutions on its input gradient, and :class:`DilatedConv2DLayer` on the
forward Op with filter dilation.

Examples
--------
>>> from bntrain.nn.layers import InputLayer, Conv2DLayer, TransposedConv2DLayer
>>> l_in = InputLayer((None, 3, 32, 32))
>>> Conv2DLayer(l_in, num_filters=16, filter_size=3, pad="same").output_shape
(None, 16, 32, 32)
>>> Conv2DLayer(l_in, 16, (5, 3), stride=2).output_shape
(None, 16, 14, 15)
>>> TransposedConv2DLayer(l_in, 8, 3, stride=2).output_shape
(None, 8, 65, 65)
"""

from __future__ import annotations

from collections.abc import Callable

import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from .. import init, nonlinearities, utils
from ..ops.conv import ConvNdGradInputs, conv
from .base import Layer
from .special import _check_kwargs, _label, _nonlinearity, _positive_int

__all__ = [
    "BaseConvLayer",
    "Conv1DLayer",
    "Conv2DLayer",
    "Conv3DLayer",
    "TransposedConv2DLayer",
    "Deconv2DLayer",
    "TransposedConv3DLayer",
    "Deconv3DLayer",
    "DilatedConv2DLayer",
    "conv_output_length",
    "conv_input_length",
]

_PAD_MODES = ("valid", "full", "same")


def conv_output_length(input_length, filter_size: int, stride: int, pad=0):
    """Length of a convolution's output along one axis (as Lasagne computes it).

    Parameters
    ----------
    input_length : int or None
        The input length; ``None`` gives ``None``.
    filter_size : int
        The filter length.
    stride : int
        The stride.
    pad : int or {'valid', 'full', 'same'}
        Zero padding on both sides, or a padding mode: ``'valid'`` (no
        padding), ``'full'`` (``filter_size - 1``), ``'same'`` (the output is as
        long as the input for stride 1).

    Returns
    -------
    int or None
        ``ceil(L / stride)`` where ``L`` is the stride-1 output length.

    Raises
    ------
    ValueError
        If ``pad`` is none of the above.
    """
    if input_length is None:
        return None
    if pad == "valid":
        length = input_length - filter_size + 1
    elif pad == "full":
        length = input_length + filter_size - 1
    elif pad == "same":
        length = input_length
    elif isinstance(pad, utils.int_types) and not isinstance(pad, bool):
        length = input_length + 2 * pad - filter_size + 1
    else:
        raise ValueError(f"Invalid pad: {pad!r}")
    return (length + stride - 1) // stride


def conv_input_length(output_length, filter_size: int, stride: int, pad=0):
    """Smallest input length whose convolution has ``output_length`` (a transposed convolution's output).

    Parameters
    ----------
    output_length : int, symbolic scalar or None
        The convolution's output length; ``None`` gives ``None``.
    filter_size, stride : int
        Filter length and stride.
    pad : int or {'valid', 'full', 'same'}
        As in :func:`conv_output_length` (``'same'`` is ``filter_size // 2``).

    Returns
    -------
    int, symbolic scalar or None
        ``(output_length - 1) * stride - 2 * pad + filter_size``; inputs up to
        ``stride - 1`` longer give the same output length.

    Raises
    ------
    ValueError
        If ``pad`` is none of the above.
    """
    if output_length is None:
        return None
    pad = (
        {"valid": 0, "full": filter_size - 1, "same": filter_size // 2}.get(pad, pad)
        if isinstance(pad, str)
        else pad
    )
    if isinstance(pad, bool) or not isinstance(pad, utils.int_types):
        raise ValueError(f"Invalid pad: {pad!r}")
    return (output_length - 1) * stride - 2 * pad + filter_size


def _int_tuple(where: str, what: str, value, n: int, minimum: int) -> tuple[int, ...]:
    """``value`` as ``n`` ints >= ``minimum``, or an error naming the layer."""
    many = "a pair of ints" if n == 2 else f"a tuple of {n} ints"
    try:
        values = utils.as_tuple(value, n, utils.int_types)
    except TypeError:
        raise TypeError(f"{where}: {what} must be an int or {many}, got {value!r}") from None
    except ValueError:
        raise ValueError(f"{where}: {what} must be an int or {many}, got {value!r}") from None
    if any(isinstance(v, bool) for v in values):
        raise TypeError(f"{where}: {what} must be an int or {many}, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{where}: {what} must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in values)


def _check_rank(where: str, what: str, input_shape: tuple, n: int) -> None:
    """Refuse an ``input_shape`` that is not ``(batch, channels, *n spatial)`` (or ``n < 1``)."""
    if n < 1 or len(input_shape) != n + 2:
        raise ValueError(
            f"{where}: tried to create a {n}D {what} layer with input shape "
            f"{input_shape!r}. Expected {n + 2} input dimensions "
            f"(batch, channels, {n} spatial dimensions)"
        )


def _spatial_input(layer: Layer, input, n: int) -> pt.TensorVariable:
    """``input`` as a tensor of ``n + 2`` dimensions, or an error naming ``layer``."""
    input = pt.as_tensor_variable(input)
    if input.ndim != n + 2:
        raise ValueError(
            f"{_label(type(layer).__name__, layer.name)}: expected a {n + 2}-dimensional "
            f"input, got ndim={input.ndim}"
        )
    return input


def _int_pair(where: str, what: str, value, minimum: int) -> tuple[int, int]:
    """``value`` as a pair of ints >= ``minimum`` (see :func:`_int_tuple`)."""
    return _int_tuple(where, what, value, 2, minimum)


class BaseConvLayer(Layer):
    """Base of the N-d convolution layers: ``nonlinearity(convolve(input) + b)``.

    Subclasses implement :meth:`convolve`; this class validates and stores the
    hyperparameters, creates the parameters and computes the output shape.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one; its output is ``(batch, channels, *spatial)``.
    num_filters : int
        Number of filters (output channels).
    filter_size : int or tuple of int
        Filter size per spatial axis.
    stride : int or tuple of int
        Strides.
    pad : int, tuple of int, or {'valid', 'full', 'same'}
        Symmetric zero padding: ints, or ``'valid'`` (0), ``'full'``
        (``filter_size - 1``), ``'same'`` (``filter_size // 2``; odd filters only).
    untie_biases : bool
        ``False``: one bias per filter, shape ``(num_filters,)``; ``True``: one
        per filter and output position, shape ``(num_filters, *out_spatial)``.
    W : initializer, array or shared variable
        Filters, shape :meth:`get_W_shape`: ``(num_filters, channels // num_groups, *filter_size)``.
    b : initializer, array, shared variable or None
        Biases; ``None`` for none.
    nonlinearity : callable or None
        Applied to the output; ``None`` means the identity.
    flip_filters : bool
        ``True``: true convolution (flip the filters), as Lasagne's default;
        ``False``: cross-correlation.
    num_groups : int
        Split input and output channels into this many groups; data does not
        cross group boundaries.
    n : int or None
        The number of spatial axes; ``None`` takes the class's ``_rank`` (the
        subclasses of fixed rank set it), or else infers it from the input shape.
    **kwargs
        ``name``.

    Attributes
    ----------
    pad : tuple of int or str
        As Lasagne stores it: ``'full'``/``'same'`` kept, ``'valid'`` and ints as
        an int tuple.  :attr:`resolved_pad` always gives the integers.
    """

    _rank: int | None = None  # the number of spatial axes of a subclass of fixed rank

    def __init__(
        self,
        incoming,
        num_filters: int,
        filter_size,
        stride=1,
        pad=0,
        untie_biases: bool = False,
        W=init.GlorotUniform(),
        b=init.Constant(0.0),
        nonlinearity: Callable | None = nonlinearities.rectify,
        flip_filters: bool = True,
        num_groups: int = 1,
        n: int | None = None,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        if self._rank is not None and n not in (None, self._rank):
            raise TypeError(f"{where}: is a {self._rank}D convolution, got n={n!r}")
        if n is None:
            n = len(self.input_shape) - 2 if self._rank is None else self._rank
        _check_rank(where, "convolution", self.input_shape, n)
        self.n = n
        self.nonlinearity = _nonlinearity(where, nonlinearity)
        self.num_filters = _positive_int(where, "num_filters", num_filters)
        self.filter_size = _int_tuple(where, "filter_size", filter_size, n, 1)
        self.stride = _int_tuple(where, "stride", stride, n, 1)
        self.untie_biases = bool(untie_biases)
        self.flip_filters = bool(flip_filters)
        self._padding = self._parse_pad(where, pad)
        self.pad = self._padding
        channels = self.input_shape[1]
        if channels is None:
            raise ValueError(
                f"{where}: the number of input channels must be known, got input_shape={self.input_shape!r}"
            )
        if (
            isinstance(num_groups, bool)
            or not isinstance(num_groups, utils.int_types)
            or num_groups <= 0
            or self.num_filters % num_groups
            or channels % num_groups
        ):
            raise ValueError(
                f"{where}: num_groups must be positive and evenly divide the number of input and "
                f"output channels ({channels} and {self.num_filters}), got {num_groups!r}"
            )
        self.num_groups = int(num_groups)
        out_spatial = self.output_shape[2:]
        if any(o is not None and o < 1 for o in out_spatial):
            raise ValueError(
                f"{where}: input shape {self.input_shape!r} with pad {self._padding!r} is smaller "
                f"than filter_size {self.filter_size!r}"
            )
        self.W = self.add_param(W, self.get_W_shape(), name="W")
        if b is None:
            self.b = None
        else:
            if self.untie_biases:
                if any(o is None for o in out_spatial):
                    raise ValueError(
                        f"{where}: untie_biases=True needs a known output shape, got "
                        f"input_shape={self.input_shape!r}"
                    )
                biases_shape = (self.num_filters, *out_spatial)
            else:
                biases_shape = (self.num_filters,)
            self.b = self.add_param(b, biases_shape, name="b", regularizable=False)

    def _parse_pad(self, where: str, pad):
        """The padding as Lasagne stores it: ``'full'``, ``'same'`` or an int tuple."""
        if isinstance(pad, str):
            if pad not in _PAD_MODES:
                raise TypeError(
                    f"{where}: pad must be 'valid', 'full', 'same', an int or an iterable of int, "
                    f"got {pad!r}"
                )
            if pad == "same" and any(k % 2 == 0 for k in self.filter_size):
                raise NotImplementedError(
                    f"{where}: pad='same' requires odd filter size, got filter_size={self.filter_size!r}"
                )
            return (0,) * self.n if pad == "valid" else pad
        try:
            values = utils.as_tuple(pad, self.n, utils.int_types)
        except (TypeError, ValueError):
            raise TypeError(
                f"{where}: pad must be 'valid', 'full', 'same', an int or an iterable of int "
                f"({self.n} entries), got {pad!r}"
            ) from None
        if any(isinstance(v, bool) for v in values):
            raise TypeError(f"{where}: pad must be an int or an iterable of int, got {pad!r}")
        if any(v < 0 for v in values):
            raise ValueError(f"{where}: pad must be >= 0, got {pad!r}")
        return tuple(int(v) for v in values)

    @property
    def resolved_pad(self) -> tuple[int, ...]:
        """The padding as integers per spatial axis (``'same'``, ``'full'`` resolved)."""
        if self._padding == "same":
            return tuple(k // 2 for k in self.filter_size)
        if self._padding == "full":
            return tuple(k - 1 for k in self.filter_size)
        return tuple(self._padding)

    def get_W_shape(self) -> tuple[int, ...]:
        """Return the filters' shape ``(num_filters, channels // num_groups, *filter_size)``."""
        return (self.num_filters, self.input_shape[1] // self.num_groups, *self.filter_size)

    def get_output_shape_for(self, input_shape):
        """Return ``(batch, num_filters, *out_spatial)``."""
        pad = self.resolved_pad
        spatial = tuple(
            conv_output_length(input_shape[2 + i], self.filter_size[i], self.stride[i], pad[i])
            for i in range(self.n)
        )
        return (input_shape[0], self.num_filters, *spatial)

    def convolve(self, input, **kwargs):
        """Return ``input`` convolved with the filters (no bias, no nonlinearity); in subclasses."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement convolve(); use a subclass such as Conv2DLayer"
        )

    def _pinned(self, conved):
        """``conved`` with the static shape the layer knows (shape arithmetic folds; JAX needs it)."""
        return pt.specify_shape(conved, (None, *self.output_shape[1:]))

    def get_output_for(self, input, **kwargs):
        """Return ``nonlinearity(convolve(input) + b)``."""
        input = _spatial_input(self, input, self.n)
        conved = self.convolve(input, **kwargs)
        if self.b is None:
            activation = conved
        elif self.untie_biases:
            activation = conved + pt.shape_padleft(self.b, 1)
        else:
            activation = conved + self.b.dimshuffle("x", 0, *("x",) * self.n)
        return self.nonlinearity(activation)


class _ForwardConvLayer(BaseConvLayer):
    """A convolution layer of fixed rank (``_rank``) on the forward convolution Op."""

    _rank = 2

    def convolve(self, input, **kwargs):
        """Return the convolution of ``input`` with the filters (shape pinned to what the layer knows)."""
        conved = conv(
            input,
            self.W,
            self.stride,
            self.resolved_pad,
            self.flip_filters,
            num_groups=self.num_groups,
        )
        return self._pinned(conved)


class Conv1DLayer(_ForwardConvLayer):
    """1D convolution layer on ``(batch, channels, length)``; parameters as :class:`BaseConvLayer`."""

    _rank = 1


class Conv2DLayer(_ForwardConvLayer):
    """2D convolution layer on ``(batch, channels, rows, cols)``; parameters as :class:`BaseConvLayer`.

    Examples
    --------
    >>> Conv2DLayer((None, 4, 8, 8), 6, 3, num_groups=2).W.get_value().shape
    (6, 2, 3, 3)
    """


class Conv3DLayer(_ForwardConvLayer):
    """3D convolution layer on ``(batch, channels, depth, rows, cols)``; parameters as :class:`BaseConvLayer`."""

    _rank = 3


class _TransposedConvLayer(BaseConvLayer):
    """The backward pass of a convolution (transposed, fractionally strided convolution).

    ``crop`` undoes a forward convolution's padding; the output is the smallest
    input of that forward convolution (:func:`conv_input_length`) unless
    ``output_size`` asks for up to ``stride - 1`` more per axis.  ``W`` is
    ``(channels, num_filters, *filter_size)``: the forward convolution's filters.
    ``flip_filters`` defaults to False; True flips them, as a forward
    convolution with ``flip_filters=True`` does.
    """

    _rank = 2

    def __init__(
        self,
        incoming,
        num_filters: int,
        filter_size,
        stride=1,
        crop=0,
        untie_biases: bool = False,
        W=init.GlorotUniform(),
        b=init.Constant(0.0),
        nonlinearity: Callable | None = nonlinearities.rectify,
        flip_filters: bool = False,
        output_size=None,
        **kwargs,
    ) -> None:
        if output_size is not None and not isinstance(output_size, Variable):
            where = _label(type(self).__name__, kwargs.get("name"))
            output_size = _int_tuple(where, "output_size", output_size, self._rank, 1)
        self.output_size = output_size
        super().__init__(
            incoming,
            num_filters,
            filter_size,
            stride,
            crop,
            untie_biases,
            W,
            b,
            nonlinearity,
            flip_filters,
            **kwargs,
        )
        self.crop = self.pad
        del self.pad

    def get_W_shape(self) -> tuple[int, ...]:
        """Return ``(channels, num_filters, *filter_size)`` (a forward convolution's layout)."""
        return (self.input_shape[1], self.num_filters, *self.filter_size)

    def get_output_shape_for(self, input_shape):
        """Return ``(batch, num_filters, *out_spatial)``; ``None`` for a symbolic ``output_size``."""
        if isinstance(self.output_size, Variable):
            spatial = (None,) * self.n
        elif self.output_size is not None:
            spatial = self.output_size
        else:
            crop = self.resolved_pad
            spatial = tuple(
                conv_input_length(input_shape[2 + i], self.filter_size[i], self.stride[i], crop[i])
                for i in range(self.n)
            )
        return (input_shape[0], self.num_filters, *spatial)

    def convolve(self, input, **kwargs):
        """Return the input gradient of the forward convolution, applied to ``input``."""
        if isinstance(self.output_size, Variable):
            spatial = [self.output_size[i] for i in range(self.n)]
        else:
            known = self.output_shape[2:]
            symbolic = self.get_output_shape_for(input.shape)[2:]
            spatial = [k if k is not None else s for k, s in zip(known, symbolic, strict=True)]
        # only the spatial shape of the reference is read: an empty (0, 0, ...) array
        ref = pt.empty((0, 0, *spatial), dtype=input.dtype)
        op = ConvNdGradInputs(self.stride, self.resolved_pad, not self.flip_filters)
        return self._pinned(op(self.W, input, ref))


class TransposedConv2DLayer(_TransposedConvLayer):
    """2D transposed convolution (``Deconv2DLayer``); see :class:`BaseConvLayer` and ``crop``/``output_size`` below.

    Parameters
    ----------
    crop : int, tuple of int, or {'valid', 'full', 'same'}
        The forward convolution's padding to remove (``'valid'``: none, the
        output grows by ``filter_size - 1``; ``'full'``: ``filter_size - 1``).
    output_size : int, tuple of int, symbolic vector or None
        The output's spatial size (needed to undo a stride exactly); ``None``
        for the smallest.
    """


class TransposedConv3DLayer(_TransposedConvLayer):
    """3D transposed convolution (``Deconv3DLayer``); parameters as :class:`TransposedConv2DLayer`."""

    _rank = 3


Deconv2DLayer = TransposedConv2DLayer
Deconv3DLayer = TransposedConv3DLayer


class DilatedConv2DLayer(BaseConvLayer):
    """2D convolution with dilated filters (``dilation - 1`` zeros between taps), no padding.

    ``W`` is ``(channels, num_filters, *filter_size)`` and the filters are not
    flipped (Lasagne's layout and only supported setting, kept for ported code).

    Parameters
    ----------
    dilation : int or pair of int
        Filter dilation per axis.
    pad : 0 or 'valid'
        Only a valid convolution is supported (add a PadLayer for padding).
    flip_filters : False
        Only cross-correlation is supported.

    Other parameters are as in :class:`BaseConvLayer`.
    """

    _rank = 2

    def __init__(
        self,
        incoming,
        num_filters: int,
        filter_size,
        dilation=(1, 1),
        pad=0,
        untie_biases: bool = False,
        W=init.GlorotUniform(),
        b=init.Constant(0.0),
        nonlinearity: Callable | None = nonlinearities.rectify,
        flip_filters: bool = False,
        **kwargs,
    ) -> None:
        where = _label(type(self).__name__, kwargs.get("name"))
        self.dilation = _int_tuple(where, "dilation", dilation, 2, 1)
        if pad not in (0, "valid", (0, 0), [0, 0]):
            raise NotImplementedError(
                f"{where}: DilatedConv2DLayer requires pad=0 / (0, 0) / 'valid', got {pad!r}; "
                f"for a padded dilated convolution, add a PadLayer"
            )
        if flip_filters:
            raise NotImplementedError(f"{where}: DilatedConv2DLayer requires flip_filters=False")
        super().__init__(
            incoming,
            num_filters,
            filter_size,
            1,
            pad,
            untie_biases,
            W,
            b,
            nonlinearity,
            flip_filters,
            **kwargs,
        )
        del self.stride

    def get_W_shape(self) -> tuple[int, ...]:
        """Return ``(channels, num_filters, *filter_size)``."""
        return (self.input_shape[1], self.num_filters, *self.filter_size)

    def get_output_shape_for(self, input_shape):
        """Return ``(batch, num_filters, *out_spatial)`` of the valid dilated convolution."""
        spatial = tuple(
            conv_output_length(size, (k - 1) * d + 1, 1, 0)
            for size, k, d in zip(input_shape[2:], self.filter_size, self.dilation, strict=True)
        )
        return (input_shape[0], self.num_filters, *spatial)

    def convolve(self, input, **kwargs):
        """Return the valid cross-correlation of ``input`` with the dilated filters."""
        conved = conv(input, self.W.dimshuffle(1, 0, 2, 3), 1, 0, False, dilation=self.dilation)
        return self._pinned(conved)

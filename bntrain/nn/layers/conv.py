"""Convolution layers (``lasagne.layers.conv``).

The convolution itself is the :class:`~bntrain.nn.ops.conv.Conv2d` Op, with
fast Numba and JAX implementations.

Examples
--------
>>> from bntrain.nn.layers import InputLayer, Conv2DLayer
>>> l_in = InputLayer((None, 3, 32, 32))
>>> Conv2DLayer(l_in, num_filters=16, filter_size=3, pad="same").output_shape
(None, 16, 32, 32)
>>> Conv2DLayer(l_in, 16, (5, 3), stride=2).output_shape
(None, 16, 14, 15)
"""

from __future__ import annotations

from collections.abc import Callable

import pytensor.tensor as pt

from .. import init, nonlinearities, utils
from ..ops.conv import conv2d
from .base import Layer
from .special import _check_kwargs, _label

__all__ = ["Conv2DLayer", "conv_output_length"]

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


def _int_pair(where: str, what: str, value, minimum: int) -> tuple[int, int]:
    """``value`` as a pair of ints >= ``minimum``, or an error naming the layer."""
    try:
        pair = utils.as_tuple(value, 2, utils.int_types)
    except TypeError:
        raise TypeError(
            f"{where}: {what} must be an int or a pair of ints, got {value!r}"
        ) from None
    except ValueError:
        raise ValueError(
            f"{where}: {what} must be an int or a pair of ints, got {value!r}"
        ) from None
    if any(isinstance(v, bool) for v in pair):
        raise TypeError(f"{where}: {what} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{where}: {what} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


class Conv2DLayer(Layer):
    """2D convolution layer: ``nonlinearity(conv(input, W) + b)``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one; its output is ``(batch, channels, rows, cols)``.
    num_filters : int
        Number of filters (output channels).
    filter_size : int or pair of int
        Filter height and width.
    stride : int or pair of int
        Strides.
    pad : int, pair of int, or {'valid', 'full', 'same'}
        Symmetric zero padding: ints, or ``'valid'`` (0), ``'full'``
        (``filter_size - 1``), ``'same'`` (``filter_size // 2``; odd filters only).
    untie_biases : bool
        ``False``: one bias per filter, shape ``(num_filters,)``; ``True``: one
        per filter and output position, shape ``(num_filters, out_rows, out_cols)``.
    W : initializer, array or shared variable
        Filters of shape ``(num_filters, channels, filter_rows, filter_cols)``.
    b : initializer, array, shared variable or None
        Biases; ``None`` for none.
    nonlinearity : callable or None
        Applied to the output; ``None`` means the identity.
    flip_filters : bool
        ``True``: true convolution (flip the filters), as Lasagne's default;
        ``False``: cross-correlation.
    **kwargs
        ``name``.

    Attributes
    ----------
    pad : tuple of int or str
        As Lasagne stores it: ``'full'``/``'same'`` kept, ``'valid'`` and ints as
        an int pair.  :attr:`resolved_pad` always gives the integers.
    """

    def __init__(
        self,
        incoming,
        num_filters: int,
        filter_size,
        stride=(1, 1),
        pad=0,
        untie_biases: bool = False,
        W=init.GlorotUniform(),
        b=init.Constant(0.0),
        nonlinearity: Callable | None = nonlinearities.rectify,
        flip_filters: bool = True,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        if len(self.input_shape) != 4:
            raise ValueError(
                f"{where}: tried to create a 2D convolution layer with input shape "
                f"{self.input_shape!r}; expected 4 input dimensions (batch, channels, rows, cols)"
            )
        if nonlinearity is None:
            nonlinearity = nonlinearities.identity
        if not callable(nonlinearity):
            raise TypeError(f"{where}: nonlinearity must be callable or None, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        if isinstance(num_filters, bool) or not isinstance(num_filters, utils.int_types):
            raise TypeError(f"{where}: num_filters must be an int, got {num_filters!r}")
        if num_filters <= 0:
            raise ValueError(f"{where}: num_filters must be positive, got {num_filters!r}")
        self.num_filters = int(num_filters)
        self.filter_size = _int_pair(where, "filter_size", filter_size, 1)
        self.stride = _int_pair(where, "stride", stride, 1)
        self.untie_biases = bool(untie_biases)
        self.flip_filters = bool(flip_filters)
        if isinstance(pad, str):
            if pad not in _PAD_MODES:
                raise ValueError(
                    f"{where}: pad must be an int, a pair of ints or one of {_PAD_MODES}, got {pad!r}"
                )
            if pad == "same" and any(k % 2 == 0 for k in self.filter_size):
                raise ValueError(
                    f"{where}: pad='same' requires odd filter sizes, got filter_size={self.filter_size!r}"
                )
            self.pad = (0, 0) if pad == "valid" else pad
        else:
            self.pad = _int_pair(where, "pad", pad, 0)
        out_rows, out_cols = self.output_shape[2:]
        if (out_rows is not None and out_rows < 1) or (out_cols is not None and out_cols < 1):
            raise ValueError(
                f"{where}: input shape {self.input_shape!r} with pad {self.pad!r} is smaller than "
                f"filter_size {self.filter_size!r}"
            )
        channels = self.input_shape[1]
        if channels is None:
            raise ValueError(
                f"{where}: the number of input channels must be known, got input_shape={self.input_shape!r}"
            )
        self.W = self.add_param(W, (self.num_filters, channels, *self.filter_size), name="W")
        if b is None:
            self.b = None
        else:
            if self.untie_biases:
                if out_rows is None or out_cols is None:
                    raise ValueError(
                        f"{where}: untie_biases=True needs known input rows and cols, got "
                        f"input_shape={self.input_shape!r}"
                    )
                biases_shape = (self.num_filters, out_rows, out_cols)
            else:
                biases_shape = (self.num_filters,)
            self.b = self.add_param(b, biases_shape, name="b", regularizable=False)

    @property
    def resolved_pad(self) -> tuple[int, int]:
        """The padding as integers per spatial axis (``'same'``, ``'full'`` resolved)."""
        if self.pad == "same":
            return tuple(k // 2 for k in self.filter_size)
        if self.pad == "full":
            return tuple(k - 1 for k in self.filter_size)
        return tuple(self.pad)

    def get_output_shape_for(self, input_shape):
        """Return ``(batch, num_filters, out_rows, out_cols)``."""
        pad = self.resolved_pad
        spatial = tuple(
            conv_output_length(input_shape[2 + i], self.filter_size[i], self.stride[i], pad[i])
            for i in range(2)
        )
        return (input_shape[0], self.num_filters, *spatial)

    def convolve(self, input, **kwargs):
        """Return the convolution of ``input`` with the filters (no bias, no nonlinearity).

        The result carries the static shape the layer knows (``num_filters`` and,
        when the input rows and cols are declared, the output rows and cols), so
        that shape arithmetic downstream folds to constants, which JAX needs.
        """
        conved = conv2d(input, self.W, self.stride, self.resolved_pad, self.flip_filters)
        return pt.specify_shape(conved, (None, *self.output_shape[1:]))

    def get_output_for(self, input, **kwargs):
        """Return ``nonlinearity(convolve(input) + b)``."""
        if input.ndim != 4:
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: expected a 4-dimensional input, got ndim={input.ndim}"
            )
        conved = self.convolve(input, **kwargs)
        if self.b is None:
            activation = conved
        elif self.untie_biases:
            activation = conved + pt.shape_padleft(self.b, 1)
        else:
            activation = conved + self.b.dimshuffle("x", 0, "x", "x")
        return self.nonlinearity(activation)

"""The fully connected layer and its per-position form, NIN (``lasagne.layers.dense``).

Examples
--------
>>> from bntrain.nn.layers import InputLayer, DenseLayer
>>> l_in = InputLayer((None, 3, 4))
>>> DenseLayer(l_in, num_units=10).output_shape
(None, 10)
>>> DenseLayer(l_in, num_units=10, num_leading_axes=2).output_shape
(None, 3, 10)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytensor.tensor as pt

from .. import init, nonlinearities, utils
from .base import Layer
from .special import _check_kwargs, _label, _nonlinearity, _positive_int

__all__ = ["DenseLayer", "NINLayer"]


class DenseLayer(Layer):
    """A fully connected layer: ``nonlinearity(dot(input, W) + b)``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    num_units : int
        The number of output units.
    W : initializer, array or shared variable
        The weights, of shape ``(num_inputs, num_units)`` where ``num_inputs``
        is the product of the input sizes after the leading axes.
    b : initializer, array, shared variable or None
        The biases, of shape ``(num_units,)``; ``None`` for no bias.
    nonlinearity : callable or None
        Applied to the affine output; ``None`` means the identity.
    num_leading_axes : int
        How many leading axes are kept (and treated as independent samples);
        the remaining trailing axes are flattened into the dot product.  A
        negative value counts trailing axes instead: ``-1`` always takes the
        dot product over the last axis only.
    **kwargs
        ``name``.

    Notes
    -----
    ``W`` is tagged ``trainable`` and ``regularizable``; ``b`` is tagged
    ``trainable`` only.
    """

    def __init__(
        self,
        incoming,
        num_units: int,
        W=init.GlorotUniform(),  # noqa: B008  (Lasagne's signature)
        b=init.Constant(0.0),  # noqa: B008
        nonlinearity: Callable | None = nonlinearities.rectify,
        num_leading_axes: int = 1,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        self.nonlinearity = _nonlinearity(where, nonlinearity)
        self.num_units = _positive_int(where, "num_units", num_units)
        if isinstance(num_leading_axes, bool) or not isinstance(num_leading_axes, utils.int_types):
            raise TypeError(f"{where}: num_leading_axes must be an int, got {num_leading_axes!r}")
        ndim = len(self.input_shape)
        if num_leading_axes >= ndim:
            raise ValueError(
                f"{where}: num_leading_axes={num_leading_axes} for a {ndim}-dimensional input "
                f"leaves no trailing axes for the dot product (leaving no trailing axes)"
            )
        if num_leading_axes < -ndim:
            raise ValueError(
                f"{where}: num_leading_axes={num_leading_axes} for a {ndim}-dimensional input "
                f"asks for more trailing axes than the input has (requesting more trailing axes)"
            )
        self.num_leading_axes = int(num_leading_axes)
        trailing = self.input_shape[self.num_leading_axes :]
        if any(s is None for s in trailing):
            raise ValueError(
                f"{where}: requires a fixed input shape: the sizes after the leading axes must be known, got "
                f"input_shape={self.input_shape!r} with num_leading_axes={num_leading_axes}"
            )
        num_inputs = int(np.prod(trailing))
        self.W = self.add_param(W, (num_inputs, self.num_units), name="W")
        if b is None:
            self.b = None
        else:
            self.b = self.add_param(b, (self.num_units,), name="b", regularizable=False)

    def get_output_shape_for(self, input_shape):
        """Return the leading input sizes followed by ``num_units``."""
        return tuple(input_shape[: self.num_leading_axes]) + (self.num_units,)

    def get_output_for(self, input, **kwargs):
        """Return ``nonlinearity(dot(input, W) + b)`` over the trailing axes."""
        leading = self.num_leading_axes
        if leading < 0:
            leading += input.ndim
        if input.ndim > leading + 1:
            input = input.flatten(leading + 1)
        activation = pt.dot(input, self.W)
        if self.b is not None:
            activation = activation + self.b
        return self.nonlinearity(activation)


class NINLayer(Layer):
    """Network-in-network: a dense layer applied across channels at every position.

    A 1x1 convolution: for an input ``(batch, channels, ...)`` the output is
    ``nonlinearity(sum_c input[:, c, ...] * W[c, :] + b)`` of shape
    ``(batch, num_units, ...)``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape (axis 1
        must have a known size).
    num_units : int
        The number of output channels.
    untie_biases : bool
        One bias per unit and position (shape ``(num_units,) + input_shape[2:]``)
        instead of one per unit.
    W : initializer, array or shared variable
        The weights, of shape ``(input_shape[1], num_units)``.
    b : initializer, array, shared variable or None
        The biases; ``None`` for no bias.
    nonlinearity : callable or None
        Applied to the output; ``None`` means the identity.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        num_units: int,
        untie_biases: bool = False,
        W=init.GlorotUniform(),  # noqa: B008  (Lasagne's signature)
        b=init.Constant(0.0),  # noqa: B008
        nonlinearity: Callable | None = nonlinearities.rectify,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        self.nonlinearity = nonlinearities.identity if nonlinearity is None else nonlinearity
        self.num_units = num_units
        self.untie_biases = untie_biases
        num_input_channels = self.input_shape[1]
        self.W = self.add_param(W, (num_input_channels, num_units), name="W")
        if b is None:
            self.b = None
        else:
            shape = (num_units,) + tuple(self.input_shape[2:]) if untie_biases else (num_units,)
            self.b = self.add_param(b, shape, name="b", regularizable=False)

    def get_output_shape_for(self, input_shape):
        return (input_shape[0], self.num_units) + tuple(input_shape[2:])

    def get_output_for(self, input, **kwargs):
        """Return ``nonlinearity`` of the per-position dot product plus bias."""
        out_r = pt.tensordot(self.W, input, axes=[[0], [1]])  # (units, batch, ...)
        remaining = range(2, input.ndim)
        out = out_r.dimshuffle(1, 0, *remaining)
        if self.b is not None:
            if self.untie_biases:
                out = out + self.b.dimshuffle("x", *range(self.b.ndim))
            else:
                out = out + self.b.dimshuffle("x", 0, *(["x"] * len(remaining)))
        return self.nonlinearity(out)

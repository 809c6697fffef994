"""Normalization without batch statistics (part of ``lasagne.layers.normalization``).

:class:`StandardizationLayer` standardizes each example on its own, over
some axes; :func:`instance_norm` and :func:`layer_norm` stack it with a
learned scale and bias; :class:`LocalResponseNormalization2DLayer` divides
by the energy of neighbouring channels.  None of them has state to update.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from .. import nonlinearities, utils
from .base import Layer
from .special import BiasLayer, NonlinearityLayer, ScaleLayer, _check_kwargs, _label

__all__ = [
    "StandardizationLayer",
    "instance_norm",
    "layer_norm",
    "LocalResponseNormalization2DLayer",
]


class StandardizationLayer(Layer):
    """Standardize each example: ``(x - mean) / sqrt(var + epsilon)`` over ``axes``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    axes : 'auto', 'spatial', 'features', int or tuple of int
        The axes the mean and variance are taken over.  ``'spatial'``: axes 2
        and up (instance normalization); ``'features'``: axes 1 and up (layer
        normalization); ``'auto'``: ``'spatial'`` for inputs of more than two
        dimensions, ``'features'`` otherwise.
    epsilon : float
        Added to the variance.
    **kwargs
        ``name``.
    """

    def __init__(self, incoming, axes="auto", epsilon=1e-4, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        ndim = len(self.input_shape)
        if axes == "auto":
            axes = "spatial" if ndim > 2 else "features"
        if axes == "spatial":
            axes = tuple(range(2, ndim))
        elif axes == "features":
            axes = tuple(range(1, ndim))
        elif isinstance(axes, utils.int_types):
            axes = (axes,)
        elif isinstance(axes, str):
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: axes must be 'auto', 'spatial', "
                f"'features', an int or a tuple of ints, got {axes!r}"
            )
        self.axes = tuple(axes)
        self.epsilon = epsilon

    def get_output_for(self, input, **kwargs):
        """Return the standardized input."""
        mean = input.mean(self.axes, keepdims=True)
        var = input.var(self.axes, keepdims=True)
        eps = np.asarray(self.epsilon, dtype=input.dtype)
        return (input - mean) / pt.sqrt(var + eps)


def _stack(layer, axes, suffix, learn_scale, learn_bias, **kwargs):
    """Standardization, scale, bias and the layer's own nonlinearity on top of ``layer``."""
    nonlinearity = getattr(layer, "nonlinearity", None)
    if nonlinearity is not None:
        layer.nonlinearity = nonlinearities.identity
    bias = getattr(layer, "b", None)
    if bias is not None:  # redundant with the new bias (or removed by the standardization)
        layer.params.pop(bias, None)
        layer.b = None
    name = kwargs.pop("name", None)
    if name is None and getattr(layer, "name", None):
        name = layer.name + suffix

    def named(part):
        return f"{name}_{part}" if name else None

    top = StandardizationLayer(layer, axes=axes, name=name, **kwargs)
    if learn_scale:
        top = ScaleLayer(top, shared_axes="auto", name=named("scale"))
    if learn_bias:
        top = BiasLayer(top, shared_axes="auto", name=named("bias"))
    if nonlinearity is not None:
        top = NonlinearityLayer(top, nonlinearity, name=named("nonlin"))
    return top


def instance_norm(layer, learn_scale=True, learn_bias=True, **kwargs) -> Layer:
    """Instance normalization (Ulyanov et al., 2016) after ``layer``.

    Each example's channels are standardized over their spatial axes, then
    scaled and shifted per channel (if ``learn_scale``/``learn_bias``); the
    layer's nonlinearity moves on top and its bias is removed.  Layers are
    named ``<name>_scale``, ``_bias``, ``_nonlin`` after ``name`` (default:
    the layer's name plus ``_in``).

    Parameters
    ----------
    layer : Layer
        The layer to normalize the output of (modified in place).
    learn_scale, learn_bias : bool
        Add a :class:`ScaleLayer` / :class:`BiasLayer`.
    **kwargs
        ``name``, ``epsilon``: passed to :class:`StandardizationLayer`.

    Returns
    -------
    Layer
        The top of the new stack.
    """
    return _stack(layer, "spatial", "_in", learn_scale, learn_bias, **kwargs)


def layer_norm(layer, **kwargs) -> Layer:
    """Layer normalization (Ba et al., 2016) after ``layer``.

    Each example is standardized over all its axes but the first, then scaled
    and shifted per channel; the layer's nonlinearity moves on top and its
    bias is removed.  Names as for :func:`instance_norm`, with ``_ln``.

    Parameters
    ----------
    layer : Layer
        The layer to normalize the output of (modified in place).
    **kwargs
        ``name``, ``epsilon``: passed to :class:`StandardizationLayer`.
    """
    return _stack(layer, "features", "_ln", True, True, **kwargs)


class LocalResponseNormalization2DLayer(Layer):
    """Cross-channel local response normalization of 4D ``(batch, channel, row, col)`` input.

    ``out[:, c] = x[:, c] / (k + alpha * sum_{|c' - c| <= n // 2} x[:, c']**2) ** beta``
    (Krizhevsky et al., 2012; ``alpha`` is not divided by ``n``).

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    alpha, k, beta : float
        The coefficients of the formula above.
    n : int
        The number of channels summed over; must be odd.
    **kwargs
        ``name``.

    Raises
    ------
    NotImplementedError
        If ``n`` is even (as in Lasagne).
    """

    def __init__(self, incoming, alpha=1e-4, k=2, beta=0.75, n=5, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        if n % 2 == 0:
            raise NotImplementedError(
                f"{_label(type(self).__name__, self.name)}: only odd n is supported, got n={n}"
            )
        if len(self.input_shape) != 4:
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: needs a 4D input, got "
                f"input_shape={self.input_shape!r}"
            )
        self.alpha, self.k, self.beta, self.n = alpha, k, beta, n

    def get_output_for(self, input, **kwargs):
        """Return the normalized input."""
        half = self.n // 2
        channels = input.shape[1]
        sqr = pt.pad(pt.sqr(input), [(0, 0), (half, half), (0, 0), (0, 0)])
        dtype = input.dtype
        total = sqr[:, 0:channels]
        for i in range(1, self.n):
            total = total + sqr[:, i : i + channels]
        scale = np.asarray(self.k, dtype) + np.asarray(self.alpha, dtype) * total
        return input / scale ** np.asarray(self.beta, dtype)

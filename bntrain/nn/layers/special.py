"""Element-wise and custom layers (``lasagne.layers.special``).

A nonlinearity, a bias, a scale, learned and randomized leaky rectifiers, a
layer applying a given expression, and the inverse of another layer.

Examples
--------
>>> from bntrain.nn.layers import InputLayer, BiasLayer, ScaleLayer
>>> l_in = InputLayer((None, 3, 8, 8))
>>> ScaleLayer(BiasLayer(l_in)).output_shape
(None, 3, 8, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

from .. import init, nonlinearities, utils
from .._default_updates import draw
from .base import Layer, MergeLayer

__all__ = [
    "NonlinearityLayer",
    "BiasLayer",
    "ScaleLayer",
    "standardize",
    "ExpressionLayer",
    "InverseLayer",
    "ParametricRectifierLayer",
    "prelu",
    "RandomizedRectifierLayer",
    "rrelu",
]


def _label(cls_name: str, name) -> str:
    """Describe a layer for error messages: its class and its ``name``."""
    return f"{cls_name}(name={name!r})"


def _nonlinearity(where: str, fn) -> Callable:
    """A layer's ``nonlinearity`` argument: ``None`` is the identity, anything else must be callable."""
    if fn is None:
        return nonlinearities.identity
    if not callable(fn):
        raise TypeError(f"{where}: nonlinearity must be callable or None, got {fn!r}")
    return fn


def _positive_int(where: str, what: str, value) -> int:
    """``value`` (a size such as ``num_units``) as a positive int, or an error naming the layer."""
    if isinstance(value, bool) or not isinstance(value, utils.int_types):
        raise TypeError(f"{where}: {what} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{where}: {what} must be positive, got {value!r}")
    return int(value)


def _check_kwargs(cls_name: str, kwargs: dict, accepted=("name",)) -> None:
    """Raise a TypeError naming the layer for keyword arguments the base layer does not accept."""
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        where = _label(cls_name, kwargs.get("name"))
        hints = ", ".join(f"{k!r}{utils.close_matches(k, accepted)}" for k in unknown)
        raise TypeError(f"{where}: unexpected keyword argument(s) {hints}")


def _resolve_shared_axes(layer: Layer, shared_axes) -> tuple[int, ...]:
    """Turn ``shared_axes`` ('auto', an int or a sequence of ints) into sorted non-negative axes."""
    ndim = len(layer.input_shape)
    where = _label(type(layer).__name__, layer.name)
    if isinstance(shared_axes, str):
        if shared_axes == "all":
            return tuple(range(ndim))
        if shared_axes != "auto":
            raise ValueError(
                f"{where}: shared_axes must be 'auto', 'all', an int or ints, got {shared_axes!r}"
            )
        return (0, *range(2, ndim)) if ndim > 0 else ()
    axes = (shared_axes,) if isinstance(shared_axes, utils.int_types) else tuple(shared_axes)
    result = []
    for axis in axes:
        if not isinstance(axis, utils.int_types) or not -ndim <= axis < ndim:
            raise ValueError(
                f"{where}: shared_axes={shared_axes!r} contains {axis!r}, which is not an axis "
                f"of a {ndim}-dimensional input"
            )
        result.append(int(axis) % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"{where}: shared_axes={shared_axes!r} names an axis twice")
    return tuple(sorted(result))


def _param_shape(layer: Layer, what: str) -> tuple[int, ...]:
    """The shape of a per-unit parameter: the input sizes along the axes not shared."""
    shape = tuple(s for axis, s in enumerate(layer.input_shape) if axis not in layer.shared_axes)
    if any(s is None for s in shape):
        where = _label(type(layer).__name__, layer.name)
        raise ValueError(
            f"{where}: input_shape={layer.input_shape!r} has an unknown (None) size on an axis the "
            f"{what} is not shared over (shared_axes={layer.shared_axes!r}): it needs specified "
            f"input sizes there; give that size or add the axis to shared_axes"
        )
    return shape


def _broadcast_to_input(param, shared_axes: tuple[int, ...], ndim: int):
    """Dimshuffle a parameter so that it broadcasts along ``shared_axes`` of an ndim input."""
    own_axes = iter(range(param.ndim))
    pattern = ["x" if axis in shared_axes else next(own_axes) for axis in range(ndim)]
    return param.dimshuffle(*pattern)


class NonlinearityLayer(Layer):
    """Apply a nonlinearity to its input, element-wise (or row-wise for softmax).

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    nonlinearity : callable or None
        The function to apply; ``None`` means the identity.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        nonlinearity: Callable | None = nonlinearities.rectify,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        # not checked for callability: batch_norm() and friends move a layer's nonlinearity
        # here whatever it is, as Lasagne did
        self.nonlinearity = nonlinearities.identity if nonlinearity is None else nonlinearity

    def get_output_for(self, input, **kwargs):
        """Return ``nonlinearity(input)``."""
        return self.nonlinearity(input)


class BiasLayer(Layer):
    """Add a learned bias, shared over some axes (per channel by default).

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    b : initializer, array, shared variable or None
        The bias; its shape is the input shape without the shared axes.
        ``None`` makes the layer an identity with no parameter.
    shared_axes : 'auto', int or tuple of int
        Axes the bias is shared (broadcast) over.  ``'auto'`` shares over
        every axis but axis 1: one bias per unit or per channel.
    **kwargs
        ``name``.

    Notes
    -----
    ``b`` is tagged ``trainable`` but not ``regularizable``.
    """

    def __init__(
        self,
        incoming,
        b=init.Constant(0),  # noqa: B008  (Lasagne's signature)
        shared_axes: str | int | Sequence[int] = "auto",
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        self.shared_axes = _resolve_shared_axes(self, shared_axes)
        if b is None:
            self.b = None
        else:
            shape = _param_shape(self, "bias")
            self.b = self.add_param(b, shape, "b", regularizable=False)

    def get_output_for(self, input, **kwargs):
        """Return ``input + b``, ``b`` broadcast along the shared axes."""
        if self.b is None:
            return input
        return input + _broadcast_to_input(self.b, self.shared_axes, input.ndim)


class ScaleLayer(Layer):
    """Multiply by a learned scale, shared over some axes (per channel by default).

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    scales : initializer, array or shared variable
        The scale; its shape is the input shape without the shared axes.
    shared_axes : 'auto', int or tuple of int
        Axes the scale is shared (broadcast) over; ``'auto'`` shares over
        every axis but axis 1.
    **kwargs
        ``name``.

    Notes
    -----
    ``scales`` is tagged ``trainable`` but not ``regularizable``.
    """

    def __init__(
        self,
        incoming,
        scales=init.Constant(1),  # noqa: B008  (Lasagne's signature)
        shared_axes: str | int | Sequence[int] = "auto",
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        self.shared_axes = _resolve_shared_axes(self, shared_axes)
        shape = _param_shape(self, "scales")
        self.scales = self.add_param(scales, shape, "scales", regularizable=False)

    def get_output_for(self, input, **kwargs):
        """Return ``input * scales``, ``scales`` broadcast along the shared axes."""
        return input * _broadcast_to_input(self.scales, self.shared_axes, input.ndim)


def standardize(layer, offset, scale, shared_axes="auto") -> ScaleLayer:
    """Standardize inputs with a fixed ``offset`` and ``scale``: ``(x - offset) / scale``.

    Adds a :class:`BiasLayer` with ``b = -offset`` and a :class:`ScaleLayer`
    with ``scales = 1 / scale``, neither trainable.

    Parameters
    ----------
    layer : Layer or tuple
        The layer (or input shape) to standardize the output of.
    offset, scale : array, shared variable or expression
        Shaped like the input without ``shared_axes``.
    shared_axes : 'auto', 'all', int or tuple of int
        As for :class:`BiasLayer`.

    Returns
    -------
    ScaleLayer
        The top of the two new layers.
    """
    layer = BiasLayer(layer, -offset, shared_axes)
    layer.params[layer.b].remove("trainable")
    layer = ScaleLayer(layer, 1 / scale, shared_axes)
    layer.params[layer.scales].remove("trainable")
    return layer


class ExpressionLayer(Layer):
    """Apply ``function`` to the input: a custom layer without a class.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    function : callable
        Takes the input expression, returns the output expression.
    output_shape : None, tuple, callable or 'auto'
        ``None``: the input shape; a tuple: that shape; a callable: called
        with the input shape; ``'auto'``: found by applying ``function`` to
        zeros of the input shape (unknown sizes stay unknown if the output
        depends on them).
    **kwargs
        ``name``.

    Examples
    --------
    >>> from bntrain.nn.layers import InputLayer
    >>> ExpressionLayer(InputLayer((None, 4)), lambda x: x[:, ::2], "auto").output_shape
    (None, 2)
    """

    def __init__(self, incoming, function: Callable, output_shape=None, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        if output_shape is None or output_shape == "auto" or callable(output_shape):
            self._output_shape = output_shape
        else:
            self._output_shape = tuple(output_shape)
        self.function = function

    def get_output_shape_for(self, input_shape):
        if self._output_shape is None:
            return input_shape
        if isinstance(self._output_shape, str):  # "auto"
            shapes = []
            for fill in (2, 3):  # a size that changes with an unknown input size is unknown
                zeros = pt.zeros(tuple(fill if s is None else s for s in input_shape))
                shapes.append(tuple(int(s) for s in self.function(zeros).shape.eval()))
            return tuple(a if a == b else None for a, b in zip(*shapes, strict=True))
        if callable(self._output_shape):
            return tuple(self._output_shape(input_shape))
        return self._output_shape

    def get_output_for(self, input, **kwargs):
        """Return ``function(input)``."""
        return self.function(input)


class InverseLayer(MergeLayer):
    """The inverse of ``layer``: the gradient of its output with respect to its input.

    Applied to something shaped like ``layer``'s output, returns something
    shaped like its input: a dense layer becomes its transpose, a convolution
    a transposed convolution, max-pooling an unpooling that puts each value
    back where the maximum was (for the input ``layer`` saw).

    Parameters
    ----------
    incoming : Layer or tuple
        What to invert, shaped like ``layer``'s output.
    layer : Layer
        The layer to invert; its input layer is used as well.
    **kwargs
        ``name``.
    """

    def __init__(self, incoming, layer: Layer, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__([incoming, layer, layer.input_layer], **kwargs)

    def get_output_shape_for(self, input_shapes):
        return input_shapes[2]

    def get_output_for(self, inputs, **kwargs):
        """Return ``grad(layer_out, layer_in, known_grads={layer_out: input})``."""
        input, layer_out, layer_in = inputs
        return pytensor.grad(None, wrt=layer_in, known_grads={layer_out: input})


def _leaky(input, slope):
    """``max(x, 0) + slope * min(x, 0)``."""
    return pt.maximum(input, 0) + slope * pt.minimum(input, 0)


def _moved_nonlinearity(layer):
    """Set ``layer``'s nonlinearity (if any) to the identity, returning the old one."""
    nonlinearity = getattr(layer, "nonlinearity", None)
    if nonlinearity is not None:
        layer.nonlinearity = nonlinearities.identity
    return nonlinearity


class ParametricRectifierLayer(Layer):
    """A leaky rectifier with a learned slope: ``max(x, 0) + alpha * min(x, 0)``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    alpha : initializer, array, shared variable or expression
        The slopes for negative inputs; shaped like the input without
        ``shared_axes``.  Trainable, not regularizable.
    shared_axes : 'auto', 'all', int or tuple of int
        Axes sharing one slope; ``'auto'``: all but axis 1 (a slope per
        channel), ``'all'``: one slope.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        alpha=init.Constant(0.25),  # noqa: B008  (Lasagne's signature)
        shared_axes="auto",
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        self.shared_axes = _resolve_shared_axes(self, shared_axes)
        shape = _param_shape(self, "alpha")
        self.alpha = self.add_param(alpha, shape, "alpha", regularizable=False)

    def get_output_for(self, input, **kwargs):
        """Return the leaky rectifier of ``input`` with the learned slopes."""
        return _leaky(input, _broadcast_to_input(self.alpha, self.shared_axes, input.ndim))


def prelu(layer, **kwargs) -> ParametricRectifierLayer:
    """Move ``layer``'s nonlinearity out and put a :class:`ParametricRectifierLayer` on top."""
    _moved_nonlinearity(layer)
    return ParametricRectifierLayer(layer, **kwargs)


class RandomizedRectifierLayer(Layer):
    """A leaky rectifier whose slopes are drawn at random in training (Xu et al., 2015).

    In training each slope is drawn uniformly from ``[lower, upper]``; with
    ``deterministic=True`` (or ``lower == upper``) it is ``(lower + upper) / 2``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    lower, upper : float
        The range of the slopes, ``0 <= lower <= upper < 1``.
    shared_axes : 'auto', 'all', int or tuple of int
        Axes sharing one random slope; ``'auto'``: all but axis 1.
    rng : int, numpy.random.Generator, numpy.random.RandomState or None
        Seeds the layer's own generator as for
        :class:`~bntrain.nn.layers.DropoutLayer` (an extension over Lasagne).
    **kwargs
        ``name``.

    Raises
    ------
    ValueError
        If the range is not ``0 <= lower <= upper < 1``.
    """

    def __init__(self, incoming, lower=0.3, upper=0.8, shared_axes="auto", rng=None, **kwargs):
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        if not 0 <= lower <= upper < 1:
            raise ValueError(
                f"{where}: need 0 <= lower <= upper < 1, got lower={lower!r}, upper={upper!r}"
            )
        self.lower, self.upper = lower, upper
        self.shared_axes = _resolve_shared_axes(self, shared_axes)
        self.rng = _layer_generator(where, self.name, rng)

    def get_output_for(self, input, deterministic=False, collect_updates=None, **kwargs):
        """Return the leaky rectifier of ``input`` with random (or mean) slopes."""
        if deterministic or self.upper == self.lower:
            return _leaky(input, np.asarray((self.lower + self.upper) / 2, dtype=input.dtype))
        size = tuple(1 if a in self.shared_axes else input.shape[a] for a in range(input.ndim))
        slope = draw(
            self.rng,
            collect_updates,
            pt.random.uniform,
            np.asarray(self.lower, dtype=input.dtype),
            np.asarray(self.upper, dtype=input.dtype),
            size=size,
        )
        if self.shared_axes:
            slope = pt.specify_broadcastable(slope, *self.shared_axes)
        return _leaky(input, pt.cast(slope, input.dtype))


def rrelu(layer, **kwargs) -> RandomizedRectifierLayer:
    """Move ``layer``'s nonlinearity out and put a :class:`RandomizedRectifierLayer` on top."""
    _moved_nonlinearity(layer)
    return RandomizedRectifierLayer(layer, **kwargs)


def _layer_generator(where: str, name, rng):
    """A layer's own shared generator, seeded from ``rng`` (see DropoutLayer)."""
    from .. import random

    if rng is None:
        seed = _draw_seed(random.get_rng())
    elif isinstance(rng, np.random.Generator | np.random.RandomState):
        seed = _draw_seed(rng)
    elif isinstance(rng, utils.int_types) and not isinstance(rng, bool) and rng >= 0:
        seed = int(rng)
    else:
        raise TypeError(
            f"{where}: rng must be a non-negative int seed, a numpy.random.Generator, "
            f"a RandomState or None, got {rng!r}"
        )
    return pytensor.shared(np.random.default_rng(seed), name=f"{name or 'layer'}.rng")


def _draw_seed(gen) -> int:
    """Draw a seed for a layer's own generator from a NumPy Generator or RandomState."""
    if isinstance(gen, np.random.RandomState):
        return int(gen.randint(0, 2**31 - 1))
    return int(gen.integers(0, 2**63 - 1))

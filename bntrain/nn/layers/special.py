"""Element-wise layers: a nonlinearity, a bias, a scale (``lasagne.layers.special``).

Examples
--------
>>> from bntrain.nn.layers import InputLayer, BiasLayer, ScaleLayer
>>> l_in = InputLayer((None, 3, 8, 8))
>>> ScaleLayer(BiasLayer(l_in)).output_shape
(None, 3, 8, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .. import init, nonlinearities, utils
from .base import Layer

__all__ = ["NonlinearityLayer", "BiasLayer", "ScaleLayer"]


def _label(cls_name: str, name) -> str:
    """Describe a layer for error messages: its class and its ``name``."""
    return f"{cls_name}(name={name!r})"


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
        if shared_axes != "auto":
            raise ValueError(
                f"{where}: shared_axes must be 'auto', an int or ints, got {shared_axes!r}"
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
            f"{what} is not shared over (shared_axes={layer.shared_axes!r}); give that size or "
            f"add the axis to shared_axes"
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
        if nonlinearity is None:
            nonlinearity = nonlinearities.identity
        if not callable(nonlinearity):
            raise TypeError(
                f"{_label(type(self).__name__, self.name)}: nonlinearity must be callable or None, "
                f"got {nonlinearity!r}"
            )
        self.nonlinearity = nonlinearity

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

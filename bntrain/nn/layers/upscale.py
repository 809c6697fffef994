"""Upscaling and feature pooling (part of ``lasagne.layers.pool``).

:class:`Upscale1DLayer`, :class:`Upscale2DLayer` and :class:`Upscale3DLayer`
enlarge the trailing (spatial) axes by an integer factor; :class:`FeaturePoolLayer`
pools groups of neighbouring features (maxout); :class:`FeatureWTALayer` keeps
the largest feature of each group and zeroes the others.

Examples
--------
>>> from bntrain.nn.layers import InputLayer
>>> Upscale2DLayer(InputLayer((None, 3, 4, 5)), (2, 3)).output_shape
(None, 3, 8, 15)
>>> FeaturePoolLayer(InputLayer((None, 12)), 4).output_shape
(None, 3)
"""

from __future__ import annotations

import pytensor.tensor as pt

from .. import utils
from .base import Layer
from .special import _check_kwargs, _label

__all__ = [
    "Upscale1DLayer",
    "Upscale2DLayer",
    "Upscale3DLayer",
    "FeaturePoolLayer",
    "FeatureWTALayer",
]


class _UpscaleLayer(Layer):
    """Upscale the last ``n_dims`` axes by integer factors."""

    n_dims = 0

    def __init__(self, incoming, scale_factor, mode="repeat", **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        self.scale_factor = utils.as_tuple(scale_factor, self.n_dims, utils.int_types)
        if any(f < 1 for f in self.scale_factor):
            raise ValueError(f"{where}: scale_factor must be >= 1, got {scale_factor!r}")
        if mode not in ("repeat", "dilate"):
            raise ValueError(f"{where}: mode must be 'repeat' or 'dilate', got {mode!r}")
        self.mode = mode

    def get_output_shape_for(self, input_shape):
        shape = list(input_shape)
        first = len(shape) - self.n_dims
        for i, factor in enumerate(self.scale_factor):
            if shape[first + i] is not None:
                shape[first + i] *= factor
        return tuple(shape)

    def get_output_for(self, input, **kwargs):
        """Return the upscaled input: values repeated, or spread out with zeros between."""
        first = input.ndim - self.n_dims
        if self.mode == "repeat":
            out = input
            for i, factor in enumerate(self.scale_factor):
                if factor > 1:
                    out = pt.repeat(out, factor, axis=first + i)
            return out
        shape = [input.shape[a] for a in range(input.ndim)]
        for i, factor in enumerate(self.scale_factor):
            shape[first + i] = shape[first + i] * factor
        spread = (slice(None),) * first + tuple(slice(None, None, f) for f in self.scale_factor)
        return pt.set_subtensor(pt.zeros(shape, dtype=input.dtype)[spread], input)


class Upscale1DLayer(_UpscaleLayer):
    """Upscale the last axis by ``scale_factor`` (an int).

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    scale_factor : int or 1-tuple of int
        The factor, >= 1.
    mode : 'repeat' or 'dilate'
        Repeat each value, or place it at every ``scale_factor``-th position
        with zeros in between.
    **kwargs
        ``name``.
    """

    n_dims = 1


class Upscale2DLayer(_UpscaleLayer):
    """Upscale the last two axes by ``scale_factor`` (an int or two); see :class:`Upscale1DLayer`."""

    n_dims = 2


class Upscale3DLayer(_UpscaleLayer):
    """Upscale the last three axes by ``scale_factor`` (an int or three); see :class:`Upscale1DLayer`."""

    n_dims = 3


def _grouped_shape(layer, input, axis: int, pool_size: int):
    """``input``'s shape with ``axis`` split into ``(size // pool_size, pool_size)``."""
    shape = [input.shape[a] for a in range(input.ndim)]
    return shape[:axis] + [shape[axis] // pool_size, pool_size] + shape[axis + 1 :]


class FeaturePoolLayer(Layer):
    """Pool each group of ``pool_size`` neighbouring features along ``axis`` (maxout).

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    pool_size : int
        The size of each group; must divide the size of ``axis``.
    axis : int
        The axis to pool along.
    pool_function : callable
        Reduces an axis: called as ``pool_function(x, axis=...)`` (default:
        the maximum).
    **kwargs
        ``name``.

    Raises
    ------
    ValueError
        If ``pool_size`` does not divide the size of ``axis``.
    """

    def __init__(self, incoming, pool_size, axis=1, pool_function=pt.max, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        self.pool_size = pool_size
        self.axis = axis
        self.pool_function = pool_function
        n = self.input_shape[axis]
        if n is not None and n % pool_size != 0:
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: the number of input channels "
                f"({n}) along axis {axis} must be a multiple of pool_size={pool_size}"
            )

    def get_output_shape_for(self, input_shape):
        shape = list(input_shape)
        if shape[self.axis] is not None:
            shape[self.axis] //= self.pool_size
        return tuple(shape)

    def get_output_for(self, input, **kwargs):
        """Return the pooled input."""
        axis = self.axis % input.ndim
        grouped = input.reshape(_grouped_shape(self, input, axis, self.pool_size))
        return self.pool_function(grouped, axis=axis + 1)


class FeatureWTALayer(Layer):
    """Winner take all: in each group of ``pool_size`` features keep the largest, zero the rest.

    Ties go to the first of the equal values.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    pool_size : int
        The size of each group; must divide the size of ``axis``.
    axis : int
        The axis the groups are formed along.
    **kwargs
        ``name``.
    """

    def __init__(self, incoming, pool_size, axis=1, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        self.pool_size = pool_size
        self.axis = axis
        n = self.input_shape[axis]
        if n is not None and n % pool_size != 0:
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: the number of input channels "
                f"({n}) along axis {axis} must be a multiple of pool_size={pool_size}"
            )

    def get_output_for(self, input, **kwargs):
        """Return ``input`` with all but each group's maximum set to zero."""
        axis = self.axis % input.ndim
        grouped = input.reshape(_grouped_shape(self, input, axis, self.pool_size))
        winner = pt.argmax(grouped, axis=axis + 1, keepdims=True)
        position = pt.arange(self.pool_size).reshape(
            [self.pool_size if a == axis + 1 else 1 for a in range(grouped.ndim)]
        )
        mask = pt.eq(winner, position).reshape(input.shape)
        return input * pt.cast(mask, input.dtype)

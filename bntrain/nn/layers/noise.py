"""Dropout (``lasagne.layers.noise``).

The random state lives in the layer, as a PyTensor shared variable holding a
:class:`numpy.random.Generator` (``layer.rng``), never in a package-global
stream.  ``get_output_for`` adds ``layer.rng -> next state`` to the updates it
is given (or, given none, hides it in the graph as Lasagne did), so a compiled
function draws a fresh mask on every call, and a checkpoint can save
``layer.rng.get_value().bit_generator.state``.

Examples
--------
>>> import pytensor
>>> from bntrain.nn.layers import InputLayer, DropoutLayer, get_output
>>> l_in = InputLayer((4, 5))
>>> l_drop = DropoutLayer(l_in, p=0.5, rng=42)
>>> out, updates = get_output(l_drop, return_updates=True)
>>> f = pytensor.function([l_in.input_var], out, updates=updates)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from .. import utils
from .._default_updates import draw
from .base import Layer
from .special import _check_kwargs, _label, _layer_generator

__all__ = [
    "DropoutLayer",
    "dropout",
    "dropout_channels",
    "spatial_dropout",
    "dropout_locations",
    "GaussianNoiseLayer",
]


class DropoutLayer(Layer):
    """Set input values to zero with probability ``p`` during training.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    p : float or scalar expression
        The probability of dropping a value, in ``[0, 1)`` (``1`` only with
        ``rescale=False``).
    rescale : bool
        Divide the kept values by ``1 - p`` so that the expected output equals
        the input (and ``deterministic=True`` needs no rescaling).
    shared_axes : tuple of int
        Axes along which the mask is shared (one draw broadcast over them),
        e.g. ``(2, 3)`` drops whole feature maps of a 4D input.
    rng : int, numpy.random.Generator, numpy.random.RandomState or None
        Where the layer's own generator comes from: an int is its seed; a
        generator gives it a seed (and advances); ``None`` draws the seed from
        :func:`bntrain.nn.random.get_rng`.
    **kwargs
        ``name``.

    Attributes
    ----------
    rng : SharedVariable
        The layer's generator state (a shared ``numpy.random.Generator``).

    Notes
    -----
    ``get_output_for(input, deterministic=True)`` (or ``p == 0``) returns the
    input unchanged.  Otherwise the mask is drawn from ``self.rng`` and, when
    the caller passes ``collect_updates`` (as ``get_output(...,
    return_updates=True)`` does), the update ``self.rng -> next state`` is
    added to it: pass those updates to ``pytensor.function`` or every call
    reuses the same mask.  Without ``collect_updates`` the update is hidden in
    the graph as Lasagne did (``default_update`` of a clone of ``self.rng``),
    and every compiled call draws a fresh mask by itself.  In JAX mode
    PyTensor compiles a private copy of the generator: successive calls still
    differ, but ``self.rng`` itself does not advance.
    """

    def __init__(
        self,
        incoming,
        p: float = 0.5,
        rescale: bool = True,
        shared_axes: Sequence[int] = (),
        rng=None,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        if not isinstance(p, Variable):
            if isinstance(p, bool) or not isinstance(p, utils.int_types + (float, np.floating)):
                raise TypeError(f"{where}: p must be a number or a scalar expression, got {p!r}")
            if not 0 <= p <= 1 or (p == 1 and rescale):
                raise ValueError(
                    f"{where}: p must be in [0, 1) (1 only with rescale=False), got p={p!r}"
                )
        elif p.ndim != 0:
            raise ValueError(f"{where}: p must be a scalar, got {p!r} with ndim={p.ndim}")
        self.p = p
        self.rescale = bool(rescale)
        ndim = len(self.input_shape)
        if isinstance(shared_axes, utils.int_types):
            shared_axes = (shared_axes,)
        axes = tuple(shared_axes)
        for axis in axes:
            if not isinstance(axis, utils.int_types) or not -ndim <= axis < ndim:
                raise ValueError(
                    f"{where}: shared_axes={axes!r} contains {axis!r}, which is not an axis of a "
                    f"{ndim}-dimensional input"
                )
        self.shared_axes = axes
        self.rng = _layer_generator(where, self.name or "dropout", rng)

    def get_output_for(self, input, deterministic: bool = False, collect_updates=None, **kwargs):
        """Return ``input * mask`` (rescaled), or ``input`` when deterministic.

        Parameters
        ----------
        input : TensorVariable
            The input.
        deterministic : bool
            If true, return the input unchanged.
        collect_updates : dict, optional
            Receives ``self.rng -> next generator state``.
        """
        if deterministic or (not isinstance(self.p, Variable) and self.p == 0):
            return input
        dtype = input.dtype
        if isinstance(self.p, Variable):
            retain = pt.cast(1 - self.p, dtype)
        else:
            retain = pt.constant(np.asarray(1 - self.p, dtype=dtype))
        shared = {a % input.ndim for a in self.shared_axes}
        static = input.type.shape
        mask_shape = tuple(
            1 if a in shared else (static[a] if static[a] is not None else input.shape[a])
            for a in range(input.ndim)
        )
        mask = pt.cast(
            draw(self.rng, collect_updates, pt.random.bernoulli, retain, size=mask_shape), dtype
        )
        if shared:
            mask = pt.specify_broadcastable(mask, *sorted(shared))
        if self.rescale:
            input = input / retain
        return input * mask


dropout = DropoutLayer


def dropout_channels(incoming, *args, **kwargs) -> DropoutLayer:
    """Dropout of whole channels: a :class:`DropoutLayer` sharing its mask over axes 2 and up."""
    shape = getattr(incoming, "output_shape", incoming)
    kwargs["shared_axes"] = tuple(range(2, len(shape)))
    return DropoutLayer(incoming, *args, **kwargs)


spatial_dropout = dropout_channels


def dropout_locations(incoming, *args, **kwargs) -> DropoutLayer:
    """Dropout of whole locations: a :class:`DropoutLayer` sharing its mask over axis 1."""
    kwargs["shared_axes"] = (1,)
    return DropoutLayer(incoming, *args, **kwargs)


class GaussianNoiseLayer(Layer):
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` during training.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    sigma : float or scalar expression
        The standard deviation of the noise.
    rng : int, numpy.random.Generator, numpy.random.RandomState or None
        Seeds the layer's own generator as for :class:`DropoutLayer`.
    **kwargs
        ``name``.

    Notes
    -----
    ``deterministic=True`` returns the input unchanged.  The generator's
    updates are handled as for :class:`DropoutLayer`.
    """

    def __init__(self, incoming, sigma=0.1, rng=None, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        self.sigma = sigma
        where = _label(type(self).__name__, self.name)
        self.rng = _layer_generator(where, self.name or "gaussian_noise", rng)

    def get_output_for(self, input, deterministic: bool = False, collect_updates=None, **kwargs):
        """Return ``input + noise``, or ``input`` when deterministic or ``sigma == 0``."""
        if deterministic or (not isinstance(self.sigma, Variable) and self.sigma == 0):
            return input
        sigma = pt.cast(self.sigma, input.dtype)
        noise = draw(self.rng, collect_updates, pt.random.normal, 0.0, sigma, size=input.shape)
        return input + pt.cast(noise, input.dtype)

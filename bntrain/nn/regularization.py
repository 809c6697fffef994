"""Weight penalties (mirrors ``lasagne.regularization``).

Plain L2 weight decay for SGD and momentum is a loss term::

    loss = loss + 1e-4 * regularize_network_params(network, l2)

(For AdamW's decoupled decay see :func:`bntrain.nn.updates.apply_weight_decay`.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from .layers import Layer, get_all_params

__all__ = [
    "l1",
    "l2",
    "apply_penalty",
    "regularize_layer_params",
    "regularize_layer_params_weighted",
    "regularize_network_params",
]


# Lasagne's default tag filter (shared default, never mutated: functions copy it).
_REGULARIZABLE = {"regularizable": True}


def l1(x):
    """L1 penalty: the sum of absolute values of ``x``."""
    return pt.sum(pt.abs(x))


def l2(x):
    """Squared L2 penalty: the sum of squares of ``x`` (no factor 1/2)."""
    return pt.sum(pt.sqr(x))


def apply_penalty(tensor_or_tensors, penalty: Callable, **kwargs):
    """Apply ``penalty`` to one tensor or sum it over several.

    Parameters
    ----------
    tensor_or_tensors : tensor or iterable of tensors
        The tensor(s) to penalize.
    penalty : callable
        Maps a tensor to a scalar expression (:func:`l1`, :func:`l2`).
    **kwargs
        Passed on to ``penalty``.

    Returns
    -------
    scalar tensor or int
        The penalty, or Python's ``sum`` of the penalties (``0 + p1 + p2 ...``, as in
        Lasagne); the Python int ``0`` for an empty list. Neither the int nor its
        ``0 +`` changes a float32 loss's dtype.
    """
    if isinstance(tensor_or_tensors, Variable | np.ndarray):
        return penalty(tensor_or_tensors, **kwargs)
    return sum(penalty(x, **kwargs) for x in tensor_or_tensors)


def regularize_layer_params(
    layer, penalty: Callable, tags: Mapping[str, bool] = _REGULARIZABLE, **kwargs
):
    """Penalize the parameters of one layer or a list of layers (not their inputs).

    Parameters
    ----------
    layer : Layer or iterable of Layer
        The layer(s) whose own parameters to penalize.
    penalty : callable
        The penalty (:func:`l1`, :func:`l2`).
    tags : dict, optional
        Parameter tag filter for ``layer.get_params``; default
        ``{'regularizable': True}`` (weights, not biases or batch-norm statistics).
    **kwargs
        Passed on to ``penalty``.
    """
    tags = dict(tags)
    layers = [layer] if isinstance(layer, Layer) else list(layer)
    params = []
    for lay in layers:
        params.extend(lay.get_params(**tags))
    return apply_penalty(params, penalty, **kwargs)


def regularize_layer_params_weighted(
    layers: Mapping, penalty: Callable, tags: Mapping[str, bool] = _REGULARIZABLE, **kwargs
):
    """Sum per-layer penalties, each scaled by its own coefficient.

    Parameters
    ----------
    layers : dict
        Maps each :class:`~bntrain.nn.layers.Layer` to its coefficient: a Python number
        (PyTensor makes a float a floatX constant), a NumPy scalar (taken as the Python
        number, so a ``np.float64`` does not turn a float32 loss into float64) or a
        scalar expression.
    penalty : callable
        The penalty (:func:`l1`, :func:`l2`).
    tags : dict, optional
        Parameter tag filter; default ``{'regularizable': True}``.
    **kwargs
        Passed on to ``penalty``.

    Returns
    -------
    scalar tensor or int
        ``sum(coeff * apply_penalty(params, penalty) ...)``, the graph Lasagne builds;
        the Python int ``0`` for no layers.
    """
    tags = dict(tags)
    return sum(
        _number(coeff) * apply_penalty(layer.get_params(**tags), penalty, **kwargs)
        for layer, coeff in layers.items()
    )


def _number(coeff):
    """A NumPy scalar or 0-d array as the Python number; anything else unchanged."""
    if isinstance(coeff, np.generic) or (isinstance(coeff, np.ndarray) and coeff.ndim == 0):
        return coeff.item()
    return coeff


def regularize_network_params(
    layer, penalty: Callable, tags: Mapping[str, bool] = _REGULARIZABLE, **kwargs
):
    """Penalize every parameter of the network ending in ``layer`` (all layers below it).

    Parameters
    ----------
    layer : Layer or iterable of Layer
        The output layer(s) of the network.
    penalty : callable
        The penalty (:func:`l1`, :func:`l2`).
    tags : dict, optional
        Parameter tag filter for :func:`~bntrain.nn.layers.get_all_params`;
        default ``{'regularizable': True}``.
    **kwargs
        Passed on to ``penalty``.
    """
    tags = dict(tags)
    return apply_penalty(get_all_params(layer, **tags), penalty, **kwargs)

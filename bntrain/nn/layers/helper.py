"""Functions that walk a network of layers (Lasagne's ``lasagne.layers.helper``)."""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections import OrderedDict, deque

import numpy as np

from .. import utils
from .base import Layer, MergeLayer
from .input import InputLayer

__all__ = [
    "get_all_layers",
    "get_output",
    "get_output_shape",
    "get_all_params",
    "count_params",
    "get_all_param_values",
    "set_all_param_values",
]


def get_all_layers(layer, treat_as_input=None):
    """Return every layer ``layer`` depends on, in topological order (inputs first).

    Parameters
    ----------
    layer : Layer or list of Layer
        The layer(s) to collect the network of.
    treat_as_input : iterable of Layer, optional
        Layers whose own inputs are not followed.
    """
    try:
        queue = deque(layer)
    except TypeError:
        queue = deque([layer])
    seen = set()
    done = set()
    result = []
    if treat_as_input is not None:
        seen.update(treat_as_input)
    while queue:
        layer = queue[0]
        if layer is None:
            queue.popleft()
        elif layer not in seen:
            seen.add(layer)
            if hasattr(layer, "input_layers"):
                queue.extendleft(reversed(layer.input_layers))
            elif hasattr(layer, "input_layer"):
                queue.appendleft(layer.input_layer)
        else:
            queue.popleft()
            if layer not in done:
                result.append(layer)
                done.add(layer)
    return result


def get_output(layer_or_layers, inputs=None, return_updates=False, **kwargs):
    """Compute the symbolic output of a network.

    Parameters
    ----------
    layer_or_layers : Layer or list of Layer
        The layer(s) whose output to compute.
    inputs : expression or dict, optional
        An expression for the single input layer, or a dict mapping
        :class:`InputLayer` (or any layer) instances to expressions that
        replace their output.
    return_updates : bool
        Also return the updates the layers asked for (the batch-norm moving
        averages, the dropout generators' next states) as an ``OrderedDict``
        for the caller to pass to ``pytensor.function(..., updates=...)``;
        the graph then carries no hidden updates.  Without it the layers
        attach their updates the way Lasagne did, as ``default_update`` of
        clones of their shared variables, which ``pytensor.function`` applies
        on its own.
    **kwargs
        Passed to each layer's ``get_output_for`` when it accepts them (a
        ``**kwargs`` catch-all accepts all): ``deterministic``,
        ``batch_norm_use_averages``, ``batch_norm_update_averages``...

    Returns
    -------
    output or list of outputs, or ``(output, updates)`` with ``return_updates``
    """
    if isinstance(inputs, dict):
        for key in inputs:
            if key is not None and not isinstance(key, Layer):
                raise TypeError(
                    f"get_output(): the keys of the inputs dictionary must be layers "
                    f"(or None for a missing input layer), got {type(key).__name__}"
                )
    accepted_kwargs = {"deterministic"}
    treat_as_input = list(inputs.keys()) if isinstance(inputs, dict) else []
    all_layers = get_all_layers(layer_or_layers, treat_as_input)
    all_outputs = {
        layer: layer.input_var
        for layer in all_layers
        if isinstance(layer, InputLayer) and layer not in treat_as_input
    }
    if isinstance(inputs, dict):
        all_outputs.update(
            (layer, utils.as_theano_expression(expr)) for layer, expr in inputs.items()
        )
    elif inputs is not None:
        if len(all_outputs) > 1:
            raise ValueError(
                "get_output() was called with a single input expression on a network with "
                "multiple input layers. Please call it with a dictionary of input expressions "
                "instead."
            )
        for input_layer in all_outputs:
            all_outputs[input_layer] = utils.as_theano_expression(inputs)
    updates = OrderedDict()
    for layer in all_layers:
        if layer in all_outputs:
            continue
        try:
            if isinstance(layer, MergeLayer):
                layer_inputs = [all_outputs[input_layer] for input_layer in layer.input_layers]
            else:
                layer_inputs = all_outputs[layer.input_layer]
        except KeyError:
            raise ValueError(
                f"get_output() was called without giving an input expression for the "
                f"free-floating layer {layer!r}. Please call it with a dictionary mapping "
                f"this layer to an input expression."
            ) from None
        layer_kwargs = _accepted(layer.get_output_for, kwargs)
        if return_updates and _names_collect_updates(layer.get_output_for):
            layer_kwargs["collect_updates"] = updates
        all_outputs[layer] = layer.get_output_for(layer_inputs, **layer_kwargs)
        try:
            accepted_kwargs |= set(utils.inspect_kwargs(layer.get_output_for))
        except TypeError:  # not introspectable (a builtin)
            pass
        accepted_kwargs |= set(layer.get_output_kwargs)
    unused_kwargs = set(kwargs) - accepted_kwargs
    if unused_kwargs:
        suggestions = []
        for kwarg in sorted(unused_kwargs):
            match = difflib.get_close_matches(kwarg, list(accepted_kwargs), n=1)
            hint = f" (perhaps you meant {match[0]})" if match else ""  # Lasagne's wording
            suggestions.append(f"{kwarg!r}{hint}")
        warnings.warn(
            f"get_output() was called with unused kwargs: {', '.join(suggestions)}", stacklevel=2
        )
    try:
        outputs = [all_outputs[layer] for layer in layer_or_layers]
    except TypeError:
        outputs = all_outputs[layer_or_layers]
    return (outputs, updates) if return_updates else outputs


def _accepted(fn, kwargs: dict) -> dict:
    """The entries of ``kwargs`` that ``fn`` takes by keyword (all of them with ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # not introspectable: pass everything, as Lasagne did
        return kwargs
    names = set()
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            return kwargs
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.add(p.name)
    return {k: v for k, v in kwargs.items() if k in names}


def _names_collect_updates(fn) -> bool:
    """Whether ``fn`` names a ``collect_updates`` parameter (``**kwargs`` alone does not count).

    The keyword is bntrain's, not Lasagne's: a Lasagne-style layer whose
    ``get_output_for`` takes ``**kwargs`` never asked for it, so it is not given it.
    """
    try:
        param = inspect.signature(fn).parameters.get("collect_updates")
    except (TypeError, ValueError):  # not introspectable
        return False
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)


def get_output_shape(layer_or_layers, input_shapes=None):
    """Compute the output shape(s) of a network, optionally for other input shapes."""
    if input_shapes is None or input_shapes == {}:
        try:
            return [layer.output_shape for layer in layer_or_layers]
        except TypeError:
            return layer_or_layers.output_shape
    treat_as_input = list(input_shapes.keys()) if isinstance(input_shapes, dict) else []
    all_layers = get_all_layers(layer_or_layers, treat_as_input)
    all_shapes = {
        layer: layer.shape
        for layer in all_layers
        if isinstance(layer, InputLayer) and layer not in treat_as_input
    }
    if isinstance(input_shapes, dict):
        all_shapes.update(input_shapes)
    else:
        if len(all_shapes) > 1:
            raise ValueError(
                "get_output_shape() was called with a single input shape on a network with "
                "multiple input layers. Please call it with a dictionary of input shapes instead."
            )
        for input_layer in all_shapes:
            all_shapes[input_layer] = input_shapes
    for layer in all_layers:
        if layer not in all_shapes:
            if isinstance(layer, MergeLayer):
                input_shapes_ = [all_shapes[input_layer] for input_layer in layer.input_layers]
            else:
                input_shapes_ = all_shapes[layer.input_layer]
            all_shapes[layer] = layer.get_output_shape_for(input_shapes_)
    try:
        return [all_shapes[layer] for layer in layer_or_layers]
    except TypeError:
        return all_shapes[layer_or_layers]


def get_all_params(layer, unwrap_shared=True, **tags):
    """Return the parameters of every layer in the network, filtered by tags."""
    layers = get_all_layers(layer)
    params = [p for l in layers for p in l.get_params(unwrap_shared=unwrap_shared, **tags)]
    return utils.unique(params)


def count_params(layer, **tags):
    """Count the parameter values (scalars) of the network, filtered by tags."""
    params = get_all_params(layer, **tags)
    return int(sum(np.prod(p.get_value(borrow=True).shape) for p in params))


def get_all_param_values(layer, **tags):
    """Return the values of the network's parameters as a list of NumPy arrays."""
    return [p.get_value() for p in get_all_params(layer, **tags)]


def set_all_param_values(layer, values, **tags):
    """Set the network's parameters from a list of NumPy arrays.

    Raises
    ------
    ValueError
        If the number of values or any shape does not match.
    """
    params = get_all_params(layer, **tags)
    if len(params) != len(values):
        raise ValueError(f"mismatch: got {len(values)} values to set {len(params)} parameters")
    for p, v in zip(params, values, strict=True):
        if p.get_value(borrow=True).shape != np.shape(v):
            raise ValueError(
                f"mismatch: parameter {p.name} has shape {p.get_value(borrow=True).shape!r} "
                f"but value to set has shape {np.shape(v)!r}"
            )
    # set only once every shape was checked, so a mismatch leaves the network untouched
    for p, v in zip(params, values, strict=True):
        p.set_value(np.asarray(v, dtype=p.dtype))

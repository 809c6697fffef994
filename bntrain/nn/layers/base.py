"""Base classes of the layer library: :class:`Layer` and :class:`MergeLayer`."""

from __future__ import annotations

from collections import OrderedDict

from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

from .. import utils

__all__ = ["Layer", "MergeLayer"]


def _check_shape(layer, shape):
    try:
        shape = tuple(shape)
    except TypeError:  # not a shape at all (a test's stand-in): nothing to check
        return
    if any(d is not None and d <= 0 for d in shape):
        raise ValueError(
            f"Cannot create {type(layer).__name__} with a non-positive input_shape dimension. "
            f"input_shape={shape!r}, self.name={layer.name!r}"
        )


class Layer:
    """The base class of every layer with a single input.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape
        (``None`` for a dimension not known in advance).
    name : str, optional
        A name for the layer; parameter names are prefixed with it.
    """

    def __init__(self, incoming, name=None):
        if isinstance(incoming, tuple):
            self.input_shape = incoming
            self.input_layer = None
        else:
            self.input_shape = incoming.output_shape
            self.input_layer = incoming
        self.name = name
        self.params = OrderedDict()
        self.get_output_kwargs = []
        _check_shape(self, self.input_shape)

    @property
    def output_shape(self):
        shape = self.get_output_shape_for(self.input_shape)
        if any(isinstance(s, Variable) for s in shape):
            raise ValueError(
                f"{type(self).__name__} (name={self.name!r}) returned a symbolic output shape "
                f"from its get_output_shape_for() method: {shape!r}"
            )
        return shape

    def get_params(self, unwrap_shared=True, **tags):
        """Return this layer's parameters, optionally filtered by tags.

        ``get_params(trainable=True)`` keeps parameters tagged ``trainable``;
        ``get_params(regularizable=False)`` drops those tagged ``regularizable``.
        """
        result = list(self.params.keys())
        only = {tag for tag, value in tags.items() if value}
        if only:
            result = [param for param in result if not (only - self.params[param])]
        exclude = {tag for tag, value in tags.items() if not value}
        if exclude:
            result = [param for param in result if not (self.params[param] & exclude)]
        if unwrap_shared:
            # per parameter, so that the registration order survives
            # (collect_shared_vars walks a graph right to left)
            result = utils.unique(
                v
                for p in result
                for v in ([p] if isinstance(p, SharedVariable) else utils.collect_shared_vars(p))
            )
        return result

    def get_output_shape_for(self, input_shape):
        """Compute the output shape for a given input shape (identity by default)."""
        return input_shape

    def get_output_for(self, input, **kwargs):
        """Compute the symbolic output for a symbolic input."""
        raise NotImplementedError

    def add_param(self, spec, shape, name=None, **tags):
        """Register and return a parameter created from ``spec``.

        See :func:`~bntrain.nn.utils.create_param` for the accepted specs.

        Tags default to ``trainable=True`` and ``regularizable=True``.
        """
        if name is not None and self.name is not None:
            name = f"{self.name}.{name}"
        param = utils.create_param(spec, shape, name)
        tags["trainable"] = tags.get("trainable", True)
        tags["regularizable"] = tags.get("regularizable", True)
        self.params[param] = {tag for tag, value in tags.items() if value}
        return param

    def __repr__(self):
        try:
            shape = repr(self.output_shape)
        except Exception:  # noqa: BLE001 (a repr must not fail: it appears in error messages)
            shape = "?"
        return f"<{type(self).__name__} name={self.name!r} output_shape={shape}>"


class MergeLayer(Layer):
    """The base class of layers with several inputs.

    Parameters
    ----------
    incomings : sequence of Layer or tuple
        The layers feeding into this one, or their expected shapes.
    name : str, optional
        A name for the layer.
    """

    def __init__(self, incomings, name=None):
        self.input_shapes = [
            inc if isinstance(inc, tuple) else inc.output_shape for inc in incomings
        ]
        self.input_layers = [None if isinstance(inc, tuple) else inc for inc in incomings]
        self.name = name
        self.params = OrderedDict()
        self.get_output_kwargs = []
        for shape in self.input_shapes:
            _check_shape(self, shape)

    @Layer.output_shape.getter
    def output_shape(self):
        shape = self.get_output_shape_for(self.input_shapes)
        if any(isinstance(s, Variable) for s in shape):
            raise ValueError(
                f"{type(self).__name__} (name={self.name!r}) returned a symbolic output shape "
                f"from its get_output_shape_for() method: {shape!r}"
            )
        return shape

    def get_output_shape_for(self, input_shapes):
        raise NotImplementedError

    def get_output_for(self, inputs, **kwargs):
        raise NotImplementedError

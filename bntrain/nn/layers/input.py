"""The input layer."""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from .. import utils
from .base import Layer

__all__ = ["InputLayer"]


class InputLayer(Layer):
    """A layer that holds a symbolic input variable.

    Parameters
    ----------
    shape : tuple of int or None
        The shape of the input; ``None`` for a dimension not known in advance.
    input_var : TensorVariable, optional
        The variable representing the input; a new one of ``floatX`` dtype is
        created when omitted.
    name : str, optional
        A name for the layer.
    """

    def __init__(self, shape, input_var=None, name=None, **kwargs):
        if kwargs:
            raise TypeError(f"InputLayer got unexpected keyword argument(s): {sorted(kwargs)}")
        self.shape = tuple(shape)
        if any(
            d is not None and (not isinstance(d, utils.int_types) or d <= 0) for d in self.shape
        ):
            raise ValueError(
                f"InputLayer: cannot create with a non-positive or non-integer shape dimension: shape={self.shape!r}, name={name!r}"
            )
        ndim = len(self.shape)
        if input_var is None:
            var_name = f"{name}.input" if name is not None else "input"
            input_var = pt.tensor(dtype=utils.floatX(0).dtype.name, shape=self.shape, name=var_name)
        elif not isinstance(input_var, Variable) or input_var.ndim != ndim:
            raise ValueError(
                f"InputLayer: shape {self.shape!r} has {ndim} dimensions, but variable {input_var!r} does not"
            )
        self.input_var = input_var
        self.name = name
        self.params = {}
        self.input_shape = self.shape
        self.get_output_kwargs = []

    @Layer.output_shape.getter
    def output_shape(self):
        return self.shape

    def __getattr__(self, name):
        # Lasagne's InputLayer has no ``input_layer`` attribute (so a Mock made from one has
        # none either); code asking for it anyway gets None, the start of the network.
        if name == "input_layer":
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

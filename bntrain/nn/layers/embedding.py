"""A lookup table from integer indices to vectors (``lasagne.layers.embedding``).

Examples
--------
>>> from bntrain.nn.layers import InputLayer, EmbeddingLayer
>>> l_in = InputLayer((None, 7))
>>> EmbeddingLayer(l_in, input_size=100, output_size=16).output_shape
(None, 7, 16)
"""

from __future__ import annotations

import pytensor.tensor as pt

from .. import init, utils
from .base import Layer
from .special import _check_kwargs, _label

__all__ = ["EmbeddingLayer"]


class EmbeddingLayer(Layer):
    """Replace each integer index of the input by a row of the matrix ``W``.

    The output is ``W[input]``: its shape is the input shape followed by
    ``output_size``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape; its
        values are integer indices in ``[0, input_size)``.
    input_size : int
        The number of rows of ``W`` (the vocabulary size).
    output_size : int
        The length of each vector (the embedding size).
    W : initializer, array or shared variable
        The table, of shape ``(input_size, output_size)``; tagged
        ``trainable`` and ``regularizable``.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        input_size: int,
        output_size: int,
        W=init.Normal(),  # noqa: B008  (Lasagne's signature)
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        for what, size in (("input_size", input_size), ("output_size", output_size)):
            if isinstance(size, bool) or not isinstance(size, utils.int_types) or size <= 0:
                raise ValueError(f"{where}: {what} must be a positive int, got {size!r}")
        self.input_size = int(input_size)
        self.output_size = int(output_size)
        self.W = self.add_param(W, (self.input_size, self.output_size), name="W")

    def get_output_shape_for(self, input_shape):
        """Return the input shape followed by ``output_size``."""
        return (*input_shape, self.output_size)

    def get_output_for(self, input, **kwargs):
        """Return ``W[input]``.

        Raises
        ------
        TypeError
            If the input is not of an integer dtype.
        """
        input = pt.as_tensor_variable(input)
        if not input.dtype.startswith(("int", "uint")):
            raise TypeError(
                f"{_label(type(self).__name__, self.name)}: the input must hold integer "
                f"indices, got dtype {input.dtype}; use pt.imatrix()/pt.ivector() or cast it"
            )
        return self.W[input]

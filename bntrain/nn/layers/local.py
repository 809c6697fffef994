"""Locally connected layers (``lasagne.layers.local``): convolution with unshared weights.

:class:`LocallyConnected2DLayer` is a 'same' convolution whose filters differ
at every output position.  It is built from plain tensor operations: for each
filter tap, the shifted (zero-padded) input times that tap's weights at every
position, summed over the input channels.

Examples
--------
>>> from bntrain.nn.layers import LocallyConnected2DLayer
>>> layer = LocallyConnected2DLayer((None, 3, 6, 5), num_filters=4, filter_size=3)
>>> layer.output_shape, layer.W.get_value().shape
((None, 4, 6, 5), (4, 3, 3, 3, 6, 5))
"""

from __future__ import annotations

from collections.abc import Callable

import pytensor.tensor as pt

from .. import init, nonlinearities
from .conv import BaseConvLayer
from .special import _label

__all__ = ["LocallyConnected2DLayer"]


class LocallyConnected2DLayer(BaseConvLayer):
    """2D locally connected layer: ``nonlinearity(local_conv(input, W) + b)``.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one; ``(batch, channels, rows, cols)`` with
        everything but the batch size known.
    num_filters : int
        Number of filters (output channels).
    filter_size : int or pair of int
        Filter height and width (odd).
    stride : 1 or (1, 1)
        Only stride 1 is supported.
    pad : 'same'
        Only 'same' padding is supported.
    untie_biases, b, nonlinearity, flip_filters, **kwargs
        As in :class:`~bntrain.nn.layers.BaseConvLayer`.
    W : initializer, array or shared variable
        ``(num_filters, channels, *filter_size, rows, cols)``, or with
        ``channelwise`` ``(num_filters, *filter_size, rows, cols)``.
    channelwise : bool
        ``True``: output channel ``f`` sees only input channel ``f``
        (``num_filters`` must equal the number of channels).
    """

    _rank = 2

    def __init__(
        self,
        incoming,
        num_filters: int,
        filter_size,
        stride=(1, 1),
        pad="same",
        untie_biases: bool = False,
        W=init.GlorotUniform(),
        b=init.Constant(0.0),
        nonlinearity: Callable | None = nonlinearities.rectify,
        flip_filters: bool = True,
        channelwise: bool = False,
        **kwargs,
    ) -> None:
        self.channelwise = bool(channelwise)
        super().__init__(
            incoming,
            num_filters,
            filter_size,
            stride,
            pad,
            untie_biases,
            W,
            b,
            nonlinearity,
            flip_filters,
            **kwargs,
        )
        where = _label(type(self).__name__, self.name)
        if self.stride != (1, 1):
            raise NotImplementedError(
                f"{where}: LocallyConnected2DLayer requires stride=1 / (1, 1), got {stride!r}"
            )
        if self.pad != "same":
            raise NotImplementedError(
                f"{where}: LocallyConnected2DLayer requires pad='same', got {pad!r}"
            )

    def get_W_shape(self) -> tuple[int, ...]:
        """Return the weights' shape (see the class docstring); needs a known input shape."""
        where = _label(type(self).__name__, self.name)
        if any(s is None for s in self.input_shape[1:]):
            raise ValueError(
                f"{where}: A LocallyConnected2DLayer requires a fixed input shape (except for "
                f"the batch size). Got {self.input_shape!r}"
            )
        channels = self.input_shape[1]
        rows_cols = self.get_output_shape_for(self.input_shape)[2:]
        if self.channelwise:
            if self.num_filters != channels:
                raise ValueError(
                    f"{where}: num_filters and the number of input channels should match when "
                    f"channelwise is true, got num_filters={self.num_filters} and {channels} "
                    f"input channels"
                )
            return (self.num_filters, *self.filter_size, *rows_cols)
        return (self.num_filters, channels, *self.filter_size, *rows_cols)

    def convolve(self, input, **kwargs):
        """Return the locally connected 'same' convolution of ``input`` (no bias)."""
        (kh, kw), (rows, cols) = self.filter_size, self.output_shape[2:]
        ph, pw = kh // 2, kw // 2
        padded = pt.zeros(
            (input.shape[0], input.shape[1], rows + 2 * ph, cols + 2 * pw), dtype=input.dtype
        )
        padded = pt.set_subtensor(padded[:, :, ph : ph + rows, pw : pw + cols], input)
        total = None
        for a in range(kh):
            for b in range(kw):
                shifted = padded[:, :, a : a + rows, b : b + cols]
                ta, tb = (kh - 1 - a, kw - 1 - b) if self.flip_filters else (a, b)
                if self.channelwise:
                    term = shifted * self.W[:, ta, tb].dimshuffle("x", 0, 1, 2)
                else:
                    term = (shifted.dimshuffle(0, "x", 1, 2, 3) * self.W[:, :, ta, tb]).sum(axis=2)
                total = term if total is None else total + term
        return self._pinned(total)

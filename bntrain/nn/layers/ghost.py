"""Ghost batch normalization (Hoffer et al., 2017), beside :class:`BatchNormLayer`.

A batch of ``N = G * V`` examples is split, in order, into ``G`` groups of
``virtual_batch_size = V`` consecutive examples; each group is normalized with
its own mean and variance, as if it were a batch of its own.  The moving
averages take one update per group, in group order, exactly as ``G`` calls of
a plain :class:`BatchNormLayer` on the groups would:
``s <- (1 - alpha)**G * s + sum_g alpha * (1 - alpha)**(G - 1 - g) * s_g``.
At test time it is identical to :class:`BatchNormLayer`.
"""

from __future__ import annotations

import numbers

import numpy as np
import pytensor.tensor as pt

from .base import Layer
from .normalization import BatchNormLayer, insert_normalization

__all__ = ["GhostBatchNormLayer", "ghost_batch_norm"]


class GhostBatchNormLayer(BatchNormLayer):
    """Batch normalization with statistics per group of ``virtual_batch_size`` examples.

    Parameters
    ----------
    incoming, axes, epsilon, alpha, beta, gamma, mean, inv_std
        As for :class:`BatchNormLayer`; ``axes`` must include the batch axis 0.
    virtual_batch_size : int
        Examples per group (at least 2).  A training batch must hold a whole
        number of groups.
    **kwargs
        ``name``.

    Examples
    --------
    >>> import numpy as np
    >>> import bntrain.nn as lasagne
    >>> l_in = lasagne.layers.InputLayer((None, 1))
    >>> l_g = GhostBatchNormLayer(l_in, virtual_batch_size=2, epsilon=0, name="g")
    >>> x = np.array([[0.0], [2.0], [10.0], [30.0]], dtype="float32")
    >>> out, updates = lasagne.layers.get_output(l_g, x, return_updates=True)
    >>> out.eval().ravel().tolist()
    [-1.0, 1.0, -1.0, 1.0]
    """

    def __init__(self, incoming, *args, virtual_batch_size: int = 32, **kwargs) -> None:
        super().__init__(incoming, *args, **kwargs)
        v = virtual_batch_size
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 2:
            raise ValueError(
                f"{self._describe()}: virtual_batch_size must be an integer >= 2, got {v!r}"
            )
        if 0 not in self.axes:
            raise ValueError(
                f"{self._describe()}: ghost batch norm needs the batch axis 0 in axes, "
                f"got axes={self.axes!r}"
            )
        self.virtual_batch_size = int(v)

    def get_output_for(
        self,
        input,
        deterministic=False,
        batch_norm_use_averages=None,
        batch_norm_update_averages=None,
        collect_updates: dict | None = None,
        **kwargs,
    ) -> pt.TensorVariable:
        """Normalize ``input`` per group (arguments as :meth:`BatchNormLayer.get_output_for`)."""
        use_averages, update_averages = self._flags(
            deterministic, batch_norm_use_averages, batch_norm_update_averages
        )
        if update_averages and collect_updates is None:
            raise ValueError(
                f"{self._describe()}: training with ghost batch norm needs the updates "
                f"collected: call get_output(..., return_updates=True) and pass them to "
                f"pytensor.function (its per-group updates cannot be hidden Lasagne-style)"
            )
        if not update_averages:
            # Not training (eval, recompute-stats' passes): a batch need not hold whole groups,
            # so normalize as BatchNormLayer does (the whole batch's statistics, or the averages).
            return super().get_output_for(
                input,
                batch_norm_use_averages=use_averages,
                batch_norm_update_averages=False,
            )
        input = self._float_input(input)
        dtype = input.dtype
        v = self.virtual_batch_size
        rest = [
            input.shape[i] if size is None else size
            for i, size in enumerate(self.input_shape)
            if i > 0
        ]
        grouped = input.reshape((-1, v, *rest))
        axes = tuple(a + 1 for a in self.axes)  # batch axis 0 -> the in-group axis 1
        g_mean = pt.mean(grouped, axis=axes)  # (G, *param_shape)
        g_inv_std = pt.reciprocal(
            pt.sqrt(pt.var(grouped, axis=axes) + pt.cast(self.epsilon, dtype))
        )
        if update_averages and collect_updates is not None:
            for stat, values in ((self.mean, g_mean), (self.inv_std, g_inv_std)):
                alpha = pt.cast(self.alpha, stat.dtype)
                keep = np.asarray(1, dtype=stat.dtype) - alpha
                values = pt.cast(values, stat.dtype)
                n = pt.cast(values.shape[0], stat.dtype)
                ages = n - pt.cumsum(pt.ones_like(values), axis=0)  # updates after group g
                mixed = pt.sum(alpha * keep**ages * values, axis=0)
                collect_updates[stat] = keep**n * stat + mixed
        if use_averages:
            return super().get_output_for(
                input,
                deterministic=True,
                batch_norm_use_averages=True,
                batch_norm_update_averages=False,
            )
        kept = iter(range(1, 1 + len(self.param_shape)))
        pattern = [0] + ["x" if a in axes else next(kept) for a in range(1, grouped.ndim)]
        mean = g_mean.dimshuffle(pattern)
        scale = g_inv_std.dimshuffle(pattern)
        out = (grouped - mean) * scale
        if self.gamma is not None:
            out = out * self._broadcast(pt.cast(self.gamma, dtype), input).dimshuffle(
                "x", *range(input.ndim)
            )
        if self.beta is not None:
            out = out + self._broadcast(pt.cast(self.beta, dtype), input).dimshuffle(
                "x", *range(input.ndim)
            )
        return out.reshape(input.shape)


def ghost_batch_norm(layer: Layer, **kwargs) -> Layer:
    """:func:`~bntrain.nn.layers.batch_norm` with a :class:`GhostBatchNormLayer`.

    Examples
    --------
    >>> import bntrain.nn as lasagne
    >>> l_dense = lasagne.layers.DenseLayer(lasagne.layers.InputLayer((None, 4)), 2, name="fc")
    >>> top = ghost_batch_norm(l_dense, virtual_batch_size=8)
    >>> type(top.input_layer).__name__, top.input_layer.virtual_batch_size
    ('GhostBatchNormLayer', 8)
    """
    return insert_normalization(layer, GhostBatchNormLayer, **kwargs)

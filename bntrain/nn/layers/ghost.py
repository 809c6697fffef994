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

import pytensor
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
        use_averages = (
            bool(deterministic)
            if batch_norm_use_averages is None
            else self._flag_for_self(batch_norm_use_averages, "batch_norm_use_averages")
        )
        update_averages = (
            not deterministic
            if batch_norm_update_averages is None
            else self._flag_for_self(batch_norm_update_averages, "batch_norm_update_averages")
        )
        if not update_averages:
            # Not training (eval, recompute-stats' passes): a batch need not hold whole groups,
            # so normalize as BatchNormLayer does (the whole batch's statistics, or the averages).
            return super().get_output_for(
                input,
                batch_norm_use_averages=use_averages,
                batch_norm_update_averages=False,
            )
        input = pt.as_tensor_variable(input)
        if not input.dtype.startswith("float"):
            input = pt.cast(input, pytensor.config.floatX)
        return self._per_group_output(
            input, (-1, self.virtual_batch_size), use_averages, collect_updates
        )


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

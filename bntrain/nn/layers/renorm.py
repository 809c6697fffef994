"""Batch renormalization (Ioffe, 2017), beside :class:`BatchNormLayer`.

Batch norm trains with the batch's statistics and tests with the moving
averages; with small or non-i.i.d. batches the two disagree.  Batch
renormalization corrects each training batch towards the moving averages:

``x_hat = (x - mean_B) / sigma_B * r + d``, with
``r = clip(sigma_B / sigma, 1 / r_max, r_max)`` and
``d = clip((mean_B - mean) / sigma, -d_max, d_max)``,

where ``mean`` and ``sigma = 1 / inv_std`` are the moving averages.  ``r`` and
``d`` are treated as constants by the gradient.  With ``r_max = 1`` and
``d_max = 0`` it is plain batch normalization; at test time it is identical to
it.  The parameters, their tags and the moving averages are those of
:class:`BatchNormLayer`, so recompute-stats, eval and checkpoints treat the two
alike.
"""

from __future__ import annotations

import numbers

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import disconnected_grad
from pytensor.graph.basic import Variable

from .base import Layer
from .normalization import BatchNormLayer, insert_normalization

__all__ = ["BatchReNormLayer", "batch_renorm"]


class BatchReNormLayer(BatchNormLayer):
    """Batch renormalization: :class:`BatchNormLayer` with the ``r``/``d`` correction.

    Parameters
    ----------
    incoming, axes, epsilon, alpha, beta, gamma, mean, inv_std
        As for :class:`BatchNormLayer`.
    r_max : float or scalar shared variable
        Bound of the scale correction ``r``, at least 1 (1 turns it off).  A
        shared variable lets a schedule ramp it during training.
    d_max : float or scalar shared variable
        Bound of the shift correction ``d``, at least 0 (0 turns it off).
    **kwargs
        ``name``.

    Examples
    --------
    >>> import bntrain.nn as lasagne
    >>> l_in = lasagne.layers.InputLayer((None, 3))
    >>> l_rn = BatchReNormLayer(l_in, r_max=3, d_max=5, name="rn")
    >>> [p.name for p in l_rn.get_params(trainable=True)]
    ['rn.beta', 'rn.gamma']
    >>> isinstance(l_rn, lasagne.layers.BatchNormLayer)
    True
    """

    def __init__(self, incoming, *args, r_max=3.0, d_max=5.0, **kwargs) -> None:
        super().__init__(incoming, *args, **kwargs)
        self.r_max = self._check_bound(r_max, "r_max", 1.0)
        self.d_max = self._check_bound(d_max, "d_max", 0.0)

    def _check_bound(self, value, what: str, low: float):
        if isinstance(value, Variable):
            return value
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not np.isfinite(value)
            or value < low
        ):
            raise ValueError(
                f"{self._describe()}: {what} must be a number >= {low:g}, got {value!r}"
            )
        return float(value)

    def corrections(self, batch_mean, batch_inv_std, dtype: str, mean=None, inv_std=None):
        """``(r, d)`` for a batch, without gradient (per normalized channel).

        ``mean`` and ``inv_std`` default to the stored averages.
        """
        mean = self.mean if mean is None else mean
        inv_std = pt.cast(self.inv_std if inv_std is None else inv_std, dtype)
        r_max = pt.cast(self.r_max, dtype)
        d_max = pt.cast(self.d_max, dtype)
        one = np.asarray(1, dtype=dtype)
        r = pt.clip(inv_std / batch_inv_std, one / r_max, r_max)
        d = pt.clip((batch_mean - pt.cast(mean, dtype)) * inv_std, -d_max, d_max)
        return disconnected_grad(r), disconnected_grad(d)

    def get_output_for(
        self,
        input,
        deterministic=False,
        batch_norm_use_averages=None,
        batch_norm_update_averages=None,
        collect_updates: dict | None = None,
        **kwargs,
    ) -> pt.TensorVariable:
        """Renormalize ``input`` (arguments as :meth:`BatchNormLayer.get_output_for`)."""
        use_averages, update_averages = self._flags(
            deterministic, batch_norm_use_averages, batch_norm_update_averages
        )
        if use_averages:
            return super().get_output_for(
                input,
                deterministic=deterministic,
                batch_norm_use_averages=batch_norm_use_averages,
                batch_norm_update_averages=batch_norm_update_averages,
                collect_updates=collect_updates,
                **kwargs,
            )
        x = self._float_input(input)
        dtype = x.dtype
        batch_mean = pt.mean(x, axis=self.axes)
        batch_inv_std = pt.reciprocal(
            pt.sqrt(pt.var(x, axis=self.axes) + pt.cast(self.epsilon, dtype))
        )
        mean_avg, inv_std_avg = self.mean, self.inv_std
        if update_averages:  # collected, or hidden in clones that the graph below uses
            mean_avg = self._update_average(self.mean, batch_mean, collect_updates)
            inv_std_avg = self._update_average(self.inv_std, batch_inv_std, collect_updates)
        r, d = self.corrections(batch_mean, batch_inv_std, dtype, mean_avg, inv_std_avg)
        x_hat = (x - self._broadcast(batch_mean, x)) * self._broadcast(batch_inv_std * r, x)
        x_hat = x_hat + self._broadcast(d, x)
        out = (
            x_hat if self.gamma is None else x_hat * self._broadcast(pt.cast(self.gamma, dtype), x)
        )
        if self.beta is not None:
            out = out + self._broadcast(pt.cast(self.beta, dtype), x)
        return out


def batch_renorm(layer: Layer, **kwargs) -> Layer:
    """:func:`~bntrain.nn.layers.batch_norm` with a :class:`BatchReNormLayer`.

    Examples
    --------
    >>> import bntrain.nn as lasagne
    >>> l_dense = lasagne.layers.DenseLayer(lasagne.layers.InputLayer((None, 4)), 2, name="fc")
    >>> top = batch_renorm(l_dense, r_max=2.0)
    >>> type(top.input_layer).__name__, top.input_layer.name
    ('BatchReNormLayer', 'fc_bn')
    """
    return insert_normalization(layer, BatchReNormLayer, **kwargs)

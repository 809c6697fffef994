"""Batch normalization (mirrors ``lasagne.layers.normalization`` of Lasagne 0.2).

:class:`BatchNormLayer` normalizes its input with batch statistics during
training and with stored averages at test time; :func:`batch_norm` inserts one
into an existing layer stack.  With ``get_output(..., return_updates=True)``
the moving-average updates go to the ``collect_updates`` dictionary and the
caller hands them to ``pytensor.function(..., updates=...)`` (what bntrain's
own code does); without it they are hidden in ``default_update`` as Lasagne
did, so ported code that compiles only its optimizer updates still trains
the averages.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

from .. import init, nonlinearities
from .._default_updates import with_default_update
from .base import Layer
from .special import NonlinearityLayer
from .standardization import (
    LocalResponseNormalization2DLayer,
    StandardizationLayer,
    instance_norm,
    layer_norm,
)

__all__ = [
    "BatchNormLayer",
    "batch_norm",
    # Lasagne's lasagne.layers.normalization holds these too
    "LocalResponseNormalization2DLayer",
    "StandardizationLayer",
    "instance_norm",
    "layer_norm",
]


class BatchNormLayer(Layer):
    """Batch normalization (Ioffe & Szegedy, 2015).

    Computes ``y = (x - mean) * (gamma * inv_std) + beta`` with one ``mean``,
    ``inv_std``, ``beta`` and ``gamma`` value per position of the axes that are
    *not* normalized over.  In training, ``mean`` and ``inv_std`` are the
    batch's own: ``mean_B = x.mean(axes)`` and
    ``inv_std_B = 1 / sqrt(x.var(axes) + epsilon)`` (biased variance).  The
    stored averages are exponential moving averages of those batch values,
    ``s <- (1 - alpha) * s + alpha * s_B``, and are used at test time.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    axes : 'auto', int or tuple of int
        The axes to normalize over (the batch statistics are reduced over
        them).  ``'auto'`` means every axis but the second: per-unit
        normalization for dense layers, per-channel for convolutional ones.
        Negative axes count from the end.  Every axis *not* listed must have a
        known size.
    epsilon : float
        Added to the batch variance before taking the square root.
    alpha : float or scalar shared variable
        Coefficient of the exponential moving averages, in ``[0, 1]``: the
        larger, the more the averages follow the latest batches.
        ``alpha = 1 / (1 + n)`` at the ``n``-th batch (counting from 0) gives a
        plain cumulative average.
    beta : initializer, array, shared variable, expression or None
        The learned shift (trainable, not regularizable); ``None`` leaves it out.
    gamma : initializer, array, shared variable, expression or None
        The learned scale (trainable, regularizable as in Lasagne); ``None``
        leaves it out.
    mean : initializer, array, shared variable or expression
        The stored mean (not trainable, not regularizable, tagged
        ``batch_norm_stat``).
    inv_std : initializer, array, shared variable or expression
        The stored inverse standard deviation (tagged like ``mean``).
    **kwargs
        ``name``, passed to :class:`~bntrain.nn.layers.Layer`.

    Notes
    -----
    :meth:`get_output_for` takes two switches besides ``deterministic``,
    which :func:`~bntrain.nn.layers.get_output` forwards to every layer:

    ``batch_norm_use_averages``
        Normalize with the stored averages instead of the batch statistics.
        Defaults to ``deterministic``.
    ``batch_norm_update_averages``
        Update the moving averages of ``mean`` and ``inv_std``.  Defaults to
        ``not deterministic``.  The updates go to ``collect_updates`` when
        one is given (``get_output(..., return_updates=True)``); otherwise
        they are attached as Lasagne did, as ``default_update`` of clones of
        ``mean`` and ``inv_std`` that the output depends on, so any
        ``pytensor.function`` compiled from the output updates the averages.

    Extension over Lasagne: either switch may also be a collection (set,
    frozenset, list or tuple) of :class:`BatchNormLayer` instances, in which
    case it is true for exactly the layers in the collection and false for all
    others.  Recomputing statistics layer by layer uses this: the layers
    already settled use their stored averages, the rest their batch statistics.

    Examples
    --------
    >>> import bntrain.nn as lasagne
    >>> l_in = lasagne.layers.InputLayer((None, 10))
    >>> l_bn = BatchNormLayer(l_in, name="bn")
    >>> [p.name for p in l_bn.get_params()]
    ['bn.beta', 'bn.gamma', 'bn.mean', 'bn.inv_std']
    >>> [p.name for p in l_bn.get_params(trainable=True)]
    ['bn.beta', 'bn.gamma']
    >>> out, updates = lasagne.layers.get_output(l_bn, return_updates=True)
    >>> [v.name for v in updates]
    ['bn.mean', 'bn.inv_std']
    """

    def __init__(
        self,
        incoming,
        axes="auto",
        epsilon=1e-4,
        alpha=0.1,
        beta=init.Constant(0),  # noqa: B008 (Lasagne signature)
        gamma=init.Constant(1),  # noqa: B008 (Lasagne signature)
        mean=init.Constant(0),  # noqa: B008 (Lasagne signature)
        inv_std=init.Constant(1),  # noqa: B008 (Lasagne signature)
        **kwargs,
    ) -> None:
        name = kwargs.pop("name", None)
        if kwargs:
            raise TypeError(
                f"BatchNormLayer (name={name!r}) got unexpected keyword argument(s): "
                f"{sorted(kwargs)}"
            )
        super().__init__(incoming, name=name)
        ndim = len(self.input_shape)
        self.axes = self._normalize_axes(axes, ndim)
        self.epsilon = self._check_epsilon(epsilon)
        self.alpha = self._check_alpha(alpha)

        shape = tuple(size for axis, size in enumerate(self.input_shape) if axis not in self.axes)
        if any(size is None for size in shape):
            raise ValueError(
                f"{self._describe()}: needs specified input sizes (a known size on every axis not normalized over), but "
                f"input_shape={self.input_shape!r} with axes={self.axes!r} leaves "
                f"shape {shape!r}; add the unknown axes to `axes` or give their size"
            )
        self.param_shape = shape
        if beta is None:
            self.beta = None
        else:
            self.beta = self.add_param(beta, shape, "beta", trainable=True, regularizable=False)
        if gamma is None:
            self.gamma = None
        else:
            self.gamma = self.add_param(gamma, shape, "gamma", trainable=True, regularizable=True)
        stat_tags = {"trainable": False, "regularizable": False, "batch_norm_stat": True}
        self.mean = self.add_param(mean, shape, "mean", **stat_tags)
        self.inv_std = self.add_param(inv_std, shape, "inv_std", **stat_tags)
        self.get_output_kwargs = [
            "batch_norm_use_averages",
            "batch_norm_update_averages",
            "batch_norm_groups",
        ]

    def _describe(self) -> str:
        return f"{type(self).__name__} (name={self.name!r})"

    def _normalize_axes(self, axes, ndim: int) -> tuple[int, ...]:
        if isinstance(axes, str):
            if axes != "auto":
                raise ValueError(
                    f"{self._describe()}: axes must be 'auto', an int or a tuple of ints, "
                    f"got {axes!r}"
                )
            if ndim < 2:
                raise ValueError(
                    f"{self._describe()}: axes='auto' keeps axis 1 and needs an input of at "
                    f"least 2 dimensions, got input_shape={self.input_shape!r}"
                )
            return (0,) + tuple(range(2, ndim))
        if isinstance(axes, numbers.Integral) and not isinstance(axes, bool):
            axes = (axes,)
        try:
            axes = tuple(axes)
        except TypeError:
            raise TypeError(
                f"{self._describe()}: axes must be 'auto', an int or a tuple of ints, got {axes!r}"
            ) from None
        if not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axes):
            raise TypeError(
                f"{self._describe()}: axes must be 'auto', an int or a tuple of ints, got {axes!r}"
            )
        bad = [a for a in axes if not -ndim <= a < ndim]
        if bad:
            raise ValueError(
                f"{self._describe()}: axes {axes!r} out of range for an input of {ndim} "
                f"dimensions (input_shape={self.input_shape!r})"
            )
        result = tuple(int(a) % ndim for a in axes)
        if len(set(result)) != len(result):
            raise ValueError(f"{self._describe()}: axes {axes!r} name the same axis twice")
        return result

    def _check_epsilon(self, epsilon):
        if isinstance(epsilon, Variable):
            return epsilon
        if not isinstance(epsilon, numbers.Real) or not np.isfinite(epsilon) or epsilon < 0:
            raise ValueError(
                f"{self._describe()}: epsilon must be a finite number >= 0, got {epsilon!r}"
            )
        return epsilon

    def _check_alpha(self, alpha):
        if isinstance(alpha, Variable):
            return alpha
        if not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
            raise ValueError(f"{self._describe()}: alpha must be in [0, 1], got {alpha!r}")
        return alpha

    def _flag_for_self(self, value, keyword: str) -> bool:
        if isinstance(value, (bool, np.bool_, numbers.Integral)):
            return bool(value)
        if isinstance(value, Collection) and not isinstance(value, (str, bytes)):
            return any(layer is self for layer in value)
        raise TypeError(
            f"{self._describe()}: {keyword} must be None, a bool or a collection of "
            f"BatchNormLayer instances, got {value!r}"
        )

    def _flags(
        self, deterministic, batch_norm_use_averages, batch_norm_update_averages
    ) -> tuple[bool, bool]:
        """``(use_averages, update_averages)`` for this layer in one ``get_output_for`` call.

        A keyword left None defaults from ``deterministic`` (use the averages at test time,
        update them in training); otherwise :meth:`_flag_for_self` reads it.
        """
        if batch_norm_use_averages is None:
            use_averages = bool(deterministic)
        else:
            use_averages = self._flag_for_self(batch_norm_use_averages, "batch_norm_use_averages")
        if batch_norm_update_averages is None:
            update_averages = not deterministic
        else:
            update_averages = self._flag_for_self(
                batch_norm_update_averages, "batch_norm_update_averages"
            )
        return use_averages, update_averages

    @staticmethod
    def _float_input(input) -> pt.TensorVariable:
        """``input`` as a tensor; an integer one cast to floatX."""
        input = pt.as_tensor_variable(input)
        if not input.dtype.startswith("float"):
            input = pt.cast(input, pytensor.config.floatX)
        return input

    def _broadcast(self, param, input):
        """Insert broadcastable dimensions at the normalized axes of ``input``."""
        kept = iter(range(param.ndim))
        pattern = ["x" if axis in self.axes else next(kept) for axis in range(input.ndim)]
        return param.dimshuffle(pattern)

    def _update_average(self, stat, batch_value, collect_updates):
        """Add ``stat``'s moving-average update to ``collect_updates``, or hide it in the graph.

        Returns what the graph should use for ``stat``: ``stat`` itself, or
        (``collect_updates`` is None) a clone carrying the update as its
        ``default_update``, as Lasagne did.
        """

        def moved(current):
            alpha = pt.cast(self.alpha, stat.dtype)
            one = np.asarray(1, dtype=stat.dtype)
            return (one - alpha) * current + alpha * pt.cast(batch_value, stat.dtype)

        if collect_updates is not None:
            collect_updates[stat] = moved(stat)
            return stat
        if not isinstance(stat, SharedVariable):  # an expression: nothing to update
            return stat
        return with_default_update(stat, moved)

    def get_output_for(
        self,
        input,
        deterministic=False,
        batch_norm_use_averages=None,
        batch_norm_update_averages=None,
        collect_updates: dict | None = None,
        batch_norm_groups: int = 1,
        **kwargs,
    ) -> pt.TensorVariable:
        """Normalize ``input``.

        Parameters
        ----------
        input : TensorVariable
            The input, with as many dimensions as ``input_shape``.
        deterministic : bool
            Test mode: the default for ``batch_norm_use_averages`` (and the
            negated default for ``batch_norm_update_averages``).
        batch_norm_use_averages : bool or collection of BatchNormLayer, optional
            Normalize with the stored ``mean`` and ``inv_std`` rather than the
            batch statistics; a collection means "only for these layers".
        batch_norm_update_averages : bool or collection of BatchNormLayer, optional
            Update the moving averages; a collection means "only for these
            layers".
        collect_updates : dict, optional
            Receives ``{self.mean: new_mean, self.inv_std: new_inv_std}``.
            Without it the updates are hidden in the graph (``default_update``).
        batch_norm_groups : int
            Ghost batch norm while training (``batch_norm_update_averages``):
            split the batch (axis 0, which must be normalized over) into this
            many consecutive groups of equal size, each normalized by its own
            statistics, with one moving-average update per group, as
            :class:`~bntrain.nn.layers.GhostBatchNormLayer` does.  Needs
            ``collect_updates``.
        **kwargs
            Ignored (other layers' options).

        Returns
        -------
        TensorVariable
            The normalized input, same shape and dtype as ``input``.
        """
        input = self._float_input(input)
        if input.ndim != len(self.input_shape):
            raise ValueError(
                f"{self._describe()}: expected an input of {len(self.input_shape)} dimensions "
                f"(input_shape={self.input_shape!r}), got {input.ndim}"
            )
        use_averages, update_averages = self._flags(
            deterministic, batch_norm_use_averages, batch_norm_update_averages
        )
        dtype = input.dtype

        if update_averages and int(batch_norm_groups) > 1:
            n = self.input_shape[0]
            if n is not None and n % int(batch_norm_groups):
                raise ValueError(
                    f"{self._describe()}: a batch of {n} does not split into {batch_norm_groups}"
                )
            return self._per_group_output(
                input, (int(batch_norm_groups), -1), use_averages, collect_updates
            )
        if not use_averages or update_averages:
            batch_mean = pt.mean(input, axis=self.axes)
            batch_var = pt.var(input, axis=self.axes)
            eps = pt.cast(self.epsilon, dtype)
            batch_inv_std = pt.reciprocal(pt.sqrt(batch_var + eps))

        stored_mean, stored_inv_std = self.mean, self.inv_std
        if update_averages:
            stored_mean, stored_inv_std = (
                self._update_average(stat, batch_value, collect_updates)
                for stat, batch_value in ((self.mean, batch_mean), (self.inv_std, batch_inv_std))
            )

        if use_averages:
            mean, inv_std = pt.cast(stored_mean, dtype), pt.cast(stored_inv_std, dtype)
        else:
            # Lasagne's trick: clones carrying hidden updates must be part of the graph
            mean, inv_std = (
                batch if stored is stat else batch + pt.cast(0 * stored, dtype)
                for batch, stored, stat in (
                    (batch_mean, stored_mean, self.mean),
                    (batch_inv_std, stored_inv_std, self.inv_std),
                )
            )
        scale = inv_std if self.gamma is None else pt.cast(self.gamma, dtype) * inv_std
        output = (input - self._broadcast(mean, input)) * self._broadcast(scale, input)
        if self.beta is not None:
            output = output + self._broadcast(pt.cast(self.beta, dtype), input)
        return output

    def _per_group_output(self, input, groups: tuple[int, int], use_averages, collect_updates):
        """Ghost batch norm, training: statistics and moving-average updates per group.

        ``groups`` is ``(G, -1)`` (G groups) or ``(-1, V)`` (groups of V): the
        batch axis is split, in order, into consecutive groups of equal size.
        Each group is normalized with its own mean and variance (or with the
        averages when ``use_averages``), and the averages take one update per
        group, in group order, exactly as G calls on the groups would:
        ``s <- (1 - alpha)**G * s + sum_g alpha * (1 - alpha)**(G - 1 - g) * s_g``.
        """
        if 0 not in self.axes:
            raise ValueError(
                f"{self._describe()}: ghost batch norm needs the batch axis 0 in axes, "
                f"got axes={self.axes!r}"
            )
        if collect_updates is None:
            raise ValueError(
                f"{self._describe()}: training with ghost batch norm needs the updates "
                f"collected: call get_output(..., return_updates=True) and pass them to "
                f"pytensor.function (its per-group updates cannot be hidden Lasagne-style)"
            )
        dtype = input.dtype
        rest = [
            input.shape[i] if size is None else size
            for i, size in enumerate(self.input_shape)
            if i > 0
        ]
        grouped = input.reshape((*groups, *rest))
        axes = tuple(a + 1 for a in self.axes)  # batch axis 0 -> the in-group axis 1
        g_mean = pt.mean(grouped, axis=axes)  # (G, *param_shape)
        g_inv_std = pt.reciprocal(
            pt.sqrt(pt.var(grouped, axis=axes) + pt.cast(self.epsilon, dtype))
        )
        for stat, values in ((self.mean, g_mean), (self.inv_std, g_inv_std)):
            alpha = pt.cast(self.alpha, stat.dtype)
            keep = np.asarray(1, dtype=stat.dtype) - alpha
            values = pt.cast(values, stat.dtype)
            n = pt.cast(values.shape[0], stat.dtype)
            ages = n - pt.cumsum(pt.ones_like(values), axis=0)  # updates after group g
            collect_updates[stat] = keep**n * stat + pt.sum(alpha * keep**ages * values, axis=0)
        if use_averages:
            return self.get_output_for(
                input, batch_norm_use_averages=True, batch_norm_update_averages=False
            )
        kept = iter(range(1, 1 + len(self.param_shape)))
        pattern = [0] + ["x" if a in axes else next(kept) for a in range(1, grouped.ndim)]
        out = (grouped - g_mean.dimshuffle(pattern)) * g_inv_std.dimshuffle(pattern)
        if self.gamma is not None:
            out = out * self._broadcast(pt.cast(self.gamma, dtype), input).dimshuffle(
                "x", *range(input.ndim)
            )
        if self.beta is not None:
            out = out + self._broadcast(pt.cast(self.beta, dtype), input).dimshuffle(
                "x", *range(input.ndim)
            )
        return out.reshape(input.shape)


def batch_norm(layer: Layer, **kwargs) -> Layer:
    """Put batch normalization between a layer and its nonlinearity.

    The layer's ``nonlinearity`` (if it has one) is replaced by the identity and
    re-applied by a :class:`~bntrain.nn.layers.NonlinearityLayer` on top of a
    new :class:`BatchNormLayer`; the layer's bias ``b`` (redundant with the
    batch-norm ``beta``) is removed from its parameters and set to ``None``.

    Parameters
    ----------
    layer : Layer
        The layer to normalize the output of (modified in place).
    **kwargs
        Passed to :class:`BatchNormLayer`.  Without ``name``, a named layer's
        batch-norm layer is called ``<name>_bn`` and the nonlinearity layer
        ``<name>_bn_nonlin``.

    Returns
    -------
    Layer
        The top of the new stack: the :class:`NonlinearityLayer`, or the
        :class:`BatchNormLayer` when ``layer`` has no nonlinearity.

    Examples
    --------
    >>> import bntrain.nn as lasagne
    >>> l_in = lasagne.layers.InputLayer((None, 20))
    >>> l_dense = lasagne.layers.DenseLayer(l_in, 5, name="fc")
    >>> top = batch_norm(l_dense)
    >>> type(top).__name__, top.name, top.input_layer.name
    ('NonlinearityLayer', 'fc_bn_nonlin', 'fc_bn')
    >>> l_dense.b is None
    True
    """
    return insert_normalization(layer, BatchNormLayer, **kwargs)


def insert_normalization(layer: Layer, layer_class: type, **kwargs) -> Layer:
    """:func:`batch_norm` with another normalization class (e.g. ``BatchReNormLayer``)."""
    nonlinearity = getattr(layer, "nonlinearity", None)
    if nonlinearity is not None:
        layer.nonlinearity = nonlinearities.identity
    bias = getattr(layer, "b", None)
    if bias is not None:
        layer.params.pop(bias, None)
        layer.b = None
    bn_name = kwargs.pop("name", None)
    if bn_name is None and getattr(layer, "name", None):
        bn_name = f"{layer.name}_bn"
    top = layer_class(layer, name=bn_name, **kwargs)
    if nonlinearity is not None:
        nonlin_name = f"{bn_name}_nonlin" if bn_name else None
        top = NonlinearityLayer(top, nonlinearity, name=nonlin_name)
    return top

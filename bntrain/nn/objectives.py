"""Loss and accuracy expressions (mirrors ``lasagne.objectives``).

Each function returns an element-wise (per example) expression; reduce it to a
scalar with :func:`aggregate`.  Predictions are probabilities (the output of a
sigmoid or softmax layer), as in Lasagne; nothing is clipped.

bntrain keeps graphs float32: integer or boolean targets are cast to the
predictions' dtype before any arithmetic, and the accuracies are returned as
0/1 floats (Lasagne returned integers, whose mean is float64).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt

__all__ = [
    "binary_crossentropy",
    "categorical_crossentropy",
    "squared_error",
    "huber_loss",
    "binary_hinge_loss",
    "multiclass_hinge_loss",
    "binary_accuracy",
    "categorical_accuracy",
    "aggregate",
    "align_targets",
]


def _is_float(x) -> bool:
    return x.dtype.startswith("float")


def _float_dtype(x) -> str:
    return x.dtype if _is_float(x) else pytensor.config.floatX


def _cast_like(targets, predictions):
    """Cast integer/boolean ``targets`` to the float dtype of ``predictions``."""
    if not _is_float(targets):
        return pt.cast(targets, _float_dtype(predictions))
    return targets


def align_targets(predictions, targets):
    """Make a target vector broadcast against a ``(batch, 1)`` prediction matrix.

    If ``predictions`` is a matrix whose second axis is statically known to be
    of length 1 and ``targets`` is a vector, ``targets`` becomes a column.
    Otherwise both are returned unchanged (as tensor variables).
    """
    predictions = pt.as_tensor_variable(predictions)
    targets = pt.as_tensor_variable(targets)
    if predictions.ndim == 2 and predictions.type.shape[1] == 1 and targets.ndim == 1:
        targets = targets.dimshuffle(0, "x")
    return predictions, targets


def binary_crossentropy(predictions, targets):
    """Binary cross-entropy ``-(t log p + (1 - t) log(1 - p))``, element-wise.

    Parameters
    ----------
    predictions : tensor
        Probabilities in ``(0, 1)`` (typically a sigmoid output).
    targets : tensor
        Targets in ``[0, 1]`` (0/1 labels or soft targets) of the same shape;
        a vector against ``(batch, 1)`` predictions is aligned (see
        :func:`align_targets`).

    Returns
    -------
    tensor
        The element-wise loss.
    """
    predictions, targets = align_targets(predictions, targets)
    targets = _cast_like(targets, predictions)
    one = pt.constant(np.asarray(1, dtype=_float_dtype(predictions)))
    return -(targets * pt.log(predictions) + (one - targets) * pt.log(one - predictions))


def categorical_crossentropy(predictions, targets):
    """Categorical cross-entropy between predicted and target distributions.

    Parameters
    ----------
    predictions : tensor
        Class probabilities, ``(batch, classes)`` (each row sums to 1).
    targets : tensor
        Either an integer vector of class indices (``(batch,)``) or a matrix
        of target distributions (one-hot or soft) of the same shape as
        ``predictions``.

    Returns
    -------
    tensor
        ``(batch,)``: ``-log(predictions[i, targets[i]])`` for indices,
        ``-sum_k targets[i, k] log(predictions[i, k])`` for distributions.

    Raises
    ------
    TypeError
        On a rank mismatch, or class indices that are not integers.

    Notes
    -----
    The logarithm is taken of the whole prediction matrix before any indexing,
    so when ``predictions`` is :func:`bntrain.nn.nonlinearities.softmax` of
    logits, PyTensor's stabilizing rewrites replace ``log(softmax(z))`` with a
    log-softmax: the loss and its gradient stay finite even for logits in the
    thousands, where the probabilities themselves underflow to 0.
    """
    predictions = pt.as_tensor_variable(predictions)
    targets = pt.as_tensor_variable(targets)
    if targets.ndim == predictions.ndim:
        targets = _cast_like(targets, predictions)
        return -pt.sum(targets * pt.log(predictions), axis=-1)
    if targets.ndim == predictions.ndim - 1:
        if not targets.dtype.startswith(("int", "uint")):
            raise TypeError(
                "categorical_crossentropy: class-index targets must be integers, "
                f"got dtype {targets.dtype}"
            )
        # log first, index second: keeps log(softmax(z)) visible to the rewrites.
        log_p = pt.log(predictions)
        if predictions.ndim != 2:
            log_p = log_p.reshape((-1, log_p.shape[-1]))
        flat_targets = targets.flatten()
        picked = log_p[pt.arange(flat_targets.shape[0]), flat_targets]
        if predictions.ndim != 2:
            picked = picked.reshape(targets.shape)
        return -picked
    raise TypeError(
        "categorical_crossentropy: rank mismatch between predictions "
        f"({predictions.ndim}-D) and targets ({targets.ndim}-D)"
    )


def squared_error(a, b):
    """Element-wise squared difference ``(a - b) ** 2``.

    A vector ``b`` against a ``(batch, 1)`` matrix ``a`` is aligned (see
    :func:`align_targets`).
    """
    a, b = align_targets(a, b)
    b = _cast_like(b, a)
    return pt.sqr(a - b)


def huber_loss(predictions, targets, delta=1):
    """Element-wise Huber loss: quadratic near the target, linear beyond ``delta``.

    With ``d = |targets - predictions|``: ``0.5 * d**2`` where ``d <= delta``,
    ``delta * (d - 0.5 * delta)`` elsewhere (continuous, with a continuous
    gradient).  Vector targets against a ``(batch, 1)`` matrix are aligned as
    for :func:`squared_error`.
    """
    predictions, targets = align_targets(predictions, targets)
    targets = _cast_like(targets, predictions)
    abs_diff = pt.abs(targets - predictions)
    delta = pt.cast(delta, predictions.dtype) if _is_float(predictions) else delta
    quadratic = 0.5 * pt.sqr(abs_diff)
    linear = delta * (abs_diff - 0.5 * delta)
    return pt.switch(abs_diff <= delta, quadratic, linear)


def binary_hinge_loss(predictions, targets, delta=1, log_odds=None, binary=True):
    """Binary hinge loss ``max(0, delta - predictions * targets)``, element-wise.

    Parameters
    ----------
    predictions : tensor
        Log-odds (``log_odds=True``) or probabilities in ``(0, 1)``
        (``log_odds=False``, converted to log-odds).
    targets : tensor
        0/1 labels (``binary=True``, mapped to -1/+1) or -1/+1 labels.
    delta : float
        The margin.
    log_odds : bool, optional
        Whether ``predictions`` are log-odds.  Left unset it means ``True``
        with a ``FutureWarning``, as in Lasagne.
    binary : bool
        Whether ``targets`` are 0/1.
    """
    if log_odds is None:
        warnings.warn(
            "binary_hinge_loss: the default of `log_odds` will change to False in a future "
            "version (as in Lasagne). Pass log_odds=True to keep treating predictions as "
            "log-odds, or log_odds=False for probabilities.",
            FutureWarning,
            stacklevel=2,
        )
        log_odds = True
    predictions = pt.as_tensor_variable(predictions)
    targets = _cast_like(pt.as_tensor_variable(targets), predictions)
    dtype = _float_dtype(predictions)
    one = pt.constant(np.asarray(1, dtype=dtype))
    if not log_odds:
        predictions = pt.log(predictions / (one - predictions))
    if binary:
        targets = pt.constant(np.asarray(2, dtype=dtype)) * targets - one
    predictions, targets = align_targets(predictions, targets)
    margin = pt.constant(np.asarray(delta, dtype=dtype))
    return pt.maximum(margin - predictions * targets, pt.constant(np.asarray(0, dtype=dtype)))


def multiclass_hinge_loss(predictions, targets, delta=1):
    """Multi-class hinge loss ``max(0, max_{k != t} p_k - p_t + delta)`` per example.

    Parameters
    ----------
    predictions : tensor
        ``(batch, classes)`` scores.
    targets : tensor
        Integer class indices ``(batch,)`` or a one-hot matrix.
    delta : float
        The margin.

    Raises
    ------
    TypeError
        On a rank mismatch between targets and predictions.
    """
    predictions = pt.as_tensor_variable(predictions)
    targets = pt.as_tensor_variable(targets)
    dtype = _float_dtype(predictions)
    num_cls = predictions.shape[-1]
    if targets.ndim == predictions.ndim - 1:
        is_target = pt.eq(pt.expand_dims(targets, -1), pt.arange(num_cls))
    elif targets.ndim == predictions.ndim:
        is_target = pt.neq(targets, 0)
    else:
        raise TypeError(
            "multiclass_hinge_loss: rank mismatch between predictions "
            f"({predictions.ndim}-D) and targets ({targets.ndim}-D)"
        )
    zero = pt.constant(np.asarray(0, dtype=dtype))
    corrects = pt.sum(pt.switch(is_target, predictions, zero), axis=-1)
    minus_inf = pt.constant(np.asarray(-np.inf, dtype=dtype))
    rest = pt.max(pt.switch(is_target, minus_inf, predictions), axis=-1)
    margin = pt.constant(np.asarray(delta, dtype=dtype))
    return pt.maximum(rest - corrects + margin, zero)


def binary_accuracy(predictions, targets, threshold=0.5):
    """Element-wise binary accuracy: 1 where ``(predictions >= threshold) == targets``.

    Returned as 0/1 floats of the predictions' dtype (Lasagne returned
    integers), so that its mean stays float32.
    """
    predictions, targets = align_targets(predictions, targets)
    dtype = _float_dtype(predictions)
    hit = pt.eq(pt.ge(predictions, pt.constant(np.asarray(threshold, dtype=dtype))), targets)
    return pt.cast(hit, dtype)


def categorical_accuracy(predictions, targets, top_k=1):
    """Per-example accuracy: 1 where the target class is among the ``top_k`` highest predictions.

    Parameters
    ----------
    predictions : tensor
        ``(batch, classes)`` scores or probabilities.
    targets : tensor
        Integer class indices ``(batch,)`` or a one-hot matrix (its argmax is used).
    top_k : int
        How many of the highest-scoring classes count as a hit.

    Returns
    -------
    tensor
        0/1 floats of the predictions' dtype (Lasagne returned integers).

    Raises
    ------
    TypeError
        On a rank mismatch between targets and predictions.
    ValueError
        If ``top_k`` is not a positive int.
    """
    predictions = pt.as_tensor_variable(predictions)
    targets = pt.as_tensor_variable(targets)
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ValueError(f"categorical_accuracy: top_k must be a positive int, got {top_k!r}")
    if targets.ndim == predictions.ndim:
        targets = pt.argmax(targets, axis=-1)
    elif targets.ndim != predictions.ndim - 1:
        raise TypeError(
            "categorical_accuracy: rank mismatch between predictions "
            f"({predictions.ndim}-D) and targets ({targets.ndim}-D)"
        )
    if top_k == 1:
        hit = pt.eq(pt.argmax(predictions, axis=-1), targets)
    else:
        top = pt.argsort(predictions, axis=-1)[..., -int(top_k) :]
        hit = pt.any(pt.eq(top, pt.expand_dims(targets, -1)), axis=-1)
    return pt.cast(hit, _float_dtype(predictions))


def aggregate(loss, weights=None, mode: str = "mean"):
    """Reduce an element-wise loss to a scalar, optionally weighting the elements.

    Parameters
    ----------
    loss : tensor
        Element-wise loss (or accuracy).
    weights : tensor, optional
        Weights broadcastable to ``loss``; ``loss * weights`` is reduced.
    mode : {'mean', 'sum', 'normalized_sum'}
        ``'mean'`` averages, ``'sum'`` sums, ``'normalized_sum'`` divides the
        weighted sum by ``sum(weights)`` (needs ``weights``).

    Raises
    ------
    ValueError
        For an unknown ``mode``, or ``'normalized_sum'`` without weights.
    """
    loss = pt.as_tensor_variable(loss)
    if not _is_float(loss):
        loss = pt.cast(loss, pytensor.config.floatX)
    if mode not in ("mean", "sum", "normalized_sum"):
        raise ValueError(f"aggregate: mode must be 'mean', 'sum' or 'normalized_sum', got {mode!r}")
    if weights is not None:
        weights = _cast_like(pt.as_tensor_variable(weights), loss)
        loss = loss * weights
    if mode == "mean":
        return loss.mean()
    if mode == "sum":
        return loss.sum()
    if weights is None:
        raise ValueError(
            "aggregate: mode='normalized_sum' got weights=None; the weighted modes require weights"
        )
    return loss.sum() / weights.sum()

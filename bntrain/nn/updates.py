"""Update rules for gradient-based training (mirrors ``lasagne.updates``).

Every rule takes a loss (or a list of gradients) and a list of parameters
(shared variables) and returns an ``OrderedDict`` of updates for
``pytensor.function(..., updates=...)``, exactly as in Lasagne.  Rules compose:
:func:`momentum` is :func:`sgd` followed by :func:`apply_momentum`.

Differences from Lasagne, all additive:

* Optimizer state is named.  Every state variable is a shared variable called
  ``'<param name>.<slot>'`` (``'dense1.W.velocity'``, ``'dense1.W.m'``); a
  parameter without a name is called ``'param<i>'`` after its position in the
  ``params`` list; the step counter of :func:`adam` / :func:`adamax` is
  ``'adam.t'`` / ``'adamax.t'``.  :func:`optimizer_state` collects them by
  name for checkpoints.

  ========================  =====================================
  rule                      slots
  ========================  =====================================
  apply_momentum, momentum  ``velocity``
  nesterov variants         ``velocity``
  adagrad, rmsprop          ``accu``
  adadelta                  ``accu``, ``delta_accu``
  adam                      ``m``, ``v`` (and ``adam.t``)
  adamax                    ``m``, ``u`` (and ``adamax.t``)
  ========================  =====================================

* Everything stays float32: the learning rate and every hyperparameter may be
  a Python number, a shared variable or a scalar expression (a schedule sets a
  shared learning rate between steps); numbers become floatX constants and
  non-floatX expressions are cast.
* :func:`apply_weight_decay` adds decoupled weight decay (AdamW).  Plain L2
  decay for SGD/momentum is a loss term (:mod:`bntrain.nn.regularization`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

__all__ = [
    "get_or_compute_grads",
    "sgd",
    "apply_momentum",
    "momentum",
    "apply_nesterov_momentum",
    "nesterov_momentum",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adam",
    "adamax",
    "amsgrad",
    "norm_constraint",
    "total_norm_constraint",
    "apply_weight_decay",
    "optimizer_state",
]


def _scalar(value, what: str, where: str):
    """A hyperparameter as a floatX scalar (constant, or cast expression)."""
    floatx = pytensor.config.floatX
    if isinstance(value, Variable):
        return value if value.dtype == floatx else pt.cast(value, floatx)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{where}: {what} must be a number or a scalar expression, got {value!r}")
    return pt.constant(np.asarray(value, dtype=floatx), name=f"{where}.{what}")


def _const(value: float):
    return pt.constant(np.asarray(value, dtype=pytensor.config.floatX))


def _state_base(params: list) -> list[str]:
    return [p.name if p.name else f"param{i}" for i, p in enumerate(params)]


def _state_var(param, name: str) -> SharedVariable:
    """A zero-filled shared variable with ``param``'s shape, dtype and static shape."""
    value = param.get_value(borrow=True)
    return pytensor.shared(
        np.zeros(value.shape, dtype=value.dtype), name=name, shape=param.type.shape
    )


def _param_list(params, where: str) -> list:
    params = list(params)
    bad = [p for p in params if not isinstance(p, SharedVariable)]
    if bad:
        raise ValueError(
            f"{where}: params must contain shared variables only, got {bad[0]!r} "
            f"({type(bad[0]).__name__}). If it contains arbitrary parameter expressions, "
            "bntrain.nn.utils.collect_shared_vars() may help you."
        )
    return params


def get_or_compute_grads(loss_or_grads, params) -> list:
    """Return the gradients of ``loss_or_grads`` w.r.t. ``params``, or pass a list through.

    Parameters
    ----------
    loss_or_grads : scalar expression or list of expressions
        A loss to differentiate, or the gradients already (one per parameter).
    params : list of SharedVariable
        The parameters.

    Raises
    ------
    ValueError
        If ``params`` holds anything but shared variables, or a gradient list
        has the wrong length.
    """
    params = _param_list(params, "get_or_compute_grads")
    if isinstance(loss_or_grads, list | tuple):
        if len(loss_or_grads) != len(params):
            raise ValueError(
                f"get_or_compute_grads: got {len(loss_or_grads)} gradient expressions "
                f"for {len(params)} parameters"
            )
        return loss_or_grads if isinstance(loss_or_grads, list) else list(loss_or_grads)
    return pytensor.grad(loss_or_grads, params)


def sgd(loss_or_grads, params, learning_rate) -> OrderedDict:
    """Stochastic gradient descent: ``param <- param - learning_rate * grad``.

    Parameters
    ----------
    loss_or_grads : scalar expression or list of expressions
        The loss, or its gradients.
    params : list of SharedVariable
        The parameters to update.
    learning_rate : float or scalar expression
        The step size (a shared variable lets a schedule change it).
    """
    params = _param_list(params, "sgd")
    grads = get_or_compute_grads(loss_or_grads, params)
    lr = _scalar(learning_rate, "learning_rate", "sgd")
    updates = OrderedDict()
    for param, grad in zip(params, grads, strict=True):
        updates[param] = param - lr * grad
    return updates


def apply_momentum(updates: Mapping, params=None, momentum=0.9) -> OrderedDict:
    """Add classical momentum to existing updates.

    ``velocity <- momentum * velocity + (updates[param] - param)`` and
    ``param <- param + velocity``.

    Parameters
    ----------
    updates : dict
        Updates to modify (not changed in place).
    params : list of SharedVariable, optional
        The parameters to add momentum to; default: every key of ``updates``.
    momentum : float or scalar expression
        The momentum coefficient.

    Returns
    -------
    OrderedDict
        The updates, with one ``'<param name>.velocity'`` state per parameter.
    """
    params = list(updates.keys()) if params is None else list(params)
    mom = _scalar(momentum, "momentum", "apply_momentum")
    updates = OrderedDict(updates)
    for param, base in zip(params, _state_base(params), strict=True):
        velocity = _state_var(param, f"{base}.velocity")
        x = mom * velocity + updates[param]
        updates[velocity] = x - param
        updates[param] = x
    return updates


def momentum(loss_or_grads, params, learning_rate, momentum=0.9) -> OrderedDict:
    """SGD with classical momentum (:func:`sgd` then :func:`apply_momentum`)."""
    params = list(params)
    return apply_momentum(sgd(loss_or_grads, params, learning_rate), params, momentum)


def apply_nesterov_momentum(updates: Mapping, params=None, momentum=0.9) -> OrderedDict:
    """Add Nesterov momentum to existing updates.

    With ``step = updates[param] - param``:
    ``velocity <- momentum * velocity + step`` and
    ``param <- param + momentum * velocity + step`` (the "look-ahead" form
    of Sutskever et al. 2013, as in Lasagne).

    Parameters
    ----------
    updates : dict
        Updates to modify (not changed in place).
    params : list of SharedVariable, optional
        The parameters to add momentum to; default: every key of ``updates``.
    momentum : float or scalar expression
        The momentum coefficient.
    """
    params = list(updates.keys()) if params is None else list(params)
    mom = _scalar(momentum, "momentum", "apply_nesterov_momentum")
    updates = OrderedDict(updates)
    for param, base in zip(params, _state_base(params), strict=True):
        velocity = _state_var(param, f"{base}.velocity")
        x = mom * velocity + updates[param] - param
        updates[velocity] = x
        updates[param] = mom * x + updates[param]
    return updates


def nesterov_momentum(loss_or_grads, params, learning_rate, momentum=0.9) -> OrderedDict:
    """SGD with Nesterov momentum (:func:`sgd` then :func:`apply_nesterov_momentum`)."""
    params = list(params)
    return apply_nesterov_momentum(sgd(loss_or_grads, params, learning_rate), params, momentum)


def adagrad(loss_or_grads, params, learning_rate=1.0, epsilon=1e-6) -> OrderedDict:
    """Adagrad (Duchi et al. 2011).

    ``accu <- accu + grad**2``;
    ``param <- param - learning_rate * grad / sqrt(accu + epsilon)``.
    State: ``'<param>.accu'``.
    """
    params = _param_list(params, "adagrad")
    grads = get_or_compute_grads(loss_or_grads, params)
    lr = _scalar(learning_rate, "learning_rate", "adagrad")
    eps = _scalar(epsilon, "epsilon", "adagrad")
    updates = OrderedDict()
    for param, grad, base in zip(params, grads, _state_base(params), strict=True):
        accu = _state_var(param, f"{base}.accu")
        accu_new = accu + pt.sqr(grad)
        updates[accu] = accu_new
        updates[param] = param - lr * grad / pt.sqrt(accu_new + eps)
    return updates


def rmsprop(loss_or_grads, params, learning_rate=1.0, rho=0.9, epsilon=1e-6) -> OrderedDict:
    """RMSProp (Tieleman & Hinton 2012).

    ``accu <- rho * accu + (1 - rho) * grad**2``;
    ``param <- param - learning_rate * grad / sqrt(accu + epsilon)``.
    State: ``'<param>.accu'``.
    """
    params = _param_list(params, "rmsprop")
    grads = get_or_compute_grads(loss_or_grads, params)
    lr = _scalar(learning_rate, "learning_rate", "rmsprop")
    rho = _scalar(rho, "rho", "rmsprop")
    eps = _scalar(epsilon, "epsilon", "rmsprop")
    one = _const(1)
    updates = OrderedDict()
    for param, grad, base in zip(params, grads, _state_base(params), strict=True):
        accu = _state_var(param, f"{base}.accu")
        accu_new = rho * accu + (one - rho) * pt.sqr(grad)
        updates[accu] = accu_new
        updates[param] = param - lr * grad / pt.sqrt(accu_new + eps)
    return updates


def adadelta(loss_or_grads, params, learning_rate=1.0, rho=0.95, epsilon=1e-6) -> OrderedDict:
    """Adadelta (Zeiler 2012).

    ``accu <- rho * accu + (1 - rho) * grad**2``;
    ``step = grad * sqrt(delta_accu + epsilon) / sqrt(accu + epsilon)``;
    ``param <- param - learning_rate * step``;
    ``delta_accu <- rho * delta_accu + (1 - rho) * step**2``.
    State: ``'<param>.accu'``, ``'<param>.delta_accu'``.
    """
    params = _param_list(params, "adadelta")
    grads = get_or_compute_grads(loss_or_grads, params)
    lr = _scalar(learning_rate, "learning_rate", "adadelta")
    rho = _scalar(rho, "rho", "adadelta")
    eps = _scalar(epsilon, "epsilon", "adadelta")
    one = _const(1)
    updates = OrderedDict()
    for param, grad, base in zip(params, grads, _state_base(params), strict=True):
        accu = _state_var(param, f"{base}.accu")
        delta_accu = _state_var(param, f"{base}.delta_accu")
        accu_new = rho * accu + (one - rho) * pt.sqr(grad)
        updates[accu] = accu_new
        step = grad * pt.sqrt(delta_accu + eps) / pt.sqrt(accu_new + eps)
        updates[param] = param - lr * step
        updates[delta_accu] = rho * delta_accu + (one - rho) * pt.sqr(step)
    return updates


def _step_counter(name: str) -> SharedVariable:
    return pytensor.shared(np.asarray(0, dtype=pytensor.config.floatX), name=name)


def adam(
    loss_or_grads, params, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8
) -> OrderedDict:
    """Adam (Kingma & Ba 2014), with bias correction folded into the step size.

    With ``t`` the step number (1 on the first call):
    ``m <- beta1 m + (1 - beta1) grad``, ``v <- beta2 v + (1 - beta2) grad**2``,
    ``param <- param - lr sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + epsilon)``.

    State: ``'<param>.m'``, ``'<param>.v'`` and the step counter ``'adam.t'``
    (a floatX scalar, exact up to 2**24 steps).  For AdamW wrap the result in
    :func:`apply_weight_decay`.
    """
    return _adam(loss_or_grads, params, learning_rate, beta1, beta2, epsilon, name="adam")


def _adam(
    loss_or_grads,
    params,
    learning_rate,
    beta1,
    beta2,
    epsilon,
    *,
    name: str,
    v_max: bool = False,
) -> OrderedDict:
    """Adam; with ``v_max`` AMSGrad (the step divides by ``v_hat``, the running maximum of ``v``).

    ``name`` names the step counter (``'<name>.t'``) and the function in error messages.
    """
    params = _param_list(params, name)
    grads = get_or_compute_grads(loss_or_grads, params)
    lr = _scalar(learning_rate, "learning_rate", name)
    beta1 = _scalar(beta1, "beta1", name)
    beta2 = _scalar(beta2, "beta2", name)
    eps = _scalar(epsilon, "epsilon", name)
    one = _const(1)
    t_prev = _step_counter(f"{name}.t")
    t = t_prev + one
    a_t = lr * pt.sqrt(one - beta2**t) / (one - beta1**t)
    updates = OrderedDict()
    for param, g_t, base in zip(params, grads, _state_base(params), strict=True):
        m_prev = _state_var(param, f"{base}.m")
        v_prev = _state_var(param, f"{base}.v")
        m_t = beta1 * m_prev + (one - beta1) * g_t
        v_t = beta2 * v_prev + (one - beta2) * pt.sqr(g_t)
        updates[m_prev] = m_t
        updates[v_prev] = v_t
        v_step = v_t
        if v_max:
            v_hat_prev = _state_var(param, f"{base}.v_hat")
            v_step = updates[v_hat_prev] = pt.maximum(v_hat_prev, v_t)
        updates[param] = param - a_t * m_t / (pt.sqrt(v_step) + eps)
    updates[t_prev] = t
    return updates


def adamax(
    loss_or_grads, params, learning_rate=0.002, beta1=0.9, beta2=0.999, epsilon=1e-8
) -> OrderedDict:
    """Adamax (Kingma & Ba 2014): Adam with the infinity norm.

    ``m <- beta1 m + (1 - beta1) grad``, ``u <- max(beta2 u, |grad|)``,
    ``param <- param - lr / (1 - beta1**t) * m / (u + epsilon)``.

    State: ``'<param>.m'``, ``'<param>.u'`` and the step counter ``'adamax.t'``.
    """
    params = _param_list(params, "adamax")
    grads = get_or_compute_grads(loss_or_grads, params)
    lr = _scalar(learning_rate, "learning_rate", "adamax")
    beta1 = _scalar(beta1, "beta1", "adamax")
    beta2 = _scalar(beta2, "beta2", "adamax")
    eps = _scalar(epsilon, "epsilon", "adamax")
    one = _const(1)
    t_prev = _step_counter("adamax.t")
    t = t_prev + one
    a_t = lr / (one - beta1**t)
    updates = OrderedDict()
    for param, g_t, base in zip(params, grads, _state_base(params), strict=True):
        m_prev = _state_var(param, f"{base}.m")
        u_prev = _state_var(param, f"{base}.u")
        m_t = beta1 * m_prev + (one - beta1) * g_t
        u_t = pt.maximum(beta2 * u_prev, pt.abs(g_t))
        updates[m_prev] = m_t
        updates[u_prev] = u_t
        updates[param] = param - a_t * m_t / (u_t + eps)
    updates[t_prev] = t
    return updates


def amsgrad(
    loss_or_grads, params, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8
) -> OrderedDict:
    """AMSGrad (Reddi et al. 2018): Adam whose second moment never decreases.

    As :func:`adam`, with ``v_hat <- max(v_hat, v)`` in place of ``v`` in the step:
    ``param <- param - lr sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v_hat) + epsilon)``.

    State: ``'<param>.m'``, ``'<param>.v'``, ``'<param>.v_hat'`` and the step
    counter ``'amsgrad.t'``.
    """
    return _adam(
        loss_or_grads, params, learning_rate, beta1, beta2, epsilon, name="amsgrad", v_max=True
    )


def norm_constraint(tensor_var, max_norm, norm_axes=None, epsilon=1e-7):
    """Rescale the incoming weight vectors of ``tensor_var`` to a norm of at most ``max_norm``.

    Parameters
    ----------
    tensor_var : tensor
        Weights (typically an update expression for them).
    max_norm : float
        Maximum norm of each weight vector.
    norm_axes : sequence of int, optional
        Axes to compute the norms over; default ``(0,)`` for 2-D (dense
        ``W``) and all but the first axis for 3-D to 5-D (convolution ``W``).
    epsilon : float
        Added to the norms before dividing.

    Raises
    ------
    ValueError
        For another dimensionality without ``norm_axes``.
    """
    tensor_var = pt.as_tensor_variable(tensor_var)
    ndim = tensor_var.ndim
    if norm_axes is not None:
        sum_over = tuple(norm_axes)
    elif ndim == 2:
        sum_over = (0,)
    elif ndim in (3, 4, 5):
        sum_over = tuple(range(1, ndim))
    else:
        raise ValueError(
            f"norm_constraint: Unsupported tensor dimensionality {ndim}; specify `norm_axes`"
        )
    dtype = tensor_var.dtype if tensor_var.dtype.startswith("float") else pytensor.config.floatX
    norms = pt.sqrt(pt.sum(pt.sqr(tensor_var), axis=sum_over, keepdims=True))
    target = pt.clip(norms, np.asarray(0, dtype=dtype), np.asarray(max_norm, dtype=dtype))
    return tensor_var * (target / (np.asarray(epsilon, dtype=dtype) + norms))


def total_norm_constraint(tensor_vars, max_norm, epsilon=1e-7, return_norm=False):
    """Rescale a list of tensors (gradients) so that their joint L2 norm is at most ``max_norm``.

    Parameters
    ----------
    tensor_vars : list of tensors
        Typically the gradients of all parameters.
    max_norm : float
        Threshold of the total norm.
    epsilon : float
        Added to the norm before dividing.
    return_norm : bool
        Also return the total norm (before rescaling).

    Returns
    -------
    list of tensors, or (list, scalar)
        The rescaled tensors (and the norm).

    Examples
    --------
    >>> import pytensor.tensor as pt
    >>> from bntrain.nn.updates import total_norm_constraint
    >>> g = [pt.fvector("g1"), pt.fmatrix("g2")]
    >>> clipped, norm = total_norm_constraint(g, 5.0, return_norm=True)
    """
    tensor_vars = [pt.as_tensor_variable(t) for t in tensor_vars]
    if not tensor_vars:
        raise ValueError("total_norm_constraint: tensor_vars is empty")
    floatx = pytensor.config.floatX
    total = None
    for tensor in tensor_vars:
        term = pt.sum(pt.sqr(tensor))
        total = term if total is None else total + term
    norm = pt.sqrt(total)
    target = pt.clip(norm, np.asarray(0, dtype=floatx), np.asarray(max_norm, dtype=floatx))
    multiplier = target / (np.asarray(epsilon, dtype=floatx) + norm)
    scaled = [tensor * multiplier for tensor in tensor_vars]
    if return_norm:
        return scaled, norm
    return scaled


def apply_weight_decay(updates: Mapping, params, learning_rate, weight_decay) -> OrderedDict:
    """Add decoupled weight decay to existing updates (AdamW, Loshchilov & Hutter 2019).

    ``param <- updates[param] - learning_rate * weight_decay * param``: the
    decay shrinks the *current* parameter and bypasses the adaptive scaling,
    unlike an L2 loss term.  Use :func:`adam` then this for AdamW; apply it
    to the weights only (e.g. ``get_all_params(net, regularizable=True)``).

    Parameters
    ----------
    updates : dict
        Updates to modify (not changed in place).
    params : list of SharedVariable
        The parameters to decay; each must be a key of ``updates``.
    learning_rate : float or scalar expression
        The learning rate (pass the same shared variable as to the optimizer
        so that a schedule scales the decay too).
    weight_decay : float or scalar expression
        The decay coefficient (>= 0).

    Raises
    ------
    ValueError
        If a parameter has no update or ``weight_decay`` is negative.
    """
    if isinstance(weight_decay, int | float | np.integer | np.floating) and weight_decay < 0:
        raise ValueError(f"apply_weight_decay: weight_decay must be >= 0, got {weight_decay!r}")
    lr = _scalar(learning_rate, "learning_rate", "apply_weight_decay")
    wd = _scalar(weight_decay, "weight_decay", "apply_weight_decay")
    updates = OrderedDict(updates)
    for param in params:
        if param not in updates:
            raise ValueError(
                f"apply_weight_decay: parameter {param.name or param!r} has no update to decay"
            )
        updates[param] = updates[param] - lr * wd * param
    return updates


def optimizer_state(updates: Mapping, params: Iterable) -> OrderedDict[str, SharedVariable]:
    """Return the optimizer's state variables by name.

    Parameters
    ----------
    updates : dict
        Updates from one of the rules above (possibly composed).
    params : iterable of SharedVariable
        The parameters being trained; every other updated shared variable is
        state.  (Pass the optimizer's updates only: batch-norm moving
        averages merged in would count as state too.)

    Returns
    -------
    OrderedDict[str, SharedVariable]
        ``name -> shared variable`` in update order, e.g.
        ``{'dense1.W.m': ..., 'dense1.W.v': ..., 'adam.t': ...}``.

    Raises
    ------
    ValueError
        If a state variable has no name, or two have the same name (two
        parameters with the same name, e.g. from unnamed layers, or two
        ``adam`` calls in one updates dict).
    """
    param_set = set(params)
    state: OrderedDict[str, SharedVariable] = OrderedDict()
    for var in updates:
        if var in param_set:
            continue
        name = getattr(var, "name", None)
        if not name:
            raise ValueError(f"optimizer_state: updated variable {var!r} has no name")
        if name in state:
            raise ValueError(
                f"optimizer_state: two state variables are named {name!r}; give the "
                "parameters unique names (name the layers) or use one optimizer per updates dict"
            )
        state[name] = var
    return state

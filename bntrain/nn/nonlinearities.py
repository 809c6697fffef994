"""Nonlinearities (mirrors ``lasagne.nonlinearities``), plus a name registry for config files.

Every nonlinearity maps a PyTensor expression to an expression of the same
shape and dtype; none upcasts float32.  The rectifiers (and ``identity``) also
map a NumPy array to a NumPy array, as Lasagne's did.

:func:`get` turns a config file's name (``"relu"``) into the function and
:func:`name_of` turns a function back into its canonical name (for
checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytensor.tensor as pt
from pytensor.tensor import special

from .utils import close_matches

__all__ = [
    "sigmoid",
    "softmax",
    "tanh",
    "ScaledTanH",
    "ScaledTanh",
    "rectify",
    "LeakyRectify",
    "leaky_rectify",
    "very_leaky_rectify",
    "elu",
    "SELU",
    "selu",
    "softplus",
    "linear",
    "identity",
    "get",
    "name_of",
    "names",
]


def _const(value: float, x):
    """``value`` as a constant of ``x``'s float dtype (so float32 stays float32)."""
    x = pt.as_tensor_variable(x)
    if x.dtype.startswith("float"):
        return pt.constant(np.asarray(value, dtype=x.dtype))
    return value


def sigmoid(x):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, in ``(0, 1)``."""
    return pt.sigmoid(x)


def softmax(x):
    """Softmax over the last axis (row-wise for a 2-D ``(batch, classes)`` input).

    Computed stably (the row maximum is subtracted first).  PyTensor rewrites
    ``log(softmax(x))`` into a stable log-softmax, which
    :func:`bntrain.nn.objectives.categorical_crossentropy` relies on.
    """
    x = pt.as_tensor_variable(x)
    if x.ndim < 1:
        raise ValueError(f"softmax: expected an input of at least 1 dimension, got {x.type}")
    return special.softmax(x, axis=-1)


def tanh(x):
    """Hyperbolic tangent, in ``(-1, 1)``."""
    return pt.tanh(x)


class ScaledTanH:
    """Scaled hyperbolic tangent ``scale_out * tanh(scale_in * x)``.

    Parameters
    ----------
    scale_in : float
        Scale of the input.
    scale_out : float
        Scale of the output.

    Notes
    -----
    LeCun et al. (1998) recommend ``scale_in=2/3``, ``scale_out=1.7159``.
    """

    def __init__(self, scale_in: float = 1, scale_out: float = 1):
        self.scale_in = scale_in
        self.scale_out = scale_out

    def __call__(self, x):
        return _const(self.scale_out, x) * pt.tanh(_const(self.scale_in, x) * x)

    def __repr__(self) -> str:
        return f"ScaledTanH(scale_in={self.scale_in!r}, scale_out={self.scale_out!r})"


ScaledTanh = ScaledTanH


def _is_numpy(x) -> bool:
    return isinstance(x, np.ndarray | np.generic)


def rectify(x):
    """Rectified linear unit ``max(0, x)``.

    A NumPy array gives a NumPy array, as Theano's ``relu`` (Lasagne's rectifier) did.
    """
    if _is_numpy(x):
        return np.maximum(x, 0)
    return pt.maximum(x, _const(0.0, x))


class LeakyRectify:
    """Leaky rectifier ``x if x > 0 else leakiness * x``.

    Parameters
    ----------
    leakiness : float
        Slope for negative inputs.
    """

    def __init__(self, leakiness: float = 0.01):
        self.leakiness = leakiness

    def __call__(self, x):
        if _is_numpy(x):  # a NumPy result, as for rectify
            return np.where(x > 0, x, np.asarray(self.leakiness, dtype=x.dtype) * x)
        return pt.switch(pt.gt(x, 0), x, _const(self.leakiness, x) * x)

    def __repr__(self) -> str:
        return f"LeakyRectify(leakiness={self.leakiness!r})"


leaky_rectify = LeakyRectify()
"""Leaky rectifier with the default leakiness 0.01."""

very_leaky_rectify = LeakyRectify(1.0 / 3)
"""Leaky rectifier with leakiness 1/3."""


def elu(x):
    """Exponential linear unit ``x if x > 0 else exp(x) - 1`` (Clevert et al. 2015)."""
    return pt.switch(pt.gt(x, 0), x, pt.expm1(x))


class SELU:
    """Scaled exponential linear unit ``scale * (x if x > 0 else scale_neg * (exp(x) - 1))``.

    Parameters
    ----------
    scale : float
        Overall scale.
    scale_neg : float
        Scale of the negative part.

    Notes
    -----
    :data:`selu` uses the self-normalizing constants of Klambauer et al. (2017).
    """

    def __init__(self, scale: float = 1, scale_neg: float = 1):
        self.scale = scale
        self.scale_neg = scale_neg

    def __call__(self, x):
        neg = _const(self.scale_neg, x) * pt.expm1(x)
        return _const(self.scale, x) * pt.switch(pt.gt(x, 0), x, neg)

    def __repr__(self) -> str:
        return f"SELU(scale={self.scale!r}, scale_neg={self.scale_neg!r})"


selu = SELU(scale=1.0507009873554804934193349852946, scale_neg=1.6732632423543772848170429916717)
"""SELU with the self-normalizing constants."""


def softplus(x):
    """Softplus ``log(1 + exp(x))``, computed stably."""
    return pt.softplus(x)


def linear(x):
    """Identity: returns ``x`` unchanged."""
    return x


identity = linear

# Registry for config files: name -> function.  Several names may map to one
# function; the first name listed for a function is its canonical name.
_REGISTRY: dict[str, Callable] = {
    "rectify": rectify,
    "relu": rectify,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "softmax": softmax,
    "linear": linear,
    "identity": identity,
    "leaky_rectify": leaky_rectify,
    "leaky_relu": leaky_rectify,
    "elu": elu,
    "selu": selu,
    "softplus": softplus,
}


def names() -> list[str]:
    """Return every name :func:`get` accepts, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Callable:
    """Return the nonlinearity registered under ``name`` (case-insensitive).

    Accepted names: ``relu``/``rectify``, ``sigmoid``, ``tanh``, ``softmax``,
    ``identity``/``linear``, ``leaky_relu``/``leaky_rectify`` (leakiness 0.01),
    ``elu``, ``selu``, ``softplus``.

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If ``name`` is unknown; the message lists the valid names and
        suggests the closest one.

    Examples
    --------
    >>> from bntrain.nn import nonlinearities
    >>> nonlinearities.get("relu") is nonlinearities.rectify
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"nonlinearity name must be a string, got {name!r}")
    key = name.strip().lower()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"unknown nonlinearity {name!r}{close_matches(key, _REGISTRY)}; "
            f"valid names: {', '.join(names())}"
        ) from None


def name_of(fn: Callable) -> str:
    """Return the canonical registry name of the nonlinearity ``fn``.

    Aliases share one canonical name: ``rectify`` gives ``'rectify'``,
    ``identity`` gives ``'linear'``, ``leaky_rectify`` gives
    ``'leaky_rectify'``.  ``get(name_of(fn)) is fn`` for every registered ``fn``.

    Raises
    ------
    ValueError
        If ``fn`` is not a registered nonlinearity (for instance a
        ``LeakyRectify`` with another leakiness, or a lambda).
    """
    for name, registered in _REGISTRY.items():
        if registered is fn:
            return name
    raise ValueError(
        f"nonlinearity {fn!r} has no registered name; registered: {', '.join(names())}"
    )

"""Parameter initializers (mirrors ``lasagne.init``).

An initializer is a callable that takes a shape and returns a NumPy array of
dtype ``floatX`` (float32).  Layers call it through
:func:`bntrain.nn.utils.create_param`.

Extension over Lasagne: every initializer takes ``rng``, a
:class:`numpy.random.Generator` or an int seed.  An int seed is turned into a
generator once, at construction, so successive samples from one initializer
continue one stream (two layers sharing an initializer get different
weights).  ``rng=None`` draws from :func:`bntrain.nn.random.get_rng` at sample
time, as Lasagne did.

Fan rules (Lasagne's): for a 2-D shape ``(n_in, n_out)`` (a dense layer's
``W``); for ``ndim > 2`` the shape is ``(n_out, n_in, *receptive_field)``
(a convolution's ``W``) unless ``c01b=True``, where it is
``(n_in, rows, cols, n_out)``.
"""

from __future__ import annotations

import math

import numpy as np

from . import random as _random
from .utils import floatX

__all__ = [
    "Initializer",
    "Normal",
    "Uniform",
    "Glorot",
    "GlorotNormal",
    "GlorotUniform",
    "He",
    "HeNormal",
    "HeUniform",
    "Constant",
    "Sparse",
    "Orthogonal",
    "InitShapeError",
]


class InitShapeError(ValueError, RuntimeError):
    """An initializer was asked for a shape it cannot fill.

    Lasagne raised ``RuntimeError`` here; this class is both a ``ValueError``
    (bntrain's convention for misuse) and a ``RuntimeError`` (so that ported
    code catching Lasagne's error still works).
    """


class _SparseShapeError(InitShapeError, NotImplementedError):
    """:class:`Sparse` only fills 2-D shapes (Lasagne raised NotImplementedError)."""


def _check_rng(owner: str, rng):
    if rng is None:
        return None
    return _random.as_generator(rng, f"{owner}(rng=...)")


def _check_gain(owner: str, gain) -> float:
    if isinstance(gain, str):
        if gain == "relu":
            return math.sqrt(2.0)
        raise ValueError(f"{owner}: gain must be a number or 'relu', got {gain!r}")
    if isinstance(gain, bool) or not isinstance(gain, int | float | np.integer | np.floating):
        raise TypeError(f"{owner}: gain must be a number or 'relu', got {gain!r}")
    return float(gain)


def _check_nonneg(owner: str, what: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{owner}: {what} must be a number, got {value!r}")
    if not value >= 0:
        raise ValueError(f"{owner}: {what} must be >= 0, got {value!r}")
    return float(value)


def _shape_tuple(owner: str, shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"{owner}: shape must be a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in shape):
        raise InitShapeError(f"{owner}: shape entries must be non-negative, got {shape!r}")
    return shape


def _make(initializer, std: float, rng) -> Initializer:
    # Lasagne-style custom initializer classes may not take ``rng``.
    if isinstance(initializer, type) and issubclass(initializer, Initializer):
        return initializer(std=std, rng=rng)
    return initializer(std=std)


class Initializer:
    """Base class of parameter initializers.

    Subclasses implement :meth:`sample`; calling the initializer calls it.

    Parameters
    ----------
    rng : numpy.random.Generator or int, optional
        The generator to draw from, or a seed for one (bntrain extension).
        ``None`` draws from :func:`bntrain.nn.random.get_rng` at sample time.
    """

    def __init__(self, rng: np.random.Generator | int | None = None):
        self.rng = _check_rng(type(self).__name__, rng)

    def __call__(self, shape) -> np.ndarray:
        """Return :meth:`sample` ``(shape)``."""
        return self.sample(shape)

    def sample(self, shape) -> np.ndarray:
        """Return an array of ``shape`` and dtype ``floatX`` drawn from this initializer.

        Parameters
        ----------
        shape : tuple of int
            The shape of the array to return.
        """
        raise NotImplementedError()

    def _get_rng(self):
        return self.rng if self.rng is not None else _random.get_rng()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "rng")
        return f"{type(self).__name__}({fields})"


class Normal(Initializer):
    """Sample from a normal distribution ``N(mean, std**2)``.

    Parameters
    ----------
    std : float
        Standard deviation.
    mean : float
        Mean.
    rng : numpy.random.Generator or int, optional
        See :class:`Initializer`.
    """

    def __init__(self, std: float = 0.01, mean: float = 0.0, rng=None):
        super().__init__(rng)
        self.std = _check_nonneg("Normal", "std", std)
        self.mean = float(mean)

    def sample(self, shape) -> np.ndarray:
        shape = _shape_tuple("Normal", shape)
        return floatX(self._get_rng().normal(self.mean, self.std, size=shape))


class Uniform(Initializer):
    """Sample from a uniform distribution.

    Parameters
    ----------
    range : float or tuple of float
        ``r`` gives ``U(-r, r)``; a pair ``(lo, hi)`` gives ``U(lo, hi)``.
        Ignored when ``std`` is given.
    std : float, optional
        If given, sample from ``U(mean - sqrt(3) std, mean + sqrt(3) std)``,
        the uniform distribution with that standard deviation.
    mean : float
        Centre of the distribution when ``std`` is given.
    rng : numpy.random.Generator or int, optional
        See :class:`Initializer`.
    """

    def __init__(self, range=0.01, std: float | None = None, mean: float = 0.0, rng=None):
        super().__init__(rng)
        if std is not None:
            std = _check_nonneg("Uniform", "std", std)
            a, b = mean - math.sqrt(3) * std, mean + math.sqrt(3) * std
        elif isinstance(range, tuple | list):
            if len(range) != 2:
                raise ValueError(
                    f"Uniform: range must be a number or a pair (lo, hi), got {range!r}"
                )
            a, b = range
        else:
            a, b = -range, range
        if not a <= b:
            raise ValueError(f"Uniform: range must have lo <= hi, got {range!r}")
        self.range = (float(a), float(b))

    def sample(self, shape) -> np.ndarray:
        shape = _shape_tuple("Uniform", shape)
        lo, hi = self.range
        return floatX(self._get_rng().uniform(low=lo, high=hi, size=shape))


class _FanScaled:
    """Shared part of :class:`Glorot` and :class:`He`: a distribution scaled by the fans.

    A mixin before :class:`Initializer`, not a subclass of it: as in Lasagne, Glorot
    and He are direct subclasses of Initializer (code that walks
    ``Initializer.__subclasses__()`` finds them and their argument-free subclasses).
    """

    def __init__(self, initializer, gain: float | str = 1.0, c01b: bool = False, rng=None):
        super().__init__(rng)
        name = type(self).__name__
        self.initializer = initializer
        self.gain = _check_gain(name, gain)
        self.c01b = bool(c01b)

    def _std(self, shape: tuple[int, ...]) -> float:
        raise NotImplementedError

    def _check_c01b(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4:
            raise InitShapeError(
                f"{type(self).__name__}: if c01b is True, only shapes of length 4 are accepted, "
                f"got {shape!r}"
            )

    def sample(self, shape) -> np.ndarray:
        shape = _shape_tuple(type(self).__name__, shape)
        std = self._std(shape)
        return _make(self.initializer, std, self._get_rng()).sample(shape)


class Glorot(_FanScaled, Initializer):
    """Glorot (Xavier) initialization with weights of the distribution ``initializer``.

    The standard deviation is ``gain * sqrt(2 / ((fan_in + fan_out) * receptive_field))``
    where for 2-D shapes ``fan_in, fan_out = shape`` and the receptive field is
    1; for convolution shapes ``fan_out, fan_in = shape[:2]`` and the
    receptive field is ``prod(shape[2:])`` (``c01b``: ``shape[0]``,
    ``shape[3]`` and ``shape[1] * shape[2]``).

    Parameters
    ----------
    initializer : type
        :class:`Normal` or :class:`Uniform`; called as ``initializer(std=..., rng=...)``.
    gain : float or 'relu'
        Scaling factor; ``'relu'`` means ``sqrt(2)``.
    c01b : bool
        Whether the shape is in cuda-convnet's ``c01b`` layout (4-D only).
    rng : numpy.random.Generator or int, optional
        See :class:`Initializer`.
    """

    def _std(self, shape: tuple[int, ...]) -> float:
        name = type(self).__name__
        if self.c01b:
            self._check_c01b(shape)
            n1, n2 = shape[0], shape[3]
            receptive_field_size = shape[1] * shape[2]
        else:
            if len(shape) < 2:
                raise InitShapeError(
                    f"{name}: this initializer only works with shapes of length >= 2, got {shape!r}"
                )
            n1, n2 = shape[:2]
            receptive_field_size = math.prod(shape[2:])
        return self.gain * math.sqrt(2.0 / ((n1 + n2) * receptive_field_size))


class GlorotNormal(Glorot):
    """Glorot initialization with normally distributed weights (see :class:`Glorot`)."""

    def __init__(self, gain: float | str = 1.0, c01b: bool = False, rng=None):
        super().__init__(Normal, gain, c01b, rng)


class GlorotUniform(Glorot):
    """Glorot initialization with uniformly distributed weights (see :class:`Glorot`)."""

    def __init__(self, gain: float | str = 1.0, c01b: bool = False, rng=None):
        super().__init__(Uniform, gain, c01b, rng)


class He(_FanScaled, Initializer):
    """He (Kaiming) initialization with weights of the distribution ``initializer``.

    The standard deviation is ``gain * sqrt(1 / fan_in)`` where ``fan_in`` is
    ``shape[0]`` for 2-D shapes, ``prod(shape[1:])`` for convolution shapes
    and ``prod(shape[:3])`` with ``c01b``.

    Parameters
    ----------
    initializer : type
        :class:`Normal` or :class:`Uniform`; called as ``initializer(std=..., rng=...)``.
    gain : float or 'relu'
        Scaling factor; ``'relu'`` means ``sqrt(2)``.
    c01b : bool
        Whether the shape is in cuda-convnet's ``c01b`` layout (4-D only).
    rng : numpy.random.Generator or int, optional
        See :class:`Initializer`.
    """

    def _std(self, shape: tuple[int, ...]) -> float:
        name = type(self).__name__
        if self.c01b:
            self._check_c01b(shape)
            fan_in = math.prod(shape[:3])
        elif len(shape) == 2:
            fan_in = shape[0]
        elif len(shape) > 2:
            fan_in = math.prod(shape[1:])
        else:
            raise InitShapeError(
                f"{name}: this initializer only works with shapes of length >= 2, got {shape!r}"
            )
        return self.gain * math.sqrt(1.0 / fan_in)


class HeNormal(He):
    """He initialization with normally distributed weights (see :class:`He`)."""

    def __init__(self, gain: float | str = 1.0, c01b: bool = False, rng=None):
        super().__init__(Normal, gain, c01b, rng)


class HeUniform(He):
    """He initialization with uniformly distributed weights (see :class:`He`)."""

    def __init__(self, gain: float | str = 1.0, c01b: bool = False, rng=None):
        super().__init__(Uniform, gain, c01b, rng)


class Constant(Initializer):
    """Fill the array with one value.

    Parameters
    ----------
    val : float
        The value.
    rng : ignored
        Accepted for a uniform signature.
    """

    def __init__(self, val: float = 0.0, rng=None):
        super().__init__(rng)
        self.val = val

    def sample(self, shape) -> np.ndarray:
        shape = _shape_tuple("Constant", shape)
        return floatX(np.ones(shape) * self.val)


class Sparse(Initializer):
    """Sparse 2-D weights: each column gets ``int(sparsity * n_in)`` nonzero entries.

    The nonzero entries sit in distinct, randomly chosen rows and are drawn
    from ``N(0, std**2)``; the rest are zero.

    Parameters
    ----------
    sparsity : float
        Fraction of nonzero entries per column, in ``[0, 1]``.
    std : float
        Standard deviation of the nonzero entries.
    rng : numpy.random.Generator or int, optional
        See :class:`Initializer`.
    """

    def __init__(self, sparsity: float = 0.1, std: float = 0.01, rng=None):
        super().__init__(rng)
        self.sparsity = _check_nonneg("Sparse", "sparsity", sparsity)
        if self.sparsity > 1:
            raise ValueError(f"Sparse: sparsity must be in [0, 1], got {sparsity!r}")
        self.std = _check_nonneg("Sparse", "std", std)

    def sample(self, shape) -> np.ndarray:
        shape = _shape_tuple("Sparse", shape)
        if len(shape) != 2:
            raise _SparseShapeError(
                f"Sparse: the sparse initializer only works with shapes of length 2, got {shape!r}"
            )
        rng = self._get_rng()
        n_inputs, n_outputs = shape
        size = int(self.sparsity * n_inputs)
        w = np.zeros(shape, dtype=np.float64)
        for k in range(n_outputs):
            rows = rng.permutation(n_inputs)[:size]
            w[rows, k] = rng.normal(0.0, self.std, size=size)
        return floatX(w)


class Orthogonal(Initializer):
    """Orthogonal weights (Saxe et al. 2013).

    The shape is flattened to ``(shape[0], prod(shape[1:]))``; the result has
    orthonormal rows or columns (whichever there are fewer of), times ``gain``.

    Parameters
    ----------
    gain : float or 'relu'
        Scaling factor; ``'relu'`` means ``sqrt(2)``.
    rng : numpy.random.Generator or int, optional
        See :class:`Initializer`.
    """

    def __init__(self, gain: float | str = 1.0, rng=None):
        super().__init__(rng)
        self.gain = _check_gain("Orthogonal", gain)

    def sample(self, shape) -> np.ndarray:
        shape = _shape_tuple("Orthogonal", shape)
        if len(shape) < 2:
            raise InitShapeError(
                f"Orthogonal: only shapes of length 2 or more are supported, got {shape!r}"
            )
        flat_shape = (shape[0], math.prod(shape[1:]))
        a = self._get_rng().normal(0.0, 1.0, flat_shape)
        u, _, vt = np.linalg.svd(a, full_matrices=False)
        q = u if u.shape == flat_shape else vt
        return floatX(self.gain * q.reshape(shape))

"""Streaming per-feature statistics that do not depend on batch order.

:class:`RunningMoments` keeps, for every position of a fixed ``shape``, the
triple (count, mean, M2) in float64, where ``M2`` is the sum of squared
deviations from the mean.  Each batch is reduced with a shifted two-pass
formula and batches are combined with the parallel merge of Chan, Golub and
LeVeque (1979)::

    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n
    M2 = M2_a + M2_b + delta**2 * n_a * n_b / n

so the variance is never formed as ``E[x**2] - E[x]**2`` (which loses every
significant digit when the mean is large compared with the spread), a
constant input gives a variance of exactly zero, and the result is the same,
up to rounding, whatever the order or size of the batches.

Used for input standardization (:mod:`bntrain.data`) and for whole-training-set
batch-norm statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RunningMoments"]


class RunningMoments:
    """Running count, mean and sum of squared deviations, per position of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Shape of the statistics, e.g. ``(C,)`` for per-channel statistics.
        ``()`` gives scalar statistics.

    Examples
    --------
    >>> import numpy as np
    >>> m = RunningMoments((2,))
    >>> m.update(np.array([[1.0, 10.0], [3.0, 10.0]]), axes=(0,))
    >>> m.update(np.array([[5.0, 10.0]]), axes=(0,))
    >>> m.count, m.mean.tolist(), m.var.tolist()
    (3.0, [3.0, 10.0], [2.6666666666666665, 0.0])
    """

    def __init__(self, shape: Sequence[int] | int = ()) -> None:
        if isinstance(shape, int | np.integer):
            shape = (int(shape),)
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError:
            raise TypeError(
                f"RunningMoments: shape must be a tuple of ints, got {shape!r}"
            ) from None
        if any(s < 0 for s in shape):
            raise ValueError(f"RunningMoments: shape must not be negative, got {shape}")
        self._shape = shape
        self._count = 0.0
        self._mean = np.zeros(shape, dtype=np.float64)
        self._m2 = np.zeros(shape, dtype=np.float64)

    @classmethod
    def from_moments(cls, count: float, mean: np.ndarray, m2: np.ndarray) -> RunningMoments:
        """Build an accumulator from known (count, mean, M2), e.g. one batch's statistics.

        Parameters
        ----------
        count : float
            Number of values each position was computed over (>= 0).
        mean, m2 : array_like
            Per-position mean and sum of squared deviations (same shape).

        Returns
        -------
        RunningMoments
        """
        mean = np.asarray(mean, dtype=np.float64)
        m2 = np.asarray(m2, dtype=np.float64)
        if mean.shape != m2.shape:
            raise ValueError(
                f"RunningMoments.from_moments: mean has shape {mean.shape} but M2 has {m2.shape}"
            )
        count = float(count)
        if not count >= 0:
            raise ValueError(f"RunningMoments.from_moments: count must be >= 0, got {count}")
        if np.any(m2 < 0):
            raise ValueError("RunningMoments.from_moments: M2 must not be negative")
        out = cls(mean.shape)
        out._count = count
        out._mean = mean.copy()
        out._m2 = m2.copy()
        return out

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the statistics."""
        return self._shape

    @property
    def count(self) -> float:
        """Number of values accumulated per position (float64)."""
        return float(self._count)

    @property
    def mean(self) -> np.ndarray:
        """Per-position mean (float64 array of ``shape``; zeros before any data)."""
        return self._mean.copy()

    @property
    def M2(self) -> np.ndarray:  # noqa: N802 - the name used in the literature
        """Per-position sum of squared deviations from the mean (float64)."""
        return self._m2.copy()

    @property
    def var(self) -> np.ndarray:
        """Per-position biased (population) variance ``M2 / count`` (float64).

        Raises
        ------
        ValueError
            If nothing has been accumulated yet.
        """
        if self._count == 0:
            raise ValueError("RunningMoments: no data accumulated yet, the variance is undefined")
        return self._m2 / self._count

    def update(self, batch: np.ndarray, axes: Sequence[int] | int = (0,)) -> None:
        """Add a batch, reducing it over ``axes``.

        Parameters
        ----------
        batch : array_like
            Numeric array; after removing ``axes`` its shape must equal :attr:`shape`.
        axes : int or tuple of int
            The batch's axes to reduce (negative values count from the end).
        """
        x = np.asarray(batch)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"RunningMoments.update: batch must be numeric, got dtype {x.dtype}")
        if isinstance(axes, int | np.integer):
            axes = (int(axes),)
        try:
            red = tuple(sorted({_norm_axis(a, x.ndim) for a in axes}))
        except ValueError as err:
            raise ValueError(f"RunningMoments.update: {err} (batch shape {x.shape})") from None
        kept = tuple(s for i, s in enumerate(x.shape) if i not in red)
        if kept != self._shape:
            raise ValueError(
                f"RunningMoments.update: reducing batch of shape {x.shape} over axes {red} leaves "
                f"shape {kept}, but the statistics have shape {self._shape}"
            )
        n = 1
        for a in red:
            n *= x.shape[a]
        if n == 0:
            return
        x = x.astype(np.float64, copy=False)
        # Shifted two-pass: subtracting one sample first makes constant input exact.
        ref = _first_along(x, red)
        d = x - ref
        dmean = d.mean(axis=red, keepdims=True)
        m2 = np.square(d - dmean).sum(axis=red)
        mean = (ref + dmean).reshape(self._shape)
        self._merge(float(n), mean, m2)

    def merge(self, other: RunningMoments) -> None:
        """Add the values accumulated by ``other`` (same shape) to this accumulator."""
        if not isinstance(other, RunningMoments):
            raise TypeError(
                f"RunningMoments.merge: expected a RunningMoments, got {type(other).__name__}"
            )
        if other._shape != self._shape:
            raise ValueError(
                f"RunningMoments.merge: shapes differ ({self._shape} and {other._shape})"
            )
        self._merge(other._count, other._mean, other._m2)

    def _merge(self, nb: float, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if nb == 0:
            return
        na = self._count
        if na == 0:
            self._count = nb
            self._mean = np.array(mean_b, dtype=np.float64)
            self._m2 = np.array(m2_b, dtype=np.float64)
            return
        n = na + nb
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + m2_b + np.square(delta) * (na * nb / n)
        self._count = n

    def __repr__(self) -> str:
        return f"RunningMoments(shape={self._shape}, count={self._count:g})"


def _norm_axis(a: int, ndim: int) -> int:
    a = int(a)
    if not -ndim <= a < ndim:
        raise ValueError(f"axis {a} is out of range")
    return a % ndim


def _first_along(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The first element along every axis in ``axes``, kept as size-1 dims."""
    index = tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.ndim))
    return x[index]

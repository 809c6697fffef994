"""The library's default random number generator (mirrors ``lasagne.random``).

Lasagne kept one package-global generator that initializers and noise layers
drew from.  This module keeps that API for ported code, but bntrain's own code
never relies on it: the tool builds every initializer and noise layer with an
explicit, seeded :class:`numpy.random.Generator` (the ``rng`` argument), so a
run is reproducible no matter what else touched the global generator.

The default generator is created lazily, seeded from OS entropy, on the first
call to :func:`get_rng`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["get_rng", "set_rng", "as_generator"]

_rng: np.random.Generator | np.random.RandomState | None = None


def get_rng() -> np.random.Generator | np.random.RandomState:
    """Return the library's default random number generator.

    Returns
    -------
    numpy.random.Generator
        The generator set by :func:`set_rng`, or one seeded from OS entropy
        (created on first use).
    """
    global _rng
    if _rng is None:
        _rng = np.random.default_rng()
    return _rng


def set_rng(new_rng: np.random.Generator | np.random.RandomState | int) -> None:
    """Replace the library's default random number generator.

    Parameters
    ----------
    new_rng : numpy.random.Generator, numpy.random.RandomState or int
        The new generator.  An int is used as a seed for
        :func:`numpy.random.default_rng` (an extension over Lasagne); a
        ``RandomState`` is accepted so that ported Lasagne scripts keep working.

    Raises
    ------
    TypeError
        If ``new_rng`` is none of the accepted kinds.

    Examples
    --------
    >>> import bntrain.nn as lasagne
    >>> lasagne.random.set_rng(42)
    >>> a = lasagne.random.get_rng().normal()
    >>> lasagne.random.set_rng(42)
    >>> a == lasagne.random.get_rng().normal()
    True
    """
    global _rng
    _rng = as_generator(new_rng, "set_rng")


def as_generator(rng, where: str = "rng") -> np.random.Generator | np.random.RandomState:
    """Coerce a generator or an int seed to a generator (``None`` is not accepted here).

    Raises
    ------
    TypeError
        If ``rng`` is neither a generator nor an int seed; the message names
        ``where`` and the bad value.
    """
    if isinstance(rng, np.random.Generator | np.random.RandomState):
        return rng
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"{where}: a seed must be non-negative, got {rng!r}")
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"{where}: expected a numpy.random.Generator, a RandomState or an int seed, "
        f"got {rng!r} of type {type(rng).__name__}"
    )

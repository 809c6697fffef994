"""The library's default random number generator (mirrors ``lasagne.random``).

Lasagne kept one package-global generator that initializers and noise layers
drew from, a NumPy ``RandomState`` (``randint``, ``seed``, ``normal``...), and
custom noise layers seed their own streams with ``get_rng().randint(...)``.
This module keeps that API for ported code, but bntrain's own code never
relies on it: the tool builds every initializer and noise layer with an
explicit, seeded :class:`numpy.random.Generator` (the ``rng`` argument), so a
run is reproducible no matter what else touched the global generator.

The default generator is created lazily, seeded from OS entropy, on the first
call to :func:`get_rng` (not NumPy's own global stream).
"""

from __future__ import annotations

import numpy as np

__all__ = ["get_rng", "set_rng", "as_generator"]

_rng: np.random.RandomState | None = None


def get_rng() -> np.random.RandomState:
    """Return the library's default random number generator.

    Returns
    -------
    numpy.random.RandomState
        The generator set by :func:`set_rng`, or one seeded from OS entropy
        (created on first use).  Always a ``RandomState``, as in Lasagne, so
        that ``get_rng().randint(1, 2147462579)`` seeds a custom layer's stream.
    """
    global _rng
    if _rng is None:
        _rng = np.random.RandomState()  # MT19937 from OS entropy: seed() works, as in Lasagne
    return _rng


def set_rng(new_rng: np.random.Generator | np.random.RandomState | int) -> None:
    """Replace the library's default random number generator.

    Parameters
    ----------
    new_rng : numpy.random.RandomState, numpy.random.Generator or int
        The new generator.  A ``RandomState`` is used as it is (what Lasagne
        took).  Extensions over Lasagne: an int is a seed for a new
        ``RandomState``; a ``Generator`` is wrapped in a ``RandomState`` that
        draws from the same bit generator (the two advance together).

    Raises
    ------
    TypeError
        If ``new_rng`` is none of the accepted kinds.

    Examples
    --------
    >>> import bntrain.nn as lasagne
    >>> lasagne.random.set_rng(42)
    >>> a = lasagne.random.get_rng().randint(1000)
    >>> lasagne.random.set_rng(np.random.RandomState(42))
    >>> a == lasagne.random.get_rng().randint(1000)
    True
    """
    global _rng
    checked = as_generator(new_rng, "set_rng")  # the same checks as every rng argument
    if isinstance(checked, np.random.RandomState):
        _rng = checked
    elif isinstance(new_rng, np.random.Generator):
        _rng = np.random.RandomState(new_rng.bit_generator)
    else:
        _rng = np.random.RandomState(int(new_rng))


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

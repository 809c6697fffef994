"""Updates hidden in the graph, the way Lasagne attached them (for ported code only).

Lasagne's layers put their updates (batch-norm moving averages, random
generator states) into ``default_update`` of a clone of the shared variable;
``pytensor.function`` applies such updates by itself, unless the caller passes
an explicit update for the same storage.  bntrain's own code never relies on
this: it calls ``get_output(..., return_updates=True)`` and passes the updates
explicitly.  PyTensor deprecates setting ``default_update``; the warning is
silenced here because the use is deliberate and covered by a test that fails
if PyTensor stops applying it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable
from pytensor.tensor.type import TensorType

__all__ = ["with_default_update", "draw"]


def with_default_update(
    var: SharedVariable, new_value: Callable[[SharedVariable], Variable]
) -> SharedVariable:
    """Return a clone of ``var`` (same storage) that every compiled function updates.

    Parameters
    ----------
    var : SharedVariable
        The variable to update (a tensor or a random generator).
    new_value : callable
        Given the clone, returns the expression of its next value.

    Returns
    -------
    SharedVariable
        The clone; use it in the graph in place of ``var`` so that
        ``pytensor.function`` finds it and applies its ``default_update``.
    """
    clone = var.clone()
    value = new_value(clone)
    if isinstance(clone.type, TensorType) and value.type != clone.type:
        # pytensor.function wants the update's exact type, and an update often knows more
        # of the static shape: give the clone that type (its storage stays var's)
        more_precise = clone.type.clone(dtype=clone.dtype, shape=value.type.shape)
        clone = type(var)(
            type=more_precise, value=None, strict=None, container=var.container, name=var.name
        )
        value = pt.cast(new_value(clone), clone.dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Setting default_update is deprecated", DeprecationWarning
        )
        clone.default_update = value
    return clone


def draw(rng, collect_updates, distribution, *args, size=None):
    """Draw from ``distribution(*args, size=size)`` with the shared generator ``rng``.

    The generator's next state goes to ``collect_updates`` when given, and
    otherwise becomes the ``default_update`` of a clone of ``rng`` used for the
    draw (Lasagne's implicit updates), so every compiled call draws afresh.
    """
    if collect_updates is None:
        drawn = []

        def advance(clone):
            next_rng, draws = distribution(*args, size=size, rng=clone, return_next_rng=True)
            drawn.append(draws)
            return next_rng

        with_default_update(rng, advance)
        return drawn[0]
    next_rng, draws = distribution(*args, size=size, rng=rng, return_next_rng=True)
    collect_updates[rng] = next_rng
    return draws

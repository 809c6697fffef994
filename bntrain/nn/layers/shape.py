"""Layers that change the shape of their input (``lasagne.layers.shape``).

Examples
--------
>>> from bntrain.nn.layers import InputLayer, ReshapeLayer, FlattenLayer, DimshuffleLayer
>>> l_in = InputLayer((None, 3, 4, 5))
>>> ReshapeLayer(l_in, ([0], 3, -1)).output_shape
(None, 3, 20)
>>> FlattenLayer(l_in).output_shape
(None, 60)
>>> DimshuffleLayer(l_in, (0, 'x', 3, 2, 1)).output_shape
(None, 1, 5, 4, 3)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from .. import utils
from .base import Layer
from .special import _check_kwargs, _label

__all__ = [
    "ReshapeLayer",
    "reshape",
    "FlattenLayer",
    "flatten",
    "DimshuffleLayer",
    "dimshuffle",
    "PadLayer",
    "pad",
    "SliceLayer",
]


def _is_int(x) -> bool:
    return isinstance(x, utils.int_types) and not isinstance(x, bool)


class ReshapeLayer(Layer):
    """Reshape the input to a given shape.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    shape : tuple
        The target shape.  Each entry is a positive int (that size), ``-1``
        (at most once: whatever size makes the total match), ``[i]`` (a
        one-element list: the size of input axis ``i``), or a symbolic
        integer scalar.
    **kwargs
        ``name``.

    Examples
    --------
    ``ReshapeLayer(l, ([0], [1], 2, -1))`` keeps the first two axes, splits
    the rest into two rows of whatever length is needed.
    """

    def __init__(self, incoming, shape: Sequence, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError(f"{where}: shape must be a tuple, got {shape!r}") from None
        for s in shape:
            if _is_int(s):
                if s == 0 or s < -1:
                    raise ValueError(
                        f"{where}: shape {shape!r} has {s}; sizes must be positive or -1"
                    )
            elif isinstance(s, list):
                if len(s) != 1 or not _is_int(s[0]) or s[0] < 0:
                    raise ValueError(
                        f"{where}: shape {shape!r} has {s!r}; an input-axis reference must be a "
                        f"one-element list [i] with int i >= 0"
                    )
            elif isinstance(s, Variable):
                if s.ndim != 0 or not s.dtype.startswith(("int", "uint")):
                    raise ValueError(
                        f"{where}: shape {shape!r} has the symbolic {s!r} of ndim {s.ndim} and "
                        f"dtype {s.dtype}; it must be an integer scalar"
                    )
            else:
                raise ValueError(
                    f"{where}: shape {shape!r} has {s!r}; entries must be int, [int] or a "
                    f"symbolic integer scalar"
                )
        if sum(1 for s in shape if _is_int(s) and s == -1) > 1:
            raise ValueError(f"{where}: shape {shape!r} contains -1 more than once")
        self.shape = shape
        self.get_output_shape_for(self.input_shape)  # validate now, not at first use

    def get_output_shape_for(self, input_shape):
        """Resolve ``[i]`` and ``-1`` entries against ``input_shape``.

        Symbolic sizes (in ``input_shape`` or in the layer's ``shape``) are unknown: ``None``.
        """
        where = _label(type(self).__name__, self.name)
        input_shape = tuple(None if isinstance(d, Variable) else d for d in input_shape)
        out = []
        # For the size check, an unknown input size copied through [i] cancels on both sides.
        in_known = list(input_shape)
        out_known = []
        for s in self.shape:
            if isinstance(s, list):
                axis = s[0]
                if axis >= len(input_shape):
                    raise ValueError(
                        f"{where}: shape {self.shape!r} refers to input axis [{axis}], but the "
                        f"input shape {tuple(input_shape)!r} has {len(input_shape)} axes"
                    )
                size = input_shape[axis]
                out.append(size)
                if size is None and in_known[axis] is None:
                    in_known[axis] = 1
                    out_known.append(1)
                else:
                    out_known.append(size)
            elif isinstance(s, Variable):
                out.append(None)
                out_known.append(None)
            else:
                out.append(int(s))
                out_known.append(int(s))
        in_size = None if any(d is None for d in in_known) else int(np.prod(in_known))
        fixed = [d for d in out_known if d != -1]
        out_size = None if any(d is None for d in fixed) else int(np.prod(fixed))
        if -1 in out:
            axis = out.index(-1)
            if in_size is None or out_size is None:
                out[axis] = None
                out_size = None
            else:
                out[axis] = in_size // out_size
                out_size *= out[axis]
        if in_size is not None and out_size is not None and in_size != out_size:
            raise ValueError(
                f"{where}: input shape {tuple(input_shape)!r} cannot be reshaped to "
                f"{self.shape!r}: the total sizes differ (they do not match)"
            )
        return tuple(out)

    def get_output_for(self, input, **kwargs):
        """Return ``input`` reshaped, ``[i]`` entries taken from ``input.shape``."""
        target = [input.shape[s[0]] if isinstance(s, list) else s for s in self.shape]
        return input.reshape(tuple(target), ndim=len(target))


reshape = ReshapeLayer


class FlattenLayer(Layer):
    """Flatten the trailing axes so that the output has ``outdim`` axes.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    outdim : int
        The number of output axes; the input axes from ``outdim - 1`` on are
        merged into the last one.
    **kwargs
        ``name``.
    """

    def __init__(self, incoming, outdim: int = 2, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        if not _is_int(outdim):
            raise TypeError(f"{where}: outdim must be an int, got {outdim!r}")
        if outdim < 1:
            raise ValueError(f"{where}: outdim must be at least 1, got {outdim}")
        self.outdim = int(outdim)  # checked against the input at use, as in Lasagne

    def get_output_shape_for(self, input_shape):
        """Keep the first ``outdim - 1`` sizes; the last is the product of the rest."""
        if self.outdim > len(input_shape):
            raise ValueError(
                f"{_label(type(self).__name__, self.name)}: outdim={self.outdim} exceeds the "
                f"{len(input_shape)} axes of the input shape {input_shape!r}"
            )
        rest = input_shape[self.outdim - 1 :]
        merged = None if any(s is None for s in rest) else int(np.prod(rest))
        return tuple(input_shape[: self.outdim - 1]) + (merged,)

    def get_output_for(self, input, **kwargs):
        """Return ``input`` flattened to ``outdim`` axes."""
        return pt.flatten(input, self.outdim)


flatten = FlattenLayer


class DimshuffleLayer(Layer):
    """Permute axes, insert broadcastable axes, drop size-1 axes.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    pattern : tuple
        Output axis ``k`` is input axis ``pattern[k]``, or a new axis of size 1
        where ``pattern[k] == 'x'``.  Input axes left out must have size 1
        (or unknown size, checked when the function runs).
    **kwargs
        ``name``.
    """

    def __init__(self, incoming, pattern: Sequence, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        where = _label(type(self).__name__, self.name)
        used = set()
        for p in pattern:
            if _is_int(p):
                if p in used:
                    raise ValueError(f"{where}: pattern {tuple(pattern)!r} names axis {p} twice")
                used.add(p)
            elif p != "x":
                raise ValueError(
                    f"{where}: pattern {tuple(pattern)!r} has {p!r}; entries must be axis "
                    f"indices or 'x'"
                )
        self.pattern = tuple(int(p) if _is_int(p) else p for p in pattern)
        self.get_output_shape_for(self.input_shape)  # validate now, not at first use

    def get_output_shape_for(self, input_shape):
        """Permute ``input_shape`` by ``pattern``; ``'x'`` gives size 1."""
        where = _label(type(self).__name__, self.name)
        out = []
        used = [False] * len(input_shape)
        for p in self.pattern:
            if p == "x":
                out.append(1)
                continue
            if not 0 <= p < len(input_shape):
                raise ValueError(
                    f"{where}: pattern {self.pattern!r} has {p}, but the input shape "
                    f"{tuple(input_shape)!r} has {len(input_shape)} axes"
                )
            out.append(input_shape[p])
            used[p] = True
        for axis, (size, kept) in enumerate(zip(input_shape, used, strict=True)):
            if not kept and size is not None and size != 1:
                raise ValueError(
                    f"{where}: pattern {self.pattern!r} drops input axis {axis} of size {size}; "
                    f"only axes of size 1 can be dropped"
                )
        return tuple(out)

    def get_output_for(self, input, **kwargs):
        """Return ``input.dimshuffle(pattern)``."""
        kept = {p for p in self.pattern if p != "x"}
        dropped = [a for a in range(input.ndim) if a not in kept and input.type.shape[a] != 1]
        if dropped:
            # Unknown sizes being dropped: assert size 1 at run time so that dimshuffle accepts it.
            input = pt.specify_broadcastable(input, *dropped)
        return input.dimshuffle(self.pattern)


dimshuffle = DimshuffleLayer


def _pad_widths(where: str, width, n: int) -> list[tuple[int, int]]:
    """``width`` (an int, ints, or pairs of ints) as one ``(before, after)`` pair per axis."""
    if isinstance(width, utils.int_types):
        width = [width] * n
    width = list(width)
    if len(width) != n:
        raise ValueError(f"{where}: width={width!r} needs one entry per padded axis ({n})")
    pairs = []
    for w in width:
        pair = (w, w) if isinstance(w, utils.int_types) else tuple(w)
        if len(pair) != 2 or not all(_is_int(v) and v >= 0 for v in pair):
            raise ValueError(
                f"{where}: width entries must be ints >= 0 or (before, after) pairs, got {w!r}"
            )
        pairs.append((int(pair[0]), int(pair[1])))
    return pairs


class PadLayer(Layer):
    """Pad every axis from ``batch_ndim`` on with ``val`` (zeros by default).

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    width : int, iterable of int, or iterable of (int, int)
        The padding: the same on both sides of every padded axis, one amount
        per axis (both sides), or ``(before, after)`` per axis.
    val : float
        The value to pad with.
    batch_ndim : int
        The number of leading axes left alone.
    **kwargs
        ``name``.

    Examples
    --------
    >>> from bntrain.nn.layers import InputLayer
    >>> PadLayer(InputLayer((None, 3, 4, 5)), [(1, 0), 2]).output_shape
    (None, 3, 5, 9)
    """

    def __init__(self, incoming, width, val=0, batch_ndim=2, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        self.width = width
        self.val = val
        self.batch_ndim = batch_ndim  # width is checked against the input at use, as in Lasagne

    def _widths(self, ndim: int) -> list[tuple[int, int]]:
        where = _label(type(self).__name__, self.name)
        return _pad_widths(where, self.width, ndim - self.batch_ndim)

    def get_output_shape_for(self, input_shape):
        shape = list(input_shape)
        for axis, (before, after) in enumerate(self._widths(len(shape)), start=self.batch_ndim):
            if shape[axis] is not None:
                shape[axis] += before + after
        return tuple(shape)

    def get_output_for(self, input, **kwargs):
        """Return the padded input."""
        return pt.pad(
            input,
            [(0, 0)] * self.batch_ndim + self._widths(input.ndim),
            mode="constant",
            constant_values=np.asarray(self.val, dtype=input.dtype),
        )


pad = PadLayer


class SliceLayer(Layer):
    """Slice the input along one axis.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    indices : int or slice
        An int picks one index (the axis disappears); a slice keeps the axis.
    axis : int
        The axis to slice (negative counts from the end).
    **kwargs
        ``name``.

    Examples
    --------
    >>> from bntrain.nn.layers import InputLayer
    >>> SliceLayer(InputLayer((None, 10, 3)), slice(2, None, 3), axis=1).output_shape
    (None, 3, 3)
    """

    def __init__(self, incoming, indices, axis=-1, **kwargs) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incoming, **kwargs)
        if not (_is_int(indices) or isinstance(indices, slice)):
            raise TypeError(
                f"{_label(type(self).__name__, self.name)}: indices must be an int or a slice, "
                f"got {indices!r}"
            )
        self.slice = indices
        self.axis = axis

    def get_output_shape_for(self, input_shape):
        shape = list(input_shape)
        if _is_int(self.slice):
            del shape[self.axis]
        elif shape[self.axis] is not None:
            shape[self.axis] = len(range(*self.slice.indices(shape[self.axis])))
        return tuple(shape)

    def get_output_for(self, input, **kwargs):
        """Return ``input[..., indices, ...]`` with ``indices`` at ``axis``."""
        axis = self.axis % input.ndim
        return input[(slice(None),) * axis + (self.slice,)]

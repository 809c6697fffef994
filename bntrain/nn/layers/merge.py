"""Layers that combine several inputs (``lasagne.layers.merge``).

Examples
--------
>>> from bntrain.nn.layers import InputLayer, ConcatLayer, ElemwiseSumLayer
>>> a, b = InputLayer((None, 3, 8)), InputLayer((None, 5, 8))
>>> ConcatLayer([a, b]).output_shape
(None, 8, 8)
>>> ElemwiseSumLayer([a, a], coeffs=[1, -1]).output_shape
(None, 3, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from .. import utils
from .base import MergeLayer
from .special import _check_kwargs, _label

__all__ = [
    "autocrop",
    "autocrop_array_shapes",
    "ConcatLayer",
    "concat",
    "ElemwiseMergeLayer",
    "ElemwiseSumLayer",
]

_CROP_MODES = ("lower", "center", "upper")


def _pad_cropping(cropping, ndim: int) -> list:
    """Check the crop modes and pad ``cropping`` with ``None`` to ``ndim`` entries."""
    cropping = list(cropping)
    for mode in cropping:
        if mode is not None and mode not in _CROP_MODES:
            raise ValueError(
                f"unknown crop mode {mode!r} in cropping={cropping!r}; use None, 'lower', "
                f"'center' or 'upper'"
            )
    if len(cropping) > ndim:
        raise ValueError(f"cropping={cropping!r} has more entries than the inputs' {ndim} axes")
    return cropping + [None] * (ndim - len(cropping))


def autocrop(inputs: Sequence, cropping: Sequence | None) -> list:
    """Crop symbolic inputs to their smallest common size along the axes named by ``cropping``.

    Parameters
    ----------
    inputs : list of TensorVariable
        Tensors of the same number of dimensions.
    cropping : sequence of {None, 'lower', 'center', 'upper'} or None
        One crop mode per leading axis (missing trailing entries mean ``None``):
        ``None`` leaves the axis alone, ``'lower'`` keeps the first entries,
        ``'upper'`` the last ones and ``'center'`` the middle ones (the extra
        entry, when the excess is odd, is dropped at the end).

    Returns
    -------
    list of TensorVariable
    """
    if cropping is None:
        return list(inputs)
    ndims = [x.ndim for x in inputs]
    if len(set(ndims)) != 1:
        raise ValueError(f"autocrop: the inputs have different numbers of dimensions: {ndims}")
    ndim = ndims[0]
    cropping = _pad_cropping(cropping, ndim)
    slices = [[] for _ in inputs]
    for axis, mode in enumerate(cropping):
        if mode is None:
            for sl in slices:
                sl.append(slice(None))
            continue
        sizes = [x.shape[axis] for x in inputs]
        smallest = sizes[0]
        for size in sizes[1:]:
            smallest = pt.minimum(smallest, size)
        for size, sl in zip(sizes, slices, strict=True):
            if mode == "lower":
                start = 0
            elif mode == "upper":
                start = size - smallest
            else:
                start = (size - smallest) // 2
            sl.append(slice(start, start + smallest))
    return [x[tuple(sl)] for x, sl in zip(inputs, slices, strict=True)]


def autocrop_array_shapes(input_shapes: Sequence, cropping: Sequence | None) -> list:
    """The shapes :func:`autocrop` gives for inputs of ``input_shapes``.

    Along a cropped axis, every size becomes the smallest one, or ``None`` if
    any is unknown.
    """
    if cropping is None:
        return [tuple(s) for s in input_shapes]
    ndims = [len(s) for s in input_shapes]
    if len(set(ndims)) != 1:
        raise ValueError(
            f"autocrop_array_shapes: the input shapes have different numbers of dimensions: "
            f"{[tuple(s) for s in input_shapes]}"
        )
    cropping = _pad_cropping(cropping, ndims[0])
    columns = []
    for sizes, mode in zip(zip(*input_shapes, strict=True), cropping, strict=True):
        if mode is None:
            columns.append(sizes)
        else:
            smallest = None if any(s is None for s in sizes) else min(sizes)
            columns.append((smallest,) * len(sizes))
    return [tuple(shape) for shape in zip(*columns, strict=True)]


def _shapes_known(shapes) -> bool:
    """Whether every input shape is a real shape (not a stand-in object, as in tests)."""
    return all(isinstance(s, tuple | list) for s in shapes)


def _first_known(sizes) -> int | None:
    return next((s for s in sizes if s is not None), None)


def _cropped_shapes(where: str, input_shapes, cropping) -> list:
    """The input shapes after ``cropping``, checked to have one number of axes."""
    try:
        shapes = autocrop_array_shapes(input_shapes, cropping)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if len({len(s) for s in shapes}) != 1:
        raise ValueError(f"{where}: the input shapes {shapes!r} differ in number of axes")
    return shapes


class ElemwiseMergeLayer(MergeLayer):
    """Combine inputs of the same shape with a binary element-wise function.

    Parameters
    ----------
    incomings : sequence of Layer or tuple
        The layers feeding into this one, or their expected shapes.
    merge_function : callable
        A binary function, e.g. ``pytensor.tensor.maximum``, applied from left
        to right.
    cropping : sequence or None
        Crop modes (see :func:`autocrop`) applied to the inputs first.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incomings: Sequence,
        merge_function: Callable,
        cropping: Sequence | None = None,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incomings, **kwargs)
        where = _label(type(self).__name__, self.name)
        if not callable(merge_function):
            raise TypeError(f"{where}: merge_function must be callable, got {merge_function!r}")
        if len(self.input_shapes) == 0:
            raise ValueError(f"{where}: needs at least one incoming layer")
        self.merge_function = merge_function
        self.cropping = None if cropping is None else list(cropping)
        if _shapes_known(self.input_shapes):
            self.get_output_shape_for(self.input_shapes)  # validate now, not at first use

    def get_output_shape_for(self, input_shapes):
        """The common shape; an unknown size is filled in from another input."""
        where = _label(type(self).__name__, self.name)
        shapes = _cropped_shapes(where, input_shapes, self.cropping)
        out = tuple(_first_known(sizes) for sizes in zip(*shapes, strict=True))
        for shape in shapes:
            if any(
                a is not None and b is not None and a != b for a, b in zip(shape, out, strict=True)
            ):
                raise ValueError(f"{where}: the input shapes {shapes!r} are not all the same")
        return out

    def get_output_for(self, inputs, **kwargs):
        """Fold ``merge_function`` over the (cropped) inputs."""
        inputs = autocrop(inputs, self.cropping)
        output = inputs[0]
        for x in inputs[1:]:
            output = self.merge_function(output, x)
        return output


class ElemwiseSumLayer(ElemwiseMergeLayer):
    """Add its inputs, each multiplied by a coefficient.

    Parameters
    ----------
    incomings : sequence of Layer or tuple
        The layers feeding into this one, or their expected shapes.
    coeffs : number, list of numbers (or scalar expressions)
        The coefficient of every input, or one per input (a list).
    cropping : sequence or None
        Crop modes (see :func:`autocrop`) applied to the inputs first.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incomings: Sequence,
        coeffs=1,
        cropping: Sequence | None = None,
        **kwargs,
    ) -> None:
        super().__init__(incomings, pt.add, cropping=cropping, **kwargs)
        where = _label(type(self).__name__, self.name)
        n = len(self.input_shapes)
        if isinstance(coeffs, list):
            if len(coeffs) != n:
                raise ValueError(f"{where}: got {len(coeffs)} coeffs {coeffs!r} for {n} incomings")
        else:
            coeffs = [coeffs] * n
        for c in coeffs:
            if not isinstance(c, utils.int_types + (float, np.floating, Variable)):
                raise TypeError(f"{where}: coeffs must be numbers, got {c!r}")
        self.coeffs = coeffs

    def get_output_for(self, inputs, **kwargs):
        """Return ``sum(coeff * input)`` over the (cropped) inputs."""
        scaled = []
        for coeff, x in zip(self.coeffs, inputs, strict=True):
            if isinstance(coeff, Variable):
                x = x * pt.cast(coeff, x.dtype) if x.dtype.startswith("float") else x * coeff
            elif coeff != 1:
                # A NumPy scalar of the input's dtype: a float32 graph stays float32.
                x = x * (np.asarray(coeff, dtype=x.dtype) if x.dtype.startswith("float") else coeff)
            scaled.append(x)
        return super().get_output_for(scaled, **kwargs)


class ConcatLayer(MergeLayer):
    """Concatenate its inputs along one axis.

    Parameters
    ----------
    incomings : sequence of Layer or tuple
        The layers feeding into this one, or their expected shapes; sizes must
        agree on every axis but ``axis``.
    axis : int
        The axis to concatenate along (negative counts from the end).
    cropping : sequence or None
        Crop modes (see :func:`autocrop`) applied to the inputs first; the
        entry for ``axis`` is ignored.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incomings: Sequence,
        axis: int = 1,
        cropping: Sequence | None = None,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(incomings, **kwargs)
        where = _label(type(self).__name__, self.name)
        if len(self.input_shapes) == 0:
            raise ValueError(f"{where}: needs at least one incoming layer")
        if isinstance(axis, bool) or not isinstance(axis, utils.int_types):
            raise TypeError(f"{where}: axis must be an int, got {axis!r}")
        if not _shapes_known(self.input_shapes):  # stand-ins for layers: check at first use
            self.axis = int(axis)
            self.cropping = None if cropping is None else list(cropping)
            if self.cropping is not None and -len(self.cropping) <= self.axis < len(self.cropping):
                self.cropping[self.axis] = None
            return
        ndim = len(self.input_shapes[0])
        if not -ndim <= axis < ndim:
            raise ValueError(f"{where}: axis={axis} is out of range for {ndim}-dimensional inputs")
        self.axis = int(axis)
        if cropping is not None:
            try:
                cropping = _pad_cropping(cropping, ndim)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            cropping[self.axis] = None  # never crop along the concatenation axis
        self.cropping = cropping
        self.get_output_shape_for(self.input_shapes)  # validate now, not at first use

    def get_output_shape_for(self, input_shapes):
        """The common shape, with the sum of the sizes along ``axis``."""
        where = _label(type(self).__name__, self.name)
        shapes = _cropped_shapes(where, input_shapes, self.cropping)
        ndim = len(shapes[0])
        axis = self.axis % ndim
        out = [_first_known(sizes) for sizes in zip(*shapes, strict=True)]
        for shape in shapes:
            for i, (a, b) in enumerate(zip(shape, out, strict=True)):
                if i != axis and a is not None and b is not None and a != b:
                    raise ValueError(
                        f"{where}: the input shapes {shapes!r} differ on axis {i}; they may "
                        f"differ only on the concatenation axis {self.axis}"
                    )
        sizes = [shape[axis] for shape in shapes]
        out[axis] = None if any(s is None for s in sizes) else sum(sizes)
        return tuple(out)

    def get_output_for(self, inputs, **kwargs):
        """Return the (cropped) inputs concatenated along ``axis``."""
        return pt.concatenate(autocrop(inputs, self.cropping), axis=self.axis)


concat = ConcatLayer

"""Small helpers shared by the layer library (Lasagne's ``lasagne.utils``)."""

from __future__ import annotations

import difflib
import inspect
import numbers
from collections.abc import Iterable

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

from . import _floatx  # noqa: F401  (sets floatX before any graph is built)

__all__ = [
    "floatX",
    "shared_empty",
    "as_tuple",
    "int_types",
    "collect_shared_vars",
    "create_param",
    "as_theano_expression",
    "one_hot",
    "inspect_kwargs",
    "unique",
    "compute_norms",
    "close_matches",
    "unroll_scan",
]

int_types = (int, np.integer)


def floatX(arr):
    """Convert ``arr`` to a NumPy array of dtype ``floatX``."""
    return np.asarray(arr, dtype=pytensor.config.floatX)


def shared_empty(dim=2, dtype=None):
    """Create an empty shared variable of ``dim`` dimensions (Lasagne's helper)."""
    if dtype is None:
        dtype = pytensor.config.floatX
    return pytensor.shared(np.zeros((0,) * dim, dtype=dtype))


def as_tuple(x, N, t=None):
    """Coerce ``x`` to a tuple of length ``N``, checking the element type ``t``.

    Raises
    ------
    TypeError
        If ``x`` is neither a ``t`` nor a sequence of ``N`` ``t`` values.
    """
    try:
        X = tuple(x)
    except TypeError:
        X = (x,) * N
    if (t is not None) and not all(isinstance(v, t) for v in X):
        if t == int_types:
            expected_type = "int"
        elif isinstance(t, tuple):
            expected_type = " or ".join(tt.__name__ for tt in t)
        else:
            expected_type = t.__name__
        raise TypeError(
            f"expected a single value or an iterable of {expected_type}, got {x} instead"
        )
    if len(X) != N:
        raise ValueError(f"expected a single value or an iterable with length {N}, got {x} instead")
    return X


def unique(l: Iterable) -> list:
    """Return the unique elements of ``l`` in order of first appearance."""
    seen = set()
    new = []
    for el in l:
        if el not in seen:
            seen.add(el)
            new.append(el)
    return new


def collect_shared_vars(expressions) -> list:
    """Return all shared variables the expression(s) depend on, in order."""
    if isinstance(expressions, Variable):
        expressions = [expressions]
    found, seen = [], set()
    stack = list(reversed(list(expressions)))  # depth first, left to right
    while stack:
        var = stack.pop()
        if var in seen:
            continue
        seen.add(var)
        if isinstance(var, SharedVariable):
            found.append(var)
        elif var.owner is not None:
            stack.extend(reversed(var.owner.inputs))
    return found


def _shared(value: np.ndarray, name):
    """A shared variable whose size-1 axes are broadcastable (Lasagne's convention)."""
    return pytensor.shared(
        value, name=name, shape=tuple(1 if d == 1 else None for d in value.shape)
    )


def create_param(spec, shape, name=None):
    """Create a parameter from ``spec``: a shared variable, expression, array, number or initializer.

    Float arrays are cast to ``floatX`` so that a ``np.zeros`` spec does not
    silently make the graph float64 (Lasagne kept their dtype).  A number
    (or NumPy scalar) makes a 0-d parameter (``shape=()``).  Parameters
    created here have their size-1 axes broadcastable, as in Lasagne, so a
    ``(1, n, 1, 1)`` bias adds to a 4D tensor.

    Raises
    ------
    ValueError
        If ``shape`` has a non-positive entry or ``spec`` (or what a callable
        returned) does not have ``shape``.
    TypeError
        If ``spec`` (or what a callable returned) is of none of the accepted kinds.

    Examples
    --------
    >>> create_param(np.zeros, (1, 3, 1, 1), "b").broadcastable
    (True, False, True, True)
    >>> create_param(2.5, ()).get_value()
    array(2.5...)
    """
    shape = tuple(shape)
    if any(d <= 0 for d in shape):
        raise ValueError(
            f"Cannot create param with a non-positive shape dimension. "
            f"Tried to create param with shape={shape}, name={name}"
        )
    err_prefix = f"cannot initialize parameter {name}: "
    if isinstance(spec, numbers.Number | np.generic) and np.asarray(spec).dtype.kind in "biufc":
        spec = np.asarray(spec)
    if isinstance(spec, Variable):
        if spec.type.ndim != len(shape):
            raise ValueError(
                f"{err_prefix}parameter variable has {spec.type.ndim} dimensions, "
                f"should be {len(shape)}"
            )
        if isinstance(spec, SharedVariable):
            actual = spec.get_value(borrow=True).shape
            if actual != shape:
                raise ValueError(f"{err_prefix}parameter has shape {actual}, should be {shape}")
        if name is not None and spec.name is None:
            spec.name = name
        return spec
    if isinstance(spec, np.ndarray):
        if spec.shape != shape:
            raise ValueError(
                f"{err_prefix}parameter array has shape {spec.shape}, should be {shape}"
            )
        if spec.dtype.kind == "f":
            spec = spec.astype(pytensor.config.floatX)
        return _shared(spec, name)
    if callable(spec):
        arr = spec(shape)
        if isinstance(arr, Variable):
            return create_param(arr, shape, name)
        if not isinstance(arr, np.ndarray | numbers.Number | np.generic):
            raise TypeError(
                f"{err_prefix}the provided callable returned {type(arr).__name__}, "
                f"not a numpy array or a PyTensor expression"
            )
        arr = np.asarray(arr)
        if arr.shape != shape:
            raise ValueError(
                f"{err_prefix}the provided callable returned an array of shape {arr.shape}, "
                f"should be {shape}"
            )
        if arr.dtype.kind == "f":
            arr = arr.astype(pytensor.config.floatX)
        return _shared(arr, name)
    raise TypeError(
        f"{err_prefix}'spec' is a {type(spec).__name__}, not a numpy array, a number, "
        f"a PyTensor expression, or a callable"
    )


def as_theano_expression(input):
    """Return ``input`` as a PyTensor expression (a constant unless it is one already).

    Raises
    ------
    TypeError
        If ``input`` cannot be wrapped as a constant.
    """
    if isinstance(input, Variable):
        return input
    try:
        return pt.constant(input)
    except Exception as e:  # noqa: BLE001 (any failure means: not an expression)
        raise TypeError(
            f"Input of type {type(input)} is not a PyTensor expression and cannot be wrapped "
            f"as a PyTensor constant (original exception: {e})"
        ) from e


def one_hot(x, m=None):
    """One-hot encode the integer vector ``x``: a ``(len(x), m)`` float matrix.

    Parameters
    ----------
    x : integer vector (expression or array)
        The class indices.
    m : int or scalar expression, optional
        The number of classes; ``max(x) + 1`` when not given.

    Examples
    --------
    >>> one_hot(np.array([2, 0])).eval()
    array([[0., 0., 1.],
           [1., 0., 0.]]...)
    """
    x = as_theano_expression(x)
    if m is None:
        m = pt.cast(pt.max(x) + 1, "int32")
    return pt.eye(m, dtype=pytensor.config.floatX)[pt.cast(x, "int32")]


def inspect_kwargs(func) -> list[str]:
    """The names of ``func``'s optional arguments (those with a default), in order.

    Raises
    ------
    TypeError
        If ``func`` cannot be introspected.

    Examples
    --------
    >>> inspect_kwargs(lambda a, b, c=42, *, bar="asdf": 0)
    ['c', 'bar']
    """
    try:
        params = inspect.signature(func).parameters.values()
    except ValueError as e:
        raise TypeError(f"cannot inspect the arguments of {func!r}: {e}") from e
    return [
        p.name
        for p in params
        if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def compute_norms(array, norm_axes=None):
    """Compute incoming weight-vector norms of a NumPy array or tensor (Lasagne's helper)."""
    if not isinstance(array, np.ndarray | Variable):
        raise RuntimeError(
            f"Unsupported type {type(array).__name__}: compute_norms takes a NumPy array or a "
            f"PyTensor expression"
        )
    ndim = array.ndim
    if norm_axes is None:
        if ndim == 1:  # a vector of biases: one norm per element, as in Lasagne
            norm_axes = ()
        elif ndim == 2:
            norm_axes = (0,)
        elif ndim in (3, 4, 5):
            norm_axes = tuple(range(1, ndim))
        else:
            raise ValueError(f"Unsupported tensor dimensionality {ndim}. Must specify `norm_axes`")
    if isinstance(array, np.ndarray):
        return np.sqrt(np.sum(array**2, axis=norm_axes))
    return pt.sqrt(pt.sum(pt.sqr(array), axis=norm_axes))


def close_matches(word: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean X?)"`` for the closest candidate, or ``""``."""
    match = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unroll_scan(fn, sequences, outputs_info, non_sequences, n_steps, go_backwards=False) -> list:
    """Unroll a recurrence into ``n_steps`` copies of ``fn``: ``pytensor.scan`` without a loop.

    Takes the arguments of :func:`pytensor.scan` that a recurrence needs and
    builds the same outputs as plain graph operations, which can be faster
    for short sequences at the price of a larger graph.

    Parameters
    ----------
    fn : callable
        Called once per step as ``fn(*sequence_slices, *previous_outputs,
        *non_sequences)``; returns one output or a list of them.
    sequences : tensor or list of tensors
        Iterated over their first axis; step ``t`` gets ``s[t]`` of each.
    outputs_info : value or list
        The initial value of each output fed back into ``fn``, or ``None``
        for an output that is not fed back.
    non_sequences : value or list
        Passed unchanged to every step.
    n_steps : int
        The number of steps: a Python int, known when the graph is built.
    go_backwards : bool
        Iterate from the last element of the sequences to the first.

    Returns
    -------
    list of tensors
        One per output of ``fn``: the outputs of all steps stacked along a
        new first axis, in the order the steps ran (as ``scan`` returns them).

    Examples
    --------
    >>> import numpy as np, pytensor.tensor as pt
    >>> a = pt.scalar("a")
    >>> [powers] = unroll_scan(lambda t, prev, a: prev * a, [pt.arange(3)], [1.0], [a], 3)
    >>> powers.eval({a: 2.0})
    array([2., 4., 8.], dtype=float32)
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int_types) or n_steps < 1:
        raise ValueError(f"unroll_scan: n_steps must be a positive int, got {n_steps!r}")
    sequences, outputs_info, non_sequences = (
        [] if arg is None else list(arg) if isinstance(arg, list | tuple) else [arg]
        for arg in (sequences, outputs_info, non_sequences)
    )
    previous = list(outputs_info)
    per_step = []
    steps = range(n_steps - 1, -1, -1) if go_backwards else range(n_steps)
    for t in steps:
        fed_back = [p for p in previous if p is not None]
        outputs = fn(*[s[t] for s in sequences], *fed_back, *non_sequences)
        if not isinstance(outputs, list | tuple):
            outputs = [outputs]
        per_step.append(outputs)
        previous = [
            out if info is not None else None
            for out, info in zip(outputs, outputs_info, strict=False)
        ]
    return [pt.stack(list(step_outputs)) for step_outputs in zip(*per_step, strict=True)]

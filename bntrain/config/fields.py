"""Field types shared by the config sections, each with the check and message it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from .messages import clip, expected, hint, problem

__all__ = [
    "NONLINEARITIES",
    "NAME_MAX",
    "Section",
    "Nonlinearity",
    "Size",
    "Stride",
    "PoolPad",
    "ConvPad",
    "PositiveFloat",
    "NonNegativeFloat",
    "PositiveInt",
    "Unit",
    "PathText",
    "DataFile",
    "Inputs",
]

#: Nonlinearity names a config may use (``dense.nonlinearity``, ``nonlinearity.fn``, ...).
NONLINEARITIES: tuple[str, ...] = (
    "relu",
    "rectify",
    "sigmoid",
    "tanh",
    "softmax",
    "identity",
    "linear",
    "leaky_relu",
    "leaky_rectify",
    "elu",
)

#: Longest file or folder name, in bytes, that file systems take (Linux NAME_MAX).
NAME_MAX = 255

_F32 = np.finfo(np.float32)


class Section(BaseModel):
    """Base of every config section: unknown keys forbidden, strict types, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _check_nonlinearity(value: str) -> str:
    if value not in NONLINEARITIES:
        raise problem(
            f"unknown nonlinearity '{clip(value)}'{hint(value, NONLINEARITIES)}; "
            f"expected one of {', '.join(NONLINEARITIES)}"
        )
    return value


def _int_or_pair(minimum: int, words: tuple[str, ...] = ()) -> BeforeValidator:
    """Validator for ``int | [int, int]`` (plus some words) with every int >= ``minimum``."""
    bound = "positive" if minimum > 0 else "non-negative"
    what = f"a {bound} integer or a list of two"
    if words:
        what += " or one of " + ", ".join(f"'{w}'" for w in words)

    def check(value: Any) -> int | tuple[int, int] | str:
        if isinstance(value, str) and value in words:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and all(v >= minimum for v in value)
        ):
            return (value[0], value[1])
        raise expected(what)

    return BeforeValidator(check)


def _check_float32(value: float) -> float:
    """Refuse what float32 (the graphs' type) turns into 0 or infinity."""
    with np.errstate(over="ignore"):
        f32 = np.float32(value)
    if value != 0 and f32 == 0:
        raise expected(f"at least {_F32.smallest_subnormal:.2g} (smaller is 0 in float32)")
    if np.isinf(f32):
        raise expected(f"at most {_F32.max:.2g} (larger is infinite in float32)")
    return value


def _check_path(value: str) -> str:
    """Refuse what no file system takes: a NUL byte, a name longer than :data:`NAME_MAX` bytes."""
    if "\x00" in value:
        raise problem("must not contain a NUL byte (\\x00)")
    for part in Path(value).parts:
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > NAME_MAX:
            raise problem(
                f"'{clip(part, 24)}' is {size} bytes long; a file or folder name may have at "
                f"most {NAME_MAX} bytes"
            )
    return value


def _check_data_file(value: str) -> str:
    if Path(value).suffix.lower() not in (".h5", ".hdf5", ".npz"):
        raise expected("a file name ending in .h5, .hdf5 or .npz")
    return value


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Nonlinearity = Annotated[str, AfterValidator(_check_nonlinearity)]
Size = Annotated[PositiveInt | tuple[PositiveInt, PositiveInt], _int_or_pair(1)]
Stride = Size
PoolPad = Annotated[NonNegativeInt | tuple[NonNegativeInt, NonNegativeInt], _int_or_pair(0)]
ConvPad = Annotated[
    NonNegativeInt | tuple[NonNegativeInt, NonNegativeInt] | Literal["same", "valid", "full"],
    _int_or_pair(0, ("same", "valid", "full")),
]
#: A float > 0 that is neither 0 nor infinite in float32.
PositiveFloat = Annotated[float, Field(gt=0), AfterValidator(_check_float32)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
#: A fraction in [0, 1).
Unit = Annotated[float, Field(ge=0, lt=1)]
#: Text used as a file or folder path.
PathText = Annotated[str, AfterValidator(_check_path)]
DataFile = Annotated[str, AfterValidator(_check_path), AfterValidator(_check_data_file)]
#: A layer's ``input:``: one layer name or a list of them (``None``: the entry before it).
Inputs = (
    Annotated[str, Field(min_length=1)]
    | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    | None
)

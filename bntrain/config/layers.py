"""``model.layers`` entries: one spec class per layer type, each building its own layer.

A new layer type is one class here (its fields with descriptions, ``type`` as a one-value
``Literal`` and a :meth:`LayerSpecBase.build` method) plus its name in :data:`_LAYER_CLASSES`.
:mod:`bntrain.model` assembles the network from the built layers and inserts batch norm.
``bntrain.nn`` is imported only when a layer is built, so reading a config stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, Field

from bntrain.errors import ConfigError

from .fields import (
    ConvPad,
    Inputs,
    Nonlinearity,
    PoolPad,
    PositiveFloat,
    PositiveInt,
    Section,
    Size,
    Stride,
)
from .walk import strip, tagged_union

if TYPE_CHECKING:
    from .schema import BatchNormConfig

__all__ = [
    "MAX_LAYER_WEIGHTS",
    "LAYER_TYPES",
    "LayerSpec",
    "LayerSpecBase",
    "BuildContext",
    "DenseSpec",
    "Conv2DSpec",
    "MaxPool2DSpec",
    "AvgPool2DSpec",
    "GlobalAvgPoolSpec",
    "DropoutSpec",
    "FlattenSpec",
    "BatchNormSpec",
    "NonlinearitySpec",
    "AddSpec",
    "ConcatSpec",
    "BlockSpec",
]

MAX_LAYER_WEIGHTS = 2**28  # 1 GiB of float32 in one weight matrix


def _name() -> Any:
    return Field(None, description="Layer name (default: the type prefix and a count, e.g. dense2)")


def _input() -> Any:
    return Field(
        None,
        description="Name(s) of the layer(s) this one takes as input (default: the entry before it)",
    )


_NONLIN = "Nonlinearity (moved after the batch norm when one follows the layer)"
_BN = "Follow this layer by batch norm when model.batch_norm.insert is auto"


@dataclass(frozen=True)
class BuildContext:
    """What building one layer needs besides its spec and its input.

    Attributes
    ----------
    name : str
        The layer's (unique) name.
    rng : numpy.random.Generator
        Seeds this layer's weights and dropout masks.
    batch_norm : BatchNormConfig
        ``model.batch_norm``: defaults of explicit ``batchnorm`` layers.
    where : str
        The entry's key path for messages, e.g. ``model.layers[2]``.
    """

    name: str
    rng: np.random.Generator
    batch_norm: BatchNormConfig
    where: str
    ramp: Any = None  # bntrain.bnvariants.RenormRamp with batch_norm.kind renorm


def _require_type(schema: dict[str, Any]) -> None:
    """In the JSON Schema a layer entry must say its ``type`` (it selects the entry's keys)."""
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")


class LayerSpecBase(Section):
    """Base of the layer specs.

    Class attributes: ``weighted`` marks layers with a weight matrix (with
    ``batch_norm.insert: auto`` batch norm follows each but the last, which is the output
    layer; such specs have a ``batch_norm`` field); ``name_prefix`` starts automatic names.
    """

    model_config = ConfigDict(json_schema_extra=_require_type)

    weighted: ClassVar[bool] = False
    merge: ClassVar[bool] = False
    name_prefix: ClassVar[str] = ""

    trainable: bool = Field(True, description="false: keep this layer's parameters fixed")

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        """Return the :mod:`bntrain.nn` layer (or chain of layers) this entry describes.

        Parameters
        ----------
        incoming : bntrain.nn.layers.Layer or list of Layer
            The layer it takes as input; for merge layers (``merge`` is true) the list
            of its inputs, in the order of ``input:``.
        ctx : BuildContext
            Name, generator, batch-norm defaults and key path.

        Raises
        ------
        ConfigError
            If the layer cannot be built from this input (the message names ``ctx.where``).
        ValueError, TypeError
            From the layer's own checks; the caller names the entry.
        """
        raise NotImplementedError


def _lib():
    from bntrain import nn
    from bntrain.nn import layers

    return nn, layers


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _check_weights(count: float, ctx: BuildContext, key: str) -> None:
    """Refuse a weight matrix too large to allocate, before allocating it."""
    if count > MAX_LAYER_WEIGHTS:
        raise ConfigError(
            f"{ctx.where}.{key}: the layer would hold {count:.3g} weights "
            f"(more than {MAX_LAYER_WEIGHTS}); use a smaller {key}"
        )


class DenseSpec(LayerSpecBase):
    """``{type: dense, units: N}``: a fully connected layer."""

    weighted: ClassVar[bool] = True

    type: Literal["dense"] = "dense"
    units: PositiveInt = Field(description="Number of output units")
    nonlinearity: Nonlinearity = Field("relu", description=_NONLIN)
    batch_norm: bool = Field(True, description=_BN)
    name: str | None = _name()
    input: Inputs = _input()

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        nn, L = _lib()
        n_in = math.prod(float(d) for d in incoming.output_shape[1:])
        _check_weights(n_in * self.units, ctx, "units")
        return L.DenseLayer(
            incoming,
            num_units=self.units,
            W=nn.init.GlorotUniform(rng=ctx.rng),
            nonlinearity=nn.nonlinearities.get(self.nonlinearity),
            name=ctx.name,
        )


class Conv2DSpec(LayerSpecBase):
    """``{type: conv2d, filters: N, size: K}``: a 2D convolution."""

    weighted: ClassVar[bool] = True
    name_prefix: ClassVar[str] = "conv"

    type: Literal["conv2d"] = "conv2d"
    filters: PositiveInt = Field(description="Number of output channels")
    size: Size = Field(description="Kernel size: K or [KH, KW]")
    stride: Stride = Field(1, description="Stride: S or [SH, SW]")
    pad: ConvPad = Field("same", description="Padding: same, valid, full, P or [PH, PW]")
    nonlinearity: Nonlinearity = Field("relu", description=_NONLIN)
    batch_norm: bool = Field(True, description=_BN)
    name: str | None = _name()
    input: Inputs = _input()

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        nn, L = _lib()
        kh, kw = _pair(self.size)
        _check_weights(float(incoming.output_shape[1]) * self.filters * kh * kw, ctx, "filters")
        return L.Conv2DLayer(
            incoming,
            num_filters=self.filters,
            filter_size=(kh, kw),
            stride=_pair(self.stride),
            pad=self.pad if isinstance(self.pad, str) else _pair(self.pad),
            W=nn.init.GlorotUniform(rng=ctx.rng),
            nonlinearity=nn.nonlinearities.get(self.nonlinearity),
            name=ctx.name,
        )


class MaxPool2DSpec(LayerSpecBase):
    """``{type: maxpool2d, size: K}``: 2D max pooling (``stride`` defaults to ``size``)."""

    name_prefix: ClassVar[str] = "pool"

    type: Literal["maxpool2d"] = "maxpool2d"
    size: Size = Field(description="Pooling window: K or [KH, KW]")
    stride: Stride | None = Field(None, description="Stride (default: the window size)")
    pad: PoolPad = Field(0, description="Zero padding: P or [PH, PW]")
    ignore_border: bool = Field(True, description="Drop partial windows at the border")
    name: str | None = _name()
    input: Inputs = _input()

    def _mode(self) -> str:
        return "max"

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        _, L = _lib()
        return L.Pool2DLayer(
            incoming,
            pool_size=_pair(self.size),
            stride=None if self.stride is None else _pair(self.stride),
            pad=_pair(self.pad),
            ignore_border=self.ignore_border,
            mode=self._mode(),
            name=ctx.name,
        )


class AvgPool2DSpec(MaxPool2DSpec):
    """``{type: avgpool2d, size: K}``: 2D average pooling (the fields of ``maxpool2d``, and ``mode``)."""

    type: Literal["avgpool2d"] = "avgpool2d"
    mode: Literal["average_inc_pad", "average_exc_pad"] = Field(
        "average_exc_pad", description="Whether padding counts in the average"
    )

    def _mode(self) -> str:
        return self.mode


class GlobalAvgPoolSpec(LayerSpecBase):
    """``{type: global_avgpool}``: average over all spatial positions."""

    name_prefix: ClassVar[str] = "gpool"

    type: Literal["global_avgpool"] = "global_avgpool"
    name: str | None = _name()
    input: Inputs = _input()

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        return _lib()[1].GlobalPoolLayer(incoming, name=ctx.name)


class DropoutSpec(LayerSpecBase):
    """``{type: dropout, p: 0.5}``: drop inputs with probability ``p`` while training."""

    type: Literal["dropout"] = "dropout"
    p: Annotated[float, Field(ge=0, lt=1)] = Field(0.5, description="Probability of dropping")
    name: str | None = _name()
    input: Inputs = _input()

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        return _lib()[1].DropoutLayer(incoming, p=self.p, rng=ctx.rng, name=ctx.name)


class FlattenSpec(LayerSpecBase):
    """``{type: flatten}``: flatten all but the batch axis."""

    type: Literal["flatten"] = "flatten"
    name: str | None = _name()
    input: Inputs = _input()

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        return _lib()[1].FlattenLayer(incoming, name=ctx.name)


class BatchNormSpec(LayerSpecBase):
    """``{type: batchnorm}``: an explicit batch-norm layer (``None`` = ``model.batch_norm``)."""

    type: Literal["batchnorm"] = "batchnorm"
    epsilon: PositiveFloat | None = Field(None, description="Added to the variance")
    alpha: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Moving-average update weight"
    )
    nonlinearity: Nonlinearity | None = Field(None, description="Nonlinearity after it")
    name: str | None = _name()
    input: Inputs = _input()

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        nn, L = _lib()
        epsilon = ctx.batch_norm.epsilon if self.epsilon is None else self.epsilon
        alpha = ctx.batch_norm.alpha if self.alpha is None else self.alpha
        from bntrain.bnvariants import normalization_kind

        cls, extra = normalization_kind(ctx.batch_norm, ctx.ramp)
        layer = cls(incoming, epsilon=epsilon, alpha=alpha, name=ctx.name, **extra)
        if self.nonlinearity is None:
            return layer
        fn = nn.nonlinearities.get(self.nonlinearity)
        return L.NonlinearityLayer(layer, fn, name=f"{ctx.name}_nonlin")


class NonlinearitySpec(LayerSpecBase):
    """``{type: nonlinearity, fn: relu}``: apply a nonlinearity."""

    type: Literal["nonlinearity"] = "nonlinearity"
    fn: Nonlinearity = Field(description="The nonlinearity")
    name: str | None = _name()
    input: Inputs = _input()

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        nn, L = _lib()
        return L.NonlinearityLayer(incoming, nn.nonlinearities.get(self.fn), name=ctx.name)


class _MergeSpec(LayerSpecBase):
    merge: ClassVar[bool] = True

    def _check_shapes(self, incoming: list, ctx: BuildContext, same_axes: range | None) -> None:
        """Refuse inputs whose shapes disagree (on ``same_axes``; ``None``: on every axis)."""
        shapes = [tuple(layer.output_shape) for layer in incoming]
        first = shapes[0]
        for layer, shape in zip(incoming[1:], shapes[1:], strict=True):
            axes = range(len(first)) if same_axes is None else same_axes
            if len(shape) != len(first) or any(
                shape[a] != first[a] and None not in (shape[a], first[a]) for a in axes
            ):
                what = "shape" if same_axes is None else f"shape (but for axis {self.axis})"
                raise ConfigError(
                    f"{ctx.where}.input: {self.type} needs inputs of the same {what}; "
                    f"'{incoming[0].name}' gives {list(first[1:])}, '{layer.name}' gives "
                    f"{list(shape[1:])}"
                )


class AddSpec(_MergeSpec):
    """``{type: add, input: [a, b]}``: the elementwise sum of its inputs (times ``coeffs``)."""

    type: Literal["add"] = "add"
    coeffs: float | list[float] = Field(
        1.0, description="Weight of each input: one number for all, or one per input"
    )
    name: str | None = _name()
    input: Inputs = _input()

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        if isinstance(self.coeffs, list) and len(self.coeffs) != len(incoming):
            raise ConfigError(
                f"{ctx.where}.coeffs: {len(self.coeffs)} coefficients for {len(incoming)} "
                f"inputs; give one per input or a single number"
            )
        self._check_shapes(incoming, ctx, None)
        return _lib()[1].ElemwiseSumLayer(incoming, coeffs=self.coeffs, name=ctx.name)


class ConcatSpec(_MergeSpec):
    """``{type: concat, input: [a, b]}``: its inputs joined along ``axis`` (1: channels)."""

    type: Literal["concat"] = "concat"
    axis: int = Field(1, description="Axis to join along (1: channels/features; 0 not allowed)")
    name: str | None = _name()
    input: Inputs = _input()

    def build(self, incoming: Any, ctx: BuildContext) -> Any:
        ndim = len(incoming[0].output_shape)
        axis = self.axis + ndim if self.axis < 0 else self.axis
        if not 1 <= axis < ndim:
            raise ConfigError(
                f"{ctx.where}.axis: {self.axis} is not an axis to join along for inputs of "
                f"shape {list(incoming[0].output_shape[1:])}; use 1 to {ndim - 1} (0 is the "
                f"batch axis)"
            )
        self._check_shapes(incoming, ctx, range(0, 0))  # ranks first
        self._check_shapes(incoming, ctx, [a for a in range(1, ndim) if a != axis])
        return _lib()[1].ConcatLayer(incoming, axis=axis, name=ctx.name)


class BlockSpec(LayerSpecBase):
    """``{type: block, use: NAME}``: ``repeat`` copies of the template ``model.blocks.NAME``.

    Generated layer names are ``<name>.block<k>.<template layer name>``; the entry's own name
    (default ``stage<n>``) refers to the output of its last copy.  :mod:`bntrain.config.graph`
    expands it.
    """

    model_config = ConfigDict(serialize_by_alias=True)
    name_prefix: ClassVar[str] = "stage"

    type: Literal["block"] = "block"
    use: str = Field(description="Name of the template in model.blocks")
    repeat: PositiveInt = Field(1, description="Number of copies, each feeding the next")
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="Values of the template's ${parameters}",
    )
    name: str | None = _name()
    input: Inputs = _input()


_LAYER_CLASSES: tuple[type[LayerSpecBase], ...] = (
    DenseSpec,
    Conv2DSpec,
    MaxPool2DSpec,
    AvgPool2DSpec,
    GlobalAvgPoolSpec,
    DropoutSpec,
    FlattenSpec,
    BatchNormSpec,
    NonlinearitySpec,
    AddSpec,
    ConcatSpec,
    BlockSpec,
)

#: One ``model.layers`` entry: the spec class its ``type`` names.
LayerSpec = tagged_union("type", _LAYER_CLASSES, noun="layer type")

#: Layer ``type`` names a config may use.
LAYER_TYPES: tuple[str, ...] = strip(LayerSpec).tags

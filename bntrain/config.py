"""YAML config -> validated, typed :class:`Config` (the only module that knows the schema).

A config file is parsed with a restricted YAML loader (no object construction, YAML 1.2 style
numbers so that ``1e-3`` is a float, duplicate keys rejected) that records the line of every key,
then validated with pydantic models in strict mode.  Every problem becomes a one-line
:class:`~bntrain.errors.ConfigError` of the form ``file.yaml:14: training.optimizer.lr: must be
> 0, got -1``.

Examples
--------
>>> cfg = parse_config('''
... data: {train: {builtin: digits, split: train}}
... model: {layers: [{type: dense, units: 10, nonlinearity: softmax}]}
... training: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 1e-3}}
... ''', source='tiny.yaml')
>>> cfg.name, cfg.training.optimizer.lr, cfg.output.dir
('tiny', 0.001, 'runs/tiny')
>>> try:
...     parse_config('training: {optimzer: 1}', source='bad.yaml')
... except ConfigError as exc:
...     print(exc)  # doctest: +ELLIPSIS
bad.yaml:1: training.optimzer: unknown key (did you mean 'optimizer'?) (and 2 more...)
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bntrain.errors import ConfigError

__all__ = [
    "NONLINEARITIES",
    "LAYER_TYPES",
    "Config",
    "DataConfig",
    "DatasetSpec",
    "Preprocess",
    "ModelConfig",
    "BatchNormConfig",
    "LayerSpec",
    "DenseSpec",
    "Conv2DSpec",
    "MaxPool2DSpec",
    "AvgPool2DSpec",
    "GlobalAvgPoolSpec",
    "DropoutSpec",
    "FlattenSpec",
    "BatchNormSpec",
    "NonlinearitySpec",
    "TrainingConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "OutputConfig",
    "load_config",
    "parse_config",
    "dump_config",
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

_MAX_NODES = 100_000  # YAML nodes visited (guards against alias bombs)
_MAX_DEPTH = 64  # nesting depth of mappings/lists
_MAX_BYTES = 16 * 1024 * 1024  # size of a config file

# --------------------------------------------------------------------------------------------
# Small helpers for messages
# --------------------------------------------------------------------------------------------


def _clip(text: str, limit: int = 60) -> str:
    """Make user text printable on one line and not too long."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _hint(word: object, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    if not isinstance(word, str):
        return ""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not found:
        found = [c for c in choices if c.lower() == word.lower()]
    return f" (did you mean '{found[0]}'?)" if found else ""


def _path_str(path: Sequence[str | int]) -> str:
    """``('model', 'layers', 2, 'units')`` -> ``model.layers[2].units``."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += ("." if out else "") + _clip(str(key))
    return out


def _show(value: object, raw: str | None = None) -> str:
    """Describe a (wrong) value for a message, preferring its text in the file."""
    if isinstance(value, bool):
        return f"{_clip(raw) if raw is not None else str(value).lower()} (a boolean)"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return f"'{_clip(value)}'"
    if isinstance(value, int | float):
        if raw is not None:
            return _clip(raw, 40)
        return _clip(str(value) if isinstance(value, int) else repr(value), 40)
    return f"a value of type {type(value).__name__}"


def _expected(what: str) -> PydanticCustomError:
    return PydanticCustomError("bntrain_expected", "must be {expected}", {"expected": what})


def _problem(message: str, key: str | None = None) -> PydanticCustomError:
    ctx: dict[str, Any] = {"text": message}
    if key is not None:
        ctx["key"] = key
    return PydanticCustomError("bntrain_msg", "{text}", ctx)


# --------------------------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------------------------


def _check_nonlinearity(value: str) -> str:
    if value not in NONLINEARITIES:
        raise _problem(
            f"unknown nonlinearity '{_clip(value)}'{_hint(value, NONLINEARITIES)}; "
            f"expected one of {', '.join(NONLINEARITIES)}"
        )
    return value


def _int_or_pair(minimum: int, words: tuple[str, ...] = ()):
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
        raise _expected(what)

    return BeforeValidator(check)


def _check_data_file(value: str) -> str:
    if Path(value).suffix.lower() not in (".h5", ".hdf5", ".npz"):
        raise _expected("a file name ending in .h5, .hdf5 or .npz")
    return value


Nonlinearity = Annotated[str, AfterValidator(_check_nonlinearity)]
Size = Annotated[int | tuple[int, int], _int_or_pair(1)]
Stride = Annotated[int | tuple[int, int], _int_or_pair(1)]
PoolPad = Annotated[int | tuple[int, int], _int_or_pair(0)]
ConvPad = Annotated[
    int | tuple[int, int] | Literal["same", "valid", "full"],
    _int_or_pair(0, ("same", "valid", "full")),
]
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
DataFile = Annotated[str, AfterValidator(_check_data_file)]


class _Section(BaseModel):
    """Base of every config section: unknown keys forbidden, strict types, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------
# data:
# --------------------------------------------------------------------------------------------


class DatasetSpec(_Section):
    """One dataset: a built-in one (``builtin`` + ``split``) or a file (``path``, ``x``, ``y``)."""

    builtin: Literal["digits"] | None = None
    split: Literal["train", "val", "test", "all"] | None = None
    path: DataFile | None = None
    x: str = "X"
    y: str | None = "y"

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.builtin is None) == (self.path is None):
            raise _problem("give exactly one of 'builtin' or 'path'")
        if self.builtin is not None and self.split is None:
            raise _problem("missing required key (needed with 'builtin')", key="split")
        if self.path is not None and self.split is not None:
            raise _problem("only allowed with 'builtin', not with 'path'", key="split")
        return self


class Preprocess(_Section):
    """Input preprocessing: multiply by ``scale`` and/or standardize per feature."""

    scale: PositiveFloat | None = None
    standardize: bool = False


class DataConfig(_Section):
    """``data:`` section: training set, optional validation and test sets, preprocessing."""

    train: DatasetSpec
    val: DatasetSpec | None = None
    val_split: Annotated[float, Field(gt=0, lt=1)] | None = None
    test: DatasetSpec | None = None
    preprocess: Preprocess = Field(default_factory=Preprocess)

    @model_validator(mode="after")
    def _val_once(self) -> DataConfig:
        if self.val is not None and self.val_split is not None:
            raise _problem("not allowed together with 'val'", key="val_split")
        return self


# --------------------------------------------------------------------------------------------
# model:
# --------------------------------------------------------------------------------------------


class BatchNormConfig(_Section):
    """``model.batch_norm``: where batch norm is inserted and its hyperparameters."""

    insert: Literal["auto", "none"] = "auto"
    epsilon: PositiveFloat = 1e-4
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.1


class DenseSpec(_Section):
    """``{type: dense, units: N}``: a fully connected layer."""

    type: Literal["dense"] = "dense"
    units: PositiveInt
    nonlinearity: Nonlinearity = "relu"
    batch_norm: bool = True
    name: str | None = None


class Conv2DSpec(_Section):
    """``{type: conv2d, filters: N, size: K}``: a 2D convolution."""

    type: Literal["conv2d"] = "conv2d"
    filters: PositiveInt
    size: Size
    stride: Stride = 1
    pad: ConvPad = "same"
    nonlinearity: Nonlinearity = "relu"
    batch_norm: bool = True
    name: str | None = None


class MaxPool2DSpec(_Section):
    """``{type: maxpool2d, size: K}``: 2D max pooling (``stride`` defaults to ``size``)."""

    type: Literal["maxpool2d"] = "maxpool2d"
    size: Size
    stride: Stride | None = None
    pad: PoolPad = 0
    ignore_border: bool = True
    name: str | None = None


class AvgPool2DSpec(MaxPool2DSpec):
    """``{type: avgpool2d, size: K}``: 2D average pooling (the fields of ``maxpool2d``, and ``mode``)."""

    type: Literal["avgpool2d"] = "avgpool2d"
    mode: Literal["average_inc_pad", "average_exc_pad"] = "average_exc_pad"


class GlobalAvgPoolSpec(_Section):
    """``{type: global_avgpool}``: average over all spatial positions."""

    type: Literal["global_avgpool"] = "global_avgpool"
    name: str | None = None


class DropoutSpec(_Section):
    """``{type: dropout, p: 0.5}``: drop inputs with probability ``p`` while training."""

    type: Literal["dropout"] = "dropout"
    p: Annotated[float, Field(ge=0, lt=1)] = 0.5
    name: str | None = None


class FlattenSpec(_Section):
    """``{type: flatten}``: flatten all but the batch axis."""

    type: Literal["flatten"] = "flatten"
    name: str | None = None


class BatchNormSpec(_Section):
    """``{type: batchnorm}``: an explicit batch-norm layer (``None`` = ``model.batch_norm``)."""

    type: Literal["batchnorm"] = "batchnorm"
    epsilon: PositiveFloat | None = None
    alpha: Annotated[float, Field(gt=0, le=1)] | None = None
    nonlinearity: Nonlinearity | None = None
    name: str | None = None


class NonlinearitySpec(_Section):
    """``{type: nonlinearity, fn: relu}``: apply a nonlinearity."""

    type: Literal["nonlinearity"] = "nonlinearity"
    fn: Nonlinearity
    name: str | None = None


_LAYER_CLASSES: tuple[type[_Section], ...] = (
    DenseSpec,
    Conv2DSpec,
    MaxPool2DSpec,
    AvgPool2DSpec,
    GlobalAvgPoolSpec,
    DropoutSpec,
    FlattenSpec,
    BatchNormSpec,
    NonlinearitySpec,
)
_LAYER_BY_TYPE: dict[str, type[_Section]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls for cls in _LAYER_CLASSES
}
#: Layer ``type`` names a config may use.
LAYER_TYPES: tuple[str, ...] = tuple(_LAYER_BY_TYPE)

LayerSpec = Annotated[
    DenseSpec
    | Conv2DSpec
    | MaxPool2DSpec
    | AvgPool2DSpec
    | GlobalAvgPoolSpec
    | DropoutSpec
    | FlattenSpec
    | BatchNormSpec
    | NonlinearitySpec,
    Field(discriminator="type"),
]


class ModelConfig(_Section):
    """``model:`` section: input shape, batch-norm settings and the list of layers."""

    input_shape: list[PositiveInt] | None = None
    batch_norm: BatchNormConfig = Field(default_factory=BatchNormConfig)
    layers: list[LayerSpec] = Field(min_length=1)


# --------------------------------------------------------------------------------------------
# training: / output:
# --------------------------------------------------------------------------------------------

_Unit = Annotated[float, Field(ge=0, lt=1)]


class OptimizerConfig(_Section):
    """``training.optimizer``: update rule and its hyperparameters."""

    name: Literal["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]
    lr: PositiveFloat
    momentum: _Unit = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    beta1: _Unit = 0.9
    beta2: _Unit = 0.999
    epsilon: PositiveFloat = 1e-8
    grad_clip_norm: PositiveFloat | None = None


class ScheduleConfig(_Section):
    """``training.schedule``: learning-rate schedule over epochs (optional linear warmup)."""

    name: Literal["constant", "step", "cosine"] = "constant"
    step_size: PositiveInt | None = None
    gamma: PositiveFloat = 0.1
    warmup_epochs: Annotated[int, Field(ge=0)] = 0
    min_lr: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _step_needs_size(self) -> ScheduleConfig:
        if self.name == "step" and self.step_size is None:
            raise _problem("missing required key (needed when name is 'step')", key="step_size")
        return self


class TrainingConfig(_Section):
    """``training:`` section: epochs, batch size, optimizer, schedule and run policy."""

    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    optimizer: OptimizerConfig
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    seed: Annotated[int, Field(ge=0)] = 0
    recompute_stats: bool = True
    best_metric: Literal["val_acc", "val_loss"] = "val_acc"
    nan_policy: Literal["stop", "skip"] = "stop"
    max_consecutive_nan: Annotated[int, Field(ge=1)] = 10
    shuffle: bool = True
    checkpoint_every_steps: Annotated[int, Field(ge=1)] | None = None


class OutputConfig(_Section):
    """``output:`` section: run folder (default ``runs/<name>``, relative to the config)."""

    dir: str | None = None


class Config(_Section):
    """A whole validated config.

    ``base_dir`` (the config file's folder; not part of the schema and never dumped) anchors
    relative paths, see :meth:`resolve_path`.  ``run`` is an informational mapping that run
    folders add to their copy of the config; training ignores it.
    """

    name: Annotated[str, Field(min_length=1)]
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    output: OutputConfig = Field(default_factory=OutputConfig)
    backend: Literal["auto", "jax", "numba", "c"] = "auto"
    device: Literal["auto", "cpu", "gpu"] = "auto"
    run: dict[str, Any] | None = None

    _base_dir: Path = PrivateAttr(default_factory=lambda: Path("."))

    @model_validator(mode="after")
    def _default_output(self) -> Config:
        if self.output.dir is None:
            self.output.dir = f"runs/{self.name}"
        return self

    @property
    def base_dir(self) -> Path:
        """Folder of the config file; relative paths in the config resolve against it."""
        return self._base_dir

    @base_dir.setter
    def base_dir(self, value: str | os.PathLike[str]) -> None:
        self._base_dir = Path(value)

    def resolve_path(self, p: str | os.PathLike[str]) -> Path:
        """Return ``p`` as a path, relative ones taken against :attr:`base_dir`.

        Parameters
        ----------
        p : str or path-like
            A path from the config (a data file, the output folder, ...).

        Returns
        -------
        Path
            ``p`` itself when absolute (after ``~`` expansion), else ``base_dir / p``.
        """
        path = Path(p).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    @property
    def output_dir(self) -> Path:
        """The run folder, resolved against :attr:`base_dir`."""
        return self.resolve_path(self.output.dir or f"runs/{self.name}")


# --------------------------------------------------------------------------------------------
# YAML loading
# --------------------------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL})

_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def _resolvers_12(base: type) -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    """PyYAML's implicit resolvers with YAML 1.2 core ints/floats and no timestamps."""
    table = {
        first: [(tag, rx) for tag, rx in entries if tag not in (_INT, _FLOAT, _TAG + "timestamp")]
        for first, entries in base.yaml_implicit_resolvers.items()
    }
    for tag, rx, firsts in (
        (_INT, _INT_RE, "-+0123456789"),
        (_FLOAT, _FLOAT_RE, "-+0123456789."),
    ):
        for ch in firsts:
            table.setdefault(ch, []).append((tag, rx))
    return table


class _Loader(yaml.SafeLoader):
    """Safe loader used only to compose nodes; scalars are resolved the YAML 1.2 way."""


_Loader.yaml_implicit_resolvers = _resolvers_12(yaml.SafeLoader)


class _Dumper(yaml.SafeDumper):
    """Safe dumper that quotes every string :class:`_Loader` would read as something else."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.yaml_implicit_resolvers = _resolvers_12(yaml.SafeDumper)


class _FlowDict(dict):
    pass


class _FlowList(list):
    pass


_Dumper.add_representer(
    _FlowDict, lambda d, data: d.represent_mapping(_MAP, data.items(), flow_style=True)
)
_Dumper.add_representer(_FlowList, lambda d, data: d.represent_sequence(_SEQ, data, True))


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _bad_tag(tag: str) -> str:
    return f"YAML tag '{_clip(_tag_name(tag))}' is not allowed"


class _Doc:
    """The result of loading: plain data plus where each key path came from."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple[str | int, ...], int] = {}
        self.texts: dict[tuple[str | int, ...], str] = {}
        self.nodes = 0

    def fail(self, line: int | None, path: Sequence[str | int], message: str) -> ConfigError:
        where = self.source if line is None else f"{self.source}:{line}"
        key = _clip(_path_str(path), 100)
        return ConfigError(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    def scalar(self, node: yaml.ScalarNode, path: tuple[str | int, ...]) -> Any:
        text = node.value
        line = node.start_mark.line + 1
        tag = node.tag
        try:
            if tag == _STR:
                return text
            if tag == _NULL:
                return None
            if tag == _BOOL:
                value = yaml.constructor.SafeConstructor.bool_values.get(text.lower())
                if value is None:
                    raise ValueError
                return value
            if tag == _INT:
                body = text.strip()
                sign = -1 if body.startswith("-") else 1
                body = body.lstrip("+-")
                if body[:2] in ("0x", "0X"):
                    return sign * int(body[2:], 16)
                if body[:2] in ("0o", "0O"):
                    return sign * int(body[2:], 8)
                return sign * int(body, 10)
            if tag == _FLOAT:
                low = text.strip().lower()
                if low in (".inf", "+.inf"):
                    return math.inf
                if low == "-.inf":
                    return -math.inf
                if low == ".nan":
                    return math.nan
                return float(low)
        except ValueError as exc:
            if "digits" in str(exc):  # int('9' * 5000): Python's conversion limit
                raise self.fail(line, path, "number too large") from None
            raise self.fail(
                line, path, f"cannot read '{_clip(text)}' as {_tag_name(tag)}"
            ) from None
        raise self.fail(line, path, _bad_tag(tag))

    def build(self, node: yaml.Node, path: tuple[str | int, ...], depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise self.fail(None, (), f"the config is too large (more than {_MAX_NODES} values)")
        line = node.start_mark.line + 1
        if depth > _MAX_DEPTH:
            raise self.fail(line, path, f"nested too deeply (more than {_MAX_DEPTH} levels)")
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node, path)
            self.texts.setdefault(path, node.value)
            return value
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise self.fail(line, path, _bad_tag(node.tag))
            items = []
            for i, item in enumerate(node.value):
                self.lines.setdefault(path + (i,), item.start_mark.line + 1)
                items.append(self.build(item, path + (i,), depth + 1))
            return items
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                raise self.fail(line, path, _bad_tag(node.tag))
            return self.mapping(node, path, depth)
        raise self.fail(line, path, "unsupported YAML node")  # pragma: no cover

    def mapping(self, node: yaml.MappingNode, path: tuple[str | int, ...], depth: int) -> dict:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            kline = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:  # `<<: *defaults`
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for src in sources:
                    value = self.build(src, path, depth + 1)
                    if not isinstance(value, dict):
                        raise self.fail(kline, path, "'<<' must merge a mapping")
                    for k, v in value.items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(kline, path, "mapping keys must be plain names")
            if key_node.tag not in _SCALAR_TAGS:
                raise self.fail(kline, path, _bad_tag(key_node.tag))
            key = key_node.value
            if key in result:
                where = f"in {_path_str(path)}" if path else "at the top level"
                raise ConfigError(f"{self.source}:{kline}: duplicate key '{_clip(key)}' {where}")
            self.lines[path + (key,)] = kline
            result[key] = self.build(value_node, path + (key,), depth + 1)
        for k, v in merged.items():
            result.setdefault(k, v)
        return result


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def _load_yaml(text: str, source: str) -> tuple[Any, _Doc]:
    """Parse one YAML document safely into plain data; every failure is a ConfigError."""
    doc = _Doc(source)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is None:
            return None, doc
        return doc.build(node, ()), doc
    except yaml.reader.ReaderError as exc:
        char = exc.character
        code = ord(char) if isinstance(char, str) else int(char)
        line = _line_of(text, exc.position)
        raise ConfigError(
            f"{source}:{line}: not a text config: character U+{code:04X} is not allowed in YAML"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        parts = [exc.context] if exc.context and not exc.context.startswith("while") else []
        parts.append(exc.problem or "syntax error")
        problem = " ".join(" ".join(str(p) for p in parts).split())
        raise ConfigError(f"{where}: invalid YAML: {_clip(problem, 120)}") from None
    except yaml.YAMLError as exc:  # pragma: no cover - other PyYAML failures
        raise ConfigError(
            f"{source}: invalid YAML: {_clip(' '.join(str(exc).split()), 120)}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{source}: the config is nested too deeply") from None


# --------------------------------------------------------------------------------------------
# Schema walking (for did-you-mean and overrides)
# --------------------------------------------------------------------------------------------

_ANY = object()  # "anything goes below here"


def _strip(ann: Any) -> Any:
    """Unwrap ``Annotated`` and ``X | None``; return the layer union marker or a type."""
    while typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(ann) if a is not type(None)]
        if members and all(m in _LAYER_CLASSES for m in members):
            return _LAYER_BY_TYPE
        if len(members) == 1:
            return _strip(members[0])
    return ann


def _model_for(ann: Any, raw: Any) -> type[BaseModel] | None:
    """The pydantic model a raw value is validated against, or None if not a model."""
    ann = _strip(ann)
    if ann is _LAYER_BY_TYPE:
        kind = raw.get("type") if isinstance(raw, dict) else None
        return _LAYER_BY_TYPE.get(kind) if isinstance(kind, str) else None
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return None


def _child(ann: Any, raw: Any, key: str | int) -> Any:
    """Annotation of ``raw[key]`` given the annotation of ``raw`` (``_ANY`` if unknown)."""
    model = _model_for(ann, raw)
    if model is not None:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        return field.annotation if field is not None else _ANY
    ann = _strip(ann)
    if typing.get_origin(ann) is list and isinstance(key, int):
        return typing.get_args(ann)[0]
    return _ANY


def _known_keys(path: Sequence[str | int], data: Any) -> list[str] | None:
    """Allowed keys of the mapping at ``path`` of ``data`` (None if anything goes)."""
    ann: Any = Config
    cur = data
    for key in path:
        ann = _child(ann, cur, key)
        if ann is _ANY:
            return None
        try:
            cur = cur[key]
        except (KeyError, IndexError, TypeError):
            cur = None
    model = _model_for(ann, cur)
    return list(model.model_fields) if model is not None else None


# --------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)?((?:\[[0-9]+\])*)")


def _parse_key(key: str) -> list[str | int] | None:
    parts: list[str | int] = []
    for seg in key.split("."):
        if seg.isdigit():
            parts.append(int(seg))
            continue
        m = _SEGMENT.fullmatch(seg)
        if m is None or not seg or (m.group(1) is None and not parts):
            return None
        if m.group(1):
            parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[([0-9]+)\]", m.group(2)))
    return parts or None


def _apply_override(data: dict, override: str) -> tuple[str | int, ...]:
    """Set one ``dotted.key=value`` in the raw mapping; return the key path it set."""
    label = f"--set {_clip(override, 80)}"
    key, sep, text = override.partition("=")
    path = _parse_key(key.strip()) if sep else None
    if path is None:
        raise ConfigError(f"{label}: expected KEY=VALUE, e.g. training.optimizer.lr=0.05")
    try:
        value, _ = _load_yaml(text, "<value>")
    except ConfigError as exc:
        problem = re.sub(r"^<value>(:[0-9]+)?: ", "", str(exc))
        raise ConfigError(f"{label}: invalid value: {problem}") from None
    ann: Any = Config
    cur: Any = data
    for i, part in enumerate(path):
        here = _path_str(path[:i]) or "the top level"
        if isinstance(part, str):
            if not isinstance(cur, dict):
                raise ConfigError(f"{label}: {here} is not a mapping")
            model = _model_for(ann, cur)
            if model is not None and part not in model.model_fields:
                raise ConfigError(f"{label}: unknown key{_hint(part, list(model.model_fields))}")
        else:
            if not isinstance(cur, list):
                raise ConfigError(f"{label}: {here} is not a list")
            if part >= len(cur):
                raise ConfigError(
                    f"{label}: index {part} out of range ({here} has {len(cur)} entries)"
                )
        ann = _child(ann, cur, part)
        if i == len(path) - 1:
            cur[part] = value
        else:
            if isinstance(cur, dict) and cur.get(part) is None and isinstance(path[i + 1], str):
                cur[part] = {}
            cur = cur[part]
    return tuple(path)


# --------------------------------------------------------------------------------------------
# Validation errors -> one line
# --------------------------------------------------------------------------------------------

_TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "finite_number": "a finite number",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _normalize_loc(loc: Sequence[str | int], data: Any) -> list[str | int]:
    """Drop pydantic's union-tag entries from ``loc`` by following the raw data."""
    out: list[str | int] = []
    cur = data
    for i, key in enumerate(loc):
        if isinstance(cur, list) and isinstance(key, int) and 0 <= key < len(cur):
            out.append(key)
            cur = cur[key]
        elif isinstance(cur, dict) and key in cur:
            out.append(key)
            cur = cur[key]
        elif isinstance(cur, dict) and i < len(loc) - 1 and cur.get("type") == key:
            continue  # the discriminated union's tag
        else:
            out.append(key)
            cur = None
    return out


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _describe(err: dict[str, Any], path: list[str | int], data: Any, raw: str | None) -> str:
    """The message part of one pydantic error (everything after ``key.path: ``)."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    got = _show(value, raw)
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        keys = _known_keys(path[:-1], data) or []
        return f"unknown key{_hint(path[-1], keys)}"
    if kind == "bntrain_msg":
        return ctx["text"]
    if kind == "bntrain_expected":
        return f"must be {ctx['expected']}, got {got}"
    if kind in _BOUNDS:
        bound = next(iter(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")))
        return f"must be {_BOUNDS[kind]} {_number(bound)}, got {got}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(choices)}; got {got}{_hint(value, choices)}"
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag", ""))
        return (
            f"unknown layer type '{_clip(tag)}'{_hint(tag, LAYER_TYPES)}; "
            f"expected one of {', '.join(LAYER_TYPES)}"
        )
    if kind == "union_tag_not_found":
        return f"missing required key 'type' (one of {', '.join(LAYER_TYPES)})"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"must have at least {n} {'entry' if n == 1 else 'entries'}"
    if kind in _TYPE_WORDS:
        message = f"must be {_TYPE_WORDS[kind]}, got {got}"
        if kind == "string_type" and isinstance(value, bool):
            message += "; quote it to use it as a string"
        return message
    return _clip(" ".join(str(err.get("msg", "invalid value")).split()), 120)


def _translate(
    exc: ValidationError, data: Any, doc: _Doc, origins: dict[tuple[str | int, ...], str]
) -> ConfigError:
    found: list[tuple[bool, float, int, str]] = []
    errors = [(err, _normalize_loc(err["loc"], data)) for err in exc.errors()]
    # A misspelt key also makes the real key "missing": drop those echoes.
    misspelt = {tuple(p[:-1]) for e, p in errors if e["type"] == "extra_forbidden"}
    errors = [
        (e, p) for e, p in errors if not (e["type"] == "missing" and tuple(p[:-1]) in misspelt)
    ]
    for n, (err, path) in enumerate(errors):
        ctx = err.get("ctx") or {}
        if err["type"] == "bntrain_msg" and "key" in ctx:
            path.append(ctx["key"])
        elif err["type"] == "union_tag_invalid":
            path.append("type")
        origin = next(((p, o) for p, o in origins.items() if tuple(path[: len(p)]) == p), None)
        raw = doc.texts.get(tuple(path)) if origin is None else None
        message = _describe(err, path, data, raw)
        key = _clip(_path_str(path), 100)
        body = f"{key}: {message}" if key else message
        missing = err["type"] == "missing"  # usually caused by a misspelt key: report that first
        if origin is not None:
            if tuple(path) == origin[0]:
                body = message
            found.append((missing, -1, n, f"{origin[1]}: {body}"))
            continue
        line = None
        for cut in range(len(path), 0, -1):
            line = doc.lines.get(tuple(path[:cut]))
            if line is not None:
                break
        where = doc.source if line is None else f"{doc.source}:{line}"
        found.append((missing, math.inf if line is None else line, n, f"{where}: {body}"))
    found.sort()
    message = found[0][3]
    if len(found) > 1:
        more = len(found) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(message)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def parse_config(
    text: str,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] = Path("."),
    overrides: Sequence[str] = (),
) -> Config:
    """Validate config text.

    Parameters
    ----------
    text : str
        The YAML text.
    source : str
        Name used in messages (``source:line: ...``); its stem is the default ``name``.
    base_dir : path-like
        Folder that relative paths in the config resolve against.
    overrides : sequence of str
        ``dotted.key=value`` strings (``model.layers[0].units=50``) applied to the parsed
        mapping before validation; values are YAML.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        For any problem, with a one-line message naming the key path and ``source:line``.
    """
    if isinstance(overrides, str):
        overrides = (overrides,)
    try:
        data, doc = _load_yaml(text, source)
        if data is None:
            raise ConfigError(f"{source}: the config is empty")
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}:1: the top level must be a mapping of keys (data:, model:, "
                f"training:, ...), got {_show(data)}"
            )
        origins: dict[tuple[str | int, ...], str] = {}
        for override in overrides:
            origins[_apply_override(data, override)] = f"--set {_clip(override, 80)}"
        if "name" not in data:
            stem = Path(source).stem if not source.startswith("<") else ""
            data["name"] = stem or "config"
        try:
            config = Config.model_validate(data)
        except ValidationError as exc:
            raise _translate(exc, data, doc, origins) from None
    except RecursionError:
        raise ConfigError(f"{source}: the config is nested too deeply") from None
    except OverflowError:
        raise ConfigError(f"{source}: a number in the config is too large") from None
    config.base_dir = Path(base_dir)
    return config


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Read and validate a config file.

    Parameters
    ----------
    path : path-like
        The YAML file; its folder becomes ``Config.base_dir`` and its stem the default name.
    overrides : sequence of str
        ``dotted.key=value`` strings, see :func:`parse_config`.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        If the file is missing, unreadable, not UTF-8 text or not a valid config.
    """
    path = Path(path)
    shown = _clip(str(path), 200)
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise ConfigError(f"config file '{shown}' is too large to be a config")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file '{shown}' not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file '{shown}' is a folder, not a file") from None
    except OSError as exc:
        reason = exc.strerror or "cannot be read"
        raise ConfigError(f"config file '{shown}' cannot be read: {reason.lower()}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{shown}:{line}: not a text config (invalid UTF-8 byte 0x{raw[exc.start]:02x})"
        ) from None
    return parse_config(text, source=str(path), base_dir=path.parent, overrides=overrides)


def _plain(obj: Any) -> Any:
    """Turn ``extra`` values into YAML-safe plain data."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if hasattr(obj, "item"):  # NumPy scalars
        return _plain(obj.item())
    return str(obj)


def _is_scalar(obj: Any) -> bool:
    return obj is None or isinstance(obj, bool | int | float | str)


def _styled(obj: Any, in_list: bool = False, top: bool = True) -> Any:
    """Flow style (``{a: 1}``, ``[1, 2]``) for list entries, small leaf mappings, scalar lists."""
    if isinstance(obj, dict):
        items = {k: _styled(v, top=False) for k, v in obj.items()}
        flat = all(_is_scalar(v) or isinstance(v, _FlowList) for v in items.values())
        return _FlowDict(items) if flat and not top and (in_list or len(items) <= 5) else items
    if isinstance(obj, list):
        if all(_is_scalar(v) for v in obj):
            return _FlowList(obj)
        return [_styled(v, in_list=True, top=False) for v in obj]
    return obj


def dump_config(config: Config, extra: dict | None = None) -> str:
    """YAML text of a config with every default filled in, in schema key order.

    Parameters
    ----------
    config : Config
        A validated config.
    extra : dict, optional
        Extra top-level sections to append, such as ``{"run": {"seed": 0, ...}}``.  Only a
        ``run`` mapping is accepted again by :func:`parse_config`.

    Returns
    -------
    str
        YAML text; ``parse_config(dump_config(c), base_dir=c.base_dir) == c``.
    """
    data = config.model_dump(mode="json", exclude_none=False)
    if data.get("run") is None or (extra and "run" in extra):
        data.pop("run", None)
    for key, value in (extra or {}).items():
        if key in Config.model_fields and key != "run":
            raise ValueError(f"dump_config: extra key '{key}' clashes with a config section")
        data[str(key)] = _plain(value)
    return yaml.dump(_styled(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)

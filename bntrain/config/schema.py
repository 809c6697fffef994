"""The config schema: every section, key, default and limit a config file may use.

Each section is a pydantic model that forbids unknown keys and takes no type coercion (a quoted
``'5'`` is not an integer).  The layer entries of ``model.layers`` live in
:mod:`bntrain.config.layers`; the optimizer and the schedule are each one of several models
selected by their ``name``, so a key the chosen one does not use is an unknown key.
``bntrain schema`` prints this as JSON Schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from .fields import (
    DataFile,
    NonNegativeFloat,
    NonNegativeInt,
    PathText,
    PositiveFloat,
    PositiveInt,
    Section,
    Unit,
)
from .graph import Node, expand
from .layers import LayerSpec
from .messages import path_str, problem
from .walk import strip, tagged_union

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Config",
    "DataConfig",
    "DatasetSpec",
    "Preprocess",
    "Augment",
    "RandomCrop",
    "RandomTranslate",
    "ModelConfig",
    "BatchNormConfig",
    "TrainingConfig",
    "OptimizerConfig",
    "SGDConfig",
    "MomentumConfig",
    "NesterovConfig",
    "RMSPropConfig",
    "AdamConfig",
    "AdamWConfig",
    "ScheduleConfig",
    "ConstantSchedule",
    "StepSchedule",
    "CosineSchedule",
    "MultiStepSchedule",
    "OutputConfig",
]


# --- data: ----------------------------------------------------------------------------------


class DatasetSpec(Section):
    """One dataset: a built-in one (``builtin`` + ``split``) or a file (``path``, ``x``, ``y``)."""

    builtin: Literal["digits", "mnist", "fashion_mnist", "cifar10", "cifar100"] | None = Field(
        None,
        description="A dataset shipped with bntrain (digits) or downloaded on first use",
    )
    split: Literal["train", "val", "test", "all"] | None = Field(
        None,
        description="Which part of the built-in dataset (digits: train|val|test|all; "
        "the downloaded ones: train|test)",
    )
    path: DataFile | None = Field(
        None, description=".h5, .hdf5 or .npz file (relative: to the config)"
    )
    x: str = Field("X", description="Name of the examples array in the file")
    y: str | None = Field("y", description="Name of the labels array (null: no labels)")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.builtin is None) == (self.path is None):
            raise problem("give exactly one of 'builtin' or 'path'")
        if self.builtin is not None and self.split is None:
            raise problem("missing required key (needed with 'builtin')", key="split")
        if self.path is not None and self.split is not None:
            raise problem("only allowed with 'builtin', not with 'path'", key="split")
        if self.builtin not in (None, "digits") and self.split not in ("train", "test"):
            raise problem(
                f"'{self.split}' is not a split of {self.builtin} (it has train and test); "
                "carve validation off train with data.val_split",
                key="split",
            )
        return self


class Preprocess(Section):
    """Input preprocessing: multiply by ``scale`` and/or standardize per feature."""

    scale: PositiveFloat | None = Field(None, description="Multiply the inputs by this")
    standardize: bool = Field(
        False, description="Zero mean, unit variance per channel (from train)"
    )


class RandomCrop(Section):
    """``data.augment.random_crop``: pad, then cut a window at a random offset."""

    size: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] = Field(
        description="[height, width] of the window: the examples' own height and width"
    )
    pad: NonNegativeInt = Field(0, description="Pixels added on every side before cutting")
    mode: Literal["zeros", "reflect"] = Field(
        "zeros", description="Fill the padding with zeros or mirror the image"
    )


class RandomTranslate(Section):
    """``data.augment.random_translate``: shift by up to ``max`` pixels, filling with zeros."""

    max: PositiveInt = Field(description="Largest shift in pixels, each direction")


class Augment(Section):
    """``data.augment``: random changes to training batches (never validation, test or eval)."""

    random_crop: RandomCrop | None = None
    random_translate: RandomTranslate | None = None
    hflip: bool = Field(False, description="Mirror left-right with probability 1/2")
    vflip: bool = Field(False, description="Mirror upside-down with probability 1/2")


class DataConfig(Section):
    """``data:`` section: training set, optional validation and test sets, preprocessing."""

    train: DatasetSpec
    val: DatasetSpec | None = None
    val_split: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="Carve this fraction of train off as validation (seeded)"
    )
    test: DatasetSpec | None = None
    preprocess: Preprocess = Field(default_factory=Preprocess)
    augment: Augment | None = Field(
        None, description="Training-time augmentation (image data, after preprocessing)"
    )

    @model_validator(mode="after")
    def _val_once(self) -> DataConfig:
        if self.val is not None and self.val_split is not None:
            raise problem("not allowed together with 'val'", key="val_split")
        return self


# --- model: ---------------------------------------------------------------------------------


class BatchNormConfig(Section):
    """``model.batch_norm``: where batch norm is inserted and its hyperparameters."""

    insert: Literal["auto", "none"] = Field(
        "auto",
        description="auto: after every dense/conv2d layer but the output; none: only explicit",
    )
    epsilon: PositiveFloat = Field(1e-4, description="Added to the variance")
    alpha: Annotated[float, Field(gt=0, le=1)] = Field(
        0.1, description="Moving-average update weight"
    )
    sync: bool = Field(
        True,
        description="With several devices: statistics of the global batch (false: of each "
        "device's shard, ghost batch norm)",
    )
    zero_init_residual: bool = Field(
        False,
        description="Start gamma at 0 in the batch norm that ends each residual branch of an add",
    )
    kind: Literal["bn", "renorm"] = Field(
        "bn", description="bn: batch norm; renorm: batch renormalization (Ioffe 2017)"
    )
    r_max: Annotated[float, Field(ge=1)] = Field(3.0, description="renorm: bound of r")
    d_max: NonNegativeFloat = Field(5.0, description="renorm: bound of d")
    warmup_steps: Annotated[int, Field(ge=0)] = Field(
        0, description="renorm: optimizer steps over which r_max ramps from 1 and d_max from 0"
    )
    virtual_batch_size: Annotated[int, Field(ge=2)] | None = Field(
        None, description="Ghost batch norm: statistics per group of this many examples"
    )
    freeze: Literal["none", "stats", "all"] = Field(
        "none",
        description="stats: normalize with the stored statistics and never update them; "
        "all: gamma and beta frozen too",
    )

    @model_validator(mode="after")
    def _one_variant(self):
        if self.kind == "renorm" and self.virtual_batch_size is not None:
            raise problem(
                "kind renorm cannot be combined with virtual_batch_size; use one of them",
                key="virtual_batch_size",
            )
        return self


class SourceLines(dict):
    """Key path below ``model`` -> ``file:line``: where a config came from, not its value.

    Two configs that differ only in where their keys were written compare equal.
    """

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SourceLines)

    __hash__ = None  # type: ignore[assignment]


class ModelConfig(Section):
    """``model:`` section: input shape, batch-norm settings, block templates and the layers.

    :meth:`graph` is the network graph (blocks expanded, inputs resolved), checked when the
    section is validated; :meth:`locate` gives ``file:line`` of an entry for later messages.
    """

    input_shape: list[PositiveInt] | None = Field(
        None, description="One example's shape, channels first (default: from the data)"
    )
    batch_norm: BatchNormConfig = Field(default_factory=BatchNormConfig)
    blocks: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description="Named templates of layer entries (values may say ${parameter})",
    )
    layers: list[LayerSpec] = Field(min_length=1, description="The layers, input to output")
    init_from: PathText | None = Field(
        None, description="Fine-tuning: a checkpoint whose parameters to load by layer name"
    )
    skip_mismatched: bool = Field(
        False, description="init_from: skip parameters of another shape instead of failing"
    )

    _graph: list = PrivateAttr(default_factory=list)
    _lines: SourceLines = PrivateAttr(default_factory=lambda: SourceLines())

    @model_validator(mode="after")
    def _expand(self) -> ModelConfig:
        self._graph = expand(self)
        return self

    def graph(self) -> list[Node]:
        """The layers in file order with their resolved inputs (see :mod:`bntrain.config.graph`)."""
        return list(self._graph)

    def locate(self, path: tuple) -> str:
        """``file:line: model.<path>`` of a key path below ``model`` (for build-time messages)."""
        for cut in range(len(path), 0, -1):
            where = self._lines.get(tuple(path[:cut]))
            if where is not None:
                return f"{where}: model.{path_str(path)}"
        return f"model.{path_str(path)}"


# --- training.optimizer: one model per name -------------------------------------------------


class _Optimizer(Section):
    name: str
    lr: PositiveFloat = Field(description="Learning rate (the schedule scales it)")
    weight_decay: NonNegativeFloat = Field(
        0.0, description="L2 penalty weight_decay/2*sum(W**2) (adamw: decoupled decay)"
    )
    grad_clip_norm: PositiveFloat | None = Field(
        None, description="Rescale the gradients to at most this total norm"
    )


class SGDConfig(_Optimizer):
    """``{name: sgd}``: plain stochastic gradient descent."""

    name: Literal["sgd"]


class MomentumConfig(_Optimizer):
    """``{name: momentum}``: SGD with classical momentum."""

    name: Literal["momentum"]
    momentum: Unit = Field(0.9, description="Velocity decay")


class NesterovConfig(MomentumConfig):
    """``{name: nesterov}``: SGD with Nesterov momentum."""

    name: Literal["nesterov"]


class RMSPropConfig(_Optimizer):
    """``{name: rmsprop}``: RMSProp."""

    name: Literal["rmsprop"]
    epsilon: PositiveFloat = Field(1e-8, description="Added to the root mean square")


class AdamConfig(_Optimizer):
    """``{name: adam}``: Adam."""

    name: Literal["adam"]
    beta1: Unit = Field(0.9, description="Decay of the first moment")
    beta2: Unit = Field(0.999, description="Decay of the second moment")
    epsilon: PositiveFloat = Field(1e-8, description="Added to the second moment's root")


class AdamWConfig(AdamConfig):
    """``{name: adamw}``: Adam with decoupled weight decay."""

    name: Literal["adamw"]


_OPTIMIZERS = (SGDConfig, MomentumConfig, NesterovConfig, AdamConfig, AdamWConfig, RMSPropConfig)
#: ``training.optimizer``: the model its ``name`` selects.
OptimizerConfig = tagged_union("name", _OPTIMIZERS)
OPTIMIZERS: tuple[str, ...] = strip(OptimizerConfig).tags


# --- training.schedule: one model per name --------------------------------------------------


class _Schedule(Section):
    name: str
    warmup_epochs: Annotated[int, Field(ge=0)] = Field(
        0, description="Ramp the learning rate up linearly over these first epochs"
    )


class ConstantSchedule(_Schedule):
    """``{name: constant}``: the optimizer's ``lr`` throughout (the default)."""

    name: Literal["constant"] = "constant"


class StepSchedule(_Schedule):
    """``{name: step, step_size: N}``: multiply by ``gamma`` every ``step_size`` epochs."""

    name: Literal["step"]
    step_size: PositiveInt = Field(description="Epochs between decays")
    gamma: PositiveFloat = Field(0.1, description="Decay factor")


class CosineSchedule(_Schedule):
    """``{name: cosine}``: cosine decay from ``lr`` to ``min_lr`` at the last step."""

    name: Literal["cosine"]
    min_lr: NonNegativeFloat = Field(0.0, description="Learning rate at the end")


class MultiStepSchedule(_Schedule):
    """``{name: multistep, milestones: [M1, M2]}``: multiply by ``gamma`` at each milestone."""

    name: Literal["multistep"]
    milestones: list[PositiveInt] = Field(
        min_length=1, description="Increasing positions at which the rate is multiplied by gamma"
    )
    unit: Literal["steps", "epochs"] = Field(
        "steps", description="What the milestones count: optimizer steps or epochs"
    )
    gamma: PositiveFloat = Field(0.1, description="Decay factor")

    @model_validator(mode="after")
    def _increasing(self) -> MultiStepSchedule:
        for k in range(1, len(self.milestones)):
            if self.milestones[k] <= self.milestones[k - 1]:
                raise problem(
                    f"must increase, but {self.milestones[k]} follows {self.milestones[k - 1]}",
                    key=("milestones", k),
                )
        return self


_SCHEDULES = (ConstantSchedule, StepSchedule, CosineSchedule, MultiStepSchedule)
#: ``training.schedule``: the model its ``name`` selects (``constant`` when absent).
ScheduleConfig = tagged_union("name", _SCHEDULES, default="constant")
SCHEDULES: tuple[str, ...] = strip(ScheduleConfig).tags


# --- training: / output: / the whole config -------------------------------------------------


class TrainingConfig(Section):
    """``training:`` section: epochs, batch size, optimizer, schedule and run policy."""

    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    optimizer: OptimizerConfig
    schedule: ScheduleConfig = Field(default_factory=ConstantSchedule)
    seed: Annotated[int, Field(ge=0)] = Field(0, description="Seeds weights, shuffling, dropout")
    recompute_stats: bool = Field(
        True, description="Recompute whole-training-set BN statistics after training"
    )
    best_metric: Literal["val_acc", "val_loss"] = Field(
        "val_acc", description="What best.h5 is the best by"
    )
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="On a NaN/Inf loss: stop, or skip the step"
    )
    max_consecutive_nan: Annotated[int, Field(ge=1)] = Field(
        10, description="With skip: stop after this many in a row"
    )
    shuffle: bool = True
    checkpoint_every_steps: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Also write last.h5 every N steps inside an epoch"
    )
    accumulate: Annotated[int, Field(ge=1)] = Field(
        1, description="Micro-batches of batch_size per optimizer step (gradient accumulation)"
    )
    plot: bool = Field(True, description="Redraw RUN/curves.png after every epoch")
    tensorboard: bool = Field(
        False, description="Write TensorBoard scalars and BN histograms to RUN/tb"
    )


class OutputConfig(Section):
    """``output:`` section: run folder (default ``runs/<name>``, relative to the config)."""

    dir: PathText | None = Field(None, description="The run folder (default: runs/<name>)")


class Config(Section):
    """A whole validated config.

    ``base_dir`` (the config file's folder; not part of the schema and never dumped) anchors
    relative paths, see :meth:`resolve_path`.  ``run`` is an informational mapping that run
    folders add to their copy of the config; training ignores it.
    """

    name: Annotated[PathText, Field(min_length=1)] = Field(
        "config", description="Names the run (default: the config file's stem)"
    )
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    output: OutputConfig = Field(default_factory=OutputConfig)
    backend: Literal["auto", "jax", "numba", "c"] = Field(
        "auto", description="PyTensor backend (auto: JAX)"
    )
    device: Literal["auto", "cpu", "gpu"] = "auto"
    devices: Literal["auto"] | PositiveInt = Field(
        "auto", description="Devices to train on, data-parallel (auto: every GPU, 1 on the CPU)"
    )
    run: dict[str, Any] | None = Field(
        None, description="Written by bntrain into a run folder's config.yaml; ignored"
    )

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

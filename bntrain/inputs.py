"""The datasets a config names, opened and checked against the network.

This module joins the config (which names datasets) and :mod:`bntrain.data`
(which reads them): it picks train/val/test, carves ``val_split``, reshapes
examples to ``model.input_shape`` and validates them before anything is
compiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .data import Augmenter, fit_examples, open_dataset, split_indices, validate_dataset
from .errors import DataError, UsageError

__all__ = [
    "augmenter_for",
    "ConfigData",
    "check_batch_size",
    "open_config_data",
    "fit_input_shape",
    "validate_config_data",
    "open_data_file",
]


@dataclass
class ConfigData:
    """The opened datasets of a config (``val`` and ``test`` may be ``None``)."""

    train: object
    val: object | None
    test: object | None
    input_shape: tuple[int, ...]

    def close(self) -> None:
        """Close every open file."""
        for ds in (self.train, self.val, self.test):
            if ds is not None:
                ds.close()


def fit_input_shape(ds, input_shape, where: str):
    """Return ``ds`` viewed with examples of ``input_shape`` (same size), or raise DataError.

    Channels-last images for a channels-first ``input_shape`` are refused (see
    :func:`bntrain.data.fit_examples`).
    """
    return fit_examples(
        ds,
        input_shape,
        wanted="model.input_shape is",
        mismatch=(
            f"{where}: examples have shape {list(ds.example_shape)} but model.input_shape is "
            f"{list(input_shape)}; fix model.input_shape or the data"
        ),
    )


def open_config_data(config, which=("train", "val", "test")) -> ConfigData:
    """Open the datasets of ``config`` named in ``which``, reshaped to the input shape.

    Raises
    ------
    DataError
        If a file is missing or unreadable, or its examples do not fit.
    """
    data = config.data
    train = open_dataset(data.train, config.base_dir, "data.train")
    input_shape = tuple(config.model.input_shape or train.example_shape)
    train = fit_input_shape(train, input_shape, "data.train")
    val = None
    if data.val_split is not None and ("val" in which or "train" in which):
        tr_idx, va_idx = split_indices(
            len(train), data.val_split, config.training.seed, where="data.val_split"
        )
        val = train.subset(va_idx)
        train = train.subset(tr_idx)
    elif data.val is not None and "val" in which:
        val = fit_input_shape(
            open_dataset(data.val, config.base_dir, "data.val"), input_shape, "data.val"
        )
    test = None
    if data.test is not None and "test" in which:
        test = fit_input_shape(
            open_dataset(data.test, config.base_dir, "data.test"), input_shape, "data.test"
        )
    return ConfigData(train=train, val=val, test=test, input_shape=input_shape)


def validate_config_data(cd: ConfigData, n_classes: int) -> None:
    """Check labels and values of every opened dataset before training starts."""
    for where, ds in (("data.train", cd.train), ("data.val", cd.val), ("data.test", cd.test)):
        if ds is not None:
            validate_dataset(ds, cd.input_shape, n_classes, where)
            if where == "data.train" and not ds.has_labels:
                raise DataError(
                    f"data.train: '{ds.name}' has no labels; set data.train.y to the label array"
                )


def open_data_file(path, x_key: str, y_key: str | None, input_shape, *, y_optional=False):
    """Open a ``--data`` file for a checkpoint's network, viewed with its input shape.

    Parameters
    ----------
    y_key : str or None
        The labels array; None opens the file without labels.
    y_optional : bool
        Open a file that lacks ``y_key`` without labels instead of refusing it.

    Raises
    ------
    DataError
        If the file cannot be read, lacks ``x_key`` (or a required ``y_key``),
        or its examples do not fit.
    """
    spec = {"path": str(path), "x": x_key, "y": y_key}
    ds = open_dataset(spec, Path.cwd(), "--data", y_optional=y_optional)
    try:
        return fit_examples(
            ds,
            input_shape,
            wanted="the checkpoint's network takes",
            mismatch=(
                f"--data: '{path}' has examples of shape {list(ds.example_shape)} but the "
                f"checkpoint's network takes examples of shape {list(input_shape)}"
            ),
        )
    except DataError:
        ds.close()
        raise


def check_batch_size(cd: ConfigData, batch_size: int, network) -> None:
    """Refuse a training batch size that the training set or batch norm cannot use.

    ``bntrain check`` and ``bntrain fit`` give the same messages.

    Raises
    ------
    DataError
        If ``data.train`` (after ``val_split``) has fewer examples than one batch.
    UsageError
        If ``batch_size`` is 1 and the network has batch-norm layers.
    """
    if len(cd.train) < batch_size:
        raise DataError(
            f"data.train: {len(cd.train)} examples are fewer than training.batch_size "
            f"({batch_size}); lower training.batch_size"
        )
    if batch_size < 2 and network.bn_layers:
        raise UsageError(
            "training.batch_size: 1 cannot train batch normalization (a batch of one "
            "example has no variance); use 2 or more"
        )


def augmenter_for(config, input_shape) -> Augmenter | None:
    """The training augmenter of ``config.data.augment`` for examples of ``input_shape``.

    ``bntrain check`` and ``bntrain fit`` give the same messages.

    Raises
    ------
    UsageError
        If the settings do not fit the examples (not images, a crop of another size,
        a pad or shift as large as the image).
    """
    aug = Augmenter.from_config(config.data.augment, config.training.seed)
    bad = None if aug is None else aug.problem(input_shape)
    if bad is not None:
        key, message = bad
        raise UsageError(f"data.augment{'.' + key if key else ''}: {message}")
    return aug

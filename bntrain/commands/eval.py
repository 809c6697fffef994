"""``bntrain eval``: measure a checkpoint on a dataset.

The choice of batch-norm statistics is explained in :mod:`bntrain.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..distributed import ClusterSpec, join
from ..errors import DataError, UsageError
from ..evaluate import (
    DEFAULT_Y_KEY,
    apply_population_stats,
    build_batch_predict,
    check_predictions_path,
    choose_stats,
    write_predictions,
)
from ..inputs import fit_input_shape, open_config_data, open_data_file

__all__ = ["evaluate_command"]


def _config_data_files(config, names) -> dict:
    """``{description: path}`` of the files the config's datasets ``names`` read."""
    files = {}
    for name in names:
        spec = getattr(config.data, name)
        if spec is not None and spec.path is not None:
            files[f"the data.{name} file"] = config.resolve_path(spec.path)
    return files


def _open_eval_data(restored, input_shape, data, x_key, y_key):
    """Open the dataset to evaluate on; returns ``(dataset, where, description)``."""
    if data is not None:
        # labels under the default name are optional; a name the user chose must exist
        optional = y_key == DEFAULT_Y_KEY
        ds = open_data_file(data, x_key, y_key, input_shape, y_optional=optional)
        return ds, "--data", str(data)

    config = restored.config
    which = "test" if config.data.test is not None else "val"
    if config.data.test is None and config.data.val is None and config.data.val_split is None:
        raise UsageError(
            f"the config stored in '{restored.ckpt.path}' has no data.test or data.val; "
            f"pass --data FILE"
        )
    cd = open_config_data(config, which=(which,))
    ds = cd.test if which == "test" else cd.val
    if which == "test" or config.data.val is not None:
        cd.train.close()  # opened only for the input shape; ``ds`` is not a view of it
    where = f"data.{which}"
    return fit_input_shape(ds, input_shape, where), where, where


def evaluate_command(
    checkpoint,
    *,
    data=None,
    x_key: str = "X",
    y_key: str | None = DEFAULT_Y_KEY,
    stats: str | None = None,
    batch_size: int | None = None,
    predictions=None,
    device: str | None = None,
    devices: str | int | None = None,
    warn: Callable[[str], None] = lambda line: None,
    plot=None,
    cluster: ClusterSpec | None = None,
) -> dict:
    """Evaluate a checkpoint on a dataset (what ``bntrain eval`` runs).

    Parameters
    ----------
    checkpoint : path-like
        The checkpoint to evaluate.
    data : path-like, optional
        An HDF5 or NPZ file with examples (``x_key``) and, optionally, labels
        (``y_key``).  Default: the checkpoint config's test set, else its
        validation set.
    x_key, y_key : str
        Array names in ``data``.  Labels are read from ``y_key``.  A file
        without an array ``'y'`` (the default ``y_key``), or ``y_key=None``,
        is evaluated without labels: the predictions are computed and the
        label metrics are None.  Any other ``y_key`` must name an array (a
        misspelt name is an error, as for ``x_key``).
    stats : {'population', 'ema', 'batch'}, optional
        Batch-norm statistics to use (see :mod:`bntrain.evaluate`); default
        ``population`` when the checkpoint has ``/bn_stats``, else ``ema``.
    batch_size : int, optional
        Examples per batch (default: the training batch size).  Only changes
        the results with ``stats='batch'``.
    predictions : path-like, optional
        Write ``probabilities``, ``predicted`` (and ``labels``) to this NPZ
        file.  It may not be the checkpoint or a data file read, nor an
        existing file that bntrain did not write as predictions.
    device : {'auto', 'cpu', 'gpu'}, optional
        Overrides the config's device.
    devices : {'auto'} or int, optional
        Overrides the config's devices: the batches are sharded over them.
    warn : callable
        Receives warning lines (one line each).
    plot : path-like, optional
        Draw the confusion matrix to this PNG file (needs labels).
    cluster : ClusterSpec, optional
        The processes of a multi-process run (``--coordinator`` ...): every one
        evaluates, process 0 writes ``predictions`` and ``plot``.

    Returns
    -------
    dict
        ``n_examples``, ``loss``, ``accuracy``, ``per_class_accuracy``,
        ``confusion_matrix`` (None without labels), ``stats``, ``checkpoint``,
        ``epoch``, plus ``data`` (what was evaluated), ``batch_size`` and
        ``has_labels``.

    Raises
    ------
    UsageError
        A missing or damaged checkpoint, unusable data, a ``stats`` choice the
        checkpoint cannot serve, or a ``predictions`` path that is refused
        (exit code 2 on the command line).
    """
    from ..backend import resolve_runtime
    from ..graphs import build_predict
    from ..metrics import classification_metrics, predict_dataset
    from ..parallel import data_parallel_wrap
    from ..restore import ckpt_input_shape, restore

    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise UsageError(f"--batch-size must be a positive integer; got {batch_size!r}")
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise UsageError(f"--plot: '{plot}' must be a .png file")
    writer = join(cluster).writer  # several processes compute; process 0 writes
    restored = restore(checkpoint)
    ckpt, network, config = restored.ckpt, restored.network, restored.config
    if predictions is not None:
        inputs = {"the checkpoint being evaluated": checkpoint}
        if data is not None:
            inputs["the --data file"] = data
        else:
            inputs.update(_config_data_files(config, ("train", "val", "test")))
        check_predictions_path(predictions, inputs)
    chosen = choose_stats(ckpt, network, stats, warn)
    if chosen == "population":
        apply_population_stats(ckpt, network)
    runtime = resolve_runtime(config.backend, device or config.device)
    wrap = data_parallel_wrap(devices or config.devices, runtime)
    batch_size = int(batch_size or config.training.batch_size)
    input_shape = ckpt_input_shape(ckpt)
    ds, where, description = _open_eval_data(restored, input_shape, data, x_key, y_key)
    try:
        from ..data import validate_dataset

        validate_dataset(ds, tuple(input_shape), network.n_classes, where)
        if len(ds) == 0:
            raise DataError(f"{where}: no examples to evaluate")
        if chosen == "batch":
            predict = build_batch_predict(network, runtime.mode, wrap)
            pad_last = False  # padding would change the last batch's statistics
        else:
            predict = build_predict(network, runtime.mode, wrap)
            pad_last = runtime.static_batch
        probs, labels = predict_dataset(
            predict, ds, restored.preprocess, batch_size, pad_last=pad_last
        )
    finally:
        ds.close()
    if labels is not None:
        result = classification_metrics(probs, labels, network.n_classes)
    else:
        result = {
            "n_examples": int(len(probs)),
            "loss": None,
            "accuracy": None,
            "per_class_accuracy": None,
            "confusion_matrix": None,
        }
    result.update(
        {
            "stats": chosen,
            "checkpoint": str(checkpoint),
            "epoch": int(ckpt.epoch),
            "data": description,
            "batch_size": batch_size,
            "has_labels": labels is not None,
        }
    )
    if predictions is not None and writer:
        write_predictions(predictions, probs, labels)
    if plot is not None and writer:
        from ..plots import plot_confusion

        if labels is None:
            raise DataError(f"--plot: {description} has no labels; a confusion matrix needs them")
        plot_confusion(result["confusion_matrix"], plot, title=f"{checkpoint}: {description}")
    return result

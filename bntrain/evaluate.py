"""``bntrain eval``: measure a checkpoint on a dataset.

Three choices of batch-normalization statistics (``stats``):

``population``
    The whole-training-set statistics that ``bntrain recompute-stats`` stored
    under ``/bn_stats``: every batch-norm layer computes
    ``(x - mean) / sqrt(var + epsilon) * gamma + beta`` with them.  The values
    are loaded in memory only (``inv_std = 1 / sqrt(var + epsilon)`` computed
    in float64, then stored as float32 in the layer's ``inv_std``); the
    checkpoint file is never modified.
``ema``
    The exponential moving averages that training kept (the layers' stored
    ``mean`` and ``inv_std``).
``batch``
    Each evaluation batch is normalized with its own statistics (dropout is
    still off).  Results then depend on the batch size and on which examples
    share a batch; the last partial batch is evaluated at its true size.

The default is ``population`` when the checkpoint has ``/bn_stats`` and
``ema`` otherwise (with a one-line warning).  A network without batch-norm
layers reports ``stats: "none"``.

Data without labels is evaluated too: the predictions are computed (and
written with ``predictions``) but the metrics that need labels (``loss``,
``accuracy``, ``per_class_accuracy``, ``confusion_matrix``) are ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .bnstats import load_population
from .errors import CheckpointError, DataError, UsageError
from .fileio import atomic_open
from .inputs import fit_input_shape, open_config_data, open_data_file

__all__ = [
    "STATS_CHOICES",
    "evaluate_command",
    "choose_stats",
    "apply_population_stats",
    "build_batch_predict",
    "write_predictions",
    "DEFAULT_Y_KEY",
]

STATS_CHOICES = ("population", "ema", "batch")
#: The labels array read from ``--data`` when present; another ``y_key`` must exist.
DEFAULT_Y_KEY = "y"


def choose_stats(ckpt, network, stats: str | None, warn: Callable[[str], None]) -> str:
    """Resolve the ``stats`` choice for a checkpoint (see the module docstring).

    Parameters
    ----------
    ckpt : bntrain.checkpoint.Checkpoint
        The checkpoint read back.
    network : bntrain.model.Network
        Its rebuilt network.
    stats : {'population', 'ema', 'batch'} or None
        The requested statistics; None picks the default.
    warn : callable
        Receives the one-line warning when the default falls back to ``ema``.

    Returns
    -------
    str
        ``'population'``, ``'ema'``, ``'batch'``, or ``'none'`` for a network
        without batch normalization.

    Raises
    ------
    UsageError
        For an unknown choice, or ``population`` on a checkpoint without ``/bn_stats``.
    """
    if stats is not None and stats not in STATS_CHOICES:
        raise UsageError(f"--stats must be one of {', '.join(STATS_CHOICES)}; got {stats!r}")
    if not network.bn_layers:
        return "none"
    path = ckpt.path
    if stats is None:
        if ckpt.bn_stats is not None:
            return "population"
        warn(
            f"Warning: '{path}' has no /bn_stats (recompute-stats has not been run); evaluating "
            f"with training's moving averages (--stats ema); run `bntrain recompute-stats {path}` "
            f"for whole-training-set statistics"
        )
        return "ema"
    if stats == "population" and ckpt.bn_stats is None:
        raise UsageError(
            f"--stats population: no /bn_stats in '{path}'; run `bntrain recompute-stats {path}` "
            f"first or use --stats ema"
        )
    return stats


def apply_population_stats(ckpt, network) -> None:
    """Load ``/bn_stats`` into the batch-norm layers' ``mean`` and ``inv_std`` (in memory).

    ``inv_std = 1 / sqrt(var + epsilon)`` is computed in float64 with each
    layer's own ``epsilon`` and stored as float32.

    Raises
    ------
    CheckpointError
        If a batch-norm layer has no statistics, or they have the wrong shape
        or non-finite / negative values.
    """
    for layer in network.bn_layers:
        where = f"/bn_stats/{layer.name}"
        if layer.name not in ckpt.bn_stats:
            raise CheckpointError(
                f"'{ckpt.path}' lacks {where}; run `bntrain recompute-stats {ckpt.path}` again"
            )
        entry = ckpt.bn_stats[layer.name]
        mean = np.asarray(entry["mean"], dtype=np.float64)
        var = np.asarray(entry["var"], dtype=np.float64)
        expected = layer.mean.get_value(borrow=True).shape
        for part, value in (("mean", mean), ("var", var)):
            if value.shape != expected:
                raise CheckpointError(
                    f"'{ckpt.path}': {where}/{part} has shape {list(value.shape)}, "
                    f"expected {list(expected)}"
                )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var >= 0)):
            raise CheckpointError(
                f"'{ckpt.path}': {where} holds non-finite or negative values; "
                f"run `bntrain recompute-stats {ckpt.path}` again"
            )
        load_population(layer, mean, var)


def build_batch_predict(network, mode: str):
    """Compile ``predict(x) -> probabilities`` normalizing with each batch's own statistics.

    Dropout is off (``deterministic=True``); batch norm uses the batch's mean
    and variance (``batch_norm_use_averages=False``) and updates nothing.
    """
    from .graphs import network_function
    from .nn import layers as L

    return network_function(
        network,
        lambda inputs: L.get_output(
            network.output_layer,
            inputs=inputs,
            deterministic=True,
            batch_norm_use_averages=False,
            batch_norm_update_averages=False,
        ),
        mode,
    )


def write_predictions(path, probabilities: np.ndarray, labels: np.ndarray | None) -> None:
    """Write ``probabilities`` (float32), ``predicted`` (int64) and ``labels`` to an NPZ file.

    The file is replaced atomically (:func:`bntrain.fileio.atomic_open`), so a
    reader never sees a partial file.

    Raises
    ------
    UsageError
        If the file cannot be written.
    """
    path = Path(path)
    arrays = {
        "probabilities": np.asarray(probabilities, dtype=np.float32),
        "predicted": np.asarray(probabilities).argmax(axis=1).astype(np.int64),
    }
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    try:
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError as exc:
        raise UsageError(f"--predictions: cannot write '{path}': {exc.strerror or exc}") from None


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
    warn: Callable[[str], None] = lambda line: None,
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
        Batch-norm statistics to use (see the module docstring); default
        ``population`` when the checkpoint has ``/bn_stats``, else ``ema``.
    batch_size : int, optional
        Examples per batch (default: the training batch size).  Only changes
        the results with ``stats='batch'``.
    predictions : path-like, optional
        Write ``probabilities``, ``predicted`` (and ``labels``) to this NPZ file.
    device : {'auto', 'cpu', 'gpu'}, optional
        Overrides the config's device.
    warn : callable
        Receives warning lines (one line each).

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
        A missing or damaged checkpoint, unusable data, or a ``stats`` choice the
        checkpoint cannot serve (exit code 2 on the command line).
    """
    from .backend import resolve_runtime
    from .graphs import build_predict
    from .metrics import classification_metrics, predict_dataset
    from .restore import ckpt_input_shape, restore

    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise UsageError(f"--batch-size must be a positive integer; got {batch_size!r}")
    restored = restore(checkpoint)
    ckpt, network, config = restored.ckpt, restored.network, restored.config
    chosen = choose_stats(ckpt, network, stats, warn)
    if chosen == "population":
        apply_population_stats(ckpt, network)
    runtime = resolve_runtime(config.backend, device or config.device)
    batch_size = int(batch_size or config.training.batch_size)
    input_shape = ckpt_input_shape(ckpt)
    ds, where, description = _open_eval_data(restored, input_shape, data, x_key, y_key)
    try:
        from .data import validate_dataset

        validate_dataset(ds, tuple(input_shape), network.n_classes, where)
        if len(ds) == 0:
            raise DataError(f"{where}: no examples to evaluate")
        if chosen == "batch":
            predict = build_batch_predict(network, runtime.mode)
            pad_last = False  # padding would change the last batch's statistics
        else:
            predict = build_predict(network, runtime.mode)
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
    if predictions is not None:
        write_predictions(predictions, probs, labels)
    return result

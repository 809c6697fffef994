"""Evaluation: which batch-norm statistics to use, batch-statistics prediction, predictions files.

:func:`bntrain.commands.eval.evaluate_command` (``bntrain eval``) puts these together.

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

import os
import stat
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from .bnstats import load_population
from .errors import CheckpointError, UsageError
from .fileio import atomic_path

__all__ = [
    "DEFAULT_Y_KEY",
    "PREDICTIONS_MARK",
    "STATS_CHOICES",
    "choose_stats",
    "apply_population_stats",
    "build_batch_predict",
    "check_predictions_path",
    "is_predictions_file",
    "write_predictions",
]

STATS_CHOICES = ("population", "ema", "batch")
#: The labels array read from ``--data`` when present; another ``y_key`` must exist.
DEFAULT_Y_KEY = "y"

#: The zip comment that marks an NPZ file as one :func:`write_predictions` wrote.
PREDICTIONS_MARK = b"bntrain predictions 1"


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


def build_batch_predict(network, mode: str, wrap=None):
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
        wrap,
    )


def write_predictions(path, probabilities: np.ndarray, labels: np.ndarray | None) -> None:
    """Write ``probabilities`` (float32), ``predicted`` (int64) and ``labels`` to an NPZ file.

    The file is replaced atomically (:func:`bntrain.fileio.atomic_path`), so a
    reader never sees a partial file.  Its zip comment is
    :data:`PREDICTIONS_MARK` (see :func:`is_predictions_file`); the arrays are
    exactly the ones named above.

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
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
                np.savez(fh, **arrays)
            with zipfile.ZipFile(tmp, "a") as zf:
                zf.comment = PREDICTIONS_MARK
    except OSError as exc:
        raise UsageError(f"--predictions: cannot write '{path}': {exc.strerror or exc}") from None


def is_predictions_file(path) -> bool:
    """Whether ``path`` is a regular file that :func:`write_predictions` wrote.

    Only the zip's end record is read (never a FIFO or device: they are not
    regular files); anything unreadable counts as not a predictions file.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with zipfile.ZipFile(path) as zf:
            return zf.comment == PREDICTIONS_MARK
    except Exception:  # any file zipfile cannot read is not ours
        return False


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_predictions_path(path, inputs: Mapping[str, object]) -> None:
    """Refuse a predictions path that would replace an input or a file bntrain did not write.

    Parameters
    ----------
    path : path-like
        Where the predictions are to be written.
    inputs : mapping
        ``{description: path}`` of every file the evaluation reads, e.g.
        ``{"the checkpoint being evaluated": "run/best.h5"}``.

    Raises
    ------
    UsageError
        If ``path`` resolves to one of ``inputs`` (symbolic links followed, hard
        links detected), or names an existing file that :func:`is_predictions_file`
        does not recognize.
    """
    real = os.path.realpath(path)
    for what, source in inputs.items():
        if real == os.path.realpath(source) or _same_file(path, source):
            raise UsageError(
                f"--predictions: '{path}' is {what}; write the predictions to a new file"
            )
    if os.path.lexists(path) and not is_predictions_file(path):
        raise UsageError(
            f"--predictions: '{path}' exists and is not a predictions file written by bntrain; "
            f"choose another name or remove the file"
        )

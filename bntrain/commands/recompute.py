"""``bntrain recompute-stats``: store whole-training-set BN statistics in a checkpoint.

What is computed, and how, is :mod:`bntrain.bnstats`; this module opens the
checkpoint and the data, writes ``/bn_stats`` and the JSON report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from ..bnstats import ESTIMATORS, MODES, compute_bn_stats, report_rows
from ..distributed import ClusterSpec, join
from ..errors import CheckpointError, DataError, UsageError
from ..fileio import atomic_write_text
from ..rundir import MARKER, run_lock

__all__ = ["RecomputeReport", "recompute_stats_command", "report_path_for"]


@dataclass
class RecomputeReport:
    """What ``recompute-stats`` did.

    Attributes
    ----------
    checkpoint : Path
        The source checkpoint.
    output : Path
        The checkpoint written (``checkpoint`` itself when updated in place).
    json_path : Path
        The JSON report written next to ``output``.
    attrs : dict
        The attributes written on ``/bn_stats``.
    passes : int
        Passes over the data.
    layers : list of bntrain.bnstats.LayerReport
        How far training's moving averages were from the recomputed statistics.
    """

    checkpoint: Path
    output: Path
    json_path: Path
    attrs: dict
    passes: int
    layers: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        return {
            "checkpoint": str(self.checkpoint),
            "output": str(self.output),
            "passes": self.passes,
            "attrs": dict(self.attrs),
            "layers": [asdict(row) for row in self.layers],
        }


@contextmanager
def _lock_if_run_folder(folder: Path, writer: bool = True) -> Iterator[None]:
    """Hold a run folder's lock (a running ``fit`` has it) while writing into it (process 0)."""
    if writer and (folder / MARKER).is_file():
        with run_lock(folder):
            yield
    else:
        yield


def report_path_for(checkpoint) -> Path:
    """``<folder>/<stem>.bn_stats.json`` for a checkpoint path."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.bn_stats.json")


def _write_json_atomic(path: Path, data: dict) -> None:
    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise CheckpointError(f"cannot write '{path}': {exc.strerror or exc}") from None


def recompute_stats_command(
    checkpoint,
    *,
    data=None,
    x_key: str = "X",
    batch_size: int | None = None,
    estimator: str = "population",
    mode: str = "batch",
    output=None,
    device: str | None = None,
    devices: str | int | None = None,
    progress: bool = False,
    plot=None,
    augment: bool = False,
    cluster: ClusterSpec | None = None,
) -> RecomputeReport:
    """Recompute a checkpoint's batch-norm statistics and store them under ``/bn_stats``.

    Parameters
    ----------
    checkpoint : path-like
        The checkpoint to start from.
    data : path-like, optional
        An HDF5/NPZ file with the examples under ``x_key``; default: the
        training set named in the checkpoint's config (after its
        ``val_split``, if any).
    x_key : str
        Name of the example array in ``data``.
    batch_size : int, optional
        Default: the config's ``training.batch_size``.
    estimator : {'population', 'batch-mean'}
    mode : {'batch', 'layerwise'}
    output : path-like, optional
        Write a new checkpoint here; default: update ``checkpoint`` in place
        (atomically).  The moving averages are never changed.
    device : {'auto', 'cpu', 'gpu'}, optional
        Overrides the config's device.
    devices : {'auto'} or int, optional
        Overrides the config's devices: the batches are sharded over them.
    progress : bool
        Show a progress bar on stderr.
    plot : path-like, optional
        Also draw, per batch-norm layer and channel, how far training's moving
        averages are from the recomputed statistics (:func:`bntrain.plots.plot_bn_drift`).
    augment : bool
        Apply the config's ``data.augment`` (as in the first epoch) to the data; default:
        no augmentation, the distribution that evaluation sees.
    cluster : ClusterSpec, optional
        The processes of a multi-process run (``--coordinator`` ...): every one
        computes, process 0 writes the checkpoint, the report and ``plot``.

    Returns
    -------
    RecomputeReport
        Also saved as JSON next to the written checkpoint.

    Raises
    ------
    CheckpointError
        A missing or damaged checkpoint, or one without batch-norm layers.
    DataError
        A data file that is missing, lacks ``x_key`` or does not fit the network.
    UsageError
        A bad option value.
    """
    from ..backend import resolve_runtime
    from ..checkpoint import write_bn_stats
    from ..inputs import augmenter_for, open_config_data, open_data_file
    from ..parallel import data_parallel_wrap
    from ..restore import ckpt_input_shape, restore

    if estimator not in ESTIMATORS:
        raise UsageError(f"--estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    checkpoint = Path(checkpoint)
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise UsageError(f"--plot: '{plot}' must be a .png file")
    out_path = Path(output) if output is not None else checkpoint
    processes = join(cluster)
    writer = processes.writer  # several processes compute; process 0 writes
    with _lock_if_run_folder(out_path.parent, writer):  # before the pass: fail fast if fit holds it
        restored = restore(checkpoint)
        network, config = restored.network, restored.config
        if not network.bn_layers:
            raise CheckpointError(f"'{checkpoint}' has no batch-norm layers; nothing to recompute")
        runtime = resolve_runtime(config.backend, device or config.device)
        wrap = data_parallel_wrap(devices or config.devices, runtime)
        batch_size = int(batch_size or config.training.batch_size)
        aug = None
        if augment:
            aug = augmenter_for(config, ckpt_input_shape(restored.ckpt))
            if aug is None:
                raise UsageError(
                    f"--augment: the config stored in '{checkpoint}' has no data.augment; "
                    f"leave out --augment"
                )
            aug = partial(aug, epoch=0)
        if data is not None:
            ds = open_data_file(data, x_key, None, ckpt_input_shape(restored.ckpt))
            data_name = str(data)
        else:
            cd = open_config_data(config, which=("train",))
            ds = cd.train
            data_name = "config:data.train"
        try:
            if len(ds) == 0:
                raise DataError(f"{data_name}: no examples to compute statistics from")
            stats = compute_bn_stats(
                network,
                ds,
                restored.preprocess,
                batch_size,
                estimator=estimator,
                mode=mode,
                mode_name=runtime.mode,
                progress=progress,
                wrap=wrap,
                augment=aug,
            )
            sha = ds.sha256()
        finally:
            ds.close()
        attrs = {
            "estimator": estimator,
            "mode": mode,
            "n_examples": int(stats.n_examples),
            "batch_size": batch_size,
            "data_sha256": sha,
            "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": str(checkpoint.resolve()),
            "data": data_name,
            "passes": int(stats.passes),
            "augmented": bool(augment),
        }
        if writer:
            write_bn_stats(
                checkpoint,
                {name: (s.mean, s.var) for name, s in stats.items()},
                attrs,
                output=out_path,
            )
        report = RecomputeReport(
            checkpoint=checkpoint,
            output=out_path,
            json_path=report_path_for(out_path),
            attrs=attrs,
            passes=stats.passes,
            layers=report_rows(network, stats),
        )
        if writer:
            _write_json_atomic(report.json_path, report.to_dict())
        if plot is not None and writer:
            from ..plots import LayerDrift, plot_bn_drift

            drift = [
                LayerDrift.from_stats(
                    bn.name,
                    bn.mean.get_value(),
                    bn.inv_std.get_value(),
                    stats[bn.name].mean,
                    stats[bn.name].var,
                    bn.epsilon,
                )
                for bn in network.bn_layers
            ]
            plot_bn_drift(drift, plot)
        processes.barrier("bn_stats written")  # the others may read the checkpoint next
        return report

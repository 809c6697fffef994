"""TensorBoard event files for a run (``training.tensorboard: true``), written with tensorboardX.

``RUN/tb/`` receives, after every epoch, the scalars of ``metrics.csv``
(``loss/train``, ``loss/val``, ``accuracy/train``, ``accuracy/val``, ``lr``,
``samples_per_sec``) and a histogram of every batch-norm layer's ``gamma``,
``beta``, moving ``mean`` and moving ``std`` (``1 / inv_std``) under
``bn/<layer>/<name>``.  ``tensorboard --logdir RUN/tb`` shows them; neither
TensorFlow nor PyTorch is needed to write them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

__all__ = ["TB_FOLDER", "SCALAR_TAGS", "TensorBoardLog"]

TB_FOLDER = "tb"
#: metrics.csv column -> TensorBoard tag.
SCALAR_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "lr": "lr",
    "samples_per_sec": "samples_per_sec",
}


class TensorBoardLog:
    """Append a run's scalars and batch-norm histograms to ``RUN/tb``.

    Parameters
    ----------
    run_dir : path-like
        The run folder; events go to ``run_dir/tb``.
    purge_step : int, optional
        On resume, the global step to continue from: TensorBoard hides events
        of an earlier attempt at or after it.
    """

    def __init__(self, run_dir, purge_step: int | None = None) -> None:
        from tensorboardX import SummaryWriter

        self.folder = Path(run_dir) / TB_FOLDER
        self._writer = SummaryWriter(logdir=str(self.folder), purge_step=purge_step, flush_secs=30)

    def epoch(self, row: Mapping[str, float], step: int) -> None:
        """Write one ``metrics.csv`` row's scalars at global ``step`` (optimizer steps)."""
        for key, tag in SCALAR_TAGS.items():
            value = row.get(key)
            if value is not None and math.isfinite(float(value)):
                self._writer.add_scalar(tag, float(value), global_step=step)

    def bn_histograms(self, bn_layers: Iterable, step: int) -> None:
        """Histograms of each batch-norm layer's gamma, beta, moving mean and moving std."""
        for layer in bn_layers:
            values = {
                "gamma": getattr(layer, "gamma", None),
                "beta": getattr(layer, "beta", None),
                "mean": layer.mean,
                "std": layer.inv_std,
            }
            for name, var in values.items():
                if var is None:
                    continue
                v = np.asarray(var.get_value(), dtype=np.float64).ravel()
                if name == "std":
                    with np.errstate(divide="ignore"):
                        v = 1.0 / v
                v = v[np.isfinite(v)]
                if v.size:
                    self._writer.add_histogram(f"bn/{layer.name}/{name}", v, global_step=step)

    def flush(self) -> None:
        """Make everything written so far visible to a reader."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()

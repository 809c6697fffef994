"""What a run shows while it trains, besides metrics.csv: ``curves.png`` and TensorBoard events.

Both are refreshed at the end of every epoch (``training.plot``,
``training.tensorboard``).  They are views of the run, not part of its state:
a failure to draw or write them is reported once and training goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import BntrainError

__all__ = ["RunReport"]


class RunReport:
    """Refresh a run folder's pictures and TensorBoard events after each epoch.

    Parameters
    ----------
    run_dir : Path
        The run folder.
    plot : bool
        Redraw ``run_dir/curves.png`` from ``metrics.csv``.
    tensorboard : bool
        Append scalars and batch-norm histograms to ``run_dir/tb``.
    resume_step : int, optional
        The optimizer step a resumed run continues from (TensorBoard hides the
        events an earlier attempt wrote after it).
    log : callable
        Receives a one-line warning if a picture or event file cannot be written.
    """

    def __init__(
        self,
        run_dir: Path,
        plot: bool,
        tensorboard: bool,
        resume_step: int | None = None,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.plot = plot
        self.log = log
        self._tb = None
        if tensorboard:
            from .tblog import TensorBoardLog

            self._tb = TensorBoardLog(self.run_dir, purge_step=resume_step)
        self._warned = False

    def epoch(self, row: dict, step: int, bn_layers: Iterable) -> None:
        """Report the epoch whose ``metrics.csv`` row was just written."""
        try:
            if self.plot:
                from .plots import CURVES_FILE, plot_learning_curves, read_metrics

                rows = read_metrics(self.run_dir)
                plot_learning_curves([(self.run_dir.name, rows)], self.run_dir / CURVES_FILE)
            if self._tb is not None:
                self._tb.epoch(row, step)
                self._tb.bn_histograms(bn_layers, step)
                self._tb.flush()
        except (OSError, BntrainError) as exc:
            if not self._warned:
                self.log(f"Warning: cannot update the run's pictures or TensorBoard events: {exc}")
                self._warned = True

    def close(self) -> None:
        """Close the TensorBoard event file."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

"""What a run shows while it trains, besides metrics.csv: ``curves.png`` and TensorBoard events.

Both are refreshed at the end of every epoch (``training.plot``,
``training.tensorboard``).  They are views of the run, not part of its state:
a failure to draw or write them is reported once and training goes on.
``curves.png`` is drawn in a background thread, so that the next epoch trains
meanwhile (a redraw takes a good part of a second, an epoch of a small model
little more); if epochs end faster than pictures are drawn, the picture skips
to the latest epoch.  :meth:`RunReport.close` waits for the last picture.
"""

from __future__ import annotations

import math
import threading
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
        Redraw ``run_dir/curves.png`` from the rows of ``metrics.csv``.
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
        self.log = log
        self._tb = None
        self._warned = False
        self._rows: list[dict[str, float]] = []
        self._curves = _Redraw(self._draw) if plot else None
        if plot and (self.run_dir / "metrics.csv").exists():  # a resumed run's earlier epochs
            self._guard(self._read_rows)
        if tensorboard:
            from .tblog import TensorBoardLog

            self._tb = TensorBoardLog(self.run_dir, purge_step=resume_step)

    def epoch(self, row: dict, step: int, bn_layers: Iterable) -> None:
        """Report the epoch whose ``metrics.csv`` row was just written."""
        if self._curves is not None:
            self._rows.append({k: math.nan if v is None else float(v) for k, v in row.items()})
            self._curves.request(list(self._rows))
            self._warn(self._curves.take_error())
        if self._tb is not None:
            self._guard(self._tensorboard, row, step, bn_layers)

    def close(self) -> None:
        """Wait for the last picture; close the TensorBoard event file."""
        if self._curves is not None:
            self._curves.wait()
            self._warn(self._curves.take_error())
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _read_rows(self) -> None:
        from .plots import read_metrics

        self._rows = read_metrics(self.run_dir)

    def _draw(self, rows: list[dict[str, float]]) -> None:
        from .plots import CURVES_FILE, plot_learning_curves

        plot_learning_curves([(self.run_dir.name, rows)], self.run_dir / CURVES_FILE)

    def _tensorboard(self, row: dict, step: int, bn_layers: Iterable) -> None:
        self._tb.epoch(row, step)
        self._tb.bn_histograms(bn_layers, step)
        self._tb.flush()

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except (OSError, BntrainError) as exc:
            self._warn(exc)

    def _warn(self, exc: Exception | None) -> None:
        if exc is not None and not self._warned:
            self.log(f"Warning: cannot update the run's pictures or TensorBoard events: {exc}")
            self._warned = True


class _Redraw:
    """Run ``draw(latest)`` in a background thread; requests made while it draws coalesce."""

    def __init__(self, draw: Callable[[object], None]) -> None:
        self._draw = draw
        self._lock = threading.Lock()
        self._latest: object = None
        self._pending = False
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None

    def request(self, latest: object) -> None:
        """Draw ``latest`` soon (after the drawing in progress, if any)."""
        with self._lock:
            self._latest, self._pending = latest, True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bntrain-curves", daemon=True
                )
                self._thread.start()

    def wait(self) -> None:
        """Return when everything requested is drawn."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def take_error(self) -> Exception | None:
        """The first error a drawing raised since the last call, if any."""
        with self._lock:
            error, self._error = self._error, None
        return error

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                latest, self._pending = self._latest, False
            try:
                self._draw(latest)
            except (OSError, BntrainError) as exc:
                with self._lock:
                    self._error = self._error or exc

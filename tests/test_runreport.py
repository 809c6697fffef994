"""RunReport: curves.png redrawn in the background after each epoch, warnings, resume."""

from __future__ import annotations

import threading

import numpy as np

from bntrain.plots import read_metrics
from bntrain.runreport import RunReport
from bntrain.train import METRICS_COLUMNS, _append_metrics


def _row(epoch: int) -> dict:
    row = dict.fromkeys(METRICS_COLUMNS)
    row.update(epoch=epoch, step=10 * epoch, lr=0.1, train_loss=1.0 / epoch, train_acc=0.5)
    return row


def test_every_epoch_is_drawn_in_order_and_close_waits_for_the_last(tmp_path, monkeypatch):
    drawn, gate = [], threading.Event()

    def slow_draw(self, rows):
        gate.wait(5)  # the first picture is still being drawn while epochs 2-4 end
        drawn.append([r["epoch"] for r in rows])

    monkeypatch.setattr(RunReport, "_draw", slow_draw)
    report = RunReport(tmp_path, plot=True, tensorboard=False)
    for epoch in range(1, 5):
        report.epoch(_row(epoch), 10 * epoch, [])  # returns at once: nothing waits for a picture
    assert drawn == []
    gate.set()
    report.close()
    assert drawn[-1] == [1.0, 2.0, 3.0, 4.0]
    assert len(drawn) <= 2  # requests made during a drawing coalesce into the latest
    assert all(d == [1.0, 2.0, 3.0, 4.0][: len(d)] for d in drawn)


def test_the_picture_shows_the_rows_written_and_a_resumed_runs_earlier_ones(tmp_path, monkeypatch):
    for epoch in (1, 2):
        _append_metrics(tmp_path / "metrics.csv", _row(epoch))
    seen = []
    monkeypatch.setattr(RunReport, "_draw", lambda self, rows: seen.append(rows))
    report = RunReport(tmp_path, plot=True, tensorboard=False)
    _append_metrics(tmp_path / "metrics.csv", _row(3))
    report.epoch(_row(3), 30, [])
    report.close()
    want = read_metrics(tmp_path)
    assert [sorted(r) for r in seen[-1]] == [sorted(r) for r in want]
    for got, exp in zip(seen[-1], want, strict=True):
        keys = sorted(exp)  # metrics.csv keeps 6 significant digits
        np.testing.assert_allclose([got[k] for k in keys], [exp[k] for k in keys], rtol=1e-5)


def test_a_picture_that_cannot_be_written_warns_once_and_training_goes_on(tmp_path):
    (tmp_path / "curves.png").mkdir()  # the picture's place is taken by a folder
    lines = []
    report = RunReport(tmp_path, plot=True, tensorboard=False, log=lines.append)
    for epoch in (1, 2, 3):
        _append_metrics(tmp_path / "metrics.csv", _row(epoch))
        report.epoch(_row(epoch), 10 * epoch, [])
    report.close()
    assert len(lines) == 1
    assert lines[0].startswith("Warning: cannot update the run's pictures or TensorBoard events: ")
    assert "curves.png" in lines[0]

"""A short `bntrain fit` on the built-in digits learns, follows its schedule, and recomputes
its batch-norm statistics exactly as a hand-run `bntrain recompute-stats` would.
"""

from __future__ import annotations

import csv
import math
import shutil
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.cli import main

BASE_LR, MIN_LR, EPOCHS, WARMUP = 0.2, 0.01, 4, 1
CONFIG = textwrap.dedent(
    f"""\
    name: learn
    data:
      train: {{builtin: digits, split: train}}
      val: {{builtin: digits, split: val}}
      preprocess: {{scale: 0.0625}}
    model:
      layers:
        - {{type: dense, units: 32, nonlinearity: relu}}
        - {{type: dense, units: 16, nonlinearity: relu}}
        - {{type: dense, units: 10, nonlinearity: softmax}}
    training:
      epochs: {EPOCHS}
      batch_size: 64
      optimizer: {{name: momentum, lr: {BASE_LR}, momentum: 0.9}}
      schedule: {{name: cosine, warmup_epochs: {WARMUP}, min_lr: {MIN_LR}}}
      seed: 1
    output: {{dir: run}}
    """
)


def expected_lr(step: int, steps_per_epoch: int) -> float:
    """The documented schedule: linear warmup to the base lr, then cosine down to min_lr."""
    warm = WARMUP * steps_per_epoch
    if step < warm:
        return BASE_LR * (step + 1) / warm
    progress = (step - warm) / (EPOCHS * steps_per_epoch - warm)
    return MIN_LR + (BASE_LR - MIN_LR) * (1 + math.cos(math.pi * progress)) / 2


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learn")
    (folder / "learn.yaml").write_text(CONFIG)
    result = run("fit", folder / "learn.yaml", "--quiet")
    assert result.exit_code == 0, result.output
    with open(folder / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return folder, rows


def test_validation_accuracy_far_above_chance_and_training_loss_falls(trained):
    _, rows = trained
    assert len(rows) == EPOCHS
    losses = [float(r["train_loss"]) for r in rows]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.5 * losses[0]
    assert float(rows[-1]["val_acc"]) >= 0.85  # chance is 0.1
    assert float(rows[-1]["train_acc"]) >= 0.85


def test_every_lr_in_metrics_is_the_schedules_value(trained):
    _, rows = trained
    steps = [int(r["step"]) for r in rows]
    per_epoch = steps[0]
    assert steps == [per_epoch * (e + 1) for e in range(EPOCHS)]
    for r, step in zip(rows, steps, strict=True):
        # the lr of the epoch's last step (0-based index step - 1)
        assert float(r["lr"]) == pytest.approx(expected_lr(step - 1, per_epoch), rel=1e-5)
    lrs = [float(r["lr"]) for r in rows]
    assert len(set(lrs)) == EPOCHS  # the schedule moves every epoch


def _bn_stats(path):
    with h5py.File(path, "r") as f:
        g = f["bn_stats"]
        attrs = dict(g.attrs)
        values = {k: (g[k]["mean"][()], g[k]["var"][()]) for k in g}
        layer_attrs = {k: dict(g[k].attrs) for k in g}
    return attrs, values, layer_attrs


@pytest.mark.parametrize("name", ["best.h5", "last.h5"])
def test_fits_own_recompute_equals_recompute_stats_by_hand(trained, tmp_path, name):
    folder, _ = trained
    ckpt = folder / "run" / name
    fit_attrs, fit_values, fit_layer_attrs = _bn_stats(ckpt)
    by_hand = tmp_path / name
    shutil.copyfile(ckpt, by_hand)
    result = run("recompute-stats", by_hand, "--quiet")
    assert result.exit_code == 0, result.output
    attrs, values, _ = _bn_stats(by_hand)
    assert sorted(fit_values) == ["dense1_bn", "dense2_bn"]
    assert fit_attrs["source"] == str(ckpt.resolve())
    assert attrs["source"] == str(by_hand.resolve())
    ignore = {"source", "computed_at"}
    assert {k: v for k, v in fit_attrs.items() if k not in ignore} == {
        k: v for k, v in attrs.items() if k not in ignore
    }
    # what recompute-stats does by default, on the training split
    assert fit_attrs["estimator"] == "population" and fit_attrs["mode"] == "batch"
    assert fit_attrs["batch_size"] == 64 and fit_attrs["data"] == "config:data.train"
    assert fit_attrs["n_examples"] == 1258 and fit_attrs["passes"] == 1
    for layer, (mean, var) in values.items():
        np.testing.assert_array_equal(fit_values[layer][0], mean, err_msg=layer)
        np.testing.assert_array_equal(fit_values[layer][1], var, err_msg=layer)
        assert fit_layer_attrs[layer]["estimator"] == "population"

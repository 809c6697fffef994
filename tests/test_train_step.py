"""The compiled training step's step counter: the learning rate comes from the table by it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bntrain.config import parse_config
from bntrain.graphs import build_train_step
from bntrain.model import build_network
from bntrain.nn import layers as L

CONFIG = """\
data: {{train: {{builtin: digits, split: train}}}}
model:
  layers:
    - {{type: dense, units: 6, nonlinearity: relu}}
    - {{type: dense, units: 3, nonlinearity: softmax}}
training:
  epochs: 1
  batch_size: 4
  accumulate: {accumulate}
  nan_policy: skip
  optimizer: {{name: sgd, lr: 0.1}}
"""
TABLE = np.float32([0.1, 0.0, 0.3])


def _step(accumulate=1, mode="JAX"):
    cfg = parse_config(CONFIG.format(accumulate=accumulate), source="step.yaml")
    network = build_network(cfg.model, (5,), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = build_train_step(network, cfg.training, mode, batch_size=4, lr_table=TABLE)
    weights = [p for p in L.get_all_params(network.output_layer) if p.name.endswith(".W")]
    return step, weights


def _batch(seed, nan=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    if nan:
        x[0, 0] = np.nan
    return x, rng.integers(0, 3, 4).astype(np.int32)


def _values(weights):
    return [w.get_value() for w in weights]


def _changed(before, after):
    return any(not np.array_equal(u, v) for u, v in zip(before, after, strict=True))


@pytest.mark.parametrize("mode", ["JAX", "NUMBA"])
def test_the_counter_picks_each_steps_rate_and_counts_skipped_steps(mode):
    step, weights = _step(mode=mode)
    start = _values(weights)
    step.fn(*_batch(0))  # step 0: lr 0.1
    after0 = _values(weights)
    assert _changed(start, after0) and int(step.counter.get_value()) == 1
    step.fn(*_batch(1))  # step 1: lr 0 in the table, so the weights stay
    assert not _changed(after0, _values(weights)) and int(step.counter.get_value()) == 2
    step.fn(*_batch(2, nan=True))  # step 2 is skipped (NaN loss) but still counted
    assert not _changed(after0, _values(weights)) and int(step.counter.get_value()) == 3
    step.fn(*_batch(3))  # past the table's end: its last rate, 0.3
    assert _changed(after0, _values(weights)) and int(step.counter.get_value()) == 4
    assert [step.lr_at(i) for i in (-1, 0, 1, 2, 9)] == pytest.approx([0.1, 0.1, 0.0, 0.3, 0.3])


def test_set_step_continues_at_that_steps_rate():
    step, weights = _step()
    step.set_step(1)  # as a resume after one step: lr 0 next
    before = _values(weights)
    step.fn(*_batch(0))
    assert not _changed(before, _values(weights)) and int(step.counter.get_value()) == 2


def test_with_accumulation_only_apply_counts_a_step():
    step, weights = _step(accumulate=2)
    step.fn(*_batch(0))
    step.fn(*_batch(1))
    assert int(step.counter.get_value()) == 0
    step.apply()
    assert int(step.counter.get_value()) == 1
    step.apply()  # nothing accumulated: no change, but the step is counted (as the loop counts it)
    assert int(step.counter.get_value()) == 2

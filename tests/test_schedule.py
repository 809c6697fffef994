import math
from types import SimpleNamespace

import pytest

from bntrain.schedule import learning_rate


def sched(name="constant", **kw):
    base = {"name": name, "step_size": None, "gamma": 0.1, "warmup_epochs": 0, "min_lr": 0.0}
    base.update(kw)
    return SimpleNamespace(**base)


def test_constant():
    assert learning_rate(sched(), 0.5, 123, 10, 20) == 0.5


def test_step_decays_every_step_size_epochs():
    s = sched("step", step_size=2, gamma=0.5)
    assert learning_rate(s, 1.0, 19, 10, 10) == 1.0  # epoch 1.9
    assert learning_rate(s, 1.0, 20, 10, 10) == 0.5  # epoch 2.0
    assert learning_rate(s, 1.0, 45, 10, 10) == 0.25


def test_cosine_goes_from_lr_to_min_lr():
    s = sched("cosine", min_lr=0.01)
    assert learning_rate(s, 1.0, 0, 10, 5) == pytest.approx(1.0)
    assert learning_rate(s, 1.0, 25, 10, 5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert learning_rate(s, 1.0, 50, 10, 5) == pytest.approx(0.01)
    assert learning_rate(s, 1.0, 60, 10, 5) == pytest.approx(0.01)


def test_warmup_ramps_linearly_then_follows_schedule():
    s = sched("cosine", warmup_epochs=1)
    assert learning_rate(s, 1.0, 0, 4, 3) == pytest.approx(0.25)
    assert learning_rate(s, 1.0, 3, 4, 3) == pytest.approx(1.0)
    # after warm-up the cosine runs over the remaining 2 epochs (8 steps)
    assert learning_rate(s, 1.0, 8, 4, 3) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))

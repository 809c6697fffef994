import math
from types import SimpleNamespace

import numpy as np
import pytest

from bntrain.schedule import learning_rate, lr_table, steps_per_epoch


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


def _multistep_reference(base_lr, position, milestones, gamma):
    """PyTorch MultiStepLR's rule: lr * gamma ** (milestones reached so far)."""
    import numpy as np

    return base_lr * gamma ** int(np.searchsorted(milestones, position, side="right"))


@pytest.mark.parametrize("unit", ["steps", "epochs"])
def test_multistep_matches_a_reference_at_every_step(unit):
    from bntrain.config.schema import MultiStepSchedule

    milestones = [32, 48] if unit == "steps" else [3, 5]
    s = MultiStepSchedule(name="multistep", milestones=milestones, unit=unit, gamma=0.1)
    per_epoch = 10
    for step in range(70):
        position = step if unit == "steps" else step // per_epoch
        want = _multistep_reference(0.1, position, milestones, 0.1)
        assert learning_rate(s, 0.1, step, per_epoch, 7) == pytest.approx(want, rel=1e-12)
    # the paper's recipe: 0.1, divided by 10 at 32k and 48k iterations
    he = MultiStepSchedule(name="multistep", milestones=[32000, 48000])
    rates = [learning_rate(he, 0.1, k, 391, 164) for k in (31999, 32000, 47999, 48000, 63999)]
    assert rates == pytest.approx([0.1, 0.01, 0.01, 0.001, 0.001])


def test_multistep_milestones_must_increase():
    from bntrain.config import parse_config
    from bntrain.errors import ConfigError

    text = (
        "data: {train: {builtin: digits, split: train}}\n"
        "model: {layers: [{type: dense, units: 10, nonlinearity: softmax}]}\n"
        "training:\n"
        "  epochs: 1\n"
        "  batch_size: 8\n"
        "  optimizer: {name: sgd, lr: 0.1}\n"
        "  schedule: {name: multistep, milestones: [30, 20]}\n"
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text, source="s.yaml")
    assert str(e.value) == (
        "s.yaml:7: training.schedule.milestones[1]: must increase, but 20 follows 30"
    )


def _training(schedule, lr=0.5, epochs=3):
    return SimpleNamespace(schedule=schedule, optimizer=SimpleNamespace(lr=lr), epochs=epochs)


def test_lr_table_holds_every_steps_rate_in_float32():
    s = sched("cosine", warmup_epochs=1, min_lr=0.01)
    table = lr_table(_training(s), steps_per_epoch=4)
    assert table.dtype == np.float32 and len(table) == 12
    want = [np.float32(learning_rate(s, 0.5, i, 4, 3)) for i in range(12)]
    assert table.tolist() == want


def test_lr_table_of_a_rate_that_never_changes_is_one_value():
    assert lr_table(_training(sched()), steps_per_epoch=1000).tolist() == [np.float32(0.5)]


def test_steps_per_epoch_counts_a_short_last_cycle():
    assert [steps_per_epoch(n, 4) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]

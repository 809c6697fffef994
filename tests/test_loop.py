"""The training loop keeps the step busy: batches read ahead, losses read back late (issue #11 C)."""

from __future__ import annotations

import threading

import bntrain.data.batches as B
import bntrain.train as T
from bntrain.config import load_config
from bntrain.inputs import open_config_data
from bntrain.train import fit

from .conftest import TINY_MLP

SETS = ["training.epochs=1", "training.recompute_stats=false", "training.plot=false"]


def _config(tmp_path, *sets):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_MLP)
    return load_config(path, [*SETS, *sets])


class _Loss:
    """A step's loss that records when the loop reads it."""

    def __init__(self, value, step: int, log: list):
        self.value, self.step, self.log = value, step, log

    def __float__(self) -> float:
        self.log.append(("read", self.step))
        return float(self.value)


def _wrap_step(build_log):
    real = T.build_train_step

    def build(*args, **kwargs):
        step = real(*args, **kwargs)
        inner, calls = step.fn, []

        def fn(x, y):
            k = len(calls)
            calls.append(k)
            build_log(k)
            loss, acc = inner(x, y)
            return _Loss(loss, k, log), acc

        step.fn = fn
        return step

    log: list = []
    return build, log


def test_the_next_batches_are_read_while_a_step_runs(tmp_path, monkeypatch):
    cfg = _config(tmp_path)
    data = open_config_data(cfg, which=("train",))
    n_batches = len(data.train) // cfg.training.batch_size  # shuffled: the short one is dropped
    data.close()
    produced = [threading.Event() for _ in range(n_batches)]
    threads = set()
    real_produce = B._produce

    def produce(*args, **kwargs):
        for k, batch in enumerate(real_produce(*args, **kwargs)):
            threads.add(threading.current_thread().name)
            produced[k].set()
            yield batch

    def during_step(k):  # step k does not return before batch k + 1 has been read
        if k + 1 < n_batches:
            assert produced[k + 1].wait(30), f"batch {k + 1} was not read during step {k}"

    build, log = _wrap_step(during_step)
    monkeypatch.setattr(B, "_produce", produce)
    monkeypatch.setattr(T, "build_train_step", build)
    fit(cfg)
    assert all(e.is_set() for e in produced) and threads == {"bntrain-prefetch"}
    assert [k for what, k in log if what == "read"] == list(range(n_batches))


def test_steps_are_queued_before_earlier_losses_are_read(tmp_path, monkeypatch):
    build, log = _wrap_step(lambda k: log.append(("call", k)))
    monkeypatch.setattr(T, "build_train_step", build)
    monkeypatch.setattr(T._Results, "IN_FLIGHT", 3)
    fit(_config(tmp_path))
    calls = [k for what, k in log if what == "call"]
    n = len(calls)
    assert n > 8 and calls == list(range(n))
    assert [k for what, k in log if what == "read"] == calls  # every loss read, in order
    where = {entry: i for i, entry in enumerate(log)}
    for k in range(n - 3):  # loss k is read after step k + 3 is queued, before step k + 4 is
        assert where[("call", k + 3)] < where[("read", k)]
        assert k + 4 == n or where[("read", k)] < where[("call", k + 4)]


def test_a_checkpoint_inside_the_epoch_reads_every_loss_first(tmp_path, monkeypatch):
    build, log = _wrap_step(lambda k: log.append(("call", k)))
    monkeypatch.setattr(T, "build_train_step", build)
    real_save = T.TrainState.to_checkpoint
    monkeypatch.setattr(
        T.TrainState,
        "to_checkpoint",
        lambda state, path: (log.append(("save", state.step)), real_save(state, path)),
    )
    fit(_config(tmp_path, "training.checkpoint_every_steps=5"))
    saves = [i for i, (what, _) in enumerate(log) if what == "save"]
    assert len(saves) >= 3
    for i in saves:
        step = log[i][1]
        read = {k for what, k in log[:i] if what == "read"}
        assert read == set(range(step))  # all of the steps done, none of later ones

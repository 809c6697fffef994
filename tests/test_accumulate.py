"""training.accumulate, ghost batch norm and batch renorm from the config, through fit."""

from __future__ import annotations

import textwrap

import h5py
import numpy as np
import pytest

from bntrain.bnvariants import ramp_values
from bntrain.config import load_config
from bntrain.train import fit

from .conftest import h5_datasets

CONFIG = textwrap.dedent(
    """\
    name: acc
    data:
      train: {path: train.npz}
    model:
      batch_norm: {insert: auto, alpha: 0.2}
      layers:
        - {type: dense, units: 8, nonlinearity: relu}
        - {type: dense, units: 3, nonlinearity: softmax}
    training:
      epochs: 2
      batch_size: 4
      optimizer: {name: momentum, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-3}
      schedule: {name: cosine}
      recompute_stats: false
      seed: 5
    output: {dir: run}
    """
)


@pytest.fixture
def cfg_path(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
    np.savez(tmp_path / "train.npz", X=x, y=y)
    path = tmp_path / "acc.yaml"
    path.write_text(CONFIG)
    return path


def _model(path):
    return {k: v for k, v in h5_datasets(path).items() if k.startswith("model/layers/")}


def _fit(cfg_path, *sets):
    cfg = load_config(cfg_path, list(sets))
    fit(cfg)
    return cfg_path.parent / cfg.output_dir / "last.h5"


def test_micro_batches_equal_ghost_batch_norm_on_the_whole_batch(cfg_path):
    """4 micro-batches of 4 == one batch of 16 with virtual_batch_size 4 (params and averages).

    In stored order (a shuffled batch reads its examples sorted, so its groups of 4
    would be other examples than the micro-batches of 4).
    """
    acc = _fit(cfg_path, "training.accumulate=4", "training.shuffle=false", "output.dir=acc")
    ghost = _fit(
        cfg_path,
        "training.shuffle=false",
        "training.batch_size=16",
        "model.batch_norm.virtual_batch_size=4",
        "output.dir=ghost",
    )
    a, b = _model(acc), _model(ghost)
    assert sorted(a) == sorted(b) and any(k.endswith("/mean") for k in a)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=2e-5, atol=2e-6, err_msg=key)
    with h5py.File(acc, "r") as f:
        assert f.attrs["step"] == 2 * 4  # 16 micro-batches an epoch, 4 per optimizer step
    with h5py.File(ghost, "r") as f:
        assert f["model/layers/dense1_bn"].attrs["type"] == "GhostBatchNormLayer"
        assert f["model/layers/dense1_bn"].attrs["virtual_batch_size"] == 4


def test_resume_inside_an_epoch_with_accumulation_is_bit_exact(cfg_path, monkeypatch):
    """Cycles of 3 (16 micro-batches: 5 full cycles and a short one), a checkpoint every 2 steps."""
    from bntrain.trainstate import TrainState

    sets = ["training.accumulate=3", "training.checkpoint_every_steps=2"]
    straight = _fit(cfg_path, *sets, "output.dir=straight")
    save = TrainState.to_checkpoint
    seen = []

    def stop_at_step_4(self, path):
        save(self, path)
        seen.append((self.step, self.batch))
        if self.step == 8:  # inside the second epoch (6 steps an epoch)
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainState, "to_checkpoint", stop_at_step_4)
    cfg = load_config(cfg_path, [*sets, "output.dir=broken"])
    with pytest.raises(KeyboardInterrupt):
        fit(cfg)
    assert seen == [(2, 6), (4, 12), (6, 0), (8, 6)]  # (step, micro-batch); 6 = end of epoch 1
    monkeypatch.setattr(TrainState, "to_checkpoint", save)
    fit(cfg, resume=cfg_path.parent / "broken")
    a, b = h5_datasets(straight), h5_datasets(cfg_path.parent / "broken" / "last.h5")
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_renorm_with_bounds_one_and_zero_is_plain_batch_norm(cfg_path):
    bn = _fit(cfg_path, "output.dir=bn")
    rn = _fit(
        cfg_path,
        "model.batch_norm.kind=renorm",
        "model.batch_norm.r_max=1",
        "model.batch_norm.d_max=0",
        "output.dir=rn",
    )
    a, b = _model(bn), _model(rn)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    with h5py.File(rn, "r") as f:
        g = f["model/layers/dense1_bn"]
        assert (g.attrs["type"], g.attrs["r_max"], g.attrs["d_max"]) == ("BatchReNormLayer", 1, 0)


def test_renorm_ramp_per_step_against_a_reference(cfg_path):
    """r_max goes 1 -> 3 and d_max 0 -> 5, linearly over warmup_steps, then stays."""
    for t in range(0, 15):
        r, d = ramp_values(t, 3.0, 5.0, 10)
        assert r == pytest.approx(np.interp(t, [0, 10], [1, 3]))
        assert d == pytest.approx(np.interp(t, [0, 10], [0, 5]))
    assert ramp_values(0, 3.0, 5.0, 0) == (3.0, 5.0)
    last = _fit(
        cfg_path,
        "model.batch_norm.kind=renorm",
        "model.batch_norm.warmup_steps=40",
        "output.dir=ramp",
    )
    with h5py.File(last, "r") as f:  # the bounds of the last step, step 31 (32 steps done)
        g = f["model/layers/dense1_bn"]
        assert g.attrs["r_max"] == pytest.approx(np.interp(31, [0, 40], [1, 3]), rel=1e-6)
        assert g.attrs["d_max"] == pytest.approx(np.interp(31, [0, 40], [0, 5]), rel=1e-6)


def test_virtual_batch_size_must_divide_the_batch(cfg_path):
    from bntrain.errors import UsageError

    cfg = load_config(cfg_path, ["model.batch_norm.virtual_batch_size=3"])
    with pytest.raises(UsageError) as info:
        fit(cfg)
    assert str(info.value) == (
        "model.batch_norm.virtual_batch_size: 3 does not divide training.batch_size (4); "
        "pick a divisor of the batch size"
    )
    assert not (cfg_path.parent / "run").exists()

"""model.init_from, model.skip_mismatched, batch_norm.freeze and per-layer trainable."""

from __future__ import annotations

import numpy as np
import pytest

from bntrain.config import load_config
from bntrain.errors import CheckpointError
from bntrain.graphs import build_predict, build_train_step
from bntrain.model import build_network
from bntrain.train import fit

from .conftest import h5_datasets
from .test_accumulate import cfg_path  # noqa: F401 (fixture)

BN = "model/layers/dense1_bn/"


@pytest.fixture
def trained(cfg_path):  # noqa: F811
    """A one-epoch run with recomputed statistics (/bn_stats) to start from."""
    from bntrain.commands.recompute import recompute_stats_command

    fit(load_config(cfg_path, ["training.epochs=1"]))
    recompute_stats_command(cfg_path.parent / "run" / "last.h5")
    return cfg_path.parent / "run" / "last.h5"


def test_frozen_layer_and_batch_norm_stay_bit_identical(cfg_path, trained):  # noqa: F811
    lines = []
    cfg = load_config(
        cfg_path,
        [
            "model.init_from=run/last.h5",
            "model.batch_norm.freeze=all",
            "model.layers.0.trainable=false",
            "output.dir=tuned",
        ],
    )
    fit(cfg, log=lines.append)
    a, b = h5_datasets(trained), h5_datasets(cfg_path.parent / "tuned" / "last.h5")
    assert lines[0] == f"init_from {cfg_path.parent / 'run/last.h5'}: 7 loaded, 0 new, 0 skipped"
    assert "  loaded dense1/W [6, 8]" in lines
    for key in ("model/layers/dense1/W", BN + "gamma", BN + "beta"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the statistics: the recomputed whole-set ones, never updated while training
    np.testing.assert_array_equal(b[BN + "mean"], a["bn_stats/dense1_bn/mean"].astype("float32"))
    var = a["bn_stats/dense1_bn/var"].astype(np.float64)
    np.testing.assert_array_equal(b[BN + "inv_std"], (1 / np.sqrt(var + 1e-4)).astype("float32"))
    assert not np.array_equal(a["model/layers/dense2/W"], b["model/layers/dense2/W"])


def test_shape_mismatch_is_an_error_unless_skipped(cfg_path, trained):  # noqa: F811
    sets = ["model.init_from=run/last.h5", "model.layers.0.units=5", "training.epochs=1"]
    with pytest.raises(CheckpointError) as info:
        fit(load_config(cfg_path, [*sets, "output.dir=bad"]))
    assert str(info.value) == (
        f"model.init_from: '{cfg_path.parent / 'run/last.h5'}' /model/layers/dense1/W has shape "
        f"[6, 8] but this model's is [6, 5]; set model.skip_mismatched: true to keep this "
        f"model's initialization"
    )
    assert not (cfg_path.parent / "bad").exists()
    lines = []
    fit(
        load_config(cfg_path, [*sets, "model.skip_mismatched=true", "output.dir=ok"]),
        log=lines.append,
    )
    assert lines[0].endswith(": 1 loaded, 0 new, 6 skipped")
    assert "  skipped dense1/W [6, 8] -> [6, 5]" in lines
    assert "  loaded dense2/b [3]" in lines


def test_stats_frozen_training_step_normalizes_with_the_stored_statistics(cfg_path):  # noqa: F811
    """With freeze: stats the training loss is the loss of the inference-mode network."""
    cfg = load_config(cfg_path, ["model.batch_norm.freeze=stats"])
    net = build_network(cfg.model, (6,), seed=1)
    bn = net.layer("dense1_bn")
    rng = np.random.default_rng(2)
    bn.mean.set_value(rng.normal(size=8).astype("float32"))
    bn.inv_std.set_value(rng.uniform(0.5, 2, size=8).astype("float32"))
    mean, inv_std = bn.mean.get_value(), bn.inv_std.get_value()
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 3, size=16).astype("int32")
    probs = build_predict(net, "JAX")(x)
    step = build_train_step(net, cfg.training, "JAX")
    loss, _ = step.fn(x, y)
    np.testing.assert_allclose(loss, -np.log(probs[np.arange(16), y]).mean(), rtol=1e-5)
    np.testing.assert_array_equal(bn.mean.get_value(), mean)
    np.testing.assert_array_equal(bn.inv_std.get_value(), inv_std)

"""The Numba and JAX backends train the same conv net (BN, pooling, global pooling) alike."""

import warnings

import numpy as np

from bntrain.config import parse_config
from bntrain.graphs import build_predict, build_train_step
from bntrain.model import build_network
from bntrain.nn import layers as L

from .conftest import TINY_MLP

CNN_LAYERS = (
    "model.layers=[{type: conv2d, filters: 6, size: 3}, {type: maxpool2d, size: 2}, "
    "{type: conv2d, filters: 8, size: 3, stride: 2}, {type: avgpool2d, size: 2, stride: 1, pad: 1}, "
    "{type: global_avgpool}, {type: dense, units: 10, nonlinearity: softmax}]"
)


def _run(mode, batch_size):
    cfg = parse_config(
        TINY_MLP, source="t.yaml", overrides=[CNN_LAYERS, "model.input_shape=[1, 8, 8]"]
    )
    net = build_network(cfg.model, (1, 8, 8), seed=0)
    step = build_train_step(net, cfg.training, mode, batch_size=batch_size)
    rng = np.random.default_rng(0)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            x = rng.random((16, 1, 8, 8), dtype=np.float32)
            y = rng.integers(0, 10, 16).astype(np.int32)
            losses.append(float(step.fn(x, y)[0]))
        predict = build_predict(net, mode)
        probs = [np.asarray(predict(rng.random((n, 1, 8, 8), dtype=np.float32))) for n in (16, 5)]
    params = [p.get_value() for p in L.get_all_params(net.output_layer)]
    return losses, params, probs


def test_numba_and_jax_agree_on_a_conv_net():
    a_loss, a_params, a_probs = _run("NUMBA", None)
    b_loss, b_params, b_probs = _run("JAX", 16)
    np.testing.assert_allclose(a_loss, b_loss, rtol=1e-4)
    for pa, pb in zip(a_params, b_params, strict=True):
        np.testing.assert_allclose(pa, pb, rtol=1e-3, atol=1e-5)
    for qa, qb in zip(a_probs, b_probs, strict=True):
        assert qa.shape == qb.shape
        np.testing.assert_allclose(qa, qb, rtol=1e-3, atol=1e-6)


def test_fit_with_jax_backend_prints_no_backend_noise(tiny_config_file):
    from click.testing import CliRunner

    from bntrain.cli import main

    args = [
        "fit",
        str(tiny_config_file),
        "--quiet",
        "--set",
        "backend=jax",
        "--set",
        "training.epochs=1",
    ]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [str(w.message)[:80] for w in seen if issubclass(w.category, UserWarning)] == []
    assert result.stderr == ""
    assert result.stdout.startswith("run folder: ")
    assert "test accuracy: " in result.stdout


def test_jax_resume_equals_uninterrupted_run_bit_for_bit_with_dropout(tmp_path):
    """JAX keeps a private copy of each dropout generator; checkpoints save and restore that copy."""
    import pytest

    from bntrain.config import load_config
    from bntrain.train import fit

    from .conftest import TINY_MLP
    from .test_cli_fit import _arrays

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(TINY_MLP)
    sets = ["backend=jax", "training.epochs=4", "training.recompute_stats=false"]
    fit(load_config(cfg_path, [*sets, "output.dir=straight"]))

    def interrupt_after_epoch_2(line):
        if line.startswith("epoch 2/4"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(load_config(cfg_path, [*sets, "output.dir=broken"]), log=interrupt_after_epoch_2)
    fit(load_config(cfg_path, [*sets, "output.dir=broken"]), resume=tmp_path / "broken")
    a, b = _arrays(tmp_path / "straight" / "last.h5"), _arrays(tmp_path / "broken" / "last.h5")
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)

"""BatchReNormLayer against a float64 NumPy reference of Ioffe (2017), and finite differences."""

from __future__ import annotations

import numpy as np
import pytensor
import pytest

from bntrain.nn.layers import (
    BatchNormLayer,
    BatchReNormLayer,
    DenseLayer,
    InputLayer,
    batch_renorm,
    get_output,
)

EPS = 1e-3


def renorm_reference(x, gamma, beta, mean, inv_std, r_max, d_max, axes=(0,), eps=EPS):
    """Training-mode batch renormalization in float64; returns (y, r, d)."""
    x = np.asarray(x, np.float64)
    mb = x.mean(axis=axes)
    sb = np.sqrt(x.var(axis=axes) + eps)
    sigma = 1.0 / np.asarray(inv_std, np.float64)
    r = np.clip(sb / sigma, 1 / r_max, r_max)
    d = np.clip((mb - mean) / sigma, -d_max, d_max)

    def b(p):
        return np.expand_dims(p, axes)

    x_hat = (x - b(mb)) / b(sb) * b(r) + b(d)
    return x_hat * b(gamma) + b(beta), r, d


@pytest.fixture
def values():
    rng = np.random.default_rng(0)
    return {
        "x": (rng.normal(size=(6, 4)) * [1, 3, 0.2, 1] + [0, 2, -1, 5]).astype(np.float32),
        "gamma": rng.uniform(0.5, 2, 4).astype(np.float32),
        "beta": rng.normal(size=4).astype(np.float32),
        # moving averages far enough from the batch's that some r and d clip
        "mean": np.array([0.5, 0.0, -1.0, 9.0], np.float32),
        "inv_std": np.array([1.0, 1.0, 0.5, 0.25], np.float32),
    }


def _layer(values, cls=BatchReNormLayer, **kw):
    layer = cls(InputLayer((None, 4)), epsilon=EPS, alpha=0.25, **kw)
    for name in ("gamma", "beta", "mean", "inv_std"):
        getattr(layer, name).set_value(values[name])
    return layer


def _train_fn(layer, mode=None):
    x = layer.input_layer.input_var
    out, updates = get_output(layer, return_updates=True)
    return pytensor.function([x], [out, *updates.values()], mode=mode)


def test_training_output_matches_the_reference(values):
    layer = _layer(values, r_max=1.5, d_max=0.5)
    got, new_mean, new_inv_std = _train_fn(layer)(values["x"])
    want, r, d = renorm_reference(
        values["x"], values["gamma"], values["beta"], values["mean"], values["inv_std"], 1.5, 0.5
    )
    assert (np.abs(r) == 1.5).any() or (r == 1 / 1.5).any(), "the test must exercise r's clip"
    assert (np.abs(d) == 0.5).any(), "the test must exercise d's clip"
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the moving averages move exactly as batch norm's do
    x = values["x"].astype(np.float64)
    np.testing.assert_allclose(new_mean, 0.75 * values["mean"] + 0.25 * x.mean(0), rtol=1e-6)
    inv = 1 / np.sqrt(x.var(0) + EPS)
    np.testing.assert_allclose(new_inv_std, 0.75 * values["inv_std"] + 0.25 * inv, rtol=1e-6)


def test_r_max_1_d_max_0_is_plain_batch_norm(values):
    renorm = _train_fn(_layer(values, r_max=1, d_max=0))(values["x"])
    plain = _train_fn(_layer(values, cls=BatchNormLayer))(values["x"])
    for a, b in zip(renorm, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_inference_is_batch_norm_with_the_averages(values):
    layer = _layer(values)
    x = layer.input_layer.input_var
    got = pytensor.function([x], get_output(layer, deterministic=True))(values["x"])
    want = (values["x"] - values["mean"]) * values["inv_std"] * values["gamma"] + values["beta"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_gradient_treats_r_and_d_as_constants(values):
    """Finite differences of the reference with r and d frozen at the point of evaluation."""
    layer = _layer(values, r_max=1.5, d_max=0.5)
    x = layer.input_layer.input_var
    w = np.random.default_rng(1).normal(size=(6, 4))
    out = get_output(layer, batch_norm_update_averages=False)
    loss = (out * w.astype(np.float32)).sum()
    grads = pytensor.function([x], pytensor.grad(loss, [x, layer.gamma]))
    gx, ggamma = grads(values["x"])
    x64 = values["x"].astype(np.float64)
    _, r, d = renorm_reference(
        x64, values["gamma"], values["beta"], values["mean"], values["inv_std"], 1.5, 0.5
    )

    def frozen(xv, gamma):
        mb, sb = xv.mean(0), np.sqrt(xv.var(0) + EPS)
        return ((((xv - mb) / sb * r + d) * gamma + values["beta"]) * w).sum()

    h = 1e-6
    num_x = np.zeros_like(x64)
    for idx in np.ndindex(*x64.shape):
        e = np.zeros_like(x64)
        e[idx] = h
        num_x[idx] = (frozen(x64 + e, values["gamma"]) - frozen(x64 - e, values["gamma"])) / (2 * h)
    g64 = values["gamma"].astype(np.float64)
    num_g = np.array(
        [(frozen(x64, g64 + h * e) - frozen(x64, g64 - h * e)) / (2 * h) for e in np.eye(4)]
    )
    np.testing.assert_allclose(gx, num_x, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(ggamma, num_g, rtol=2e-3, atol=2e-3)


def test_jax_mode_agrees(values):
    layer = _layer(values, r_max=1.5, d_max=0.5)
    default = _train_fn(layer)(values["x"])
    jax = _train_fn(layer, mode="JAX")(values["x"])
    for a, b in zip(default, jax, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bounds_may_be_shared_variables_for_a_ramp(values):
    r_max = pytensor.shared(np.float32(1.0))
    d_max = pytensor.shared(np.float32(0.0))
    layer = _layer(values, r_max=r_max, d_max=d_max)
    fn = _train_fn(layer)
    plain = _train_fn(_layer(values, cls=BatchNormLayer))(values["x"])[0]
    np.testing.assert_allclose(fn(values["x"])[0], plain, rtol=1e-6, atol=1e-6)
    r_max.set_value(np.float32(1.5))
    d_max.set_value(np.float32(0.5))
    want, _, _ = renorm_reference(
        values["x"], values["gamma"], values["beta"], values["mean"], values["inv_std"], 1.5, 0.5
    )
    np.testing.assert_allclose(fn(values["x"])[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("key", "value"), [("r_max", 0.5), ("d_max", -1), ("r_max", float("nan"))])
def test_bad_bounds_are_refused(key, value):
    with pytest.raises(ValueError, match=f"{key} must be a number >="):
        BatchReNormLayer(InputLayer((None, 3)), name="rn", **{key: value})


def test_batch_renorm_helper_and_conv_axes():
    dense = DenseLayer(InputLayer((None, 5)), 3, name="fc")
    top = batch_renorm(dense, r_max=2.0, d_max=1.0)
    assert isinstance(top.input_layer, BatchReNormLayer)
    assert top.input_layer.r_max == 2.0 and dense.b is None
    conv_in = InputLayer((None, 2, 3, 3))
    layer = BatchReNormLayer(conv_in)
    assert layer.axes == (0, 2, 3) and layer.param_shape == (2,)
    x = np.random.default_rng(2).normal(size=(4, 2, 3, 3)).astype(np.float32)
    out = get_output(layer, batch_norm_update_averages=False)
    fn = pytensor.function([conv_in.input_var], out)
    want, _, _ = renorm_reference(
        x, np.ones(2), np.zeros(2), np.zeros(2), np.ones(2), 3.0, 5.0, axes=(0, 2, 3), eps=1e-4
    )
    np.testing.assert_allclose(fn(x), want, rtol=1e-5, atol=1e-5)
    assert out.dtype == "float32"


def test_lasagne_style_training_moves_the_averages_like_the_explicit_path(values):
    """Without return_updates the updates hide in default_update (Lasagne's way)."""
    explicit = _layer(values, r_max=1.5, d_max=0.5)
    fn = _train_fn(explicit)
    _, want_mean, want_inv = fn(values["x"])
    hidden = _layer(values, r_max=1.5, d_max=0.5)
    x = hidden.input_layer.input_var
    out = get_output(hidden)
    pytensor.function([x], out)(values["x"])
    np.testing.assert_allclose(hidden.mean.get_value(), want_mean, rtol=1e-6)
    np.testing.assert_allclose(hidden.inv_std.get_value(), want_inv, rtol=1e-6)

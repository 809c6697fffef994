"""GhostBatchNormLayer against a NumPy per-group reference and sequential plain-BN updates."""

import numpy as np
import pytensor
import pytest

from bntrain.nn import layers as L


def _numpy_ghost(x, v, axes, eps, gamma, beta):
    out = np.empty_like(x, dtype=np.float64)
    for g in range(len(x) // v):
        part = x[g * v : (g + 1) * v].astype(np.float64)
        mean = part.mean(axis=axes, keepdims=True)
        var = part.var(axis=axes, keepdims=True)
        out[g * v : (g + 1) * v] = (part - mean) / np.sqrt(var + eps) * gamma + beta
    return out


@pytest.mark.parametrize("shape", [(12, 3), (8, 2, 3, 3)])
def test_output_and_averages_match_groups(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=shape).astype("float32")
    v, eps, alpha = 4, 1e-3, 0.3
    l_in = L.InputLayer((None, *shape[1:]))
    ghost = L.GhostBatchNormLayer(l_in, virtual_batch_size=v, epsilon=eps, alpha=alpha, name="g")
    plain = L.BatchNormLayer(l_in, epsilon=eps, alpha=alpha, name="p")
    pshape = ghost.gamma.get_value().shape
    for layer in (ghost, plain):
        layer.gamma.set_value(rng.normal(size=pshape).astype("float32"))
        layer.beta.set_value(plain.gamma.get_value() * 0 + 0.5)
        layer.mean.set_value(np.full(pshape, 0.7, "float32"))
        layer.inv_std.set_value(np.full(pshape, 1.3, "float32"))
    plain.gamma.set_value(ghost.gamma.get_value())
    bshape = [1] + list(pshape) + [1] * (len(shape) - 1 - len(pshape))
    expect = _numpy_ghost(
        x, v, tuple(a for a in ghost.axes), eps, ghost.gamma.get_value().reshape(bshape), 0.5
    )
    xs = l_in.input_var
    out, ups = L.get_output(ghost, xs, return_updates=True)
    f = pytensor.function([xs], out, updates=ups)
    np.testing.assert_allclose(f(x), expect, rtol=1e-4, atol=1e-4)
    # The averages: one plain-BN update per group, in order.
    out_p, ups_p = L.get_output(plain, xs, return_updates=True)
    fp = pytensor.function([xs], out_p, updates=ups_p)
    for g in range(len(x) // v):
        fp(x[g * v : (g + 1) * v])
    np.testing.assert_allclose(ghost.mean.get_value(), plain.mean.get_value(), rtol=1e-5)
    np.testing.assert_allclose(ghost.inv_std.get_value(), plain.inv_std.get_value(), rtol=1e-5)


def test_test_mode_is_plain_bn():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3)).astype("float32")
    l_in = L.InputLayer((None, 3))
    ghost = L.GhostBatchNormLayer(l_in, virtual_batch_size=2)
    plain = L.BatchNormLayer(l_in)
    for layer in (ghost, plain):
        layer.mean.set_value(np.float32([1, 2, 3]))
        layer.inv_std.set_value(np.float32([0.5, 2, 1]))
    a = L.get_output(ghost, x, deterministic=True).eval()
    b = L.get_output(plain, x, deterministic=True).eval()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"virtual_batch_size": 1}, "virtual_batch_size must be an integer >= 2, got 1"),
        ({"virtual_batch_size": 4, "axes": (1,)}, "needs the batch axis 0 in axes"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        L.GhostBatchNormLayer((4, 3), **kwargs)


def test_without_updates_a_batch_of_any_size_is_normalized_as_a_whole():
    """recompute-stats' passes: batch statistics, no updates, a last batch of 6 with groups of 4."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3)).astype("float32")
    l_in = L.InputLayer((None, 3))
    ghost = L.GhostBatchNormLayer(l_in, virtual_batch_size=4)
    plain = L.BatchNormLayer(l_in)
    flags = {"batch_norm_use_averages": False, "batch_norm_update_averages": False}
    a = L.get_output(ghost, x, **flags).eval()
    b = L.get_output(plain, x, **flags).eval()
    np.testing.assert_array_equal(a, b)


def test_training_without_collected_updates_is_refused():
    """Group updates cannot hide in default_update: say how to call it instead of being wrong."""
    import bntrain.nn as lasagne

    layer = lasagne.layers.GhostBatchNormLayer(
        lasagne.layers.InputLayer((None, 2)), virtual_batch_size=2, name="g"
    )
    with pytest.raises(ValueError, match=r"get_output\(\.\.\., return_updates=True\)"):
        lasagne.layers.get_output(layer)

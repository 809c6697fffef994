"""Tests of BatchNormLayer and batch_norm() against a float64 NumPy reference."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import GradientError, verify_grad

from bntrain.nn import init, nonlinearities
from bntrain.nn.layers import (
    BatchNormLayer,
    DenseLayer,
    InputLayer,
    NonlinearityLayer,
    batch_norm,
    get_all_params,
    get_output,
)

F32 = np.float32


def bn_reference(x, axes, beta=None, gamma=None, mean=None, inv_std=None, eps=1e-4, avg=False):
    """Batch norm in float64: returns (output, batch_mean, batch_inv_std)."""
    x = np.asarray(x, dtype=np.float64)
    batch_mean = x.mean(axis=axes)
    batch_inv_std = 1.0 / np.sqrt(x.var(axis=axes) + eps)
    m, s = (mean, inv_std) if avg else (batch_mean, batch_inv_std)

    def bcast(p):
        return np.expand_dims(np.asarray(p, dtype=np.float64), axes)

    y = (x - bcast(m)) * bcast(s)
    if gamma is not None:
        y = y * bcast(gamma)
    if beta is not None:
        y = y + bcast(beta)
    return y, batch_mean, batch_inv_std


def bn_reference_grads(x, w, axes, gamma, eps=1e-4):
    """Gradients of sum(w * bn(x)) (training mode) wrt x, beta, gamma, in float64."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    s = np.expand_dims(1.0 / np.sqrt(x.var(axis=axes) + eps), axes)
    xhat = (x - x.mean(axis=axes, keepdims=True)) * s
    dxhat = w * np.expand_dims(gamma, axes)
    dx = s * (
        dxhat
        - dxhat.mean(axis=axes, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)
    )
    return dx, w.sum(axis=axes), (w * xhat).sum(axis=axes)


def stats_arrays(rng, n):
    """Non-trivial (beta, gamma, mean, inv_std) float32 arrays of length n."""
    beta = rng.normal(0.0, 1.0, n).astype(F32)
    gamma = rng.uniform(0.5, 2.0, n).astype(F32)
    mean = rng.normal(0.5, 1.0, n).astype(F32)
    inv_std = rng.uniform(0.3, 2.0, n).astype(F32)
    return beta, gamma, mean, inv_std


def compile_fn(inputs, outputs, **kwargs):
    return pytensor.function(inputs, outputs, on_unused_input="ignore", **kwargs)


# --------------------------------------------------------------------------- construction


def test_params_tags_and_shapes_dense():
    l_in = InputLayer((None, 5))
    bn = BatchNormLayer(l_in, name="bn")
    assert bn.axes == (0,)
    assert [p.name for p in bn.get_params()] == ["bn.beta", "bn.gamma", "bn.mean", "bn.inv_std"]
    assert bn.get_params(trainable=True) == [bn.beta, bn.gamma]
    assert bn.get_params(regularizable=True) == [bn.gamma]
    assert bn.get_params(batch_norm_stat=True) == [bn.mean, bn.inv_std]
    assert bn.get_params(trainable=False) == [bn.mean, bn.inv_std]
    for p, value in [(bn.beta, 0), (bn.gamma, 1), (bn.mean, 0), (bn.inv_std, 1)]:
        assert p.dtype == "float32"
        np.testing.assert_array_equal(p.get_value(), np.full(5, value, F32))
    assert bn.output_shape == (None, 5)
    assert bn.get_output_kwargs == [
        "batch_norm_use_averages",
        "batch_norm_update_averages",
        "batch_norm_groups",
    ]
    assert (bn.epsilon, bn.alpha) == (1e-4, 0.1)


@pytest.mark.parametrize(
    ("shape", "axes", "expected_axes", "param_shape"),
    [
        ((None, 3, 4, 5), "auto", (0, 2, 3), (3,)),
        ((None, 6, 4), (0, 1), (0, 1), (4,)),
        ((None, 6, 4), 0, (0,), (6, 4)),
        ((7, None, 4), (-2, 0), (1, 0), (4,)),
        ((None, 3), [0, 1], (0, 1), ()),
    ],
)
def test_axes_forms(shape, axes, expected_axes, param_shape):
    bn = BatchNormLayer(shape, axes=axes)
    assert bn.axes == expected_axes
    for p in bn.get_params():
        assert p.get_value().shape == param_shape


def test_beta_gamma_none_are_omitted():
    bn = BatchNormLayer((None, 4), beta=None, gamma=None)
    assert bn.beta is None and bn.gamma is None
    assert bn.get_params() == [bn.mean, bn.inv_std]
    assert bn.get_params(trainable=True) == []
    bn = BatchNormLayer((None, 4), gamma=None)
    assert bn.get_params(trainable=True) == [bn.beta]


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragment"),
    [
        ({"incoming": (None, None)}, ValueError, "known size"),
        ({"incoming": (None, 3, None, 4), "axes": (0, 3)}, ValueError, "known size"),
        ({"axes": (0, 2)}, ValueError, "out of range"),
        ({"axes": -3}, ValueError, "out of range"),
        ({"axes": (0, 0)}, ValueError, "same axis twice"),
        ({"axes": "all"}, ValueError, "'all'"),
        ({"axes": 1.5}, TypeError, "1.5"),
        ({"incoming": (5,)}, ValueError, "axes='auto'"),
        ({"alpha": 1.5}, ValueError, "1.5"),
        ({"alpha": -0.1}, ValueError, "-0.1"),
        ({"epsilon": -1.0}, ValueError, "-1.0"),
        ({"nonlinearity": nonlinearities.identity}, TypeError, "nonlinearity"),
    ],
)
def test_bad_arguments_name_the_layer(kwargs, exc, fragment):
    kwargs = {"incoming": (None, 3), **kwargs}
    with pytest.raises(exc, match="BatchNormLayer") as info:
        BatchNormLayer(name="my_bn", **kwargs)
    assert "my_bn" in str(info.value)
    assert fragment in str(info.value)


def test_bad_flag_type_and_wrong_ndim_raise():
    bn = BatchNormLayer((None, 3), name="flags")
    x = pt.matrix()
    with pytest.raises(TypeError, match="flags.*batch_norm_use_averages.*'yes'"):
        bn.get_output_for(x, batch_norm_use_averages="yes")
    with pytest.raises(ValueError, match="flags.*expected an input of 2 dimensions"):
        bn.get_output_for(pt.tensor3())


def test_updates_hidden_in_default_update_when_collect_updates_is_none():
    """Training mode without a dict (Lasagne's way): batch statistics, and every call of the
    compiled function moves the stored averages by itself (default_update)."""
    bn = BatchNormLayer((None, 3), epsilon=1e-3, alpha=0.25)
    start_mean = np.array([0.5, -1.0, 2.0], np.float32)
    start_inv = np.array([2.0, 0.5, 1.5], np.float32)
    bn.mean.set_value(start_mean)
    bn.inv_std.set_value(start_inv)
    x = pt.matrix()
    out = bn.get_output_for(x, collect_updates=None)
    f = pytensor.function([x], out)
    assert len(f.maker.fgraph.update_mapping) == 2  # the two averages, hidden in the graph
    data = np.random.default_rng(0).normal(2.0, 3.0, size=(9, 3)).astype(np.float32)
    d = data.astype(np.float64)
    mean, inv = start_mean.astype(np.float64), start_inv.astype(np.float64)
    for _ in range(2):
        y = f(data)
        mean = 0.75 * mean + 0.25 * d.mean(0)
        inv = 0.75 * inv + 0.25 / np.sqrt(d.var(0) + 1e-3)
    np.testing.assert_allclose(y, (d - d.mean(0)) / np.sqrt(d.var(0) + 1e-3), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.mean.get_value(), mean, rtol=1e-5)
    np.testing.assert_allclose(bn.inv_std.get_value(), inv, rtol=1e-5)
    # the same call with a dict collects exactly the two averages and hides nothing
    collected = {}
    out = bn.get_output_for(x, collect_updates=collected)
    assert list(collected) == [bn.mean, bn.inv_std]
    assert pytensor.function([x], out).maker.fgraph.update_mapping == {}


# --------------------------------------------------------------------------- the two flags

FLAG_CASES = list(itertools.product([False, True], [None, True, False], [None, True, False]))
ALPHA = 0.3


@pytest.fixture(scope="module")
def flag_results():
    """Every (deterministic, use_averages, update_averages) case, in one compiled function."""
    rng = np.random.default_rng(1)
    beta, gamma, mean, inv_std = stats_arrays(rng, 5)
    l_in = InputLayer((None, 5))
    bn = BatchNormLayer(l_in, alpha=ALPHA, beta=beta, gamma=gamma, mean=mean, inv_std=inv_std)
    outputs, layout = [], {}
    for det, use, upd in FLAG_CASES:
        out, updates = get_output(
            bn,
            deterministic=det,
            batch_norm_use_averages=use,
            batch_norm_update_averages=upd,
            return_updates=True,
        )
        assert out.dtype == "float32"
        layout[det, use, upd] = (len(outputs), list(updates))
        outputs.append(out)
        outputs.extend(updates.values())
    x = rng.normal(2.0, 3.0, (8, 5)).astype(F32)
    values = compile_fn([l_in.input_var], outputs)(x)
    stored = (beta, gamma, mean, inv_std)
    return bn, x, stored, layout, values


@pytest.mark.parametrize(("det", "use", "upd"), FLAG_CASES)
def test_output_and_updates_for_each_flag_combination(flag_results, det, use, upd):
    bn, x, (beta, gamma, mean, inv_std), layout, values = flag_results
    use_averages = det if use is None else use
    update_averages = (not det) if upd is None else upd
    start, updated = layout[det, use, upd]
    expected, batch_mean, batch_inv_std = bn_reference(
        x, (0,), beta, gamma, mean, inv_std, avg=use_averages
    )
    np.testing.assert_allclose(values[start], expected, rtol=1e-4, atol=1e-4)
    if update_averages:
        assert updated == [bn.mean, bn.inv_std]
        new_mean, new_inv_std = values[start + 1], values[start + 2]
        assert new_mean.dtype == new_inv_std.dtype == np.float32
        np.testing.assert_allclose(new_mean, (1 - ALPHA) * mean + ALPHA * batch_mean, rtol=1e-5)
        np.testing.assert_allclose(
            new_inv_std, (1 - ALPHA) * inv_std + ALPHA * batch_inv_std, rtol=1e-5
        )
    else:
        assert updated == []


# --------------------------------------------------------------------------- moving averages


def test_moving_averages_after_one_and_two_updates_conv_input():
    rng = np.random.default_rng(2)
    alpha = 0.25
    l_in = InputLayer((None, 3, 4, 5))
    bn = BatchNormLayer(l_in, alpha=alpha)
    out, updates = get_output(bn, return_updates=True)
    test_out = get_output(bn, deterministic=True)
    train = compile_fn([l_in.input_var], out, updates=updates)
    test = compile_fn([l_in.input_var], test_out)
    axes = (0, 2, 3)
    mean_ref, inv_std_ref = np.zeros(3), np.ones(3)
    for step in range(2):
        x = rng.normal(step - 1.0, 2.0 + step, (6, 3, 4, 5)).astype(F32)
        expected, batch_mean, batch_inv_std = bn_reference(x, axes, np.zeros(3), np.ones(3))
        np.testing.assert_allclose(train(x), expected, rtol=1e-4, atol=1e-4)
        mean_ref = (1 - alpha) * mean_ref + alpha * batch_mean
        inv_std_ref = (1 - alpha) * inv_std_ref + alpha * batch_inv_std
        assert bn.mean.get_value().dtype == bn.inv_std.get_value().dtype == np.float32
        np.testing.assert_allclose(bn.mean.get_value(), mean_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.inv_std.get_value(), inv_std_ref, rtol=1e-5)
    x = rng.normal(0.0, 1.0, (2, 3, 4, 5)).astype(F32)
    expected, _, _ = bn_reference(x, axes, None, None, mean_ref, inv_std_ref, avg=True)
    np.testing.assert_allclose(test(x), expected, rtol=1e-4, atol=1e-4)


def test_alpha_as_shared_variable_gives_cumulative_average():
    rng = np.random.default_rng(3)
    alpha = pytensor.shared(F32(1.0), name="alpha")
    l_in = InputLayer((None, 2))
    bn = BatchNormLayer(l_in, alpha=alpha)
    out, updates = get_output(bn, return_updates=True)
    train = compile_fn([l_in.input_var], out, updates=updates)
    batches = [rng.normal(3.0, 1.0, (4, 2)).astype(F32) for _ in range(3)]
    for n, x in enumerate(batches):
        alpha.set_value(F32(1.0 / (1 + n)))
        train(x)
    expected = np.mean([x.astype(np.float64).mean(axis=0) for x in batches], axis=0)
    np.testing.assert_allclose(bn.mean.get_value(), expected, rtol=1e-5)


# --------------------------------------------------------------------------- variants


@pytest.fixture(scope="module")
def variant_results():
    """Custom axes, beta/gamma None and the collection form of the flags, one compile."""
    rng = np.random.default_rng(4)
    cases, outputs, inputs, feeds = {}, [], [], []

    # custom axes on a 3-D input: statistics over batch and time, one per feature
    beta, gamma, mean, inv_std = stats_arrays(rng, 4)
    l3 = InputLayer((None, 6, 4))
    bn3 = BatchNormLayer(l3, axes=(0, 1), beta=beta, gamma=gamma, mean=mean, inv_std=inv_std)
    x3 = rng.normal(1.0, 2.0, (5, 6, 4)).astype(F32)
    cases["axes01"] = (len(outputs), bn_reference(x3, (0, 1), beta, gamma)[0])
    outputs.append(get_output(bn3, deterministic=False, batch_norm_update_averages=False))
    cases["axes01_det"] = (
        len(outputs),
        bn_reference(x3, (0, 1), beta, gamma, mean, inv_std, avg=True)[0],
    )
    outputs.append(get_output(bn3, deterministic=True))
    inputs.append(l3.input_var)
    feeds.append(x3)

    # a single int axis: one parameter per (channel, position)
    l_int = InputLayer((None, 3, 2))
    bn_int = BatchNormLayer(l_int, axes=0, epsilon=0.5)
    x_int = rng.normal(0.0, 1.0, (7, 3, 2)).astype(F32)
    cases["axis0"] = (len(outputs), bn_reference(x_int, (0,), eps=0.5)[0])
    outputs.append(get_output(bn_int, batch_norm_update_averages=False))
    inputs.append(l_int.input_var)
    feeds.append(x_int)

    # beta and gamma None
    _, _, mean, inv_std = stats_arrays(rng, 3)
    l_none = InputLayer((None, 3))
    bn_none = BatchNormLayer(l_none, beta=None, gamma=None, mean=mean, inv_std=inv_std)
    x_none = rng.normal(-2.0, 0.5, (6, 3)).astype(F32)
    cases["none_train"] = (len(outputs), bn_reference(x_none, (0,))[0])
    outputs.append(get_output(bn_none, batch_norm_update_averages=False))
    cases["none_det"] = (
        len(outputs),
        bn_reference(x_none, (0,), None, None, mean, inv_std, avg=True)[0],
    )
    outputs.append(get_output(bn_none, deterministic=True))
    inputs.append(l_none.input_var)
    feeds.append(x_none)

    # two stacked layers and the collection form of the flags
    s1, s2 = stats_arrays(rng, 4), stats_arrays(rng, 4)
    l_in = InputLayer((None, 4))
    bn1 = BatchNormLayer(l_in, name="bn1", beta=s1[0], gamma=s1[1], mean=s1[2], inv_std=s1[3])
    bn2 = BatchNormLayer(bn1, name="bn2", beta=s2[0], gamma=s2[1], mean=s2[2], inv_std=s2[3])
    xs = rng.normal(0.5, 2.0, (9, 4)).astype(F32)
    y1_avg = bn_reference(xs, (0,), *s1, avg=True)[0]
    y1_batch = bn_reference(xs, (0,), *s1)[0]
    cases["only_bn1"] = (len(outputs), bn_reference(y1_avg, (0,), *s2)[0])
    outputs.append(get_output(bn2, batch_norm_use_averages={bn1}, batch_norm_update_averages=False))
    cases["only_bn2"] = (len(outputs), bn_reference(y1_batch, (0,), *s2, avg=True)[0])
    outputs.append(get_output(bn2, batch_norm_use_averages=[bn2], batch_norm_update_averages=False))
    cases["both"] = (len(outputs), bn_reference(y1_avg, (0,), *s2, avg=True)[0])
    outputs.append(
        get_output(bn2, batch_norm_use_averages=(bn1, bn2), batch_norm_update_averages=False)
    )
    cases["neither"] = (len(outputs), bn_reference(y1_batch, (0,), *s2)[0])
    outputs.append(
        get_output(bn2, batch_norm_use_averages=frozenset(), batch_norm_update_averages=False)
    )
    # update only bn2, while bn1 uses its averages: bn2's statistics are those of y1_avg
    out, updates = get_output(
        bn2, batch_norm_use_averages={bn1}, batch_norm_update_averages={bn2}, return_updates=True
    )
    assert list(updates) == [bn2.mean, bn2.inv_std]
    _, m2, s2_batch = bn_reference(y1_avg, (0,))
    cases["update_bn2_mean"] = (len(outputs), 0.9 * s2[2] + 0.1 * m2)
    cases["update_bn2_inv_std"] = (len(outputs) + 1, 0.9 * s2[3] + 0.1 * s2_batch)
    outputs.extend(updates.values())
    inputs.append(l_in.input_var)
    feeds.append(xs)

    values = compile_fn(inputs, outputs)(*feeds)
    return {key: (values[index], expected) for key, (index, expected) in cases.items()}


@pytest.mark.parametrize(
    "case",
    [
        "axes01",
        "axes01_det",
        "axis0",
        "none_train",
        "none_det",
        "only_bn1",
        "only_bn2",
        "both",
        "neither",
        "update_bn2_mean",
        "update_bn2_inv_std",
    ],
)
def test_variants_match_reference(variant_results, case):
    actual, expected = variant_results[case]
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- batch_norm()


def test_batch_norm_structure_named():
    l_in = InputLayer((None, 6))
    dense = DenseLayer(l_in, 4, nonlinearity=nonlinearities.rectify, name="fc")
    top = batch_norm(dense, alpha=0.2)
    assert isinstance(top, NonlinearityLayer)
    assert top.name == "fc_bn_nonlin"
    assert top.nonlinearity is nonlinearities.rectify
    bn = top.input_layer
    assert isinstance(bn, BatchNormLayer)
    assert bn.name == "fc_bn" and bn.alpha == 0.2
    assert bn.input_layer is dense
    assert dense.nonlinearity is nonlinearities.identity
    assert dense.b is None
    assert list(dense.params) == [dense.W]
    assert get_all_params(top) == [dense.W, bn.beta, bn.gamma, bn.mean, bn.inv_std]
    assert [p.name for p in bn.get_params()] == ["fc_bn.beta", "fc_bn.gamma"] + [
        "fc_bn.mean",
        "fc_bn.inv_std",
    ]


def test_batch_norm_structure_unnamed_and_name_override():
    dense = DenseLayer(InputLayer((None, 3)), 2)
    top = batch_norm(dense)
    assert top.name is None and top.input_layer.name is None
    dense = DenseLayer(InputLayer((None, 3)), 2, b=None, name="fc")
    top = batch_norm(dense, name="custom", beta=None)
    assert top.name == "custom_nonlin" and top.input_layer.name == "custom"
    assert top.input_layer.beta is None and dense.b is None


def test_batch_norm_without_nonlinearity_returns_bn_layer():
    l_in = InputLayer((None, 3), name="in")
    top = batch_norm(l_in)
    assert isinstance(top, BatchNormLayer)
    assert top.name == "in_bn" and top.input_layer is l_in


def test_batch_norm_output_matches_reference():
    rng = np.random.default_rng(5)
    w = rng.normal(0.0, 1.0, (6, 4)).astype(F32)
    l_in = InputLayer((None, 6))
    dense = DenseLayer(l_in, 4, W=w, b=init.Constant(5.0), nonlinearity=nonlinearities.rectify)
    top = batch_norm(dense)
    x = rng.normal(0.0, 1.0, (10, 6)).astype(F32)
    out = compile_fn([l_in.input_var], get_output(top, batch_norm_update_averages=False))(x)
    expected = np.maximum(bn_reference(x.astype(np.float64) @ w, (0,), np.zeros(4), 1.0)[0], 0)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((6, 3), "auto"), ((3, 2, 2, 3), "auto"), ((4, 3, 2), (0, 2))],
)
def test_gradients_wrt_input_beta_gamma_float64(shape, axes):
    rng = np.random.default_rng(6)
    probe = BatchNormLayer(shape, axes=axes)
    n = probe.mean.get_value().shape

    def bn_train(x, beta, gamma):
        layer = BatchNormLayer(shape, axes=axes, beta=beta, gamma=gamma)
        return layer.get_output_for(x)

    x = rng.normal(1.0, 2.0, shape)
    beta = rng.normal(0.0, 1.0, n)
    gamma = rng.uniform(0.5, 2.0, n)
    verify_grad(bn_train, [x, beta, gamma], rng=rng, n_tests=1, mode="FAST_COMPILE")


def test_gradient_check_catches_a_wrong_gradient():
    """verify_grad is a real oracle here: a stop-gradient on the batch mean is caught."""
    rng = np.random.default_rng(7)

    def wrong(x):
        mean = pytensor.gradient.disconnected_grad(x.mean(axis=0))
        return (x - mean) / pt.sqrt(x.var(axis=0) + 1e-4)

    with pytest.raises(GradientError):
        verify_grad(wrong, [rng.normal(size=(5, 2))], rng=rng, n_tests=1, mode="FAST_COMPILE")


@pytest.fixture(scope="module")
def forward_backward():
    """BN output, moving-average update and gradients on a conv-shaped input."""
    rng = np.random.default_rng(8)
    beta, gamma, _, _ = stats_arrays(rng, 3)
    l_in = InputLayer((None, 3, 4, 4))
    bn = BatchNormLayer(l_in, beta=beta, gamma=gamma)
    out, updates = get_output(bn, return_updates=True)
    w = rng.normal(0.0, 1.0, (5, 3, 4, 4)).astype(F32)
    loss = pt.sum(out * w)
    grads = pytensor.grad(loss, [l_in.input_var, bn.beta, bn.gamma])
    outputs = [out, updates[bn.mean], *grads]
    x = rng.normal(1.5, 2.0, (5, 3, 4, 4)).astype(F32)
    return l_in, outputs, x, w, beta, gamma


@pytest.fixture(scope="module")
def forward_backward_default(forward_backward):
    l_in, outputs, x, *_ = forward_backward
    return compile_fn([l_in.input_var], outputs)(x)


@pytest.fixture(scope="module")
def forward_backward_jax(forward_backward):
    l_in, outputs, x, *_ = forward_backward
    return compile_fn([l_in.input_var], outputs, mode="JAX")(x)


@pytest.mark.parametrize("mode", ["default", "jax"])
def test_forward_backward_matches_reference(request, forward_backward, mode):
    _, _, x, w, beta, gamma = forward_backward
    values = request.getfixturevalue(f"forward_backward_{mode}")
    axes = (0, 2, 3)
    y, batch_mean, _ = bn_reference(x, axes, beta, gamma)
    dx, dbeta, dgamma = bn_reference_grads(x, w, axes, gamma)
    expected = [y, 0.9 * 0 + 0.1 * batch_mean, dx, dbeta, dgamma]
    for actual, ref in zip(values, expected, strict=True):
        assert np.asarray(actual).dtype == np.float32
        np.testing.assert_allclose(actual, ref, rtol=2e-4, atol=2e-4)


def test_default_and_jax_modes_agree(forward_backward_default, forward_backward_jax):
    for a, b in zip(forward_backward_default, forward_backward_jax, strict=True):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-5)


def test_get_output_for_collects_into_given_dict():
    bn = BatchNormLayer((None, 2))
    updates = OrderedDict()
    bn.get_output_for(pt.matrix(), collect_updates=updates)
    assert list(updates) == [bn.mean, bn.inv_std]
    assert all(v.dtype == "float32" for v in updates.values())
    updates = OrderedDict()
    assert bn.get_output_for(pt.dmatrix(), collect_updates=updates).dtype == "float64"
    assert all(v.dtype == "float32" for v in updates.values())
    assert bn.get_output_for(pt.imatrix()).dtype == "float32"


@pytest.mark.parametrize("shape", [(12, 5), (8, 3, 2, 2)])
def test_ghost_groups_normalize_each_slice_by_its_own_statistics(shape):
    rng = np.random.default_rng(7)
    groups = 4 if shape[0] == 8 else 3
    x = (rng.normal(size=shape) * 3 + 2).astype(F32)
    bn = BatchNormLayer(
        InputLayer((shape[0], *shape[1:])),
        beta=rng.normal(size=shape[1]).astype(F32),
        gamma=rng.normal(size=shape[1]).astype(F32),
        alpha=0.25,
    )
    axes = bn.axes
    x_var = pt.tensor("x", dtype="float32", shape=(None,) * len(shape))
    ups = OrderedDict()
    out = bn.get_output_for(x_var, collect_updates=ups, batch_norm_groups=groups)
    fn = pytensor.function([x_var], [out, ups[bn.mean], ups[bn.inv_std]])
    got, new_mean, new_inv_std = fn(x)
    beta, gamma = bn.beta.get_value(), bn.gamma.get_value()
    parts = [bn_reference(s, axes, beta, gamma) for s in np.split(x, groups)]
    np.testing.assert_allclose(got, np.concatenate([p[0] for p in parts]), rtol=1e-5, atol=1e-5)
    want_mean, want_inv_std = np.zeros_like(parts[0][1]), np.ones_like(parts[0][2])
    for _, mean, inv_std in parts:  # one update per group, in order
        want_mean = 0.75 * want_mean + 0.25 * mean
        want_inv_std = 0.75 * want_inv_std + 0.25 * inv_std
    np.testing.assert_allclose(new_mean, want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_inv_std, want_inv_std, rtol=1e-5)


def test_ghost_groups_refuse_a_batch_that_does_not_split():
    bn = BatchNormLayer(InputLayer((10, 5)))
    with pytest.raises(ValueError, match="a batch of 10 does not split into 4"):
        get_output(bn, batch_norm_groups=4)


# --------------------------------------------------------------------------- Lasagne's hidden updates
def test_hidden_updates_move_the_averages_as_the_explicit_path_does():
    """Ported Lasagne code compiles only its optimizer's updates; the averages must still move."""
    from bntrain.nn import updates as nn_updates
    from bntrain.nn.utils import collect_shared_vars

    x_val = np.random.default_rng(11).normal(2.0, 3.0, (8, 3)).astype(F32)
    stats = {}
    for path in ("explicit", "hidden"):
        l_in = InputLayer((None, 3))
        bn = BatchNormLayer(l_in, alpha=0.3)
        if path == "explicit":
            out, bn_updates = get_output(bn, return_updates=True)
            assert all(v.default_update is None for v in collect_shared_vars(out))
        else:
            out, bn_updates = get_output(bn), {}
        loss = pt.sqr(out - 1).mean()
        ups = nn_updates.sgd(loss, get_all_params(bn, trainable=True), 0.1)
        f = pytensor.function([l_in.input_var], loss, updates={**ups, **bn_updates})
        for _ in range(2):
            f(x_val)
        stats[path] = bn.mean.get_value(), bn.inv_std.get_value()
    _, batch_mean, batch_inv_std = bn_reference(x_val, (0,))
    # two steps of s <- 0.7 s + 0.3 s_B from mean 0 and inv_std 1
    np.testing.assert_allclose(stats["hidden"][0], (1 - 0.7**2) * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(stats["hidden"][1], 0.7**2 + (1 - 0.7**2) * batch_inv_std, rtol=1e-5)
    for got, want in zip(stats["hidden"], stats["explicit"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_hidden_updates_only_where_averages_are_updated():
    from bntrain.nn.utils import collect_shared_vars

    bn = BatchNormLayer((None, 3))
    for kwargs, hidden in (
        ({}, True),
        ({"deterministic": True}, False),
        ({"batch_norm_update_averages": False}, False),
        ({"batch_norm_use_averages": True, "batch_norm_update_averages": True}, True),
    ):
        out = bn.get_output_for(pt.matrix(), **kwargs)
        found = [v for v in collect_shared_vars(out) if v.default_update is not None]
        assert len(found) == (2 if hidden else 0), kwargs

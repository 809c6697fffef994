"""Tests of the recurrent layers against float64 NumPy loops of their recurrences."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import bntrain.nn as lasagne
from bntrain.nn.layers import (
    BatchNormLayer,
    ConcatLayer,
    CustomRecurrentLayer,
    DenseLayer,
    Gate,
    GRULayer,
    InputLayer,
    LSTMLayer,
    RecurrentLayer,
    get_all_layers,
    get_all_params,
    get_output,
)

B, T, F, H = 2, 4, 3, 5
# a sequence that ends early and one with a gap: a masked step keeps the states
MASK = np.array([[1, 1, 1, 0], [1, 0, 1, 1]], dtype=np.float32)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _relu(a):
    return np.maximum(a, 0.0)


def _run(step, x, states, mask=None, backwards=False):
    """The reference loop: all outputs (aligned with x) and the final states."""
    outs = [None] * x.shape[1]
    order = range(x.shape[1] - 1, -1, -1) if backwards else range(x.shape[1])
    for t in order:
        new = step(x[:, t], *states)
        if mask is not None:
            keep = mask[:, t, None] != 0
            new = [np.where(keep, n, s) for n, s in zip(new, states, strict=True)]
        states = new
        outs[t] = states[0]
    return np.stack(outs, axis=1), states[0]


def _value(p):
    return np.asarray(p.get_value(), dtype=np.float64)


def _rnn_step(layer):
    W_x, W_h, b = (_value(p) for p in (layer.W_in_to_hid, layer.W_hid_to_hid, layer.b))
    return lambda x, h: [_relu(x @ W_x + h @ W_h + b)]


def _lstm_step(layer):
    g = {
        name: [_value(getattr(layer, f"{kind}_{name}")) for kind in ("W_in_to", "W_hid_to", "b")]
        for name in ("ingate", "forgetgate", "cell", "outgate")
    }
    w_ci, w_cf, w_co = (
        _value(getattr(layer, f"W_cell_to_{n}")) for n in ("ingate", "forgetgate", "outgate")
    )

    def act(name, x, h):
        W_x, W_h, b = g[name]
        return x @ W_x + h @ W_h + b

    def step(x, h, c):
        i = _sigmoid(act("ingate", x, h) + w_ci * c)
        f = _sigmoid(act("forgetgate", x, h) + w_cf * c)
        c_new = f * c + i * np.tanh(act("cell", x, h))
        o = _sigmoid(act("outgate", x, h) + w_co * c_new)
        return [o * np.tanh(c_new), c_new]

    return step


def _gru_step(layer):
    g = {
        name: [_value(getattr(layer, f"{kind}_{name}")) for kind in ("W_in_to", "W_hid_to", "b")]
        for name in ("resetgate", "updategate", "hidden_update")
    }

    def step(x, h):
        r = _sigmoid(x @ g["resetgate"][0] + h @ g["resetgate"][1] + g["resetgate"][2])
        u = _sigmoid(x @ g["updategate"][0] + h @ g["updategate"][1] + g["updategate"][2])
        W_x, W_h, b = g["hidden_update"]
        c = np.tanh(x @ W_x + r * (h @ W_h) + b)
        return [(1 - u) * h + u * c]

    return step


# variants of each layer, all sharing one set of parameters
VARIANTS = {
    "plain": {},
    "masked": {"mask": True},
    "backwards_masked": {"mask": True, "backwards": True},
    "final_backwards": {"only_return_final": True, "backwards": True, "mask": True},
    "unrolled": {"unroll_scan": True, "mask": True, "backwards": True},
    "in_loop_input": {"precompute_input": False, "mask": True},
    "hid_init_layer": {"hid_layer": True},
}


def _build(kind, l_in, l_mask, l_hid, l_cell, first, **options):
    """A layer of `kind`; after the first, each variant reuses the first one's parameters."""
    mask = options.pop("mask", False)
    hid_layer = options.pop("hid_layer", False)
    rng = np.random.default_rng(7)
    normal = lasagne.init.Normal(0.5, rng=rng)
    kw = {"mask_input": l_mask if mask else None, **options}
    if kind == "rnn":
        src = first or {}
        layer = RecurrentLayer(
            l_in, H,
            W_in_to_hid=src.get("W_x", normal), W_hid_to_hid=src.get("W_h", normal),
            b=src.get("b", normal), hid_init=l_hid if hid_layer else src.get("hid", normal),
            **kw,
        )  # fmt: skip
        return layer, {"W_x": layer.W_in_to_hid, "W_h": layer.W_hid_to_hid, "b": layer.b,
                       "hid": layer.hid_init}  # fmt: skip
    names = ("ingate", "forgetgate", "cell", "outgate") if kind == "lstm" else (
        "resetgate", "updategate", "hidden_update")  # fmt: skip
    gates = {}
    for name in names:
        if first is None:
            w_cell = normal if kind == "lstm" and name != "cell" else None
            nl = lasagne.nonlinearities.tanh if name in ("cell", "hidden_update") else (
                lasagne.nonlinearities.sigmoid)  # fmt: skip
            gates[name] = Gate(normal, normal, w_cell, normal, nl)
        else:
            gates[name] = first["gates"][name]
    inits = {"hid_init": l_hid if hid_layer else (first or {}).get("hid", normal)}
    if kind == "lstm":
        inits["cell_init"] = l_cell if hid_layer else (first or {}).get("cell", normal)
        layer = LSTMLayer(l_in, H, **gates, **inits, **kw)
    else:
        layer = GRULayer(l_in, H, **gates, **inits, **kw)
    shared = {}
    for name in names:
        w_cell = getattr(layer, f"W_cell_to_{name}", None)
        shared[name] = Gate(
            getattr(layer, f"W_in_to_{name}"), getattr(layer, f"W_hid_to_{name}"), w_cell,
            getattr(layer, f"b_{name}"), getattr(layer, f"nonlinearity_{name}"),
        )  # fmt: skip
    state = {"gates": shared, "hid": layer.hid_init}
    if kind == "lstm":
        state["cell"] = layer.cell_init
    return layer, state


@pytest.fixture(scope="module", params=["rnn", "lstm", "gru"])
def case(request):
    """All variants of one layer kind, compiled into one function, and their inputs."""
    kind = request.param
    l_in = InputLayer((B, T, F), name="x")
    l_mask = InputLayer((B, T), name="mask")
    l_hid = InputLayer((B, H), name="h0")
    l_cell = InputLayer((B, H), name="c0")
    layers, first = {}, None
    for name, options in VARIANTS.items():
        layers[name], state = _build(kind, l_in, l_mask, l_hid, l_cell, first, **options)
        first = first or state
    names = list(layers)
    inputs = [l.input_var for l in (l_in, l_mask, l_hid, l_cell)]
    outputs = get_output([layers[n] for n in names])
    fn = pytensor.function(inputs, outputs, on_unused_input="ignore")
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(v.type.shape).astype(np.float32) for v in inputs]
    values[1] = MASK
    return {
        "kind": kind,
        "layers": layers,
        "inputs": inputs,
        "outputs": outputs,
        "values": values,
        "results": dict(zip(names, fn(*values), strict=True)),
        "fn": fn,
    }


def _reference(case, name):
    layer = case["layers"]["plain"]
    options = VARIANTS[name]
    x, mask, h0, c0 = (np.asarray(v, dtype=np.float64) for v in case["values"])
    step = {"rnn": _rnn_step, "lstm": _lstm_step, "gru": _gru_step}[case["kind"]](layer)
    if not options.get("hid_layer"):
        h0 = np.repeat(_value(layer.hid_init), B, axis=0)
        if case["kind"] == "lstm":
            c0 = np.repeat(_value(layer.cell_init), B, axis=0)
    states = [h0, c0] if case["kind"] == "lstm" else [h0]
    out, final = _run(
        step, x, states, mask if options.get("mask") else None, options.get("backwards", False)
    )
    return final if options.get("only_return_final") else out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_matches_numpy_loop(case, name):
    expected = _reference(case, name)
    got = case["results"][name]
    assert got.shape == expected.shape == case["layers"][name].output_shape
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


def test_float32_graph(case):
    """float32 inputs and parameters give a float32 graph, with nothing computed in float64."""
    assert all(r.dtype == np.float32 for r in case["results"].values())
    wide = [
        v for v in case["fn"].maker.fgraph.variables if getattr(v.type, "dtype", None) == "float64"
    ]
    assert wide == []


def test_jax_matches_default_mode():
    """Forward pass and parameter gradients in JAX mode equal those of the default mode."""
    pytest.importorskip("jax")
    l_in = InputLayer((B, T, F))
    l_mask = InputLayer((B, T))
    layers = [
        cls(l_in, 3, mask_input=l_mask, backwards=True, learn_init=True)
        for cls in (RecurrentLayer, LSTMLayer, GRULayer)
    ]
    outputs = get_output(layers)
    params = get_all_params(layers, trainable=True)
    grads = pytensor.grad(sum(out.sum() for out in outputs), params)
    inputs = [l_in.input_var, l_mask.input_var]
    rng = np.random.default_rng(1)
    values = [rng.standard_normal((B, T, F)).astype(np.float32), MASK]
    expected = pytensor.function(inputs, [*outputs, *grads])(*values)
    got = pytensor.function(inputs, [*outputs, *grads], mode="JAX")(*values)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-5, atol=1e-6)


def test_verify_grad_lstm_masked():
    """Finite differences through a masked, backwards LSTM with peepholes (float64)."""
    rng = np.random.default_rng(3)
    mask = pt.constant(MASK[:, :3].astype(np.float64))
    with pytensor.config.change_flags(floatX="float64"):
        l_in = InputLayer((B, 3, 2))
        l_mask = InputLayer((B, 3))

        def fn(x, w_hid):
            gate = Gate(W_hid=w_hid, W_cell=lasagne.init.Normal(0.5, rng=np.random.default_rng(4)))
            layer = LSTMLayer(
                l_in, 2, ingate=gate, forgetgate=gate, outgate=gate, mask_input=l_mask,
                backwards=True, learn_init=True,
            )  # fmt: skip
            return get_output(layer, {l_in: x, l_mask: mask})

        x = rng.standard_normal((B, 3, 2))
        w_hid = rng.standard_normal((2, 2))
        pytensor.gradient.verify_grad(fn, [x, w_hid], rng=rng, eps=1e-6)


def test_verify_grad_gru_unrolled():
    rng = np.random.default_rng(5)
    with pytensor.config.change_flags(floatX="float64"):
        l_in = InputLayer((B, 3, 2))

        def fn(x, w_in):
            gate = Gate(W_in=w_in, W_cell=None)
            layer = GRULayer(l_in, 2, resetgate=gate, updategate=gate, unroll_scan=True)
            return get_output(layer, x)

        x = rng.standard_normal((B, 3, 2))
        w_in = rng.standard_normal((2, 2))
        pytensor.gradient.verify_grad(fn, [x, w_in], rng=rng, eps=1e-6)


def test_gradient_steps_truncates_backpropagation():
    l_in = InputLayer((B, T, F))
    x = l_in.input_var
    grads = []
    for steps in (-1, 1):
        layer = RecurrentLayer(l_in, H, gradient_steps=steps, only_return_final=True,
                               W_hid_to_hid=lasagne.init.Normal(1.0, rng=np.random.default_rng(0)),
                               W_in_to_hid=lasagne.init.Normal(1.0, rng=np.random.default_rng(1)),
                               nonlinearity=lasagne.nonlinearities.tanh)  # fmt: skip
        grads.append(pytensor.grad(get_output(layer).sum(), x))
    x_val = np.random.default_rng(2).standard_normal((B, T, F)).astype(np.float32)
    full, truncated = pytensor.function([x], grads)(x_val)
    assert np.all(np.abs(full[:, :-1]).sum(axis=-1) > 0)
    np.testing.assert_array_equal(truncated[:, :-1], 0)
    np.testing.assert_allclose(truncated[:, -1], full[:, -1], rtol=1e-6)


def test_grad_clipping_clips_preactivation_gradient():
    """One step, identity nonlinearity: d(10 * sum(h))/db is 10 per sample, clipped to 1."""
    l_in = InputLayer((B, 1, F))
    grads = []
    for clip in (0, 1.0):
        layer = RecurrentLayer(l_in, H, nonlinearity=None, grad_clipping=clip)
        grads.append(pytensor.grad(10 * get_output(layer).sum(), layer.b))
    x_val = np.ones((B, 1, F), dtype=np.float32)
    free, clipped = pytensor.function([l_in.input_var], grads)(x_val)
    np.testing.assert_allclose(free, np.full(H, 10.0 * B))
    np.testing.assert_allclose(clipped, np.full(H, 1.0 * B))


def test_custom_recurrent_layer_equals_dense_recurrence():
    """Networks given as CustomRecurrentLayer give the RecurrentLayer they spell out."""
    l_in = InputLayer((B, T, F))
    rnn = RecurrentLayer(l_in, H, b=lasagne.init.Normal(0.5, rng=np.random.default_rng(0)))
    i2h = DenseLayer(InputLayer((B, F)), H, W=rnn.W_in_to_hid, b=rnn.b, nonlinearity=None)
    h2h = DenseLayer(InputLayer((B, H)), H, W=rnn.W_hid_to_hid, b=None, nonlinearity=None)
    custom = CustomRecurrentLayer(l_in, i2h, h2h, hid_init=rnn.hid_init, precompute_input=False)
    x_val = np.random.default_rng(1).standard_normal((B, T, F)).astype(np.float32)
    a, b = pytensor.function([l_in.input_var], get_output([rnn, custom]))(x_val)
    expected, _ = _run(_rnn_step(rnn), x_val.astype(np.float64), [np.zeros((B, H))])
    np.testing.assert_allclose(a, expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_custom_recurrent_updates():
    """Updates of the precomputed input network are returned; inside the loop they are refused."""
    l_in = InputLayer((B, T, F))
    bn_in = BatchNormLayer(DenseLayer(InputLayer((None, F)), H, nonlinearity=None))
    plain_h = DenseLayer(InputLayer((None, H)), H, nonlinearity=None)
    layer = CustomRecurrentLayer(l_in, bn_in, plain_h)
    _, updates = get_output(layer, return_updates=True)
    assert set(updates) == {bn_in.mean, bn_in.inv_std}
    bn_h = BatchNormLayer(DenseLayer(InputLayer((None, H)), H, nonlinearity=None))
    with pytest.raises(ValueError, match="cannot be applied from inside the loop"):
        get_output(CustomRecurrentLayer(l_in, bn_in, bn_h), return_updates=True)
    # deterministic passes down and turns the updates off
    _, updates = get_output(
        CustomRecurrentLayer(l_in, bn_in, bn_h), return_updates=True, deterministic=True
    )
    assert not updates


def test_params_tags_and_names():
    l_in = InputLayer((2, 3, 4))
    lstm = LSTMLayer(l_in, 5, name="enc")
    trainable = {p.name for p in lstm.get_params(trainable=True)}
    gates = ("ingate", "forgetgate", "cell", "outgate")
    expected = {f"enc.{k}_{g}" for g in gates for k in ("W_in_to", "W_hid_to", "b")}
    expected |= {f"enc.W_cell_to_{g}" for g in ("ingate", "forgetgate", "outgate")}
    assert trainable == expected
    assert {p.name for p in lstm.get_params(trainable=False)} == {"enc.hid_init", "enc.cell_init"}
    assert {p.name for p in lstm.get_params(regularizable=False)} == {
        "enc.hid_init", "enc.cell_init", *(f"enc.b_{g}" for g in gates)
    }  # fmt: skip
    gru = GRULayer(l_in, 5, learn_init=True)
    assert "hid_init" in {p.name for p in gru.get_params(trainable=True)}
    rnn = RecurrentLayer(l_in, 5, name="r")
    assert [p.name for p in rnn.get_params(trainable=True)] == [
        "r.input_to_hidden.W", "r.input_to_hidden.b", "r.hidden_to_hidden.W"
    ]  # fmt: skip
    l_h = DenseLayer(InputLayer((2, 5)), 5)
    assert get_all_layers(GRULayer(l_in, 5, hid_init=l_h))[:3] == [l_in, l_h.input_layer, l_h]


def test_errors():
    l_in = InputLayer((2, None, 3))
    with pytest.raises(ValueError, match="needs the sequence length"):
        LSTMLayer(l_in, 5, unroll_scan=True)
    with pytest.raises(ValueError, match="gradient_steps must be -1 when unroll_scan"):
        GRULayer(InputLayer((2, 4, 3)), 5, unroll_scan=True, gradient_steps=2)
    with pytest.raises(ValueError, match="needs ingate.W_cell"):
        LSTMLayer(l_in, 5, ingate=Gate(W_cell=None))
    with pytest.raises(ValueError, match=r"must be \(batch_size, sequence_length"):
        RecurrentLayer(InputLayer((2, 3)), 5)
    with pytest.raises(ValueError, match="num_units must be positive"):
        GRULayer(l_in, 0)
    two_inputs = ConcatLayer([InputLayer((None, 3)), InputLayer((None, 3))])
    h2h = DenseLayer(InputLayer((None, 5)), 5)
    with pytest.raises(ValueError, match="`input_to_hidden` must have exactly one InputLayer"):
        CustomRecurrentLayer(l_in, DenseLayer(two_inputs, 5), h2h)
    with pytest.raises(ValueError, match="must agree after the first axis"):
        CustomRecurrentLayer(l_in, DenseLayer(InputLayer((None, 3)), 4), h2h)
    with pytest.raises(TypeError, match="unexpected keyword"):
        GRULayer(l_in, 5, nme="x")

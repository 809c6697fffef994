"""Tests of the pooling layers against a NumPy reference, in Python, Numba and JAX modes."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode
from pytensor.gradient import verify_grad

import bntrain.nn as lasagne
from bntrain.nn.layers import (
    Conv2DLayer,
    GlobalPoolLayer,
    InputLayer,
    MaxPool2DLayer,
    Pool2DLayer,
    get_output,
    pool_output_length,
)
from bntrain.nn.layers.pool import pool_2d

PY = Mode(linker="py", optimizer="fast_compile")
IN_SHAPE = (2, 3, 7, 8)
MODES = ("max", "average_inc_pad", "average_exc_pad")


def pool_reference(x, ws, st, pad, ignore_border, mode):
    """Window by window, clipping each window to the input (Theano's pool_2d semantics)."""
    oh, ow = (
        pool_output_length(x.shape[2 + i], ws[i], st[i], pad[i], ignore_border) for i in range(2)
    )
    out = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * st[0] - pad[0], j * st[1] - pad[1]
            window = x[:, :, max(r0, 0) : r0 + ws[0], max(c0, 0) : c0 + ws[1]]
            if mode == "max":
                out[:, :, i, j] = window.max(axis=(2, 3))
            elif mode == "average_inc_pad" and ignore_border:
                out[:, :, i, j] = window.sum(axis=(2, 3)) / (ws[0] * ws[1])
            else:  # exc_pad, and the clipped border windows of ignore_border=False
                out[:, :, i, j] = window.mean(axis=(2, 3))
    return out


def max_pool_grad_reference(x, ws, st, pad, ignore_border, g):
    """Gradient of sum(g * maxpool(x)): each window sends its weight to its argmax."""
    gx = np.zeros_like(x)
    for i in range(g.shape[2]):
        for j in range(g.shape[3]):
            r0, c0 = i * st[0] - pad[0], j * st[1] - pad[1]
            rs, cs = max(r0, 0), max(c0, 0)
            window = x[:, :, rs : r0 + ws[0], cs : c0 + ws[1]]
            flat = window.reshape(window.shape[:2] + (-1,)).argmax(axis=2)
            a, b = np.unravel_index(flat, window.shape[2:])
            for n in range(x.shape[0]):
                for c in range(x.shape[1]):
                    gx[n, c, rs + a[n, c], cs + b[n, c]] += g[n, c, i, j]
    return gx


def _combos():
    for ws, st, pad, ignore_border, mode in itertools.product(
        [(2, 2), (3, 2)], [None, (1, 1), (2, 3), (3, 3)], [(0, 0), (1, 1)], [True, False], MODES
    ):
        if ignore_border or pad == (0, 0):
            yield ws, st, pad, ignore_border, mode


COMBOS = list(_combos())


@pytest.fixture(scope="module")
def case():
    """Every combination as a layer on one input, compiled once with the Python linker."""
    rng = np.random.default_rng(0)
    l_in = InputLayer((None,) + IN_SHAPE[1:])
    layers = [Pool2DLayer(l_in, ws, st, pad, ib, mode) for ws, st, pad, ib, mode in COMBOS]
    fn = pytensor.function([l_in.input_var], get_output(layers), mode=PY)
    x = rng.standard_normal(IN_SHAPE).astype(np.float32)
    return {"layers": layers, "x": x, "outputs": fn(x), "fn": fn}


@pytest.mark.parametrize("index", range(len(COMBOS)), ids=[str(c) for c in COMBOS])
def test_pool_matches_numpy(case, index):
    ws, st, pad, ignore_border, mode = COMBOS[index]
    layer, got = case["layers"][index], case["outputs"][index]
    want = pool_reference(case["x"].astype(np.float64), ws, st or ws, pad, ignore_border, mode)
    assert got.dtype == np.float32
    assert layer.output_shape == (None, *want.shape[1:])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_float32_graph_has_no_float64(case):
    assert not [
        v for v in case["fn"].maker.fgraph.variables if getattr(v.type, "dtype", "") == "float64"
    ]


@pytest.mark.parametrize(
    ("ws", "st", "pad", "ignore_border"),
    [
        ((2, 2), (2, 2), (0, 0), True),
        ((3, 2), (2, 1), (1, 1), True),
        ((3, 3), (2, 2), (0, 0), False),
    ],
)
def test_max_pool_gradient(ws, st, pad, ignore_border):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(IN_SHAPE)  # distinct values: a unique argmax per window
    xs = pt.dtensor4()
    out = pool_2d(pt.specify_shape(xs, IN_SHAPE), ws, ignore_border, st, pad, "max")
    g = rng.standard_normal(pool_reference(x, ws, st, pad, ignore_border, "max").shape)
    grad = pytensor.grad((out * g).sum(), xs)
    got = pytensor.function([xs], grad, mode=PY)(x)
    np.testing.assert_allclose(
        got, max_pool_grad_reference(x, ws, st, pad, ignore_border, g), atol=1e-12
    )


@pytest.mark.parametrize(
    ("ws", "st", "pad", "ib"),
    [
        ((2, 2), (2, 2), (0, 0), True),
        ((3, 2), (2, 1), (1, 1), True),
        ((2, 3), (2, 2), (0, 0), False),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_verify_grad_float64(mode, ws, st, pad, ib):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 5, 6))
    verify_grad(lambda t: pool_2d(t, ws, ib, st, pad, mode), [x], rng=rng, mode=PY, eps=1e-6)


@pytest.fixture(scope="module")
def backend_case():
    """Reshape-form and strided-view pooling with gradients, in three modes (one compile each)."""
    rng = np.random.default_rng(3)
    l_in = InputLayer((None, 2, 9, 8))
    pools = [
        MaxPool2DLayer(l_in, 2),  # reshape form, cropped border
        MaxPool2DLayer(l_in, 3, stride=2, pad=1),  # strided views with -inf padding
        Pool2DLayer(l_in, (2, 3), stride=(1, 2), pad=(1, 1), mode="average_exc_pad"),
    ]
    outs = get_output(pools)
    cost = sum((o * pt.cos(o)).sum() for o in outs)
    grad = pytensor.grad(cost, l_in.input_var)
    x = rng.standard_normal((4, 2, 9, 8)).astype(np.float32)
    results = {}
    for name, mode in [("py", PY), ("NUMBA", "NUMBA"), ("JAX", "JAX")]:
        fn = pytensor.function([l_in.input_var], [*outs, grad], mode=mode)
        results[name] = [np.asarray(r) for r in fn(x)]
    return pools, results


@pytest.mark.parametrize("mode", ["NUMBA", "JAX"])
def test_backends_agree(backend_case, mode):
    pools, results = backend_case
    for layer, got in zip(pools, results[mode], strict=False):
        assert got.shape[1:] == layer.output_shape[1:]
    for got, want in zip(results[mode], results["py"], strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_pool_network_compiles_in_jax():
    # JAX needs constant reshape sizes: the layers pin the channel count they know
    rng = np.random.default_rng(5)
    l_in = InputLayer((None, 2, 8, 8))
    conv = Conv2DLayer(l_in, 3, 3, pad="same", W=lasagne.init.Normal(1.0, rng=rng))
    pool = Pool2DLayer(conv, 2, mode="average_inc_pad")
    out = get_output(pool)
    grads = pytensor.grad((out * pt.cos(out)).sum(), [l_in.input_var, conv.W])
    x = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    got = pytensor.function([l_in.input_var], [out, *grads], mode="JAX")(x)
    want = pytensor.function([l_in.input_var], [out, *grads], mode=PY)(x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((7, 2, 2, 0, True), 3),
        ((7, 2, 2, 0, False), 4),
        ((7, 3, 1, 0, False), 5),
        ((2, 3, 1, 0, False), 1),
        ((7, 3, 2, 1, True), 4),
        ((8, 2, 3, 0, False), 3),
        ((None, 2, 2, 0, True), None),
    ],
)
def test_pool_output_length(args, expected):
    assert pool_output_length(*args) == expected


def test_pool_output_length_rejects_pad_without_ignore_border():
    with pytest.raises(ValueError, match="pad must be 0 with ignore_border=False, got pad=1"):
        pool_output_length(7, 2, 2, 1, False)


def test_attributes_as_lasagne():
    layer = MaxPool2DLayer((None, 3, 8, 8), 3, name="p")
    assert (layer.pool_size, layer.stride, layer.pad, layer.ignore_border, layer.mode) == (
        (3, 3),
        (3, 3),
        (0, 0),
        True,
        "max",
    )
    assert Pool2DLayer((None, 3, 8, 8), (2, 3), stride=1, pad=1, mode="average_exc_pad").stride == (
        1,
        1,
    )
    assert isinstance(lasagne.layers.MaxPool2DLayer((None, 1, 4, 4), 2), lasagne.layers.Pool2DLayer)
    for k in (1, 2, 3):
        max_pool = getattr(lasagne.layers, f"MaxPool{k}DLayer")
        layer = max_pool((None, 1) + (4,) * k, 2, pad=1)
        assert isinstance(layer, getattr(lasagne.layers, f"Pool{k}DLayer"))
        assert (layer.mode, layer.pad, layer.stride) == ("max", (1,) * k, (2,) * k)
        with pytest.raises(TypeError, match="mode"):
            max_pool((None, 1) + (4,) * k, 2, mode="max")


def test_pool_function_refuses_padding_without_ignore_border():
    with pytest.raises(ValueError, match=r"^pool: mode must be one of .* got 'sum'"):
        pool_2d(pt.tensor4(), (2, 2), mode="sum")
    with pytest.raises(
        ValueError, match=r"^pool: pad must be \(0, 0\) with ignore_border=False, got \(1, 0\)"
    ):
        pool_2d(pt.tensor4(), (2, 2), ignore_border=False, pad=(1, 0))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (dict(pool_size=0), ValueError, "pool_size must be >= 1, got 0"),
        (dict(pool_size=2, stride=(1, -1)), ValueError, r"stride must be >= 1, got \(1, -1\)"),
        (dict(pool_size=2, pad=-1), ValueError, "pad must be >= 0, got -1"),
        (
            dict(pool_size=2, pad=2),
            ValueError,
            r"pad \(2, 2\) must be smaller than pool_size \(2, 2\)",
        ),
        (
            dict(pool_size=3, pad=1, ignore_border=False),
            ValueError,
            r"pad must be \(0, 0\) with ignore_border=False, got \(1, 1\)",
        ),
        (dict(pool_size=2, mode="sum"), ValueError, r"mode must be one of .* got 'sum'"),
        (
            dict(pool_size=9),
            ValueError,
            r"input shape \(None, 3, 8, 8\) is smaller than pool_size \(9, 9\)",
        ),
        (
            dict(pool_size=(2, 2, 2)),
            ValueError,
            r"pool_size must be an int or a pair of ints, got \(2, 2, 2\)",
        ),
        (
            dict(pool_size=2, ignore_borders=True),
            TypeError,
            "unexpected keyword argument.*'ignore_borders'",
        ),
    ],
)
def test_misuse_names_layer_and_value(kwargs, error, pattern):
    with pytest.raises(error, match=r"Pool2DLayer\(name='p'\): " + pattern):
        Pool2DLayer((None, 3, 8, 8), name="p", **kwargs)


def test_wrong_input_ndim():
    with pytest.raises(
        ValueError,
        match=r"MaxPool2DLayer\(name='p'\).*input shape \(None, 8\)\. Expected 4 input dimensions",
    ):
        MaxPool2DLayer((None, 8), 2, name="p")
    layer = MaxPool2DLayer((None, 3, 8, 8), 2, name="p")
    with pytest.raises(
        ValueError, match=r"MaxPool2DLayer\(name='p'\): expected a 4-dimensional input, got ndim=3"
    ):
        layer.get_output_for(pt.tensor3())


def test_global_pool_layer():
    rng = np.random.default_rng(4)
    x4 = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x3 = rng.standard_normal((2, 3, 6)).astype(np.float32)
    mean4 = GlobalPoolLayer((None, 3, 4, 5))
    max4 = GlobalPoolLayer((None, 3, 4, 5), pool_function=pt.max)
    mean3 = GlobalPoolLayer((None, 3, 6))
    assert mean4.output_shape == (None, 3) and mean3.output_shape == (None, 3)
    v4, v3 = pt.tensor4(), pt.tensor3()
    fn = pytensor.function(
        [v4, v3],
        [mean4.get_output_for(v4), max4.get_output_for(v4), mean3.get_output_for(v3)],
        mode=PY,
    )
    got_mean4, got_max4, got_mean3 = fn(x4, x3)
    np.testing.assert_allclose(got_mean4, x4.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_max4, x4.max(axis=(2, 3)))
    np.testing.assert_allclose(got_mean3, x3.mean(axis=2), rtol=1e-5, atol=1e-6)


def test_global_pool_misuse():
    with pytest.raises(
        ValueError,
        match=r"GlobalPoolLayer\(name='g'\): needs an input with at least 3 dimensions.*\(None, 3\)",
    ):
        GlobalPoolLayer((None, 3), name="g").output_shape  # noqa: B018
    with pytest.raises(
        TypeError, match=r"GlobalPoolLayer\(name='g'\): pool_function must be callable, got 'mean'"
    ):
        GlobalPoolLayer((None, 3, 4), pool_function="mean", name="g")

"""Tests of DropoutLayer: mask statistics, rescaling, shared axes, seeding, updates, JAX."""

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import bntrain.nn as lasagne
from bntrain.nn.layers import (
    DropoutLayer,
    InputLayer,
    dropout,
    dropout_channels,
    dropout_locations,
    get_output,
    spatial_dropout,
)

SHAPE = (64, 8, 6, 5)  # 15360 values: binomial std of the kept fraction ~0.004


@pytest.fixture(scope="module")
def net():
    l_in = InputLayer((None,) + SHAPE[1:])
    p_shared = pytensor.shared(np.float32(0.25), name="p")
    layers = {
        "p30": DropoutLayer(l_in, p=0.3, rng=0),
        "p30_again": DropoutLayer(l_in, p=0.3, rng=0),
        "p30_seed1": DropoutLayer(l_in, p=0.3, rng=1),
        "no_rescale": DropoutLayer(l_in, p=0.6, rescale=False, rng=2),
        "shared_23": DropoutLayer(l_in, p=0.5, shared_axes=(2, 3), rng=3),
        "shared_neg": DropoutLayer(l_in, p=0.5, shared_axes=(0, -1), rng=4),
        "symbolic_p": DropoutLayer(l_in, p=p_shared, rng=5),
    }
    names = list(layers)
    outputs, updates = get_output([layers[n] for n in names], return_updates=True)
    x = np.random.default_rng(9).uniform(0.5, 1.5, SHAPE).astype(np.float32)
    return {
        "l_in": l_in,
        "layers": layers,
        "names": names,
        "outputs": outputs,
        "updates": updates,
        "x": x,
    }


@pytest.fixture(scope="module")
def compiled(net):
    fn = pytensor.function([net["l_in"].input_var], net["outputs"], updates=net["updates"])
    first = dict(zip(net["names"], fn(net["x"]), strict=True))
    second = dict(zip(net["names"], fn(net["x"]), strict=True))
    return {"fn": fn, "first": first, "second": second}


def test_updates_registered_for_every_layer(net):
    assert list(net["updates"]) == [net["layers"][n].rng for n in net["names"]]


@pytest.mark.parametrize(("key", "p"), [("p30", 0.3), ("no_rescale", 0.6), ("symbolic_p", 0.25)])
def test_kept_fraction_and_rescale(net, compiled, key, p):
    x = net["x"]
    out = compiled["first"][key]
    assert out.dtype == np.float32 and out.shape == SHAPE
    kept = out != 0
    assert abs(kept.mean() - (1 - p)) < 0.02
    scale = 1.0 if key == "no_rescale" else 1 / (1 - p)
    np.testing.assert_allclose(out[kept], x[kept] * scale, rtol=1e-6)


@pytest.mark.parametrize(("key", "axes"), [("shared_23", (2, 3)), ("shared_neg", (0, 3))])
def test_shared_axes_broadcast_the_mask(compiled, key, axes):
    mask = compiled["first"][key] != 0
    first = mask[tuple(slice(0, 1) if a in axes else slice(None) for a in range(mask.ndim))]
    np.testing.assert_array_equal(mask, np.broadcast_to(first, mask.shape))
    assert 0.4 < first.mean() < 0.6  # still random across the other axes


def test_same_seed_same_masks_other_seed_other_masks(compiled):
    first = compiled["first"]
    np.testing.assert_array_equal(first["p30"], first["p30_again"])
    assert not np.array_equal(first["p30"], first["p30_seed1"])


def test_each_call_draws_a_new_mask(net, compiled):
    for key in net["names"]:
        assert not np.array_equal(compiled["first"][key], compiled["second"][key]), key
    # The two same-seeded layers advance in step.
    np.testing.assert_array_equal(compiled["second"]["p30"], compiled["second"]["p30_again"])


def test_compiled_graph_stays_float32(compiled):
    f64 = [
        v
        for v in compiled["fn"].maker.fgraph.variables
        if getattr(v.type, "dtype", "") == "float64"
    ]
    assert f64 == []


def test_checkpoint_round_trip_reproduces_next_mask(net, compiled):
    layer = net["layers"]["p30"]
    state = layer.rng.get_value(borrow=True).bit_generator.state
    fn = compiled["fn"]
    index = net["names"].index("p30")
    expected = fn(net["x"])[index]
    restored = np.random.default_rng()
    restored.bit_generator.state = state
    layer.rng.set_value(restored)
    np.testing.assert_array_equal(fn(net["x"])[index], expected)


def test_jax_mode_draws_new_masks_per_call(net):
    layer = net["layers"]["p30"]
    out, updates = get_output(layer, return_updates=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The RandomType SharedVariables")
        fn = pytensor.function([net["l_in"].input_var], out, updates=updates, mode="JAX")
    first, second = fn(net["x"]), fn(net["x"])
    for got in (first, second):
        assert got.dtype == np.float32
        kept = got != 0
        assert abs(kept.mean() - 0.7) < 0.02
        np.testing.assert_allclose(got[kept], net["x"][kept] / np.float32(0.7), rtol=1e-6)
    assert not np.array_equal(first, second)


def test_deterministic_and_p0_are_identity(net):
    x = net["l_in"].input_var
    for layer in net["layers"].values():
        assert get_output(layer, deterministic=True) is x
    updates = {}
    assert DropoutLayer(net["l_in"], p=0.0).get_output_for(x, collect_updates=updates) is x
    assert updates == {}


def test_direct_call_without_updates():
    layer = DropoutLayer((3, 4), rng=0)
    x = pt.matrix()
    out = layer.get_output_for(x)
    assert out.dtype == "float32" and out.ndim == 2
    updates = {}
    layer.get_output_for(x, collect_updates=updates)
    assert list(updates) == [layer.rng]


def test_rng_from_generator_and_global_rng():
    def state(layer):
        return layer.rng.get_value(borrow=True).bit_generator.state["state"]

    a = DropoutLayer((2, 3), rng=np.random.default_rng(5))
    b = DropoutLayer((2, 3), rng=np.random.default_rng(5))
    assert state(a) == state(b)
    gen = np.random.default_rng(5)
    c, d = DropoutLayer((2, 3), rng=gen), DropoutLayer((2, 3), rng=gen)
    assert state(c) == state(a) and state(d) != state(c)
    assert DropoutLayer((2, 3), rng=np.random.RandomState(1)).rng.get_value() is not None
    saved = lasagne.random.get_rng()
    try:
        lasagne.random.set_rng(np.random.default_rng(11))
        e = DropoutLayer((2, 3))
        lasagne.random.set_rng(np.random.default_rng(11))
        f = DropoutLayer((2, 3))
        g = DropoutLayer((2, 3))
    finally:
        lasagne.random.set_rng(saved)
    assert state(e) == state(f) != state(g)


def test_params_and_names():
    layer = DropoutLayer((2, 3), name="drop", rng=0)
    assert layer.get_params() == []
    assert layer.rng.name == "drop.rng"
    assert layer.output_shape == (2, 3)
    assert isinstance(layer.rng.get_value(), np.random.Generator)


def test_aliases():
    assert dropout is DropoutLayer and spatial_dropout is dropout_channels
    assert dropout_channels((None, 3, 4, 5), p=0.2, rng=0).shared_axes == (2, 3)
    assert dropout_locations((None, 3, 4, 5), rng=0).shared_axes == (1,)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"p": 1.5}, ValueError, "p=1.5"),
        ({"p": -0.1}, ValueError, "p=-0.1"),
        ({"p": 1.0}, ValueError, "p=1.0"),
        ({"p": "0.5"}, TypeError, "'0.5'"),
        ({"p": pt.vector()}, ValueError, "ndim=1"),
        ({"shared_axes": (3,)}, ValueError, r"contains 3"),
        ({"rng": "seed"}, TypeError, "'seed'"),
        ({"rng": -1}, TypeError, "-1"),
        ({"nmae": "x"}, TypeError, "'nmae'.*did you mean 'name'"),
    ],
)
def test_misuse(kwargs, exc, match):
    kwargs = {"name": "d", **kwargs} if "nmae" not in kwargs else kwargs
    with pytest.raises(exc, match=match) as info:
        DropoutLayer((None, 3, 4), **kwargs)
    assert "DropoutLayer" in str(info.value)
    if "name" in kwargs:
        assert "'d'" in str(info.value)


def test_p_one_allowed_without_rescale():
    layer = DropoutLayer((2, 3), p=1.0, rescale=False, rng=0)
    x = pt.matrix()
    out = layer.get_output_for(x)
    fn = pytensor.function([x], out, mode="FAST_COMPILE")
    np.testing.assert_array_equal(fn(np.ones((2, 3), np.float32)), np.zeros((2, 3), np.float32))


def test_hidden_generator_update_draws_a_fresh_mask_per_call():
    """Without return_updates the generator advances by itself (Lasagne's default_update)."""
    l_in = InputLayer((50, 40))
    layer = DropoutLayer(l_in, p=0.5, rng=3)
    f = pytensor.function([l_in.input_var], get_output(layer))
    x = np.ones((50, 40), dtype=np.float32)
    first, second = f(x), f(x)
    assert not np.array_equal(first, second)
    # and the explicit path starting from the same seed draws the same two masks
    layer2 = DropoutLayer(l_in, p=0.5, rng=3)
    out, updates = get_output(layer2, return_updates=True)
    g = pytensor.function([l_in.input_var], out, updates=updates)
    np.testing.assert_array_equal(g(x), first)
    np.testing.assert_array_equal(g(x), second)

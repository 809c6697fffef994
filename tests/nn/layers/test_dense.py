"""Tests of DenseLayer against a NumPy reference."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import bntrain.nn as lasagne
from bntrain.nn.layers import DenseLayer, InputLayer, get_output

SHAPE = (2, 3, 4, 5)


def _relu(x):
    return np.maximum(x, 0)


def _float64_vars(fn):
    return [v for v in fn.maker.fgraph.variables if getattr(v.type, "dtype", None) == "float64"]


@pytest.fixture(scope="module")
def case():
    """Several dense layers on one 4D input, compiled into a single function."""
    rng = np.random.default_rng(0)
    l_in = InputLayer((None,) + SHAPE[1:], name="in")
    init = lasagne.init.Normal(1.0, rng=np.random.default_rng(1))
    layers = {
        "default": DenseLayer(l_in, 7, W=init, b=lasagne.init.Normal(1.0, rng=rng)),
        "identity": DenseLayer(l_in, 6, W=init, nonlinearity=None),
        "nobias_tanh": DenseLayer(
            l_in, 3, W=init, b=None, nonlinearity=lasagne.nonlinearities.tanh
        ),
        "lead2": DenseLayer(l_in, 4, W=init, num_leading_axes=2),
        "lead_neg1": DenseLayer(l_in, 4, W=init, num_leading_axes=-1, nonlinearity=None),
        "lead_neg2": DenseLayer(l_in, 4, W=init, num_leading_axes=-2, nonlinearity=None),
    }
    names = list(layers)
    fn = pytensor.function([l_in.input_var], get_output([layers[n] for n in names]))
    x = rng.standard_normal(SHAPE).astype(np.float32)
    outputs = dict(zip(names, fn(x), strict=True))
    return {"layers": layers, "x": x, "outputs": outputs, "fn": fn}


def _reference(layer, x):
    lead = layer.num_leading_axes % x.ndim
    xf = x.reshape(x.shape[:lead] + (-1,))
    act = xf @ layer.W.get_value()
    if layer.b is not None:
        act = act + layer.b.get_value()
    nl = {
        lasagne.nonlinearities.rectify: _relu,
        lasagne.nonlinearities.identity: lambda a: a,
        lasagne.nonlinearities.tanh: np.tanh,
    }[layer.nonlinearity]
    return nl(act)


@pytest.mark.parametrize(
    "key", ["default", "identity", "nobias_tanh", "lead2", "lead_neg1", "lead_neg2"]
)
def test_output_matches_numpy(case, key):
    layer = case["layers"][key]
    got = case["outputs"][key]
    ref = _reference(layer, case["x"].astype(np.float64))
    assert got.dtype == np.float32
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # The static output shape agrees with the computed one (None where the batch is).
    assert layer.output_shape == (None,) + ref.shape[1:]


def test_graph_stays_float32(case):
    assert _float64_vars(case["fn"]) == []


@pytest.mark.parametrize(
    ("lead", "w_shape", "out_shape"),
    [
        (1, (60, 4), (None, 4)),
        (2, (20, 4), (None, 3, 4)),
        (3, (5, 4), (None, 3, 4, 4)),
        (-1, (5, 4), (None, 3, 4, 4)),
        (-2, (20, 4), (None, 3, 4)),
        (-3, (60, 4), (None, 4)),
    ],
)
def test_param_and_output_shapes(lead, w_shape, out_shape):
    layer = DenseLayer((None, 3, 4, 5), 4, num_leading_axes=lead)
    assert layer.W.get_value().shape == w_shape
    assert layer.b.get_value().shape == (4,)
    assert layer.output_shape == out_shape
    assert layer.get_output_shape_for((7, 3, 4, 5)) == (7,) + out_shape[1:]


def test_defaults_are_lasagnes():
    layer = DenseLayer((None, 10), 5)
    assert layer.nonlinearity is lasagne.nonlinearities.rectify
    assert layer.num_leading_axes == 1
    np.testing.assert_array_equal(layer.b.get_value(), np.zeros(5, np.float32))
    w = layer.W.get_value()
    assert w.dtype == np.float32 and layer.b.get_value().dtype == np.float32
    # GlorotUniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
    assert np.abs(w).max() <= np.sqrt(6 / 15) and np.abs(w).max() > 0


def test_param_tags_and_names():
    layer = DenseLayer((None, 10), 5, name="fc")
    # Lasagne's registration order: W, then b (checkpoints and optimizer slots follow it)
    assert layer.get_params() == [layer.W, layer.b]
    assert layer.get_params(trainable=True) == [layer.W, layer.b]
    assert list(layer.params) == [layer.W, layer.b]
    assert layer.get_params(regularizable=True) == [layer.W]
    assert layer.get_params(regularizable=False) == [layer.b]
    assert (layer.W.name, layer.b.name) == ("fc.W", "fc.b")
    no_bias = DenseLayer((None, 10), 5, b=None)
    assert no_bias.b is None and no_bias.get_params() == [no_bias.W]


def test_accepts_array_and_shared_params():
    w = np.arange(6, dtype=np.float64).reshape(3, 2)
    layer = DenseLayer((None, 3), 2, W=w)
    assert layer.W.dtype == "float32"
    shared_w = pytensor.shared(np.ones((3, 2), np.float32))
    assert DenseLayer((None, 3), 2, W=shared_w).W is shared_w


def test_direct_get_output_for_on_other_shape():
    layer = DenseLayer((None, 2, 3), 4, num_leading_axes=-1)
    out = layer.get_output_for(pt.tensor3())
    assert out.ndim == 3 and out.dtype == "float32"


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"num_units": 4, "num_leading_axes": 3}, ValueError, "num_leading_axes=3.*no trailing"),
        (
            {"num_units": 4, "num_leading_axes": -4},
            ValueError,
            "num_leading_axes=-4.*more trailing",
        ),
        ({"num_units": 0}, ValueError, "num_units must be positive, got 0"),
        ({"num_units": 2.5}, TypeError, "num_units must be an int, got 2.5"),
        ({"num_units": 4, "num_leading_axes": 1.0}, TypeError, "num_leading_axes must be an int"),
        ({"num_units": 4, "nonlinearity": "relu"}, TypeError, "nonlinearity must be callable"),
        ({"num_units": 4, "nme": "x"}, TypeError, "unexpected keyword.*'nme'.*did you mean 'name'"),
    ],
)
def test_misuse(kwargs, exc, match):
    name = kwargs.pop("nme", None)
    extra = {"nme": name} if name else {"name": "fc"}
    with pytest.raises(exc, match=match) as info:
        DenseLayer((None, 3, 4), **kwargs, **extra)
    assert "DenseLayer" in str(info.value)
    if name is None:
        assert "'fc'" in str(info.value)


def test_unknown_trailing_size_is_rejected():
    with pytest.raises(ValueError, match=r"DenseLayer\(name='fc'\).*\(None, 3, None\)"):
        DenseLayer((None, 3, None), 4, name="fc")
    # Unknown sizes among the leading axes are fine.
    assert DenseLayer((None, None, 3), 4, num_leading_axes=2).output_shape == (None, None, 4)


def test_wrong_W_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        DenseLayer((None, 4), 2, W=np.zeros((3, 2), np.float32))

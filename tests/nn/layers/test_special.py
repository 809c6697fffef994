"""Tests of NonlinearityLayer, BiasLayer and ScaleLayer against NumPy references."""

import numpy as np
import pytensor
import pytest

import bntrain.nn as lasagne
from bntrain.nn.layers import BiasLayer, InputLayer, NonlinearityLayer, ScaleLayer, get_output

SHAPE = (2, 3, 4, 5)


@pytest.fixture(scope="module")
def case():
    """Every layer variant on one 4D input, compiled into a single function."""
    rng = np.random.default_rng(0)

    def rand(shape):
        return rng.standard_normal(shape).astype(np.float32)

    l_in = InputLayer((None,) + SHAPE[1:])
    layers = {
        "nl_default": NonlinearityLayer(l_in),
        "nl_none": NonlinearityLayer(l_in, nonlinearity=None),
        "nl_sigmoid": NonlinearityLayer(l_in, lasagne.nonlinearities.sigmoid),
        "bias_auto": BiasLayer(l_in, b=rand((3,))),
        "bias_axes_0_1": BiasLayer(l_in, b=rand((4, 5)), shared_axes=(0, 1)),
        "bias_int_neg": BiasLayer(l_in, b=rand((3, 4, 5)), shared_axes=0),
        "bias_none": BiasLayer(l_in, b=None),
        "scale_auto": ScaleLayer(l_in, scales=rand((3,))),
        "scale_axes": ScaleLayer(l_in, scales=rand((3, 5)), shared_axes=(0, -2)),
    }
    names = list(layers)
    fn = pytensor.function([l_in.input_var], get_output([layers[n] for n in names]))
    x = rand(SHAPE)
    outputs = dict(zip(names, fn(x), strict=True))
    float64 = [v for v in fn.maker.fgraph.variables if getattr(v.type, "dtype", "") == "float64"]
    return {"layers": layers, "x": x, "outputs": outputs, "float64": float64}


def _expand(param, shared_axes):
    """Insert size-1 axes at the shared axes (NumPy reference of the broadcasting)."""
    return np.expand_dims(param, tuple(shared_axes))


def _reference(key, layer, x):
    if key == "nl_default":
        return np.maximum(x, 0)
    if key == "nl_none":
        return x
    if key == "nl_sigmoid":
        return 1 / (1 + np.exp(-x))
    if key == "bias_none":
        return x
    if key.startswith("bias"):
        return x + _expand(layer.b.get_value(), layer.shared_axes)
    return x * _expand(layer.scales.get_value(), layer.shared_axes)


@pytest.mark.parametrize(
    "key",
    [
        "nl_default",
        "nl_none",
        "nl_sigmoid",
        "bias_auto",
        "bias_axes_0_1",
        "bias_int_neg",
        "bias_none",
        "scale_auto",
        "scale_axes",
    ],
)
def test_output_matches_numpy(case, key):
    layer = case["layers"][key]
    x = case["x"]
    got = case["outputs"][key]
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, _reference(key, layer, x.astype(np.float64)), rtol=1e-5, atol=1e-6
    )
    assert layer.output_shape == (None,) + SHAPE[1:]


def test_graph_stays_float32(case):
    assert case["float64"] == []


@pytest.mark.parametrize(
    ("shape", "shared_axes", "expected_axes", "param_shape"),
    [
        ((None, 7), "auto", (0,), (7,)),
        ((None, 3, 4, 5), "auto", (0, 2, 3), (3,)),
        ((None, 3, 4), 0, (0,), (3, 4)),
        ((None, 3, 4), (0, -1), (0, 2), (3,)),
        ((2, 3), (), (), (2, 3)),
    ],
)
def test_shared_axes_and_param_shapes(shape, shared_axes, expected_axes, param_shape):
    bias = BiasLayer(shape, shared_axes=shared_axes)
    scale = ScaleLayer(shape, shared_axes=shared_axes)
    assert bias.shared_axes == scale.shared_axes == expected_axes
    assert bias.b.get_value().shape == scale.scales.get_value().shape == param_shape
    np.testing.assert_array_equal(bias.b.get_value(), 0)
    np.testing.assert_array_equal(scale.scales.get_value(), 1)
    assert bias.b.dtype == scale.scales.dtype == "float32"


def test_param_tags_and_names():
    bias = BiasLayer((None, 3), name="bias")
    scale = ScaleLayer((None, 3), name="scale")
    assert bias.get_params(trainable=True) == [bias.b]
    assert bias.get_params(regularizable=True) == []
    assert scale.get_params(trainable=True) == [scale.scales]
    assert scale.get_params(regularizable=True) == []
    assert (bias.b.name, scale.scales.name) == ("bias.b", "scale.scales")
    assert BiasLayer((None, 3), b=None).get_params() == []
    assert NonlinearityLayer((None, 3)).get_params() == []


@pytest.mark.parametrize("cls", [BiasLayer, ScaleLayer])
def test_unknown_size_on_unshared_axis(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\(name='p'\).*\(None, None, 4\)"):
        cls((None, None, 4), name="p")
    # Sharing the unknown axis makes it fine.
    assert cls((None, None, 4), shared_axes=(0, 1)).output_shape == (None, None, 4)


@pytest.mark.parametrize("cls", [BiasLayer, ScaleLayer])
@pytest.mark.parametrize(
    ("shared_axes", "match"),
    [
        ("every", "'every'"),
        (3, "contains 3"),
        ((0, -4), "contains -4"),
        ((0, 0), "twice"),
        ((1.0,), "1.0"),
    ],
)
def test_bad_shared_axes(cls, shared_axes, match):
    with pytest.raises(ValueError, match=match) as info:
        cls((None, 3, 4), shared_axes=shared_axes, name="p")
    assert f"{cls.__name__}(name='p')" in str(info.value)


@pytest.mark.parametrize("cls", [NonlinearityLayer, BiasLayer, ScaleLayer])
def test_unknown_keyword(cls):
    with pytest.raises(TypeError, match=rf"{cls.__name__}.*'nmae'.*did you mean 'name'"):
        cls((None, 3), nmae="x")


def test_nonlinearity_layer_takes_what_batch_norm_moves_unchecked():
    # Lasagne's batch_norm()/instance_norm() move any nonlinearity object here unchecked
    marker = object()
    assert NonlinearityLayer((None, 3), marker).nonlinearity is marker


def test_wrong_param_shape():
    with pytest.raises(ValueError, match=r"\(4,\)"):
        BiasLayer((None, 3), b=np.zeros(4, np.float32))

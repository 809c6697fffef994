"""Tests of Conv2DLayer and conv_output_length against a NumPy reference."""

import numpy as np
import pytensor
import pytest
from pytensor.compile.mode import Mode

import bntrain.nn as lasagne
from bntrain.nn.layers import Conv2DLayer, InputLayer, conv_output_length, get_output

from ..ops.test_conv_ops import conv_reference

PY = Mode(linker="py", optimizer="fast_compile")
IN_SHAPE = (2, 3, 9, 8)


# name -> (filter_size, stride, pad, expected integer padding)
SPECS = {
    "valid": ((3, 2), (1, 1), "valid", (0, 0)),
    "full": ((3, 2), (1, 1), "full", (2, 1)),
    "same": ((3, 5), (1, 1), "same", (1, 2)),
    "same_stride2": ((3, 3), (2, 2), "same", (1, 1)),
    "int": (3, (2, 3), 1, (1, 1)),
    "tuple": ((2, 3), (3, 1), (2, 0), (2, 0)),
    "full_stride": ((4, 2), (2, 3), "full", (3, 1)),
}


@pytest.fixture(scope="module")
def case():
    """One layer per padding mode and stride, plus variants, compiled into one function."""
    rng = np.random.default_rng(0)
    l_in = InputLayer((None,) + IN_SHAPE[1:])
    normal = lasagne.init.Normal(1.0, rng=rng)
    layers = {
        name: Conv2DLayer(l_in, 4, fs, stride=st, pad=pad, W=normal, b=normal, name=name)
        for name, (fs, st, pad, _) in SPECS.items()
    }
    layers["untied"] = Conv2DLayer(
        l_in, 2, 3, pad=1, untie_biases=True, W=normal, b=normal, nonlinearity=None
    )
    layers["nobias_corr"] = Conv2DLayer(
        l_in, 3, (2, 3), b=None, flip_filters=False, W=normal, nonlinearity=None
    )
    layers["tanh"] = Conv2DLayer(
        l_in, 2, 1, W=normal, b=normal, nonlinearity=lasagne.nonlinearities.tanh
    )
    names = list(layers)
    fn = pytensor.function([l_in.input_var], get_output([layers[n] for n in names]), mode=PY)
    x = rng.standard_normal(IN_SHAPE).astype(np.float32)
    return {"layers": layers, "x": x, "outputs": dict(zip(names, fn(x), strict=True)), "fn": fn}


def _layer_reference(layer, x):
    w = layer.W.get_value().astype(np.float64)
    out = conv_reference(
        x.astype(np.float64), w, layer.stride, layer.resolved_pad, layer.flip_filters
    )
    if layer.b is not None:
        b = layer.b.get_value()
        out = out + (b[None] if layer.untie_biases else b[None, :, None, None])
    nonlinearity = {
        lasagne.nonlinearities.rectify: lambda a: np.maximum(a, 0),
        lasagne.nonlinearities.identity: lambda a: a,
        lasagne.nonlinearities.tanh: np.tanh,
    }[layer.nonlinearity]
    return nonlinearity(out)


@pytest.mark.parametrize("name", [*SPECS, "untied", "nobias_corr", "tanh"])
def test_output_matches_numpy(case, name):
    layer = case["layers"][name]
    got = case["outputs"][name]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _layer_reference(layer, case["x"]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [*SPECS, "untied", "nobias_corr"])
def test_output_shape_matches_output(case, name):
    layer = case["layers"][name]
    got = case["outputs"][name]
    assert layer.output_shape == (None, *got.shape[1:])
    assert layer.get_output_shape_for(IN_SHAPE) == got.shape


@pytest.mark.parametrize("name", list(SPECS))
def test_pad_attribute_and_resolved_pad(case, name):
    layer = case["layers"][name]
    _, _, pad, resolved = SPECS[name]
    expected_attr = (
        {"valid": (0, 0), "full": "full", "same": "same"}.get(pad) if isinstance(pad, str) else None
    )
    if expected_attr is None:
        expected_attr = (pad, pad) if isinstance(pad, int) else pad
    assert layer.pad == expected_attr
    assert layer.resolved_pad == resolved
    assert all(isinstance(p, int) for p in layer.resolved_pad)


def test_same_padding_keeps_size_and_full_grows_it(case):
    assert case["outputs"]["same"].shape[2:] == IN_SHAPE[2:]
    assert case["outputs"]["same_stride2"].shape[2:] == (5, 4)  # ceil(9/2), ceil(8/2)
    assert case["outputs"]["full"].shape[2:] == (9 + 2, 8 + 1)


def test_params_shapes_and_tags(case):
    layer = case["layers"]["tuple"]
    assert layer.W.get_value().shape == (4, 3, 2, 3)
    assert layer.b.get_value().shape == (4,)
    assert layer.get_params(regularizable=True) == [layer.W]
    assert layer.get_params(trainable=True) == [layer.W, layer.b]
    assert case["layers"]["untied"].b.get_value().shape == (2, 9, 8)
    assert case["layers"]["nobias_corr"].get_params() == [case["layers"]["nobias_corr"].W]
    assert layer.W.dtype == "float32"
    assert (layer.num_filters, layer.filter_size, layer.stride) == (4, (2, 3), (3, 1))
    assert layer.untie_biases is False and layer.flip_filters is True


def test_float32_graph_has_no_float64(case):
    assert not [
        v for v in case["fn"].maker.fgraph.variables if getattr(v.type, "dtype", "") == "float64"
    ]


def test_lasagne_defaults():
    layer = lasagne.layers.Conv2DLayer((None, 1, 5, 5), 2, 3)
    assert layer.stride == (1, 1) and layer.pad == (0, 0)
    assert layer.nonlinearity is lasagne.nonlinearities.rectify
    assert isinstance(layer.b.get_value(), np.ndarray) and not layer.b.get_value().any()
    assert layer.output_shape == (None, 2, 3, 3)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((10, 3, 1, "valid"), 8),
        ((10, 3, 1, "full"), 12),
        ((10, 3, 1, "same"), 10),
        ((10, 3, 2, "same"), 5),
        ((11, 3, 2, "same"), 6),
        ((10, 3, 3, 1), 4),
        ((10, 4, 2, 0), 4),
        ((None, 3, 1, "same"), None),
    ],
)
def test_conv_output_length(args, expected):
    assert conv_output_length(*args) == expected


def test_conv_output_length_invalid_pad():
    with pytest.raises(ValueError, match="Invalid pad: 'half'"):
        conv_output_length(10, 3, 1, "half")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (
            dict(filter_size=(2, 3), pad="same"),
            NotImplementedError,
            r"pad='same' requires odd filter size, got filter_size=\(2, 3\)",
        ),
        (
            dict(filter_size=3, pad="half"),
            TypeError,
            r"pad must be 'valid', 'full', 'same', an int or an iterable of int, got 'half'",
        ),
        (dict(filter_size=3, pad=-1), ValueError, "pad must be >= 0, got -1"),
        (dict(filter_size=0), ValueError, "filter_size must be >= 1, got 0"),
        (dict(filter_size=(3, -2)), ValueError, r"filter_size must be >= 1, got \(3, -2\)"),
        (dict(filter_size=3, stride=0), ValueError, "stride must be >= 1, got 0"),
        (dict(filter_size=3, num_filters=0), ValueError, "num_filters must be positive, got 0"),
        (dict(filter_size=3, num_filters=2.5), TypeError, "num_filters must be an int, got 2.5"),
        (
            dict(filter_size=(3, 3, 3)),
            ValueError,
            r"filter_size must be an int or a pair of ints, got \(3, 3, 3\)",
        ),
        (
            dict(filter_size=9),
            ValueError,
            r"input shape \(None, 3, 8, 8\) with pad \(0, 0\) is smaller than filter_size \(9, 9\)",
        ),
        (
            dict(filter_size=3, nonlinearity=5),
            TypeError,
            "nonlinearity must be callable or None, got 5",
        ),
        (dict(filter_size=3, flip=True), TypeError, "unexpected keyword argument.*'flip'"),
    ],
)
def test_misuse_names_layer_and_value(kwargs, error, pattern):
    kwargs = {"num_filters": 2, **kwargs}
    with pytest.raises(error, match=r"Conv2DLayer\(name='c1'\): " + pattern):
        Conv2DLayer((None, 3, 8, 8), name="c1", **kwargs)


def test_wrong_input_ndim():
    with pytest.raises(
        ValueError,
        match=r"Conv2DLayer\(name='c'\).*input shape \(None, 3, 8\)\. Expected 4 input dimensions",
    ):
        Conv2DLayer((None, 3, 8), 2, 3, name="c")
    layer = Conv2DLayer((None, 3, 8, 8), 2, 3, name="c")
    import pytensor.tensor as pt

    with pytest.raises(
        ValueError, match=r"Conv2DLayer\(name='c'\): expected a 4-dimensional input, got ndim=3"
    ):
        layer.get_output_for(pt.tensor3())


def test_unknown_channels_rejected():
    with pytest.raises(
        ValueError, match=r"Conv2DLayer\(name=None\): the number of input channels must be known"
    ):
        Conv2DLayer((None, None, 8, 8), 2, 3)

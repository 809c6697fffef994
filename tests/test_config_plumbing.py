"""Every model and batch-norm key, set to a non-default value, reaches the layers and the checkpoint.

The expected values come from the YAML written here (and the documented meaning of each key),
never from attributes bntrain wrote.
"""

from __future__ import annotations

import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.config import parse_config
from bntrain.model import build_network
from bntrain.nn import nonlinearities as NL

HEAD = """\
name: plumbing
data:
  train: {builtin: digits, split: train}
  preprocess: {scale: 0.0625}
training:
  epochs: 1
  batch_size: 100
  optimizer: {name: sgd, lr: 0.01}
  recompute_stats: false
output: {dir: run}
"""

AUTO = HEAD + textwrap.dedent(
    """\
    model:
      input_shape: [1, 8, 8]
      batch_norm: {insert: auto, epsilon: 3.0e-3, alpha: 0.25}
      layers:
        - {type: conv2d, filters: 3, size: [3, 2], stride: [1, 2], pad: [1, 0], nonlinearity: elu, name: c_a}
        - {type: maxpool2d, size: [2, 1], stride: [2, 1], pad: [1, 0], name: mp}
        - {type: avgpool2d, size: 2, stride: 1, ignore_border: false, mode: average_inc_pad, name: ap}
        - {type: conv2d, filters: 4, size: 1, pad: valid, nonlinearity: tanh, batch_norm: false, name: c_b}
        - {type: dropout, p: 0.15, name: drop}
        - {type: flatten, name: flat}
        - {type: dense, units: 7, nonlinearity: sigmoid, name: d_a}
        - {type: dense, units: 6, nonlinearity: leaky_relu, batch_norm: false, name: d_b}
        - {type: dense, units: 10, nonlinearity: softmax, name: out}
    """
)

EXPLICIT = HEAD + textwrap.dedent(
    """\
    model:
      input_shape: [1, 8, 8]
      batch_norm: {insert: none, epsilon: 2.0e-3, alpha: 0.3}
      layers:
        - {type: conv2d, filters: 2, size: 3, pad: full, nonlinearity: linear, name: c_a}
        - {type: batchnorm, epsilon: 5.0e-3, alpha: 0.05, nonlinearity: elu, name: bn_a}
        - {type: global_avgpool, name: gap}
        - {type: dense, units: 5, nonlinearity: identity, name: d_a}
        - {type: batchnorm, name: bn_b}
        - {type: nonlinearity, fn: tanh, name: act}
        - {type: dense, units: 10, nonlinearity: softmax, name: out}
    """
)

# What each YAML asks for: layer name -> (class, {attribute: value}); shapes without the batch axis.
# "pad" is what the conv/pool sees after 'same'/'valid'/'full' are resolved for the filter size.
EXPECTED = {
    "auto": {
        "c_a": (
            "Conv2DLayer",
            {
                "num_filters": 3,
                "filter_size": (3, 2),
                "stride": (1, 2),
                "pad": (1, 0),
                "flip_filters": True,
                "nonlinearity": "linear",
                "bias": False,
                "output_shape": (3, 8, 4),
            },
        ),
        "c_a_bn": ("BatchNormLayer", {"epsilon": 3e-3, "alpha": 0.25, "axes": (0, 2, 3)}),
        "c_a_bn_nonlin": ("NonlinearityLayer", {"nonlinearity": "elu"}),
        "mp": (
            "Pool2DLayer",
            {
                "pool_size": (2, 1),
                "stride": (2, 1),
                "pad": (1, 0),
                "ignore_border": True,
                "mode": "max",
                "output_shape": (3, 5, 4),
            },
        ),
        "ap": (
            "Pool2DLayer",
            {
                "pool_size": (2, 2),
                "stride": (1, 1),
                "pad": (0, 0),
                "ignore_border": False,
                "mode": "average_inc_pad",
                "output_shape": (3, 4, 3),
            },
        ),
        "c_b": (
            "Conv2DLayer",
            {
                "num_filters": 4,
                "filter_size": (1, 1),
                "stride": (1, 1),
                "pad": (0, 0),
                "flip_filters": True,
                "nonlinearity": "tanh",
                "bias": True,
                "output_shape": (4, 4, 3),
            },
        ),
        "drop": ("DropoutLayer", {"p": 0.15}),
        "flat": ("FlattenLayer", {"output_shape": (48,)}),
        "d_a": ("DenseLayer", {"num_units": 7, "nonlinearity": "linear", "bias": False}),
        "d_a_bn": ("BatchNormLayer", {"epsilon": 3e-3, "alpha": 0.25, "axes": (0,)}),
        "d_a_bn_nonlin": ("NonlinearityLayer", {"nonlinearity": "sigmoid"}),
        "d_b": ("DenseLayer", {"num_units": 6, "nonlinearity": "leaky_rectify", "bias": True}),
        "out": ("DenseLayer", {"num_units": 10, "nonlinearity": "softmax", "bias": True}),
    },
    "explicit": {
        "c_a": (
            "Conv2DLayer",
            {
                "num_filters": 2,
                "filter_size": (3, 3),
                "stride": (1, 1),
                "pad": (2, 2),
                "flip_filters": True,
                "nonlinearity": "linear",
                "bias": True,
                "output_shape": (2, 10, 10),
            },
        ),
        "bn_a": ("BatchNormLayer", {"epsilon": 5e-3, "alpha": 0.05, "axes": (0, 2, 3)}),
        "bn_a_nonlin": ("NonlinearityLayer", {"nonlinearity": "elu"}),
        "gap": ("GlobalPoolLayer", {"output_shape": (2,)}),
        "d_a": ("DenseLayer", {"num_units": 5, "nonlinearity": "linear", "bias": True}),
        "bn_b": ("BatchNormLayer", {"epsilon": 2e-3, "alpha": 0.3, "axes": (0,)}),
        "act": ("NonlinearityLayer", {"nonlinearity": "tanh"}),
        "out": ("DenseLayer", {"num_units": 10, "nonlinearity": "softmax", "bias": True}),
    },
}
CONFIGS = {"auto": AUTO, "explicit": EXPLICIT}
FUNCTIONS = {  # the YAML names' functions, by their canonical names
    "linear": NL.identity,
    "elu": NL.elu,
    "tanh": NL.tanh,
    "sigmoid": NL.sigmoid,
    "softmax": NL.softmax,
    "leaky_rectify": NL.leaky_rectify,
}


def _same_function(fn, name: str) -> bool:
    want = FUNCTIONS[name]
    linear = (NL.identity, NL.linear)
    return fn is want or (want in linear and fn in linear)


@pytest.mark.parametrize("key", ["auto", "explicit"])
def test_every_key_reaches_the_layers(key):
    cfg = parse_config(CONFIGS[key], source=f"{key}.yaml")
    net = build_network(cfg.model, (1, 8, 8), seed=0)
    expected = EXPECTED[key]
    assert [layer.name for layer in net.layers] == ["input", *expected]
    for name, (cls, attrs) in expected.items():
        layer = net.layer(name)
        assert type(layer).__name__ == cls, name
        for attr, value in attrs.items():
            if attr == "nonlinearity":
                assert _same_function(layer.nonlinearity, value), (name, layer.nonlinearity)
            elif attr == "bias":
                assert (layer.b is not None) == value, name
            elif attr == "pad" and cls == "Conv2DLayer":
                assert tuple(layer.resolved_pad) == value, name
            elif attr == "output_shape":
                assert tuple(layer.output_shape[1:]) == value, name
            else:
                got = getattr(layer, attr)
                got = tuple(got) if isinstance(got, list | tuple) else got
                assert got == pytest.approx(value) if isinstance(value, float) else got == value, (
                    name,
                    attr,
                    got,
                )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One epoch of `bntrain fit` per config; the last.h5 of each."""
    out = {}
    for key, text in CONFIGS.items():
        folder = tmp_path_factory.mktemp(key)
        (folder / "c.yaml").write_text(text)
        result = CliRunner().invoke(main, ["fit", str(folder / "c.yaml"), "--quiet"])
        assert result.exit_code == 0, result.output
        out[key] = folder / "run" / "last.h5"
    return out


# checkpoint attribute names (docs/checkpoint.md) of the expected values above
CKPT_ATTRS = {
    "num_filters",
    "filter_size",
    "stride",
    "pad",
    "flip_filters",
    "nonlinearity",
    "pool_size",
    "ignore_border",
    "mode",
    "p",
    "num_units",
    "epsilon",
    "alpha",
    "axes",
    "output_shape",
}


@pytest.mark.parametrize("key", ["auto", "explicit"])
def test_every_key_reaches_the_checkpoint(checkpoints, key):
    expected = EXPECTED[key]
    with h5py.File(checkpoints[key], "r") as f:
        names = [n.decode() for n in f["model/layer_names"][()]]
        assert names == ["input", *expected]
        for name, (cls, attrs) in expected.items():
            g = f["model/layers"][name]
            assert g.attrs["type"] == cls, name
            for attr, value in attrs.items():
                if attr == "bias":
                    assert ("b" in g) == value, name
                    continue
                assert attr in CKPT_ATTRS
                got = g.attrs[attr]
                if isinstance(got, bytes):
                    got = got.decode()
                if attr == "output_shape":
                    assert list(got) == [-1, *value], name
                elif isinstance(value, tuple):
                    assert list(got) == list(value), (name, attr)
                elif isinstance(value, float):
                    assert float(got) == pytest.approx(value), (name, attr)
                else:
                    assert got == value, (name, attr, got)
        # the batch-norm parameters are stored per layer, with the layer's channel count
        for name, (cls, _) in expected.items():
            if cls == "BatchNormLayer":
                g = f["model/layers"][name]
                assert sorted(g) == ["beta", "gamma", "inv_std", "mean"]
                assert np.all(np.isfinite(g["inv_std"][()]))

import numpy as np
import pytest

from bntrain.config import parse_config
from bntrain.errors import ConfigError
from bntrain.model import build_network
from bntrain.nn import layers as L
from bntrain.nn import nonlinearities

from .conftest import TINY_MLP


def _cfg(text=TINY_MLP, overrides=()):
    return parse_config(text, source="tiny.yaml", overrides=overrides)


def _net(cfg, shape=(64,), seed=0):
    return build_network(cfg.model, shape, seed=seed)


def test_auto_inserts_bn_after_every_weighted_layer_but_the_output():
    # epsilon and alpha away from the layer's defaults (1e-4, 0.1): they must come from the config
    net = _net(_cfg(overrides=["model.batch_norm.epsilon=0.003", "model.batch_norm.alpha=0.35"]))
    assert [l.name for l in net.layers] == [
        "input",
        "dense1",
        "dense1_bn",
        "dense1_bn_nonlin",
        "dropout1",
        "dense2",
        "dense2_bn",
        "dense2_bn_nonlin",
        "dense3",
    ]
    d1, bn1, nl1 = net.layer("dense1"), net.layer("dense1_bn"), net.layer("dense1_bn_nonlin")
    assert (
        d1.b is None and d1.nonlinearity is nonlinearities.identity
    )  # bias removed, nonlinearity moved
    for bn in (bn1, net.layer("dense2_bn")):
        assert isinstance(bn, L.BatchNormLayer) and bn.epsilon == 0.003 and bn.alpha == 0.35
        assert bn.axes == (0,)
    assert nl1.nonlinearity is nonlinearities.rectify
    assert net.layer("dense2_bn_nonlin").nonlinearity is nonlinearities.tanh
    out = net.layer("dense3")
    assert out.b is not None and out.nonlinearity is nonlinearities.softmax
    assert net.n_classes == 10 and len(net.bn_layers) == 2


def test_opt_out_and_insert_none_keep_only_explicit_batchnorm():
    cfg = _cfg(overrides=["model.layers[2].batch_norm=false"])
    assert [l.name for l in _net(cfg).bn_layers] == ["dense1_bn"]
    cfg = _cfg(
        overrides=[
            "model.batch_norm.insert=none",
            "model.layers[1]={type: batchnorm, nonlinearity: relu, alpha: 0.5}",
        ]
    )
    net = _net(cfg)
    assert [l.name for l in net.bn_layers] == ["batchnorm1"]
    bn = net.layer("batchnorm1")
    assert bn.alpha == 0.5 and bn.epsilon == 1e-4  # epsilon from model.batch_norm
    assert net.layer("batchnorm1_nonlin").nonlinearity is nonlinearities.rectify
    assert net.layer("dense1").b is not None


def test_conv_net_names_and_shapes():
    text = TINY_MLP.replace(
        "    - {type: dense, units: 16, nonlinearity: relu}\n",
        "    - {type: conv2d, filters: 4, size: 3}\n"
        "    - {type: maxpool2d, size: 2}\n"
        "    - {type: flatten}\n",
    )
    net = _net(_cfg(text), shape=(1, 8, 8))
    names = [l.name for l in net.layers]
    assert names[:6] == ["input", "conv1", "conv1_bn", "conv1_bn_nonlin", "pool1", "flatten1"]
    assert net.layer("conv1").output_shape == (None, 4, 8, 8)  # pad: same by default
    assert net.layer("pool1").output_shape == (None, 4, 4, 4)


def test_same_seed_same_weights_other_seed_other_weights():
    a = [p.get_value() for p in L.get_all_params(_net(_cfg(), seed=1).output_layer)]
    b = [p.get_value() for p in L.get_all_params(_net(_cfg(), seed=1).output_layer)]
    c = [p.get_value() for p in L.get_all_params(_net(_cfg(), seed=2).output_layer)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_network_must_end_in_softmax():
    cfg = _cfg(overrides=["model.layers[3].nonlinearity=relu"])
    with pytest.raises(ConfigError) as e:
        _net(cfg)
    assert str(e.value) == (
        "tiny.yaml:13: model.layers[3]: the network must end in class probabilities (got output shape [10]); "
        "end it with {type: dense, units: <classes>, nonlinearity: softmax}"
    )


def test_duplicate_layer_names_are_rejected():
    with pytest.raises(
        ConfigError, match=r"^--set model.layers\[2\].name=x: layer name 'x' is used twice"
    ):
        _cfg(overrides=["model.layers[0].name=x", "model.layers[2].name=x"])


def test_layer_that_cannot_fit_names_its_config_entry():
    text = TINY_MLP.replace(
        "{type: dense, units: 16, nonlinearity: relu}", "{type: maxpool2d, size: 2}"
    )
    with pytest.raises(ConfigError, match=r"^tiny.yaml:10: model.layers\[0\] \(maxpool2d\): "):
        _net(_cfg(text))


def test_a_layer_too_large_to_allocate_is_refused_before_allocation():
    cfg = _cfg(overrides=["model.layers[0].units=1000000000000"])
    with pytest.raises(ConfigError) as e:
        _net(cfg)
    assert str(e.value) == (
        "tiny.yaml:10: model.layers[0].units: the layer would hold 6.4e+13 weights (more than 268435456); "
        "use a smaller units"
    )


def test_every_layer_type_is_one_spec_class_that_builds_its_layer():
    from bntrain.config import LAYER_TYPES, BlockSpec, LayerSpec, LayerSpecBase
    from bntrain.config.walk import strip

    members = strip(LayerSpec).members
    assert tuple(members) == LAYER_TYPES
    for cls in members.values():  # a block is expanded into the layers of its template
        assert issubclass(cls, LayerSpecBase)
        assert (cls.build is not LayerSpecBase.build) == (cls is not BlockSpec)

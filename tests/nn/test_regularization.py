"""Tests for bntrain.nn.regularization against NumPy references."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bntrain.nn import regularization as reg
from bntrain.nn.layers import InputLayer, Layer


class _Toy(Layer):
    """A minimal layer with a regularizable W and a non-regularizable b."""

    def __init__(self, incoming, num_units, seed, **kwargs):
        super().__init__(incoming, **kwargs)
        rng = np.random.default_rng(seed)
        n_in = self.input_shape[1]
        self.W = self.add_param(
            rng.normal(size=(n_in, num_units)).astype(np.float32), (n_in, num_units), "W"
        )
        self.b = self.add_param(
            rng.normal(size=num_units).astype(np.float32), (num_units,), "b", regularizable=False
        )
        self.num_units = num_units

    def get_output_shape_for(self, input_shape):
        return (input_shape[0], self.num_units)

    def get_output_for(self, input, **kwargs):
        return pt.dot(input, self.W) + self.b


@pytest.fixture(scope="module")
def net():
    l_in = InputLayer((None, 3))
    l1 = _Toy(l_in, 4, seed=1, name="l1")
    l2 = _Toy(l1, 2, seed=2, name="l2")
    return l_in, l1, l2


def _v(p):
    return p.get_value().astype(np.float64)


def _np_l1(*arrays):
    return sum(np.abs(a).sum() for a in arrays)


def _np_l2(*arrays):
    return sum((a**2).sum() for a in arrays)


def _scaled(x, scale=1.0):
    return reg.l2(x) * scale


@pytest.fixture(scope="module")
def results(net):
    _, l1, l2 = net
    exprs = {
        "l1_single": reg.l1(l1.W),
        "l2_single": reg.l2(l1.W),
        "apply_one": reg.apply_penalty(l1.W, reg.l1),
        "apply_list": reg.apply_penalty([l1.W, l2.W, l1.b], reg.l2),
        "apply_kwargs": reg.apply_penalty([l1.W, l2.W], _scaled, scale=3.0),
        "layer": reg.regularize_layer_params(l1, reg.l2),
        "layer_list": reg.regularize_layer_params([l1, l2], reg.l1),
        "layer_all_tags": reg.regularize_layer_params(l2, reg.l2, tags={}),
        "layer_not_reg": reg.regularize_layer_params(l2, reg.l1, tags={"regularizable": False}),
        "weighted": reg.regularize_layer_params_weighted({l1: 0.1, l2: np.float64(0.5)}, reg.l2),
        "network": reg.regularize_network_params(l2, reg.l2),
        "network_l1": reg.regularize_network_params(l2, reg.l1),
        "network_trainable": reg.regularize_network_params(l2, reg.l1, tags={"trainable": True}),
        "network_kwargs": reg.regularize_network_params(l2, _scaled, scale=0.5),
    }
    for name, e in exprs.items():
        assert e.dtype == "float32", name
        assert e.ndim == 0, name
    fn = pytensor.function([], list(exprs.values()))
    out = dict(zip(exprs, fn(), strict=True))
    out["_fn"] = fn
    return out


def test_no_float64(results):
    dtypes = {
        v.type.dtype for v in results["_fn"].maker.fgraph.variables if hasattr(v.type, "dtype")
    }
    assert "float64" not in dtypes


def test_l1_l2_and_apply_penalty(results, net):
    _, l1, l2 = net
    w1, w2, b1 = _v(l1.W), _v(l2.W), _v(l1.b)
    np.testing.assert_allclose(results["l1_single"], _np_l1(w1), rtol=1e-6)
    np.testing.assert_allclose(results["l2_single"], _np_l2(w1), rtol=1e-6)
    np.testing.assert_allclose(results["apply_one"], _np_l1(w1), rtol=1e-6)
    np.testing.assert_allclose(results["apply_list"], _np_l2(w1, w2, b1), rtol=1e-6)
    np.testing.assert_allclose(results["apply_kwargs"], 3.0 * _np_l2(w1, w2), rtol=1e-6)


def test_regularize_layer_params(results, net):
    _, l1, l2 = net
    np.testing.assert_allclose(results["layer"], _np_l2(_v(l1.W)), rtol=1e-6)
    np.testing.assert_allclose(results["layer_list"], _np_l1(_v(l1.W), _v(l2.W)), rtol=1e-6)
    np.testing.assert_allclose(results["layer_all_tags"], _np_l2(_v(l2.W), _v(l2.b)), rtol=1e-6)
    np.testing.assert_allclose(results["layer_not_reg"], _np_l1(_v(l2.b)), rtol=1e-6)


def test_regularize_layer_params_weighted(results, net):
    _, l1, l2 = net
    want = 0.1 * _np_l2(_v(l1.W)) + 0.5 * _np_l2(_v(l2.W))
    np.testing.assert_allclose(results["weighted"], want, rtol=1e-6)


def test_empty_penalty_is_python_zero_as_in_lasagne():
    # Python's sum of nothing: the int 0, which Lasagne's code compares with `== 0`
    assert reg.apply_penalty([], reg.l2) == 0
    assert isinstance(reg.apply_penalty([], reg.l2), int)
    assert isinstance(reg.regularize_layer_params_weighted({}, reg.l2), int)


def test_terms_are_summed_as_lasagne_builds_them(net):
    from pytensor.graph.basic import equal_computations

    _, l1, l2 = net
    got = reg.regularize_layer_params_weighted({l1: 0.1, l2: 0.5}, reg.l2)
    want = 0 + 0.1 * (0 + reg.l2(l1.W)) + 0.5 * (0 + reg.l2(l2.W))
    assert equal_computations([got], [want])
    a, b = pt.vector(), pt.matrix()
    assert equal_computations([reg.apply_penalty([a, b], reg.l1)], [0 + reg.l1(a) + reg.l1(b)])


@pytest.mark.parametrize(
    "coeffs",
    [{}, {"l1": 0.1, "l2": 0.5}, {"l1": np.float64(0.1), "l2": np.asarray(0.5)}, {"l1": 2}],
    ids=["no-layers", "python-floats", "numpy-float64", "int"],
)
def test_loss_plus_penalty_stays_float32(net, coeffs):
    assert pytensor.config.floatX == "float32"
    _, l1, l2 = net
    layers = {"l1": l1, "l2": l2}
    weighted = reg.regularize_layer_params_weighted(
        {layers[k]: c for k, c in coeffs.items()}, reg.l2
    )
    empty = reg.apply_penalty([], reg.l2)
    x = pt.fmatrix("x")
    loss = pt.mean(pt.sqr(x))
    total = loss + weighted + empty
    assert total.dtype == "float32"
    fn = pytensor.function([x], total, mode="FAST_COMPILE")
    x0 = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    want = np.mean(x0.astype(np.float64) ** 2) + sum(
        float(c) * _np_l2(_v(layers[k].W)) for k, c in coeffs.items()
    )
    got = fn(x0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_regularize_network_params(results, net):
    _, l1, l2 = net
    w1, w2 = _v(l1.W), _v(l2.W)
    np.testing.assert_allclose(results["network"], _np_l2(w1, w2), rtol=1e-6)
    np.testing.assert_allclose(results["network_l1"], _np_l1(w1, w2), rtol=1e-6)
    want = _np_l1(w1, w2, _v(l1.b), _v(l2.b))
    np.testing.assert_allclose(results["network_trainable"], want, rtol=1e-6)
    np.testing.assert_allclose(results["network_kwargs"], 0.5 * _np_l2(w1, w2), rtol=1e-6)


def test_default_tags_are_lasagnes(results):
    import inspect

    for fn in (
        reg.regularize_layer_params,
        reg.regularize_layer_params_weighted,
        reg.regularize_network_params,
    ):
        assert inspect.signature(fn).parameters["tags"].default == {"regularizable": True}


def test_gradient_of_l2_penalty_is_2w(net):
    _, l1, _ = net
    g = pytensor.grad(reg.regularize_layer_params(l1, reg.l2), l1.W)
    np.testing.assert_allclose(g.eval(mode="FAST_COMPILE"), 2 * l1.W.get_value(), rtol=1e-6)

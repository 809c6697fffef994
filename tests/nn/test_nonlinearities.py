"""Tests for bntrain.nn.nonlinearities against NumPy, JAX, finite differences; the registry."""

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from bntrain.nn import nonlinearities as nl

SELU_SCALE = 1.0507009873554804934193349852946
SELU_NEG = 1.6732632423543772848170429916717


def _np_sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


CASES = {
    "sigmoid": (nl.sigmoid, _np_sigmoid),
    "softmax": (nl.softmax, _np_softmax),
    "tanh": (nl.tanh, np.tanh),
    "scaled_tanh": (
        nl.ScaledTanH(scale_in=2 / 3, scale_out=1.7159),
        lambda x: 1.7159 * np.tanh(2 / 3 * x),
    ),
    "ScaledTanh_default": (nl.ScaledTanh(), np.tanh),
    "rectify": (nl.rectify, lambda x: np.maximum(x, 0)),
    "leaky_rectify": (nl.leaky_rectify, lambda x: np.where(x > 0, x, 0.01 * x)),
    "very_leaky_rectify": (nl.very_leaky_rectify, lambda x: np.where(x > 0, x, x / 3)),
    "leaky_0.2": (nl.LeakyRectify(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    "elu": (nl.elu, lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0)))),
    "selu": (
        nl.selu,
        lambda x: SELU_SCALE * np.where(x > 0, x, SELU_NEG * np.expm1(np.minimum(x, 0))),
    ),
    "SELU(2,3)": (
        nl.SELU(2.0, 3.0),
        lambda x: 2 * np.where(x > 0, x, 3 * np.expm1(np.minimum(x, 0))),
    ),
    "softplus": (nl.softplus, lambda x: np.logaddexp(0, x)),
    "linear": (nl.linear, lambda x: x),
    "identity": (nl.identity, lambda x: x),
}


@pytest.mark.parametrize("name", ["rectify", "leaky_rectify", "leaky_0.2", "identity"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rectifiers_map_numpy_to_numpy(name, dtype):
    # as Theano's relu did: ported code uses lasagne's rectify in NumPy references
    fn, reference = CASES[name]
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], dtype=dtype)
    got = fn(x)
    assert isinstance(got, np.ndarray)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, reference(x.astype(np.float64)), rtol=1e-6)


@pytest.fixture(scope="module")
def x_value():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, size=(5, 7)).astype(np.float32)
    x[0, :3] = [1000.0, -1000.0, 0.0]  # extremes: softmax / sigmoid / softplus must stay finite
    x[1] = [800.0, 799.0, -5.0, 0.0, 1.0, 2.0, 3.0]
    return x


def _compile(mode):
    x = pt.fmatrix("x")
    outs = [fn(x) for fn, _ in CASES.values()]
    for out in outs:
        assert out.dtype == "float32"
    # linear/identity return x itself; copy so that the function has distinct outputs
    outs = [pt.identity(o) if o is x else o for o in outs]
    return pytensor.function([x], outs, mode=mode)


@pytest.fixture(scope="module")
def compiled():
    return _compile(None)


@pytest.mark.parametrize("name", list(CASES))
def test_against_numpy(compiled, x_value, name):
    got = compiled(x_value)[list(CASES).index(name)]
    assert got.dtype == np.float32 and got.shape == x_value.shape
    assert np.all(np.isfinite(got))
    want = CASES[name][1](x_value.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_softmax_rows_sum_to_one(compiled, x_value):
    got = compiled(x_value)[list(CASES).index("softmax")]
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


def test_no_float64_in_compiled_graph(compiled):
    dtypes = {v.type.dtype for v in compiled.maker.fgraph.variables if hasattr(v.type, "dtype")}
    assert "float64" not in dtypes


def test_jax_backend_agrees(compiled, x_value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jax_fn = _compile("JAX")
        got = jax_fn(x_value)
    for name, a, b in zip(CASES, got, compiled(x_value), strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_gradients_by_finite_differences():
    # Away from the kink at 0; float64 so that finite differences are meaningful.
    rng = np.random.default_rng(1)
    x0 = rng.uniform(0.2, 2.0, size=(3, 4)) * rng.choice([-1.0, 1.0], size=(3, 4))
    weights = rng.normal(size=(3, 4))

    def fun(x):
        total = 0
        for fn, _ in CASES.values():
            total = total + (fn(x) * weights).sum()
        return total

    verify_grad(fun, [x0], rng=np.random.default_rng(2), abs_tol=1e-6, rel_tol=1e-5)


def test_float64_input_stays_float64():
    x = pt.dmatrix()
    for fn, _ in CASES.values():
        assert fn(x).dtype == "float64"


def test_softmax_rejects_scalar():
    with pytest.raises(ValueError, match="softmax"):
        nl.softmax(pt.fscalar())


def test_parametrized_defaults_and_aliases():
    assert nl.ScaledTanh is nl.ScaledTanH
    assert (nl.ScaledTanH().scale_in, nl.ScaledTanH().scale_out) == (1, 1)
    assert nl.LeakyRectify().leakiness == 0.01
    assert nl.leaky_rectify.leakiness == 0.01
    assert nl.very_leaky_rectify.leakiness == pytest.approx(1 / 3)
    assert (nl.SELU().scale, nl.SELU().scale_neg) == (1, 1)
    assert nl.identity is nl.linear


# --- registry --------------------------------------------------------------------------------

REGISTRY = {
    "relu": nl.rectify,
    "rectify": nl.rectify,
    "sigmoid": nl.sigmoid,
    "tanh": nl.tanh,
    "softmax": nl.softmax,
    "identity": nl.identity,
    "linear": nl.linear,
    "leaky_relu": nl.leaky_rectify,
    "leaky_rectify": nl.leaky_rectify,
    "elu": nl.elu,
    "selu": nl.selu,
    "softplus": nl.softplus,
}


@pytest.mark.parametrize("name,fn", list(REGISTRY.items()))
def test_get_and_name_of_round_trip(name, fn):
    assert nl.get(name) is fn
    assert nl.get(name.upper()) is fn
    assert nl.get(nl.name_of(fn)) is fn


def test_names_lists_exactly_the_registry():
    assert nl.names() == sorted(REGISTRY)


def test_canonical_names():
    assert nl.name_of(nl.rectify) == "rectify"
    assert nl.name_of(nl.identity) == "linear"
    assert nl.name_of(nl.leaky_rectify) == "leaky_rectify"
    assert nl.name_of(nl.selu) == "selu"


def test_get_unknown_name_suggests_and_lists():
    with pytest.raises(
        ValueError, match=r"'rleu'.*did you mean 'relu'.*valid names: elu, identity"
    ):
        nl.get("rleu")
    with pytest.raises(TypeError, match="string"):
        nl.get(nl.rectify)


@pytest.mark.parametrize("fn", [nl.LeakyRectify(0.2), lambda x: x, nl.ScaledTanH(), nl.SELU()])
def test_name_of_unknown_raises(fn):
    with pytest.raises(ValueError, match="no registered name"):
        nl.name_of(fn)

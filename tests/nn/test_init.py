"""Tests for bntrain.nn.init: shapes, dtypes, fan rules, statistics and seeding."""

import math

import numpy as np
import pytest

from bntrain.nn import init
from bntrain.nn import random as nnrandom
from bntrain.nn.utils import create_param


@pytest.fixture(autouse=True)
def _restore_global_rng():
    saved = nnrandom._rng
    yield
    nnrandom._rng = saved


def _ref_normal(seed, std, shape, mean=0.0):
    return np.random.default_rng(seed).normal(mean, std, size=shape).astype(np.float32)


def _ref_uniform(seed, lo, hi, shape):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(np.float32)


# --- Normal / Uniform -------------------------------------------------------------------------


def test_normal_matches_seeded_numpy_and_statistics():
    w = init.Normal(std=0.5, mean=2.0, rng=0).sample((300, 200))
    assert w.dtype == np.float32 and w.shape == (300, 200)
    np.testing.assert_array_equal(w, _ref_normal(0, 0.5, (300, 200), mean=2.0))
    assert abs(w.mean() - 2.0) < 0.01
    assert abs(w.std() - 0.5) < 0.01


def test_normal_defaults_are_lasagnes():
    n = init.Normal()
    assert (n.std, n.mean) == (0.01, 0.0)
    u = init.Uniform()
    assert u.range == (-0.01, 0.01)


def test_uniform_symmetric_range_and_pair_range():
    w = init.Uniform(range=0.3, rng=1)((50, 40))
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, _ref_uniform(1, -0.3, 0.3, (50, 40)))
    w = init.Uniform(range=(1.0, 3.0), rng=2)((50, 40))
    np.testing.assert_array_equal(w, _ref_uniform(2, 1.0, 3.0, (50, 40)))
    assert w.min() >= 1.0 and w.max() <= 3.0


def test_uniform_std_takes_precedence_over_range():
    w = init.Uniform(range=5.0, std=0.2, mean=1.0, rng=3)((400, 300))
    half = math.sqrt(3) * 0.2
    np.testing.assert_array_equal(w, _ref_uniform(3, 1.0 - half, 1.0 + half, (400, 300)))
    assert abs(w.std() - 0.2) < 0.005
    assert abs(w.mean() - 1.0) < 0.005


# --- Glorot / He ------------------------------------------------------------------------------

GLOROT_CASES = [
    # shape, c01b, (n1 + n2) * receptive field
    ((20, 30), False, 50),
    ((16, 8, 3, 3), False, 24 * 9),
    ((16, 8, 5), False, 24 * 5),
    ((8, 3, 3, 16), True, 24 * 9),
]


@pytest.mark.parametrize("shape,c01b,denom", GLOROT_CASES)
@pytest.mark.parametrize("gain", [1.0, "relu"])
def test_glorot_fan_rules(shape, c01b, denom, gain):
    g = math.sqrt(2) if gain == "relu" else gain
    std = g * math.sqrt(2.0 / denom)
    w = init.GlorotNormal(gain=gain, c01b=c01b, rng=5).sample(shape)
    assert w.dtype == np.float32 and w.shape == shape
    np.testing.assert_array_equal(w, _ref_normal(5, std, shape))
    a = math.sqrt(3) * std
    w = init.GlorotUniform(gain=gain, c01b=c01b, rng=6).sample(shape)
    np.testing.assert_array_equal(w, _ref_uniform(6, -a, a, shape))


HE_CASES = [
    ((20, 30), False, 20),
    ((16, 8, 3, 3), False, 72),
    ((16, 8, 5), False, 40),
    ((8, 3, 3, 16), True, 72),
]


@pytest.mark.parametrize("shape,c01b,fan_in", HE_CASES)
@pytest.mark.parametrize("gain", [1.0, "relu", 0.5])
def test_he_fan_rules(shape, c01b, fan_in, gain):
    g = math.sqrt(2) if gain == "relu" else gain
    std = g * math.sqrt(1.0 / fan_in)
    w = init.HeNormal(gain=gain, c01b=c01b, rng=7).sample(shape)
    np.testing.assert_array_equal(w, _ref_normal(7, std, shape))
    a = math.sqrt(3) * std
    w = init.HeUniform(gain=gain, c01b=c01b, rng=8).sample(shape)
    np.testing.assert_array_equal(w, _ref_uniform(8, -a, a, shape))


def test_glorot_statistics_large_sample():
    w = init.GlorotUniform(rng=0)((400, 600))
    assert abs(w.std() - math.sqrt(2.0 / 1000)) < 2e-4
    assert np.abs(w).max() <= math.sqrt(6.0 / 1000)


def test_glorot_and_he_take_an_initializer_class():
    w = init.Glorot(init.Normal, rng=9)((10, 30))
    np.testing.assert_array_equal(w, _ref_normal(9, math.sqrt(2.0 / 40), (10, 30)))
    w = init.He(init.Uniform, rng=9)((10, 30))
    a = math.sqrt(3) * math.sqrt(0.1)
    np.testing.assert_array_equal(w, _ref_uniform(9, -a, a, (10, 30)))


def test_initializer_hierarchy_is_lasagnes():
    # Glorot and He are direct subclasses of Initializer; their subclasses need no argument
    direct = set(init.Initializer.__subclasses__())
    assert {init.Normal, init.Uniform, init.Glorot, init.He, init.Constant} <= direct
    assert all(cls.__name__[0] != "_" for cls in direct)
    for family in (init.Glorot, init.He):
        for cls in family.__subclasses__():
            w = cls(rng=0).sample((12, 23))
            assert w.shape == (12, 23)
            assert isinstance(cls(), init.Initializer)


def test_glorot_accepts_lasagne_style_initializer_without_rng():
    seen = {}

    class MyInit:
        def __init__(self, std):
            seen["std"] = std

        def sample(self, shape):
            return np.full(shape, seen["std"], dtype=np.float32)

    w = init.Glorot(MyInit)((4, 4))
    assert seen["std"] == pytest.approx(0.5)
    np.testing.assert_allclose(w, 0.5)


@pytest.mark.parametrize(
    "cls", [init.GlorotUniform, init.GlorotNormal, init.HeNormal, init.HeUniform]
)
def test_glorot_he_reject_1d_and_bad_c01b(cls):
    with pytest.raises(ValueError, match=r"length >= 2.*\(5,\)") as err:
        cls()((5,))
    assert isinstance(err.value, RuntimeError)  # Lasagne raised RuntimeError
    assert cls.__name__ in str(err.value)
    with pytest.raises(RuntimeError, match="c01b"):
        cls(c01b=True)((3, 3, 3))


@pytest.mark.parametrize("cls", [init.GlorotUniform, init.HeNormal, init.Orthogonal])
def test_bad_gain(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}.*'tanh'"):
        cls(gain="tanh")
    with pytest.raises(TypeError, match=cls.__name__):
        cls(gain=[1.0])


# --- Constant / Sparse / Orthogonal -----------------------------------------------------------


def test_constant():
    w = init.Constant(2.5)((3, 4, 5))
    assert w.dtype == np.float32 and w.shape == (3, 4, 5)
    np.testing.assert_array_equal(w, np.full((3, 4, 5), 2.5, np.float32))
    assert not init.Constant()((7,)).any()


def test_sparse_nonzeros_per_column_and_std():
    w = init.Sparse(sparsity=0.25, std=0.5, rng=0)((40, 300))
    assert w.dtype == np.float32 and w.shape == (40, 300)
    np.testing.assert_array_equal((w != 0).sum(axis=0), np.full(300, 10))
    assert abs(w[w != 0].std() - 0.5) < 0.03
    np.testing.assert_array_equal(w, init.Sparse(sparsity=0.25, std=0.5, rng=0)((40, 300)))


def test_sparse_defaults_and_errors():
    w = init.Sparse(rng=1)((35, 6))  # int(0.1 * 35) = 3 per column
    np.testing.assert_array_equal((w != 0).sum(axis=0), np.full(6, 3))
    with pytest.raises(NotImplementedError, match=r"Sparse.*\(3, 3, 3\)") as err:
        init.Sparse()((3, 3, 3))
    assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match=r"Sparse.*sparsity.*1\.5"):
        init.Sparse(sparsity=1.5)


@pytest.mark.parametrize("shape", [(20, 30), (30, 20), (8, 3, 3, 3), (6, 6)])
@pytest.mark.parametrize("gain", [1.0, "relu"])
def test_orthogonal(shape, gain):
    g = math.sqrt(2) if gain == "relu" else gain
    w = init.Orthogonal(gain=gain, rng=11)(shape)
    assert w.dtype == np.float32 and w.shape == shape
    flat = w.reshape(shape[0], -1).astype(np.float64)
    if flat.shape[0] <= flat.shape[1]:
        gram = flat @ flat.T
    else:
        gram = flat.T @ flat
    np.testing.assert_allclose(gram, g**2 * np.eye(gram.shape[0]), atol=1e-5)


def test_orthogonal_rejects_1d():
    with pytest.raises(RuntimeError, match=r"Orthogonal.*\(4,\)"):
        init.Orthogonal()((4,))


# --- seeding ----------------------------------------------------------------------------------

ALL_RANDOM = [
    lambda rng: init.Normal(rng=rng),
    lambda rng: init.Uniform(rng=rng),
    lambda rng: init.GlorotUniform(rng=rng),
    lambda rng: init.GlorotNormal(rng=rng),
    lambda rng: init.HeUniform(rng=rng),
    lambda rng: init.HeNormal(rng=rng),
    lambda rng: init.Sparse(sparsity=0.5, rng=rng),
    lambda rng: init.Orthogonal(rng=rng),
]


@pytest.mark.parametrize("make", ALL_RANDOM)
def test_seeded_is_reproducible_and_streams(make):
    a1, a2 = make(123), make(123)
    first = a1((6, 5))
    np.testing.assert_array_equal(first, a2((6, 5)))
    # An int seed becomes one generator: the next sample continues the stream.
    assert not np.array_equal(first, a1((6, 5)))
    # A Generator instance works the same way as its seed.
    np.testing.assert_array_equal(first, make(np.random.default_rng(123))((6, 5)))


@pytest.mark.parametrize("make", ALL_RANDOM)
def test_rng_none_uses_global_generator_at_sample_time(make):
    initializer = make(None)
    nnrandom.set_rng(77)
    a = initializer((6, 5))
    nnrandom.set_rng(77)
    np.testing.assert_array_equal(a, initializer((6, 5)))
    np.testing.assert_array_equal(a, make(np.random.RandomState(77))((6, 5)))


def test_bad_rng_and_bad_values():
    with pytest.raises(TypeError, match=r"Normal\(rng=...\).*'abc'"):
        init.Normal(rng="abc")
    with pytest.raises(ValueError, match=r"Normal.*std.*-1"):
        init.Normal(std=-1)
    with pytest.raises(ValueError, match=r"Uniform.*\(1, 2, 3\)"):
        init.Uniform(range=(1, 2, 3))
    with pytest.raises(TypeError, match="Initializer"):
        init.Initializer(rng=1.5)
    with pytest.raises(NotImplementedError):
        init.Initializer()((2, 2))


def test_create_param_uses_initializer():
    p = create_param(init.GlorotUniform(rng=0), (3, 4), name="W")
    value = p.get_value()
    assert value.dtype == np.float32 and p.name == "W"
    a = math.sqrt(3) * math.sqrt(2.0 / 7)
    np.testing.assert_array_equal(value, _ref_uniform(0, -a, a, (3, 4)))

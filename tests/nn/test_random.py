"""Tests for bntrain.nn.random: the default generator and set_rng."""

import numpy as np
import pytest

from bntrain.nn import random as nnrandom


@pytest.fixture(autouse=True)
def _restore_global_rng():
    saved = nnrandom._rng
    yield
    nnrandom._rng = saved


def test_get_rng_is_lazy_generator_and_stable():
    nnrandom._rng = None
    rng = nnrandom.get_rng()
    assert isinstance(rng, np.random.Generator)
    assert nnrandom.get_rng() is rng


def test_default_rng_is_seeded_from_entropy():
    draws = []
    for _ in range(2):
        nnrandom._rng = None
        draws.append(nnrandom.get_rng().integers(0, 2**62))
    assert draws[0] != draws[1]


def test_set_rng_generator_is_returned():
    rng = np.random.default_rng(3)
    nnrandom.set_rng(rng)
    assert nnrandom.get_rng() is rng


def test_set_rng_int_seed_is_reproducible():
    nnrandom.set_rng(42)
    a = nnrandom.get_rng().normal(size=5)
    nnrandom.set_rng(np.int64(42))
    b = nnrandom.get_rng().normal(size=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.random.default_rng(42).normal(size=5))


def test_set_rng_accepts_randomstate_for_lasagne_ports():
    rs = np.random.RandomState(1234)
    nnrandom.set_rng(rs)
    assert nnrandom.get_rng() is rs


@pytest.mark.parametrize("bad", ["seed", 1.5, None, True])
def test_set_rng_rejects_other_types(bad):
    with pytest.raises(TypeError, match="set_rng"):
        nnrandom.set_rng(bad)


def test_set_rng_rejects_negative_seed():
    with pytest.raises(ValueError, match="-1"):
        nnrandom.set_rng(-1)

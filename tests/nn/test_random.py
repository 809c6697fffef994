"""Tests for bntrain.nn.random: the default generator and set_rng."""

import numpy as np
import pytest

from bntrain.nn import random as nnrandom


@pytest.fixture(autouse=True)
def _restore_global_rng():
    saved = nnrandom._rng
    yield
    nnrandom._rng = saved


def test_get_rng_is_lazy_randomstate_and_stable():
    nnrandom._rng = None
    rng = nnrandom.get_rng()
    assert isinstance(rng, np.random.RandomState)  # Lasagne's type: randint, seed, ...
    assert nnrandom.get_rng() is rng


def test_default_rng_can_be_reseeded_lasagne_style():
    nnrandom._rng = None
    nnrandom.get_rng().seed(1234)  # what Lasagne's tests and many ported scripts do
    np.testing.assert_array_equal(
        nnrandom.get_rng().uniform(size=3), np.random.RandomState(1234).uniform(size=3)
    )


def test_default_rng_is_seeded_from_entropy():
    draws = []
    for _ in range(2):
        nnrandom._rng = None
        draws.append(nnrandom.get_rng().randint(0, 2**62, dtype=np.int64))
    assert draws[0] != draws[1]


def test_custom_layer_seeds_its_stream_lasagne_style():
    nnrandom.set_rng(np.random.RandomState(5))
    seed = nnrandom.get_rng().randint(1, 2147462579)
    assert seed == np.random.RandomState(5).randint(1, 2147462579)
    nnrandom.get_rng().seed(5)  # RandomState's own API works
    assert nnrandom.get_rng().randint(1, 2147462579) == seed


def test_set_rng_generator_is_wrapped_sharing_its_stream():
    rng = np.random.default_rng(3)
    nnrandom.set_rng(rng)
    got = nnrandom.get_rng()
    assert isinstance(got, np.random.RandomState)
    want = np.random.RandomState(np.random.default_rng(3).bit_generator).normal(size=4)
    np.testing.assert_array_equal(got.normal(size=4), want)
    # the wrapped generator advanced with it
    assert rng.bit_generator.state != np.random.default_rng(3).bit_generator.state


def test_set_rng_int_seed_is_reproducible():
    nnrandom.set_rng(42)
    a = nnrandom.get_rng().normal(size=5)
    nnrandom.set_rng(np.int64(42))
    b = nnrandom.get_rng().normal(size=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.random.RandomState(42).normal(size=5))


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

"""Batch-norm numerics on hard inputs against a float64 two-pass NumPy reference.

Channels: 0 has mean 1e4 and std 1e-2, 1 is constant, 2 comes from float16
data, 3 is ordinary N(0, 1).  Batches of 64, 64, 2 (a batch of two) and 37 (a
short last batch).  Checked: the training forward of ``BatchNormLayer`` (batch
statistics), its moving averages after those batches, and
``bntrain.bnstats.compute_bn_stats`` over the whole set.  The tolerances are the
ones stated in docs/reliability.md.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytest

from bntrain.bnstats import compute_bn_stats
from bntrain.data import ArrayDataset
from bntrain.model import Network
from bntrain.nn import layers as L

EPS = 1e-4
ALPHA = 0.1
SIZES = [64, 64, 2, 37]


def make_data(seed: int = 0) -> np.ndarray:
    """float32 examples of 4 channels (channel 2 went through float16 storage)."""
    rng = np.random.default_rng(seed)
    n = sum(SIZES)
    x = np.empty((n, 4), dtype=np.float32)
    x[:, 0] = 1e4 + 1e-2 * rng.standard_normal(n)
    x[:, 1] = 3.0
    x[:, 2] = (5.0 + 2.0 * rng.standard_normal(n)).astype(np.float16)
    x[:, 3] = rng.standard_normal(n)
    return x


def reference(batch: np.ndarray):
    """Float64 two-pass mean, biased variance and normalized output of a float32 batch."""
    x = batch.astype(np.float64)
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)
    return mean, var, (x - mean) / np.sqrt(var + EPS)


@pytest.fixture(scope="module")
def layer_and_fn():
    inp = L.InputLayer((None, 4), name="input")
    bn = L.BatchNormLayer(inp, epsilon=EPS, alpha=ALPHA, name="bn")
    out, updates = L.get_output(bn, return_updates=True)
    fn = pytensor.function([inp.input_var], out, updates=updates)
    network = Network(input_layer=inp, output_layer=bn, layers=[inp, bn], n_classes=4)
    return network, bn, fn


def test_training_forward_and_moving_averages(layer_and_fn):
    network, bn, fn = layer_and_fn
    x = make_data()
    bn.mean.set_value(np.zeros(4, np.float32))
    bn.inv_std.set_value(np.ones(4, np.float32))
    ema_mean, ema_inv_std = np.zeros(4), np.ones(4)
    start = 0
    for size in SIZES:
        batch = x[start : start + size]
        start += size
        out = fn(batch)
        assert out.dtype == np.float32
        mean, var, ref = reference(batch)
        # normalized output (O(1) values): absolute error
        np.testing.assert_allclose(out[:, 1:], ref[:, 1:], rtol=0, atol=1e-6, err_msg=str(size))
        # channel 0: a float32 mean near 1e4 is off by up to half an ulp (4.9e-4), which the
        # normalization divides by sqrt(var + eps) ~ 1e-2: the float32 limit, not a bug
        bound = 1.5 * np.spacing(np.float32(1e4)) / np.sqrt(var[0] + EPS)
        np.testing.assert_allclose(out[:, 0], ref[:, 0], rtol=0, atol=bound, err_msg=str(size))
        assert np.abs(out[:, 0] - ref[:, 0]).max() > 1e-4  # (the loss is real: see the docs)
        assert np.all(out[:, 1] == 0)  # a constant channel normalizes to exactly beta = 0
        ema_mean = (1 - ALPHA) * ema_mean + ALPHA * mean
        ema_inv_std = (1 - ALPHA) * ema_inv_std + ALPHA / np.sqrt(var + EPS)
        np.testing.assert_allclose(bn.mean.get_value(), ema_mean, rtol=2e-7, atol=1e-7)
        np.testing.assert_allclose(bn.inv_std.get_value()[1:], ema_inv_std[1:], rtol=1e-6)
        np.testing.assert_allclose(bn.inv_std.get_value()[0], ema_inv_std[0], rtol=2e-3)
    assert bn.mean.get_value().dtype == np.float32


@pytest.mark.parametrize("batch_size", [64, 2, 165])
def test_recomputed_statistics(layer_and_fn, batch_size):
    network, bn, _ = layer_and_fn
    x = make_data(seed=1)
    mean, var, _ = reference(x)
    # stored as float16 on disk: the loader casts to float32 per batch
    ds16 = ArrayDataset(x.astype(np.float16), None, name="x16")
    for ds, m_ref, v_ref in (
        (ArrayDataset(x, None, name="x32"), mean, var),
        (ds16, *reference(x.astype(np.float16).astype(np.float32))[:2]),
    ):
        stats = compute_bn_stats(network, ds, None, batch_size, mode_name="NUMBA")
        s = stats["bn"]
        np.testing.assert_allclose(s.mean, m_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s.var, v_ref, rtol=1e-9, atol=1e-12)
        assert s.var[1] == 0.0

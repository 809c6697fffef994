"""Tests of EmbeddingLayer against NumPy indexing."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bntrain.nn.layers import EmbeddingLayer, InputLayer, get_output

VOCAB, SIZE = 6, 3


@pytest.mark.parametrize("shape", [(4,), (2, 5)])
def test_lookup_and_gradient(shape):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCAB, SIZE)).astype(np.float32)
    l_in = InputLayer((None,) * len(shape))
    layer = EmbeddingLayer(l_in, input_size=VOCAB, output_size=SIZE, W=table)
    assert layer.output_shape == (None,) * len(shape) + (SIZE,)
    idx = pt.tensor(dtype="int32", shape=(None,) * len(shape))
    weights = pt.tensor(dtype="float32", shape=(None,) * (len(shape) + 1))
    out = get_output(layer, idx)
    grad = pytensor.grad((out * weights).sum(), layer.W)
    idx_val = rng.integers(0, VOCAB, size=shape).astype(np.int32)
    w_val = rng.standard_normal(shape + (SIZE,)).astype(np.float32)
    got, got_grad = pytensor.function([idx, weights], [out, grad])(idx_val, w_val)
    np.testing.assert_array_equal(got, table[idx_val])
    assert got.dtype == np.float32
    expected_grad = np.zeros((VOCAB, SIZE))
    np.add.at(expected_grad, idx_val, w_val.astype(np.float64))
    np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-6, atol=1e-6)


def test_jax_matches_default_mode():
    pytest.importorskip("jax")
    layer = EmbeddingLayer(InputLayer((2, 3)), input_size=VOCAB, output_size=SIZE)
    idx = pt.imatrix()
    out = get_output(layer, idx)
    idx_val = np.array([[0, 5, 2], [2, 2, 1]], dtype=np.int32)
    expected = pytensor.function([idx], out)(idx_val)
    np.testing.assert_array_equal(pytensor.function([idx], out, mode="JAX")(idx_val), expected)


def test_errors():
    l_in = InputLayer((None, 3))
    with pytest.raises(ValueError, match="input_size must be a positive int, got 0"):
        EmbeddingLayer(l_in, 0, 4)
    with pytest.raises(ValueError, match=r"parameter array has shape \(3, 4\), should be \(5, 4\)"):
        EmbeddingLayer(l_in, 5, 4, W=np.zeros((3, 4)))
    layer = EmbeddingLayer(l_in, 5, 4)
    with pytest.raises(TypeError, match="must hold integer indices, got dtype float32"):
        get_output(layer, pt.fmatrix())

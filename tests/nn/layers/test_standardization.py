"""Tests of StandardizationLayer, instance_norm, layer_norm and LRN against NumPy references."""

from __future__ import annotations

import numpy as np
import pytensor
import pytest

from bntrain.nn import nonlinearities
from bntrain.nn.layers import (
    BiasLayer,
    DenseLayer,
    InputLayer,
    LocalResponseNormalization2DLayer,
    NonlinearityLayer,
    ScaleLayer,
    StandardizationLayer,
    get_output,
    instance_norm,
    layer_norm,
    normalization,
)

F32 = np.float32
RNG = np.random.default_rng(31)


def evaluate(layer, l_in, x):
    return pytensor.function([l_in.input_var], get_output(layer))(x)


@pytest.mark.parametrize(
    ("axes", "shape", "want_axes"),
    [
        ("auto", (4, 6), (1,)),
        ("auto", (4, 3, 5, 5), (2, 3)),
        ("spatial", (4, 3, 5), (2,)),
        ("features", (4, 3, 5), (1, 2)),
        (0, (4, 3), (0,)),
    ],
)
def test_standardization_matches_numpy(axes, shape, want_axes):
    x = (RNG.normal(size=shape) * 3 + 10).astype(F32)
    l_in = InputLayer((None,) + shape[1:])
    layer = StandardizationLayer(l_in, axes=axes, epsilon=1e-4)
    assert layer.axes == want_axes and layer.get_params() == []
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=want_axes, keepdims=True)
    centered = x64 - mean
    want = centered / np.sqrt((centered**2).mean(axis=want_axes, keepdims=True) + 1e-4)
    got = evaluate(layer, l_in, x)
    assert got.dtype == F32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_standardization_rejects_unknown_axes_word():
    with pytest.raises(ValueError, match="'spatial', 'features'"):
        StandardizationLayer(InputLayer((None, 3)), axes="channels")


@pytest.mark.parametrize(
    ("macro", "suffix", "axes"), [(instance_norm, "_in", (2, 3)), (layer_norm, "_ln", (1, 2, 3))]
)
def test_norm_macros_build_the_stack(macro, suffix, axes):
    dense = DenseLayer(InputLayer((None, 5)), 12, nonlinearity=nonlinearities.tanh, name="fc")
    l_shape = normalization.StandardizationLayer  # the module re-exports it, as Lasagne's does
    from bntrain.nn.layers import ReshapeLayer

    conv_like = ReshapeLayer(dense, ([0], 3, 2, 2))
    conv_like.nonlinearity = nonlinearities.tanh
    conv_like.b = None
    top = macro(conv_like)
    assert isinstance(top, NonlinearityLayer) and top.nonlinearity is nonlinearities.tanh
    assert conv_like.nonlinearity is nonlinearities.identity
    bias, scale, std = (
        top.input_layer,
        top.input_layer.input_layer,
        top.input_layer.input_layer.input_layer,
    )
    assert (
        isinstance(bias, BiasLayer) and isinstance(scale, ScaleLayer) and isinstance(std, l_shape)
    )
    assert std.axes == axes and bias.b.get_value().shape == (3,)
    assert dense.b is not None  # only the wrapped layer loses its bias
    named = macro(DenseLayer(InputLayer((None, 5)), 4, name="d"))
    assert [named.name, named.input_layer.name] == [f"d{suffix}_nonlin", f"d{suffix}_bias"]


def test_lrn_matches_numpy():
    x = RNG.normal(size=(2, 7, 3, 4)).astype(F32)
    l_in = InputLayer((None, 7, 3, 4))
    alpha, k, beta, n = 1.5, 2.0, 0.75, 5
    layer = LocalResponseNormalization2DLayer(l_in, alpha=alpha, k=k, beta=beta, n=n)
    x64 = x.astype(np.float64)
    want = np.empty_like(x64)
    for c in range(7):
        lo, hi = max(0, c - n // 2), min(7, c + n // 2 + 1)
        energy = (x64[:, lo:hi] ** 2).sum(axis=1)
        want[:, c] = x64[:, c] / (k + alpha * energy) ** beta
    np.testing.assert_allclose(evaluate(layer, l_in, x), want, rtol=1e-5)
    with pytest.raises(NotImplementedError, match="only odd n"):
        LocalResponseNormalization2DLayer(l_in, n=4)

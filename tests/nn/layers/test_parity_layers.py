"""Tests of the layers added for Lasagne parity, each against a NumPy reference.

Shape layers (Slice, Pad), custom layers (Expression, Inverse), rectifiers
(PReLU, RReLU), noise (Gaussian), NIN, upscaling and feature pooling.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bntrain.nn import init, nonlinearities
from bntrain.nn.layers import (
    DenseLayer,
    ExpressionLayer,
    FeaturePoolLayer,
    FeatureWTALayer,
    GaussianNoiseLayer,
    InputLayer,
    InverseLayer,
    MaxPool2DLayer,
    NINLayer,
    PadLayer,
    ParametricRectifierLayer,
    RandomizedRectifierLayer,
    SliceLayer,
    Upscale1DLayer,
    Upscale2DLayer,
    Upscale3DLayer,
    get_all_params,
    get_output,
    prelu,
    rrelu,
    standardize,
)

F32 = np.float32
RNG = np.random.default_rng(2024)


def run(layer, x, **kwargs):
    """Compile the layer's output for input ``x`` (float32) and evaluate it."""
    l_in = layer
    while not isinstance(l_in, InputLayer):
        l_in = l_in.input_layer if hasattr(l_in, "input_layer") else l_in.input_layers[0]
    out = get_output(layer, **kwargs)
    return pytensor.function([l_in.input_var], out)(np.asarray(x, dtype=F32))


# --------------------------------------------------------------------------- shape
@pytest.mark.parametrize("indices", [1, -1, slice(1, None, 2), slice(None, -1)])
@pytest.mark.parametrize("axis", [1, -1])
def test_slice_layer_matches_numpy(indices, axis):
    x = RNG.normal(size=(2, 5, 4)).astype(F32)
    layer = SliceLayer(InputLayer((None, 5, 4)), indices, axis=axis)
    want = x[(slice(None),) * (axis % 3) + (indices,)]
    got = run(layer, x)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == F32
    assert layer.output_shape == (None,) + want.shape[1:]


def test_slice_layer_rejects_other_indices():
    with pytest.raises(TypeError, match="indices must be an int or a slice"):
        SliceLayer(InputLayer((None, 3)), [0, 1])


@pytest.mark.parametrize("width", [1, [(1, 2), 0], [2, (0, 3)]])
def test_pad_layer_matches_numpy(width):
    x = RNG.normal(size=(2, 3, 4, 5)).astype(F32)
    layer = PadLayer(InputLayer((None, 3, 4, 5)), width, val=-7)
    pairs = [(w, w) if isinstance(w, int) else w for w in ([width] * 2 if width == 1 else width)]
    want = np.pad(x, [(0, 0), (0, 0), *pairs], constant_values=-7)
    got = run(layer, x)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == F32 and layer.output_shape == (None,) + want.shape[1:]


def test_pad_layer_batch_ndim_and_errors():
    layer = PadLayer(InputLayer((2, None, 4)), 1, batch_ndim=1)
    assert layer.output_shape == (2, None, 6)
    with pytest.raises(ValueError, match="one entry per padded axis"):
        _ = PadLayer(InputLayer((2, 3, 4)), [1, 1, 1]).output_shape  # checked at use (Lasagne)
    with pytest.raises(ValueError, match="width entries"):
        _ = PadLayer(InputLayer((2, 3, 4)), [(1, 2, 3)]).output_shape


# --------------------------------------------------------------------------- custom layers
def test_expression_layer_shapes_and_output():
    l_in = InputLayer((None, 6))
    x = RNG.normal(size=(3, 6)).astype(F32)
    fn = lambda t: t[:, ::2] * 2  # noqa: E731
    for spec, shape in (
        ("auto", (None, 3)),
        ((None, 3), (None, 3)),
        (lambda s: (s[0], 3), (None, 3)),
    ):
        layer = ExpressionLayer(l_in, fn, output_shape=spec)
        assert layer.output_shape == shape
        np.testing.assert_array_equal(run(layer, x), x[:, ::2] * 2)
    assert ExpressionLayer(l_in, pt.exp).output_shape == (None, 6)


def test_inverse_of_dense_is_its_transpose():
    l_in = InputLayer((None, 4))
    dense = DenseLayer(l_in, 3, nonlinearity=None, b=None, W=init.Normal(rng=0))
    inv = InverseLayer(dense, dense)
    assert inv.output_shape == (None, 4)
    x = RNG.normal(size=(2, 4)).astype(F32)
    np.testing.assert_allclose(
        run(inv, x), (x @ dense.W.get_value()) @ dense.W.get_value().T, rtol=1e-5
    )


def test_inverse_of_max_pool_puts_values_back_where_the_maxima_were():
    l_in = InputLayer((1, 1, 2, 2))
    pool = MaxPool2DLayer(l_in, 2)
    x = np.array([[[[1, 5], [3, 2]]]], dtype=F32)
    np.testing.assert_array_equal(run(InverseLayer(pool, pool), x), [[[[0, 5], [0, 0]]]])


def test_standardize_applies_fixed_offset_and_scale():
    offset, scale = np.array([1, 2, 3], F32), np.array([2, 4, 8], F32)
    layer = standardize(InputLayer((None, 3)), offset, scale)
    x = RNG.normal(size=(4, 3)).astype(F32)
    np.testing.assert_allclose(run(layer, x), (x - offset) / scale, rtol=1e-6)
    assert get_all_params(layer, trainable=True) == []


# --------------------------------------------------------------------------- rectifiers
def leaky_reference(x, slope):
    return np.where(x > 0, x, slope * x)


@pytest.mark.parametrize(
    ("shared_axes", "alpha_shape"), [("auto", (3,)), ("all", ()), ((0, 1), (4, 5))]
)
def test_prelu_matches_numpy(shared_axes, alpha_shape):
    alpha = RNG.uniform(0.1, 0.5, alpha_shape).astype(F32)
    layer = ParametricRectifierLayer(InputLayer((None, 3, 4, 5)), alpha, shared_axes)
    assert layer.alpha.get_value().shape == alpha_shape
    x = RNG.normal(size=(2, 3, 4, 5)).astype(F32)
    kept = [a for a in range(4) if a not in layer.shared_axes]
    slope = np.expand_dims(alpha, tuple(a for a in range(4) if a not in kept)) if kept else alpha
    np.testing.assert_allclose(run(layer, x), leaky_reference(x, slope), rtol=1e-6)
    assert get_all_params(layer, regularizable=True) == []


def test_prelu_and_rrelu_take_over_the_nonlinearity():
    for wrap, cls in ((prelu, ParametricRectifierLayer), (rrelu, RandomizedRectifierLayer)):
        dense = DenseLayer(InputLayer((None, 4)), 3, nonlinearity=nonlinearities.tanh)
        top = wrap(dense)
        assert isinstance(top, cls) and dense.nonlinearity is nonlinearities.identity


def test_rrelu_draws_slopes_in_range_and_is_mean_when_deterministic():
    layer = RandomizedRectifierLayer(InputLayer((None, 3, 4)), 0.2, 0.6, rng=5)
    x = -np.ones((50, 3, 4), F32)
    slopes = -run(layer, x)
    assert slopes.min() >= 0.2 and slopes.max() <= 0.6 and slopes.std() > 0.05
    # shared over axes 0 and 2 ('auto'): one slope per channel
    np.testing.assert_array_equal(slopes, np.broadcast_to(slopes[:1, :, :1], slopes.shape))
    np.testing.assert_allclose(run(layer, x, deterministic=True), -0.4 * np.ones_like(x))
    np.testing.assert_array_equal(run(layer, -x), -x)  # positive values pass
    with pytest.raises(ValueError, match="lower <= upper"):
        RandomizedRectifierLayer(InputLayer((None, 3)), 0.5, 0.3)


def test_gaussian_noise_statistics_and_determinism():
    layer = GaussianNoiseLayer(InputLayer((200, 50)), sigma=0.5, rng=3)
    x = np.full((200, 50), 2.0, F32)
    f = pytensor.function([layer.input_layer.input_var], get_output(layer))
    first, second = f(x), f(x)
    assert first.dtype == F32
    assert abs((first - 2).mean()) < 0.01 and abs((first - 2).std() - 0.5) < 0.01
    assert not np.array_equal(first, second)  # the generator advances by itself
    np.testing.assert_array_equal(run(layer, x, deterministic=True), x)


# --------------------------------------------------------------------------- NIN
@pytest.mark.parametrize("untie_biases", [False, True])
def test_nin_layer_is_a_per_position_dense_layer(untie_biases):
    layer = NINLayer(
        InputLayer((None, 3, 4, 5)),
        2,
        untie_biases=untie_biases,
        W=init.Normal(rng=1),
        b=init.Normal(rng=2),
        nonlinearity=nonlinearities.rectify,
    )
    assert layer.output_shape == (None, 2, 4, 5)
    x = RNG.normal(size=(2, 3, 4, 5)).astype(F32)
    W, b = layer.W.get_value(), layer.b.get_value()
    pre = np.einsum("bchw,cu->buhw", x, W)
    pre = pre + (b[None] if untie_biases else b[None, :, None, None])
    np.testing.assert_allclose(run(layer, x), np.maximum(pre, 0), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- upscaling
@pytest.mark.parametrize(
    ("cls", "shape", "factor"),
    [
        (Upscale1DLayer, (2, 3, 4), 3),
        (Upscale2DLayer, (2, 3, 4, 5), (2, 3)),
        (Upscale3DLayer, (1, 2, 2, 3, 2), 2),
    ],
)
@pytest.mark.parametrize("mode", ["repeat", "dilate"])
def test_upscale_matches_numpy(cls, shape, factor, mode):
    x = RNG.normal(size=shape).astype(F32)
    layer = cls(InputLayer((None,) + shape[1:]), factor, mode=mode)
    n = cls.n_dims
    factors = (factor,) * n if isinstance(factor, int) else factor
    first = len(shape) - n
    if mode == "repeat":
        want = x
        for i, f in enumerate(factors):
            want = np.repeat(want, f, axis=first + i)
    else:
        want = np.zeros(
            shape[:first] + tuple(s * f for s, f in zip(shape[first:], factors, strict=True)), F32
        )
        want[(slice(None),) * first + tuple(slice(None, None, f) for f in factors)] = x
    got = run(layer, x)
    np.testing.assert_array_equal(got, want)
    assert layer.output_shape == (None,) + want.shape[1:]


def test_upscale_rejects_bad_factor_and_mode():
    with pytest.raises(ValueError, match="scale_factor must be >= 1"):
        Upscale2DLayer(InputLayer((1, 1, 2, 2)), 0)
    with pytest.raises(ValueError, match="mode must be 'repeat' or 'dilate'"):
        Upscale1DLayer(InputLayer((1, 1, 2)), 2, mode="nearest")


# --------------------------------------------------------------------------- feature pooling
def test_feature_pool_is_maxout():
    x = RNG.normal(size=(2, 6, 3)).astype(F32)
    layer = FeaturePoolLayer(InputLayer((None, 6, 3)), 3)
    assert layer.output_shape == (None, 2, 3)
    np.testing.assert_array_equal(run(layer, x), x.reshape(2, 2, 3, 3).max(axis=2))
    mean = FeaturePoolLayer(InputLayer((None, 6, 3)), 3, axis=2, pool_function=pt.mean)
    with pytest.raises(ValueError, match="multiple of pool_size=4"):
        FeaturePoolLayer(InputLayer((None, 6)), 4)
    assert mean.output_shape == (None, 6, 1)


def test_feature_wta_keeps_each_groups_first_maximum():
    x = np.array([[3, 1, 2, 2, -1, 0]], F32)
    layer = FeatureWTALayer(InputLayer((None, 6)), 3)
    np.testing.assert_array_equal(run(layer, x), [[3, 0, 0, 2, 0, 0]])
    x = RNG.normal(size=(4, 6, 2)).astype(F32)
    grouped = x.reshape(4, 2, 3, 2)
    want = np.where(grouped == grouped.max(axis=2, keepdims=True), grouped, 0).reshape(x.shape)
    np.testing.assert_array_equal(run(FeatureWTALayer(InputLayer((None, 6, 2)), 3), x), want)

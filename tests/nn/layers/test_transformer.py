"""Tests of TransformerLayer and TPSTransformerLayer against a NumPy bilinear sampler."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
import pytest

from bntrain.nn.layers import DenseLayer, InputLayer, TPSTransformerLayer, TransformerLayer

F32 = np.float32
RNG = np.random.default_rng(41)


def bilinear_reference(image, xs, ys):
    """Sample a (rows, cols) image at float pixel coordinates, clamping at the edges."""
    h, w = image.shape
    out = np.zeros(xs.shape)
    for idx in np.ndindex(xs.shape):
        x, y = xs[idx], ys[idx]
        x0, y0 = np.floor(x), np.floor(y)
        for cx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
            for cy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                col, row = int(np.clip(cx, 0, w - 1)), int(np.clip(cy, 0, h - 1))
                out[idx] += wx * wy * image[row, col]
    return out


def test_affine_transform_matches_numpy_sampler():
    x = RNG.normal(size=(2, 1, 6, 7)).astype(F32)
    theta = np.array([[0.8, 0.1, 0.05, -0.2, 0.9, 0.1], [1.2, 0, -0.3, 0, 1.1, 0.2]], F32)
    layer = TransformerLayer(InputLayer((None, 1, 6, 7)), InputLayer((None, 6)))
    got = layer.get_output_for([pt.constant(x), pt.constant(theta)]).eval()
    assert got.dtype == F32
    gx, gy = np.meshgrid(np.linspace(-1, 1, 7), np.linspace(-1, 1, 6))
    for b in range(2):
        t = theta[b].astype(np.float64).reshape(2, 3)
        sx = t[0, 0] * gx + t[0, 1] * gy + t[0, 2]
        sy = t[1, 0] * gx + t[1, 1] * gy + t[1, 2]
        want = bilinear_reference(x[b, 0].astype(np.float64), (sx + 1) / 2 * 6, (sy + 1) / 2 * 5)
        np.testing.assert_allclose(got[b, 0], want, rtol=1e-4, atol=1e-5)


def test_affine_downsampling_shape_and_errors():
    l_in = InputLayer((None, 3, 10, 9))
    layer = TransformerLayer(l_in, DenseLayer(l_in, 6), downsample_factor=(2, 1.5))
    assert layer.output_shape == (None, 3, 5, 6)
    with pytest.raises(ValueError, match=r"\(batch, 6\)"):
        TransformerLayer(l_in, DenseLayer(l_in, 5))
    with pytest.raises(ValueError, match="border_mode"):
        TransformerLayer(l_in, DenseLayer(l_in, 6), border_mode="reflect")


def test_tps_with_zero_offsets_is_the_identity_and_shifts_like_an_affine_map():
    x = RNG.normal(size=(2, 2, 8, 8)).astype(F32)
    layer = TPSTransformerLayer(InputLayer((None, 2, 8, 8)), InputLayer((None, 32)))
    zero = layer.get_output_for([pt.constant(x), pt.constant(np.zeros((2, 32), F32))]).eval()
    np.testing.assert_allclose(zero, x, atol=1e-4)
    # the same offset at every control point is a translation: equal to the affine layer's
    shift = np.concatenate([np.full(16, 0.3), np.full(16, -0.2)])[None].repeat(2, 0).astype(F32)
    tps = layer.get_output_for([pt.constant(x), pt.constant(shift)]).eval()
    affine = TransformerLayer(InputLayer((None, 2, 8, 8)), InputLayer((None, 6)))
    theta = np.tile(np.array([1, 0, 0.3, 0, 1, -0.2], F32), (2, 1))
    want = affine.get_output_for([pt.constant(x), pt.constant(theta)]).eval()
    np.testing.assert_allclose(tps, want, atol=1e-4)


def test_tps_grid_computed_symbolically_for_unknown_sizes():
    x = RNG.normal(size=(1, 1, 5, 6)).astype(F32)
    offsets = RNG.normal(scale=0.1, size=(1, 18)).astype(F32)
    fixed = TPSTransformerLayer(
        InputLayer((None, 1, 5, 6)), InputLayer((None, 18)), control_points=9
    )
    free = TPSTransformerLayer(
        InputLayer((None, 1, None, None)), InputLayer((None, 18)), control_points=9
    )
    assert fixed.precompute_grid and not free.precompute_grid
    a, b = (
        layer.get_output_for([pt.constant(x), pt.constant(offsets)]).eval()
        for layer in (fixed, free)
    )
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="perfect square"):
        TPSTransformerLayer(InputLayer((None, 1, 5, 6)), InputLayer((None, 10)), control_points=5)
    with pytest.raises(ValueError, match="precompute_grid=True"):
        TPSTransformerLayer(
            InputLayer((None, 1, None, 6)), InputLayer((None, 32)), precompute_grid=True
        )

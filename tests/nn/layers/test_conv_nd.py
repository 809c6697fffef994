"""Tests of the 1D/3D, grouped, transposed, dilated and locally connected layers and N-d pooling."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode
from pytensor.gradient import verify_grad

import bntrain.nn as lasagne
from bntrain.nn.layers import (
    BaseConvLayer,
    Conv1DLayer,
    Conv2DLayer,
    Conv3DLayer,
    Deconv2DLayer,
    Deconv3DLayer,
    DilatedConv2DLayer,
    InputLayer,
    LocallyConnected2DLayer,
    MaxPool1DLayer,
    MaxPool3DLayer,
    Pool1DLayer,
    Pool3DLayer,
    SpatialPyramidPoolingLayer,
    TransposedConv2DLayer,
    TransposedConv3DLayer,
    conv_input_length,
    get_output,
    pool_output_length,
)
from bntrain.nn.layers.pool import pool_2d

from ..ops.test_conv_ops import conv_nd_grads_reference, conv_nd_reference

PY = Mode(linker="py", optimizer="fast_compile")
RNG = np.random.default_rng(0)
NORMAL = lasagne.init.Normal(1.0, rng=RNG)


def _run(layers, shape, mode=PY):
    """Outputs of ``layers`` (all fed by one InputLayer of ``shape``) on a random input."""
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    fn = pytensor.function([layers[0].input_layer.input_var], get_output(layers), mode=mode)
    return x.astype(np.float64), fn(x)


def _weights(layer):
    return layer.W.get_value().astype(np.float64)


# (rank, filter_size, stride, pad, num_groups): every pad mode on 1, 2 and 3 spatial axes
FORWARD = [
    (1, 3, 1, "valid", 1),
    (1, 3, 2, "same", 2),
    (1, 2, 1, "full", 1),
    (1, 3, 3, 2, 1),
    (2, (3, 1), (2, 1), "same", 2),
    (3, 3, 1, "valid", 1),
    (3, (1, 3, 3), (1, 2, 1), "same", 1),
    (3, 2, (2, 1, 1), "full", 2),
    (3, (3, 1, 2), 1, (1, 0, 2), 1),
]
SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}


@pytest.fixture(scope="module")
def forward_case():
    out = {}
    for rank in (1, 2, 3):
        l_in = InputLayer((None, 4, *SPATIAL[rank]))
        cls = {1: Conv1DLayer, 2: Conv2DLayer, 3: Conv3DLayer}[rank]
        specs = [c for c in FORWARD if c[0] == rank]
        layers = [
            cls(
                l_in, 6, fs, stride=st, pad=pad, num_groups=g, W=NORMAL, b=NORMAL, nonlinearity=None
            )
            for _, fs, st, pad, g in specs
        ]
        out[rank] = (layers, *_run(layers, (2, 4, *SPATIAL[rank])))
    return out


@pytest.mark.parametrize("index", range(len(FORWARD)), ids=[str(c) for c in FORWARD])
def test_forward_layers_match_reference_for_every_pad_mode(forward_case, index):
    rank = FORWARD[index][0]
    layers, x, outputs = forward_case[rank]
    pos = [c for c in FORWARD if c[0] == rank].index(FORWARD[index])
    layer, got = layers[pos], outputs[pos]
    want = conv_nd_reference(
        x, _weights(layer), layer.stride, layer.resolved_pad, True, groups=layer.num_groups
    )
    want = want + layer.b.get_value().reshape((1, -1) + (1,) * rank)
    assert layer.output_shape == (None, *want.shape[1:])
    assert layer.get_output_shape_for(x.shape) == want.shape
    assert layer.W.get_value().shape == (6, 4 // layer.num_groups, *layer.filter_size)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_base_conv_layer_and_errors():
    assert BaseConvLayer((2, 3, 4, 5, 6), 1, 3).n == 3
    with pytest.raises(NotImplementedError, match="BaseConvLayer does not implement convolve"):
        BaseConvLayer((2, 3, 4), 1, 3).convolve(pt.tensor3())
    with pytest.raises(
        ValueError, match=r"BaseConvLayer\(name=None\): .*Expected 4 input dimensions"
    ):
        BaseConvLayer((10, 20, 30), 1, 3, n=2)
    with pytest.raises(
        ValueError, match=r"num_groups must be positive and evenly divide .* \(3 and 2\), got 2"
    ):
        Conv1DLayer((None, 3, 8), 2, 3, num_groups=2)
    with pytest.raises(ValueError, match=r"filter_size must be an int or a tuple of 3 ints"):
        Conv3DLayer((None, 3, 8, 8, 8), 2, (3, 3))
    # the fixed-rank layers take their rank from the class; a different n is refused
    assert Conv3DLayer((None, 3, 8, 8, 8), 2, 3, n=3).n == 3
    with pytest.raises(TypeError, match=r"Conv2DLayer\(name=None\): is a 2D convolution, got n=3"):
        Conv2DLayer((None, 3, 8, 8, 8), 2, 3, n=3)
    with pytest.raises(ValueError, match=r"tried to create a 3D convolution .* Expected 5"):
        TransposedConv3DLayer((None, 3, 8, 8), 2, 3)
    with pytest.raises(NotImplementedError, match="requires odd filter size"):
        Conv1DLayer((None, 3, 8), 2, 4, pad="same")
    assert conv_input_length(3, 3, 2, "same") == 5
    with pytest.raises(ValueError, match="Invalid pad: 'half'"):
        conv_input_length(3, 3, 2, "half")


# (rank, filter_size, stride, crop, flip_filters, output_size)
TRANSPOSED = [
    (2, 3, 2, 0, False, None),
    (2, (3, 1), (2, 3), "same", True, None),
    (2, 3, 1, "full", False, None),
    (2, (2, 3), (2, 3), 0, False, (9, 20)),
    (3, (2, 3, 1), (2, 1, 3), 1, True, None),
    (3, 2, 2, "valid", False, (9, 11, 5)),
]


@pytest.mark.parametrize("spec", TRANSPOSED, ids=[str(t) for t in TRANSPOSED])
def test_transposed_conv_is_the_input_gradient_of_a_convolution(spec):
    rank, fs, st, crop, flip, size = spec
    cls = TransposedConv2DLayer if rank == 2 else TransposedConv3DLayer
    spatial = (4, 6) if rank == 2 else (4, 5, 2)
    layer = cls(
        (None, 3, *spatial),
        2,
        fs,
        stride=st,
        crop=crop,
        flip_filters=flip,
        output_size=size,
        W=NORMAL,
        b=None,
        nonlinearity=None,
    )
    x, (got,) = _run([InputLayer((None, 3, *spatial))] and [_rewire(layer)], (2, 3, *spatial))
    out_spatial = layer.output_shape[2:]
    ref_input = np.zeros((2, 2, *out_spatial))
    want = conv_nd_grads_reference(
        ref_input, _weights(layer), x, layer.stride, layer.resolved_pad, not flip
    )[0]
    assert got.shape == want.shape
    assert layer.W.get_value().shape == (3, 2, *layer.filter_size)
    assert layer.crop == layer._padding and not hasattr(layer, "pad")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _rewire(layer):
    """Give a layer built on a shape tuple an InputLayer (for :func:`_run`)."""
    layer.input_layer = InputLayer(layer.input_shape)
    return layer


def test_transposed_conv_symbolic_output_size_and_aliases():
    assert Deconv2DLayer is TransposedConv2DLayer and Deconv3DLayer is TransposedConv3DLayer
    size = pytensor.shared(np.array([9, 13]))
    layer = TransposedConv2DLayer((None, 3, 4, 6), 2, 3, stride=2, output_size=size, b=None)
    assert layer.output_shape == (None, 2, None, None)
    x = np.random.default_rng(2).standard_normal((1, 3, 4, 6)).astype(np.float32)
    got = layer.get_output_for(pt.as_tensor(x)).eval(mode=PY)
    assert got.shape == (1, 2, 9, 13)
    smallest = TransposedConv2DLayer((None, 3, 4, 6), 2, 3, stride=2, b=None, W=layer.W)
    assert smallest.output_shape == (None, 2, 9, 13)


def test_dilated_conv_matches_reference_and_refuses_padding():
    layer = DilatedConv2DLayer((None, 3, 9, 8), 2, (3, 2), dilation=(2, 3), W=NORMAL, b=None)
    x, (got,) = _run([_rewire(layer)], (2, 3, 9, 8))
    want = conv_nd_reference(
        x, _weights(layer).transpose(1, 0, 2, 3), (1, 1), (0, 0), False, (2, 3)
    )
    assert layer.output_shape == (None, 2, 5, 5) and not hasattr(layer, "stride")
    np.testing.assert_allclose(got, np.maximum(want, 0), rtol=1e-4, atol=1e-4)
    with pytest.raises(NotImplementedError, match="requires pad=0"):
        DilatedConv2DLayer((None, 3, 9, 8), 2, 3, pad="same")
    with pytest.raises(NotImplementedError, match="requires flip_filters=False"):
        DilatedConv2DLayer((None, 3, 9, 8), 2, 3, flip_filters=True)


def local_reference(x, w, channelwise, flip):
    """Window by window with unshared weights, 'same' padding."""
    kh, kw = w.shape[-4:-2] if not channelwise else w.shape[1:3]
    n, c, rows, cols = x.shape
    xp = np.pad(x, [(0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)])
    if flip:
        w = w[..., ::-1, ::-1, :, :]
    out = np.zeros((n, w.shape[0], rows, cols))
    for i, j in itertools.product(range(rows), range(cols)):
        patch = xp[:, :, i : i + kh, j : j + kw]
        if channelwise:
            out[:, :, i, j] = np.einsum("ncab,cab->nc", patch, w[..., i, j])
        else:
            out[:, :, i, j] = np.einsum("ncab,fcab->nf", patch, w[..., i, j])
    return out


@pytest.mark.parametrize(("channelwise", "flip"), [(False, True), (True, False), (False, False)])
def test_locally_connected_matches_reference(channelwise, flip):
    layer = LocallyConnected2DLayer(
        (None, 3, 5, 4),
        3,
        (3, 1),
        flip_filters=flip,
        channelwise=channelwise,
        W=NORMAL,
        b=None,
        nonlinearity=None,
    )
    x, (got,) = _run([_rewire(layer)], (2, 3, 5, 4))
    shape = (3, 3, 1, 5, 4) if channelwise else (3, 3, 3, 1, 5, 4)
    assert layer.W.get_value().shape == shape
    np.testing.assert_allclose(
        got, local_reference(x, _weights(layer), channelwise, flip), rtol=1e-4, atol=1e-4
    )


def test_locally_connected_refusals():
    with pytest.raises(NotImplementedError, match="requires pad='same'"):
        LocallyConnected2DLayer((None, 2, 4, 4), 2, 3, pad=1)
    with pytest.raises(NotImplementedError, match=r"requires stride=1 / \(1, 1\)"):
        LocallyConnected2DLayer((None, 2, 4, 4), 2, 3, stride=2)
    with pytest.raises(
        ValueError, match="num_filters and the number of input channels should match"
    ):
        LocallyConnected2DLayer((None, 2, 4, 4), 4, 3, channelwise=True)
    with pytest.raises(ValueError, match="requires a fixed input shape"):
        LocallyConnected2DLayer((None, 2, None, 4), 2, 3)


def pool_nd_reference(x, ws, st, pad, ignore_border, mode):
    """Window by window over the last len(ws) axes, clipping windows to the input."""
    nd = len(ws)
    out_shape = [
        pool_output_length(x.shape[-nd + i], ws[i], st[i], pad[i], ignore_border) for i in range(nd)
    ]
    out = np.zeros(x.shape[:-nd] + tuple(out_shape))
    for pos in np.ndindex(*out_shape):
        starts = [i * s - p for i, s, p in zip(pos, st, pad, strict=True)]
        window = x[(Ellipsis, *(slice(max(a, 0), a + k) for a, k in zip(starts, ws, strict=True)))]
        axes = tuple(range(-nd, 0))
        if mode == "max":
            out[(Ellipsis, *pos)] = window.max(axis=axes)
        elif mode == "average_inc_pad" and ignore_border:
            out[(Ellipsis, *pos)] = window.sum(axis=axes) / np.prod(ws)
        else:
            out[(Ellipsis, *pos)] = window.mean(axis=axes)
    return out


POOLS = [
    (Pool1DLayer, 3, 2, 1, True, "average_exc_pad"),
    (Pool1DLayer, 2, 3, 0, False, "average_inc_pad"),
    (MaxPool1DLayer, 3, 1, 2, True, "max"),
    (Pool3DLayer, 2, None, 0, True, "average_inc_pad"),
    (Pool3DLayer, (2, 3, 2), (1, 2, 2), (1, 1, 0), True, "average_exc_pad"),
    (MaxPool3DLayer, 2, (2, 1, 3), 0, False, "max"),
]


@pytest.mark.parametrize("spec", POOLS, ids=[str(p) for p in POOLS])
def test_pool_1d_3d_match_reference(spec):
    cls, ws, st, pad, ib, mode = spec
    rank = 1 if cls in (Pool1DLayer, MaxPool1DLayer) else 3
    spatial = (9,) if rank == 1 else (5, 7, 6)
    kwargs = {} if cls in (MaxPool1DLayer, MaxPool3DLayer) else {"mode": mode}
    layer = cls((None, 2, *spatial), ws, st, pad, ib, **kwargs)
    x, (got,) = _run([_rewire(layer)], (2, 2, *spatial))
    want = pool_nd_reference(x, layer.pool_size, layer.stride, layer.pad, ib, mode)
    assert layer.output_shape == (None, *want.shape[1:])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_pool_layers_check_the_rank():
    with pytest.raises(
        ValueError, match=r"Pool1DLayer\(name=None\): .*Expected 3 input dimensions"
    ):
        MaxPool1DLayer((10, 20), 3)
    with pytest.raises(
        ValueError, match=r"Pool3DLayer\(name=None\): .*Expected 5 input dimensions"
    ):
        Pool3DLayer((10, 20, 30, 40), 2)


@pytest.mark.parametrize("mode", ["max", "average_inc_pad", "average_exc_pad"])
def test_symbolic_windows_gather_like_integer_windows(mode):
    # Theano's pool_2d accepts symbolic window sizes; the gather form must agree with the views
    x = np.random.default_rng(3).standard_normal((2, 2, 7, 8))
    ws, st = pt.lvector(), pt.lvector()
    xs = pt.dtensor4()
    fn = pytensor.function([xs, ws, st], pool_2d(xs, ws, True, st, (1, 1), mode), mode=PY)
    for w_, s_ in [((2, 3), (2, 1)), ((3, 3), (1, 2))]:
        want = pool_nd_reference(x, w_, s_, (1, 1), True, mode)
        np.testing.assert_allclose(fn(x, w_, s_), want, rtol=1e-10, atol=1e-12)
    verify_grad(
        lambda t: pool_2d(t, pt.as_tensor([2, 3]), True, pt.as_tensor([2, 1]), (1, 1), mode),
        [x[:1, :1, :5, :5]],
        rng=np.random.default_rng(4),
        mode=PY,
        eps=1e-6,
    )


def spp_reference(x, dims, mode, implementation):
    feats = []
    rows, cols = x.shape[2:]
    for p in dims:
        if implementation == "fast":
            ws = (-(-rows // p), -(-cols // p))
            pooled = pool_nd_reference(x, ws, (rows // p, cols // p), (0, 0), True, mode)
            feats.append(pooled.reshape(x.shape[:2] + (-1,)))
            continue
        for i, j in itertools.product(range(p), range(p)):
            r0, r1 = i * rows // p, -(-(i + 1) * rows // p)
            c0, c1 = j * cols // p, -(-(j + 1) * cols // p)
            region = x[:, :, r0:r1, c0:c1]
            feats.append((region.max if mode == "max" else region.mean)(axis=(2, 3))[..., None])
    return np.concatenate(feats, axis=2)


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize(
    ("mode", "implementation"),
    [("max", "fast"), ("average_exc_pad", "kaiming"), ("max", "kaiming")],
)
def test_spatial_pyramid_pooling(known, mode, implementation):
    shape = (2, 3, 9, 7)
    layer = SpatialPyramidPoolingLayer(
        shape if known else (None, 3, None, None), [1, 2, 3], mode, implementation
    )
    x, (got,) = _run([_rewire(layer)], shape)
    assert layer.output_shape[1:] == (3, 14)
    np.testing.assert_allclose(
        got, spp_reference(x, [1, 2, 3], mode, implementation), rtol=1e-5, atol=1e-6
    )


def test_spatial_pyramid_pooling_errors():
    with pytest.raises(ValueError, match="Expected 4 input dimensions"):
        SpatialPyramidPoolingLayer((10, 20, 30))
    with pytest.raises(
        ValueError,
        match="Mode must be either 'max', 'average_inc_pad' or 'average_exc_pad'. Got 'sum'",
    ):
        SpatialPyramidPoolingLayer((None, 2, 4, 4), mode="sum")
    with pytest.raises(ValueError, match="pool_dims must be positive ints, got \\[0\\]"):
        SpatialPyramidPoolingLayer((None, 2, 4, 4), pool_dims=[0])


def test_new_layers_compile_in_jax():
    # one graph with every new layer and its gradient, JAX against the Python linker
    l1 = InputLayer((None, 2, 8))
    c1 = Conv1DLayer(l1, 4, 3, pad="same", num_groups=2, W=NORMAL)
    p1 = MaxPool1DLayer(c1, 3, stride=2, pad=1)
    l3 = InputLayer((None, 2, 4, 6, 5))
    c3 = Conv3DLayer(l3, 2, 2, stride=(1, 2, 1), W=NORMAL)
    t3 = TransposedConv3DLayer(c3, 2, 2, stride=(1, 2, 1), W=NORMAL)
    p3 = Pool3DLayer(t3, 2, mode="average_exc_pad", ignore_border=False)
    l2 = InputLayer((None, 2, 6, 6))
    d2 = DilatedConv2DLayer(l2, 2, 2, dilation=2, W=NORMAL)
    lc = LocallyConnected2DLayer(d2, 2, 3, W=NORMAL)
    spp = SpatialPyramidPoolingLayer(lc, [1, 2])
    outs = get_output([p1, p3, spp])
    params = [c1.W, c3.W, t3.W, d2.W, lc.W]
    grads = pytensor.grad(sum((o * pt.cos(o)).sum() for o in outs), params)
    rng = np.random.default_rng(5)
    values = [
        rng.standard_normal((2, *s.output_shape[1:])).astype(np.float32) for s in (l1, l3, l2)
    ]
    inputs = [l1.input_var, l3.input_var, l2.input_var]
    got = pytensor.function(inputs, [*outs, *grads], mode="JAX")(*values)
    want = pytensor.function(inputs, [*outs, *grads], mode=PY)(*values)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4)

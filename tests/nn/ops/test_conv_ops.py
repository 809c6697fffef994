"""Tests of the N-d convolution Ops: float64 loop reference, finite differences, every backend."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode
from pytensor.gradient import verify_grad

import bntrain.nn  # noqa: F401  (floatX, registrations)
from bntrain.nn.ops import (
    Conv2d,
    Conv2dGradInputs,
    Conv2dGradWeights,
    ConvNd,
    ConvNdGradInputs,
    ConvNdGradWeights,
    conv,
    conv2d,
    conv_output_shape,
)

PY = Mode(linker="py", optimizer="fast_compile")


def conv_nd_reference(x, w, stride, pad, flip, dilation=None, groups=1):
    """Direct loop over output positions, float64, any number of spatial axes."""
    n, c = x.shape[:2]
    f, cg, *kernel = w.shape
    nd = len(kernel)
    dilation = dilation or (1,) * nd
    if flip:
        w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * nd]
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out_shape = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(x.shape[2:], kernel, stride, pad, dilation, strict=True)
    ]
    out = np.zeros((n, f, *out_shape))
    fg = f // groups
    for pos in np.ndindex(*out_shape):
        window = tuple(
            slice(i * s, i * s + d * (k - 1) + 1, d)
            for i, s, d, k in zip(pos, stride, dilation, kernel, strict=True)
        )
        patch = xp[(slice(None), slice(None), *window)]
        for g in range(groups):
            part = patch[:, g * cg : (g + 1) * cg].reshape(n, cg, -1)
            taps = w[g * fg : (g + 1) * fg].reshape(fg, cg, -1)
            out[(slice(None), slice(g * fg, (g + 1) * fg), *pos)] = np.einsum(
                "ncp,fcp->nf", part, taps
            )
    return out


def conv_nd_grads_reference(x, w, g, stride, pad, flip, dilation=None, groups=1):
    """Gradients of sum(conv(x, w) * g) by the chain rule on the loop reference."""
    f, cg, *kernel = w.shape
    nd = len(kernel)
    dilation = dilation or (1,) * nd
    flip_axes = (slice(None), slice(None)) + (slice(None, None, -1),) * nd
    weff = w[flip_axes] if flip else w
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(p, p) for p in pad])
    gxp = np.zeros_like(xp)
    gw = np.zeros(w.shape)
    fg = f // groups
    for pos in np.ndindex(*g.shape[2:]):
        window = tuple(
            slice(i * s, i * s + d * (k - 1) + 1, d)
            for i, s, d, k in zip(pos, stride, dilation, kernel, strict=True)
        )
        for k in range(groups):
            fs, cs = slice(k * fg, (k + 1) * fg), slice(k * cg, (k + 1) * cg)
            gk = g[(slice(None), fs, *pos)]
            gxp[(slice(None), cs, *window)] += np.einsum("nf,fc...->nc...", gk, weff[fs])
            gw[fs] += np.einsum("nf,nc...->fc...", gk, xp[(slice(None), cs, *window)])
    if flip:
        gw = gw[flip_axes]
    crop = tuple(slice(p, p + s) for p, s in zip(pad, x.shape[2:], strict=True))
    return gxp[(slice(None), slice(None), *crop)], gw


def conv_reference(x, w, stride, pad, flip):
    """2D forward reference (no dilation, one group)."""
    return conv_nd_reference(x, w, stride, pad, flip)


def grads_reference(x, w, g, stride, pad, flip):
    """2D gradient reference (no dilation, one group)."""
    return conv_nd_grads_reference(x, w, g, stride, pad, flip)


# (x shape, filter shape, stride, pad): non-square inputs and filters; pads
# 0 ('valid'), k // 2 ('same'), k - 1 ('full') and arbitrary.
CONFIGS = [
    ((2, 3, 7, 6), (4, 3, 3, 2), (1, 1), (0, 0)),
    ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), (1, 1)),
    ((2, 2, 6, 7), (3, 2, 3, 2), (1, 1), (2, 1)),
    ((2, 3, 8, 7), (4, 3, 3, 2), (2, 3), (1, 2)),
    ((1, 2, 9, 5), (2, 2, 2, 3), (3, 1), (0, 2)),
    ((2, 1, 5, 5), (2, 1, 5, 1), (2, 2), (0, 0)),
]


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("config", CONFIGS)
def test_forward_matches_loop_reference(config, flip):
    x_shape, w_shape, stride, pad = config
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    xs, ws = pt.dtensor4(), pt.dtensor4()
    out = pytensor.function([xs, ws], conv2d(xs, ws, stride, pad, flip), mode=PY)(x, w)
    np.testing.assert_allclose(out, conv_reference(x, w, stride, pad, flip), rtol=1e-12, atol=1e-12)


def test_flip_is_true_convolution():
    # a 1x1-channel convolution with an asymmetric kernel against np.convolve's definition
    x = np.arange(6.0).reshape(1, 1, 1, 6)
    w = np.array([1.0, 2.0, 5.0]).reshape(1, 1, 1, 3)
    xs, ws = pt.dtensor4(), pt.dtensor4()
    conv = pytensor.function([xs, ws], conv2d(xs, ws, filter_flip=True), mode=PY)
    corr = pytensor.function([xs, ws], conv2d(xs, ws, filter_flip=False), mode=PY)
    np.testing.assert_allclose(conv(x, w).ravel(), np.convolve(x.ravel(), w.ravel(), "valid"))
    np.testing.assert_allclose(corr(x, w).ravel(), np.correlate(x.ravel(), w.ravel(), "valid"))


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[3], CONFIGS[4]])
def test_grad_ops_match_reference(config):
    x_shape, w_shape, stride, pad = config
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    for flip in (True, False):
        out = conv_reference(x, w, stride, pad, flip)
        g = rng.standard_normal(out.shape)
        gx_ref, gw_ref = grads_reference(x, w, g, stride, pad, flip)
        gx = Conv2dGradInputs(stride, pad, flip)(w, g, x).eval(mode=PY)
        gw = Conv2dGradWeights(stride, pad, flip)(x, g, w).eval(mode=PY)
        np.testing.assert_allclose(gx, gx_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gw, gw_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("config", [CONFIGS[2], CONFIGS[3]])
def test_verify_grad_float64(config, flip):
    x_shape, w_shape, stride, pad = config
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    op = Conv2d(stride, pad, flip)
    verify_grad(op, [x, w], rng=np.random.default_rng(3), mode=PY, eps=1e-6)


def test_second_derivatives_verify_grad():
    x_shape, w_shape, stride, pad = CONFIGS[3]
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    g = rng.standard_normal(conv_reference(x, w, stride, pad, True).shape)
    gi = Conv2dGradInputs(stride, pad, True)
    gwop = Conv2dGradWeights(stride, pad, True)
    # the reference input only fixes the shape: its gradient is disconnected
    verify_grad(lambda w_, g_: gi(w_, g_, pt.as_tensor(x)), [w, g], rng=rng, mode=PY, eps=1e-6)
    verify_grad(lambda x_, g_: gwop(x_, g_, pt.as_tensor(w)), [x, g], rng=rng, mode=PY, eps=1e-6)


def test_infer_shape_removes_ops():
    xs, ws = pt.tensor4(), pt.tensor4()
    op = Conv2d((2, 3), (1, 2), True)
    out = op(xs, ws)
    gx, gw = pytensor.grad((out**2).sum(), [xs, ws])
    fn = pytensor.function([xs, ws], [out.shape, gx.shape, gw.shape], mode=Mode(linker="py"))
    ops = {type(node.op) for node in fn.maker.fgraph.apply_nodes}
    assert not ops & {Conv2d, Conv2dGradInputs, Conv2dGradWeights}
    x = np.zeros((2, 3, 8, 7), np.float32)
    w = np.zeros((4, 3, 3, 2), np.float32)
    shapes = [tuple(s) for s in fn(x, w)]
    assert shapes == [(2, 4, 4, 4), x.shape, w.shape]


def test_static_output_shape_and_dtype():
    xs = pt.tensor4(shape=(5, 3, 8, 7), dtype="float32")
    ws = pt.tensor4(shape=(4, 3, 3, 2), dtype="float32")
    out = conv2d(xs, ws, stride=(2, 3), pad=(1, 2))
    assert out.type.shape == (5, 4, 4, 4)
    assert out.dtype == "float32"
    mixed = conv2d(xs, pt.dtensor4())
    assert mixed.dtype == "float64"  # upcast as PyTensor arithmetic does
    assert conv_output_shape((8, None), (3, 2), (2, 3), (1, 2)) == (4, None)


def test_float32_graph_has_no_float64():
    xs, ws = pt.tensor4(), pt.tensor4()
    out = conv2d(xs, ws, (2, 1), (1, 0))
    grads = pytensor.grad((out * out).sum(), [xs, ws])
    fn = pytensor.function([xs, ws], [out, *grads], mode=PY)
    assert not [v for v in fn.maker.fgraph.variables if getattr(v.type, "dtype", "") == "float64"]


# (x shape, filter shape, stride, pad, dilation, groups): 1, 2 and 3 spatial axes with
# strides, padding, filter dilation and channel groups
ND_CONFIGS = [
    ((2, 4, 9), (6, 2, 3), (2,), (1,), (2,), 2),
    ((2, 4, 7, 6), (4, 2, 2, 3), (1, 2), (1, 0), (2, 1), 2),
    ((1, 2, 4, 5, 4), (3, 2, 2, 3, 2), (1, 2, 1), (1, 0, 1), (1, 1, 2), 1),
    ((1, 3, 3, 4, 3), (3, 1, 2, 2, 2), (2, 1, 1), (0, 1, 0), (1, 1, 1), 3),
]
ND_IDS = ["1d", "2d", "3d", "3d_groups"]


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("config", ND_CONFIGS, ids=ND_IDS)
def test_nd_ops_match_loop_reference(config, flip):
    x_shape, w_shape, stride, pad, dilation, groups = config
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    props = (stride, pad, flip, dilation, groups)
    want = conv_nd_reference(x, w, stride, pad, flip, dilation, groups)
    g = rng.standard_normal(want.shape)
    gx_want, gw_want = conv_nd_grads_reference(x, w, g, stride, pad, flip, dilation, groups)
    out = ConvNd(*props)(x, w).eval(mode=PY)
    gx = ConvNdGradInputs(*props)(w, g, x).eval(mode=PY)
    gw = ConvNdGradWeights(*props)(x, g, w).eval(mode=PY)
    for got, ref in [(out, want), (gx, gx_want), (gw, gw_want)]:
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_grad_inputs_reads_only_the_reference_spatial_shape():
    # the transposed convolution passes an empty (0, 0, *spatial) reference
    x_shape, w_shape, stride, pad, dilation, groups = ND_CONFIGS[1]
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    g = rng.standard_normal(conv_nd_reference(x, w, stride, pad, True, dilation, groups).shape)
    op = ConvNdGradInputs(stride, pad, True, dilation, groups)
    empty = np.empty((0, 0, *x_shape[2:]))
    want = conv_nd_grads_reference(x, w, g, stride, pad, True, dilation, groups)[0]
    for mode in (PY, "NUMBA", "JAX"):  # JAX computes in float32 unless x64 is enabled
        got = pytensor.function([], op(w, g, empty), mode=mode)()
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [ND_CONFIGS[0], ND_CONFIGS[3]], ids=["1d", "3d_groups"])
def test_nd_verify_grad_float64(config):
    x_shape, w_shape, stride, pad, dilation, groups = config
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    op = ConvNd(stride, pad, True, dilation, groups)
    verify_grad(op, [x, w], rng=rng, mode=PY, eps=1e-6)
    g = rng.standard_normal(conv_nd_reference(x, w, stride, pad, True, dilation, groups).shape)
    gi = ConvNdGradInputs(stride, pad, True, dilation, groups)
    verify_grad(lambda w_, g_: gi(w_, g_, pt.as_tensor(x)), [w, g], rng=rng, mode=PY, eps=1e-6)


BACKEND_CASES = [
    (CONFIGS[3] + ((1, 1), 1), False),
    (ND_CONFIGS[0], True),
    (ND_CONFIGS[3], False),
]


@pytest.fixture(scope="module")
def backend_results():
    """Forward and both gradients of 1D, 2D and 3D cases in every mode (one compile each),
    with the float64 loop references."""
    rng = np.random.default_rng(5)
    outputs, inputs, wanted = [], [], []
    for (x_shape, w_shape, stride, pad, dilation, groups), flip in BACKEND_CASES:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        want = conv_nd_reference(x, w, stride, pad, flip, dilation, groups)
        g = rng.standard_normal(want.shape).astype(np.float32)  # a non-uniform cotangent
        wanted += [want, *conv_nd_grads_reference(x, w, g, stride, pad, flip, dilation, groups)]
        xv, wv = pt.tensor(shape=(None,) * len(x_shape)), pt.tensor(shape=(None,) * len(w_shape))
        out = ConvNd(stride, pad, flip, dilation, groups)(xv, wv)
        outputs += [out, *pytensor.grad((out * g).sum(), [xv, wv])]
        inputs += [(xv, x), (wv, w)]
    variables, values = zip(*inputs, strict=True)
    results = {"reference": wanted}
    for name, mode in [
        ("py", PY),
        ("CVM", "CVM"),
        ("NUMBA", None),  # the default mode
        ("JAX", "JAX"),
    ]:
        fn = pytensor.function(list(variables), outputs, mode=mode)
        results[name] = [np.asarray(r) for r in fn(*values)]
    return results


@pytest.mark.parametrize("mode", ["py", "CVM", "NUMBA", "JAX"])
def test_backends_match_float64_reference(backend_results, mode):
    for got, want in zip(backend_results[mode], backend_results["reference"], strict=True):
        assert got.dtype == np.float32
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


def test_perform_reports_bad_shapes_at_runtime():
    xs, ws = pt.tensor4(), pt.tensor4()
    fn = pytensor.function([xs, ws], conv2d(xs, ws), mode=PY)
    with pytest.raises(ValueError, match="ConvNd: input has 2 channels, expected 3"):
        fn(np.zeros((1, 2, 5, 5), np.float32), np.zeros((1, 3, 3, 3), np.float32))
    with pytest.raises(
        ValueError, match=r"ConvNd: input spatial shape \(2, 5\).*smaller than the filter \(3, 3\)"
    ):
        fn(np.zeros((1, 3, 2, 5), np.float32), np.zeros((1, 3, 3, 3), np.float32))


def test_make_node_errors():
    with pytest.raises(ValueError, match="ConvNd: stride entries must be >= 1, got \\(0, 1\\)"):
        Conv2d(stride=(0, 1))
    with pytest.raises(ValueError, match="ConvNd: pad entries must be >= 0, got -1"):
        Conv2d(pad=-1)
    with pytest.raises(TypeError, match="ConvNd: stride must be an int or 2 ints, got 1.5"):
        Conv2d(stride=1.5)
    with pytest.raises(ValueError, match="ConvNd: expected 4-dimensional tensors, got .* ndim=3"):
        conv2d(pt.tensor3(), pt.tensor4())
    with pytest.raises(ValueError, match="ConvNd: input has 2 channels, expected 3"):
        conv2d(pt.tensor4(shape=(None, 2, 5, 5)), pt.tensor4(shape=(4, 3, 3, 3)))
    with pytest.raises(TypeError, match="ConvNd: expected floating-point tensors"):
        conv2d(pt.itensor4(), pt.itensor4())


@pytest.mark.parametrize("op_class", [Conv2dGradInputs, Conv2dGradWeights])
def test_jax_gradient_ops_put_a_barrier_on_g_for_the_cpu(op_class):
    # the barrier keeps XLA's CPU backend from fusing g's transpose into strided loops
    import jax
    from pytensor.link.jax.dispatch import jax_funcify

    fn = jax_funcify(op_class((1, 1), (1, 1), True))
    a = np.ones((2, 3, 5, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    g = np.ones((2, 4, 5, 5), np.float32)
    args = (w, g, a) if op_class is Conv2dGradInputs else (a, g, w)
    text = jax.jit(fn).lower(*args).as_text()
    assert ("optimization_barrier" in text) is (jax.default_backend() == "cpu")


@pytest.mark.parametrize(
    ("op_class", "bad"),
    # the reference tensor only gives the spatial shape: batch and channels come from g and
    # the other operand, so only mismatches between those can be refused
    [
        (ConvNdGradInputs, "filters"),
        (ConvNdGradInputs, "height"),
        (ConvNdGradWeights, "batch"),
        (ConvNdGradWeights, "height"),
    ],
)
def test_numba_gradient_ops_refuse_inconsistent_shapes(op_class, bad):
    x = np.ones((2, 3, 5, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    g = np.ones((2, 4, 5, 5), np.float32)
    if bad == "batch":
        g = g[:1]
    elif bad == "filters":
        g = g[:, :3]
    else:
        g = g[:, :, :4]
    xs, ws, gs = pt.tensor4(), pt.tensor4(), pt.tensor4()
    op = op_class((1, 1), (1, 1), True)
    args = (ws, gs, xs) if op_class is Conv2dGradInputs else (xs, gs, ws)
    fn = pytensor.function([xs, ws, gs], op(*args), mode="NUMBA")
    with pytest.raises(ValueError, match=f"^{op_class.__name__}: inconsistent shapes\n"):
        fn(x, w, g)


def test_nd_make_node_errors_and_static_shapes():
    with pytest.raises(ValueError, match="ConvNd: input has 4 channels, expected 6"):
        conv(pt.tensor3(shape=(None, 4, 9)), pt.tensor3(shape=(2, 3, 3)), num_groups=2)
    with pytest.raises(
        ValueError, match="ConvNd: filters has 3 channels, not divisible by num_groups=2"
    ):
        conv(pt.tensor3(shape=(None, 4, 9)), pt.tensor3(shape=(3, 2, 3)), num_groups=2)
    with pytest.raises(ValueError, match="ConvNd: dilation entries must be >= 1, got 0"):
        ConvNd((1,), (0,), True, 0)
    with pytest.raises(ValueError, match="ConvNd: 1, 2 or 3 spatial axes are supported, got 4"):
        ConvNd((1, 1, 1, 1))
    out = conv(
        pt.tensor(shape=(2, 4, 7, 9, 8)),
        pt.tensor(shape=(6, 2, 3, 3, 2)),
        2,
        1,
        dilation=2,
        num_groups=2,
    )
    assert out.type.shape == (2, 6, 3, 4, 4)
    assert conv_output_shape((7, None), (3, 2), (2, 1), (1, 0), (2, 1)) == (3, None)

"""Tests of the Conv2d Ops: NumPy loop reference, finite differences, and every backend."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode
from pytensor.gradient import verify_grad

import bntrain.nn  # noqa: F401  (floatX, registrations)
from bntrain.nn.ops import Conv2d, Conv2dGradInputs, Conv2dGradWeights, conv2d, conv_output_shape

PY = Mode(linker="py", optimizer="fast_compile")


def conv_reference(x, w, stride, pad, flip):
    """Direct loop over output positions, float64."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, pad
    if flip:
        w = w[:, :, ::-1, ::-1]
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            out[:, :, i, j] = np.einsum("ncab,fcab->nf", patch, w)
    return out


def grads_reference(x, w, g, stride, pad, flip):
    """Gradients of sum(conv(x, w) * g) by the chain rule on the loop reference."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, pad
    weff = w[:, :, ::-1, ::-1] if flip else w
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    gxp = np.zeros_like(xp)
    gw = np.zeros(w.shape)
    for i in range(g.shape[2]):
        for j in range(g.shape[3]):
            rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
            gxp[:, :, rows, cols] += np.einsum("nf,fcab->ncab", g[:, :, i, j], weff)
            gw += np.einsum("nf,ncab->fcab", g[:, :, i, j], xp[:, :, rows, cols])
    if flip:
        gw = gw[:, :, ::-1, ::-1]
    return gxp[:, :, ph : ph + h, pw : pw + wd], gw


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


@pytest.fixture(scope="module")
def backend_results():
    """Forward and both gradients of three configurations, in every mode (one compile each)."""
    rng = np.random.default_rng(5)
    outputs, inputs = [], []
    for (x_shape, w_shape, stride, pad), flip in [
        (CONFIGS[0], True),
        (CONFIGS[3], False),
        (CONFIGS[4], True),
    ]:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        xv, wv = pt.tensor4(), pt.tensor4()
        out = Conv2d(stride, pad, flip)(xv, wv)
        weights = pt.cos(out)  # a non-uniform cotangent
        outputs += [out, *pytensor.grad((out * weights).sum(), [xv, wv])]
        inputs += [(xv, x), (wv, w)]
    variables, values = zip(*inputs, strict=True)
    results = {}
    for name, mode in [("py", PY), ("NUMBA", "NUMBA"), ("JAX", "JAX"), ("default", None)]:
        fn = pytensor.function(list(variables), outputs, mode=mode)
        results[name] = [np.asarray(r) for r in fn(*values)]
    return results


@pytest.mark.parametrize("mode", ["NUMBA", "JAX", "default"])
def test_backends_agree_with_perform(backend_results, mode):
    for got, want in zip(backend_results[mode], backend_results["py"], strict=True):
        assert got.dtype == np.float32
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


def test_perform_float32_against_reference(backend_results):
    # the Python results themselves are right: forward of the first configuration
    rng = np.random.default_rng(5)
    x = rng.standard_normal(CONFIGS[0][0]).astype(np.float32)
    w = rng.standard_normal(CONFIGS[0][1]).astype(np.float32)
    want = conv_reference(x.astype(np.float64), w.astype(np.float64), (1, 1), (0, 0), True)
    np.testing.assert_allclose(backend_results["py"][0], want, rtol=1e-4, atol=1e-4)


def test_perform_reports_bad_shapes_at_runtime():
    xs, ws = pt.tensor4(), pt.tensor4()
    fn = pytensor.function([xs, ws], conv2d(xs, ws), mode=PY)
    with pytest.raises(ValueError, match="Conv2d: input has 2 channels, expected 3"):
        fn(np.zeros((1, 2, 5, 5), np.float32), np.zeros((1, 3, 3, 3), np.float32))
    with pytest.raises(
        ValueError, match=r"Conv2d: input spatial shape \(2, 5\).*smaller than the filter \(3, 3\)"
    ):
        fn(np.zeros((1, 3, 2, 5), np.float32), np.zeros((1, 3, 3, 3), np.float32))


def test_make_node_errors():
    with pytest.raises(ValueError, match="Conv2d: stride entries must be >= 1, got \\(0, 1\\)"):
        Conv2d(stride=(0, 1))
    with pytest.raises(ValueError, match="Conv2d: pad entries must be >= 0, got -1"):
        Conv2d(pad=-1)
    with pytest.raises(TypeError, match="Conv2d: stride must be an int or a pair of ints, got 1.5"):
        Conv2d(stride=1.5)
    with pytest.raises(ValueError, match="Conv2d: expected 4-dimensional tensors, got .* ndim=3"):
        conv2d(pt.tensor3(), pt.tensor4())
    with pytest.raises(ValueError, match="Conv2d: input has 2 channels, expected 3"):
        conv2d(pt.tensor4(shape=(None, 2, 5, 5)), pt.tensor4(shape=(4, 3, 3, 3)))
    with pytest.raises(TypeError, match="Conv2d: expected floating-point tensors"):
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


@pytest.mark.parametrize("op_class", [Conv2dGradInputs, Conv2dGradWeights])
@pytest.mark.parametrize("bad", ["batch", "filters", "height", "channels"])
def test_numba_gradient_ops_refuse_inconsistent_shapes(op_class, bad):
    x = np.ones((2, 3, 5, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    g = np.ones((2, 4, 5, 5), np.float32)
    if bad == "batch":
        g = g[:1]
    elif bad == "filters":
        g = g[:, :3]
    elif bad == "height":
        g = g[:, :, :4]
    else:
        x = x[:, :2]
    xs, ws, gs = pt.tensor4(), pt.tensor4(), pt.tensor4()
    op = op_class((1, 1), (1, 1), True)
    args = (ws, gs, xs) if op_class is Conv2dGradInputs else (xs, gs, ws)
    fn = pytensor.function([xs, ws, gs], op(*args), mode="NUMBA")
    with pytest.raises(ValueError, match=f"^{op_class.__name__}: inconsistent shapes\n"):
        fn(x, w, g)

"""Tests of ConcatLayer, ElemwiseSumLayer, ElemwiseMergeLayer and autocrop against NumPy."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bntrain.nn.layers import (
    ConcatLayer,
    ElemwiseMergeLayer,
    ElemwiseSumLayer,
    InputLayer,
    autocrop,
    autocrop_array_shapes,
    concat,
    get_output,
)


def _np_crop(arrays, modes):
    """NumPy reference of autocrop."""
    out = []
    for a in arrays:
        index = []
        for axis in range(a.ndim):
            mode = modes[axis] if axis < len(modes) else None
            if mode is None:
                index.append(slice(None))
                continue
            m = min(b.shape[axis] for b in arrays)
            start = {"lower": 0, "upper": a.shape[axis] - m, "center": (a.shape[axis] - m) // 2}[
                mode
            ]
            index.append(slice(start, start + m))
        out.append(a[tuple(index)])
    return out


@pytest.fixture(scope="module")
def case():
    """Layers on three 3D inputs (a and b match, c is larger), compiled into one function."""
    la = InputLayer((None, 3, 4), name="a")
    lb = InputLayer((None, 3, 4), name="b")
    lc = InputLayer((None, 5, 7), name="c")
    coeff = pytensor.shared(np.float32(-2.0), name="coeff")
    a, b, c = (
        np.random.default_rng(s).standard_normal(sh).astype(np.float32)
        for s, sh in [(0, (2, 3, 4)), (1, (2, 3, 4)), (2, (2, 5, 7))]
    )
    layers = {
        "concat_1": (ConcatLayer([la, lb]), np.concatenate([a, b], axis=1)),
        "concat_neg1": (ConcatLayer([la, lb, la], axis=-1), np.concatenate([a, b, a], axis=-1)),
        "concat_0": (ConcatLayer([la, lb], axis=0), np.concatenate([a, b], axis=0)),
        "sum": (ElemwiseSumLayer([la, lb]), a + b),
        "sum_coeffs": (ElemwiseSumLayer([la, lb, la], coeffs=[0.5, -1, 3]), 0.5 * a - b + 3 * a),
        "sum_scalar": (ElemwiseSumLayer([la, lb], coeffs=0.25), 0.25 * a + 0.25 * b),
        "sum_symbolic": (ElemwiseSumLayer([la, lb], coeffs=[coeff, 1]), -2 * a + b),
        "max": (
            ElemwiseMergeLayer([la, lb, lc], pt.maximum, cropping=[None, "lower", "lower"]),
            np.maximum(np.maximum(a, b), c[:, :3, :4]),
        ),
        "sum_center": (
            ElemwiseSumLayer([lc, la], cropping=[None, "center", "center"]),
            sum(_np_crop([c, a], [None, "center", "center"])),
        ),
        "sum_upper": (
            ElemwiseSumLayer([la, lc], cropping=(None, "upper", "upper")),
            sum(_np_crop([a, c], [None, "upper", "upper"])),
        ),
        "concat_crop": (
            ConcatLayer([la, lc], axis=2, cropping=[None, "center", "center"]),
            np.concatenate([a, c[:, 1:4, :]], axis=2),
        ),
    }
    names = list(layers)
    fn = pytensor.function(
        [la.input_var, lb.input_var, lc.input_var], get_output([layers[n][0] for n in names])
    )
    outputs = dict(zip(names, fn(a, b, c), strict=True))
    float64 = [v for v in fn.maker.fgraph.variables if getattr(v.type, "dtype", "") == "float64"]
    return {"layers": layers, "outputs": outputs, "float64": float64}


KEYS = [
    "concat_1",
    "concat_neg1",
    "concat_0",
    "sum",
    "sum_coeffs",
    "sum_scalar",
    "sum_symbolic",
    "max",
    "sum_center",
    "sum_upper",
    "concat_crop",
]


@pytest.mark.parametrize("key", KEYS)
def test_output_matches_numpy(case, key):
    layer, expected = case["layers"][key]
    got = case["outputs"][key]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    static = layer.output_shape
    assert len(static) == expected.ndim
    assert all(s is None or s == e for s, e in zip(static, expected.shape, strict=True))
    assert static[1:] == expected.shape[1:] or key == "concat_0"


def test_graph_stays_float32(case):
    assert case["float64"] == []


@pytest.mark.parametrize(
    ("shapes", "axis", "expected"),
    [
        ([(None, 3, 4), (None, 5, 4)], 1, (None, 8, 4)),
        ([(2, 3, 4), (None, 5, 4)], 1, (2, 8, 4)),
        ([(2, 3, None), (2, 5, 4)], 1, (2, 8, 4)),
        ([(2, None, 4), (2, 5, 4)], 1, (2, None, 4)),
        ([(2, 3, 4), (2, 3, 1)], -1, (2, 3, 5)),
        ([(2, 3, 4), (6, 3, 4)], 0, (8, 3, 4)),
    ],
)
def test_concat_output_shape(shapes, axis, expected):
    assert ConcatLayer(shapes, axis=axis).output_shape == expected


def test_elemwise_output_shape_fills_unknown_sizes():
    assert ElemwiseSumLayer([(None, 3, None), (2, None, 4)]).output_shape == (2, 3, 4)


@pytest.mark.parametrize(
    ("shapes", "cropping", "expected"),
    [
        ([(1, 2, 3), (4, 5, 6)], None, [(1, 2, 3), (4, 5, 6)]),
        ([(1, 2, 3), (4, 5, 6)], [None, "lower"], [(1, 2, 3), (4, 2, 6)]),
        ([(1, 2, 3), (4, 5, 6)], ["upper", "center", "lower"], [(1, 2, 3), (1, 2, 3)]),
        ([(1, None, 3), (4, 5, 6)], [None, "lower", "lower"], [(1, None, 3), (4, None, 3)]),
    ],
)
def test_autocrop_array_shapes(shapes, cropping, expected):
    assert autocrop_array_shapes(shapes, cropping) == expected


def test_autocrop_direct_matches_numpy():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(2, 6, 5), (3, 3, 9), (4, 4, 7)]]
    modes = ["lower", "center", "upper"]
    xs = [pt.tensor3() for _ in arrays]
    fn = pytensor.function(xs, autocrop(xs, modes), mode="FAST_COMPILE")
    for got, ref in zip(fn(*arrays), _np_crop(arrays, modes), strict=True):
        np.testing.assert_array_equal(got, ref)
    assert autocrop(xs, None) == xs


def test_autocrop_misuse():
    with pytest.raises(ValueError, match="different numbers of dimensions"):
        autocrop([pt.matrix(), pt.tensor3()], ["lower"])
    with pytest.raises(ValueError, match="unknown crop mode 'middle'"):
        autocrop_array_shapes([(1, 2), (3, 4)], ["middle"])
    with pytest.raises(ValueError, match="different numbers of dimensions"):
        autocrop_array_shapes([(1, 2), (3, 4, 5)], ["lower"])


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (
            lambda: ConcatLayer([(None, 3, 4), (None, 3, 5)], name="m"),
            ValueError,
            "differ on axis 2",
        ),
        (lambda: ConcatLayer([(None, 3, 4), (None, 3)], name="m"), ValueError, "number of axes"),
        (lambda: ConcatLayer([(None, 3), (None, 3)], axis=2, name="m"), ValueError, "axis=2"),
        (lambda: ConcatLayer([(None, 3), (None, 3)], axis=1.0, name="m"), TypeError, "1.0"),
        (lambda: ConcatLayer([], name="m"), ValueError, "at least one"),
        (lambda: ConcatLayer([(2, 3), (2, 4)], cropping=["mid"], name="m"), ValueError, "'mid'"),
        (
            lambda: ElemwiseSumLayer([(None, 3), (None, 4)], name="m"),
            ValueError,
            "not all the same",
        ),
        (
            lambda: ElemwiseSumLayer([(None, 3), (None, 3)], [1, 2, 3], name="m"),
            ValueError,
            "3 coeffs",
        ),
        (lambda: ElemwiseSumLayer([(None, 3), (None, 3)], "a", name="m"), TypeError, "'a'"),
        (lambda: ElemwiseMergeLayer([(None, 3)], "max", name="m"), TypeError, "'max'"),
    ],
)
def test_misuse(make, exc, match):
    with pytest.raises(exc, match=match) as info:
        make()
    assert "Layer(name='m')" in str(info.value)


def test_concat_cropping_never_crops_concat_axis():
    layer = ConcatLayer([(2, 3, 4), (2, 5, 6)], axis=1, cropping=["lower", "lower", "lower"])
    assert layer.cropping == ["lower", None, "lower"]
    assert layer.output_shape == (2, 8, 4)


def test_alias_and_unknown_keyword():
    assert concat is ConcatLayer
    for cls in (ConcatLayer, ElemwiseSumLayer):
        with pytest.raises(TypeError, match=rf"{cls.__name__}.*'nam'.*did you mean 'name'"):
            cls([(None, 3), (None, 3)], nam="x")

"""Tests of ReshapeLayer, FlattenLayer and DimshuffleLayer against NumPy references."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bntrain.nn.layers import (
    DimshuffleLayer,
    FlattenLayer,
    InputLayer,
    ReshapeLayer,
    dimshuffle,
    flatten,
    get_output,
    reshape,
)

SHAPE = (2, 3, 4, 5)


@pytest.fixture(scope="module")
def case():
    """Every layer variant on one 4D input (batch size unknown), in a single function."""
    l_in = InputLayer((None,) + SHAPE[1:])
    size = pt.lscalar("size")
    layers = {
        "reshape_refs": (ReshapeLayer(l_in, ([0], [1], 2, -1)), lambda x: x.reshape(2, 3, 2, 10)),
        "reshape_batch": (ReshapeLayer(l_in, ([0], -1)), lambda x: x.reshape(2, 60)),
        "reshape_all": (ReshapeLayer(l_in, (-1,)), lambda x: x.reshape(-1)),
        "reshape_swap": (ReshapeLayer(l_in, (-1, [0], 5)), lambda x: x.reshape(12, 2, 5)),
        "reshape_symbolic": (ReshapeLayer(l_in, ([0], size, -1)), lambda x: x.reshape(2, 6, 10)),
        "flatten_1": (FlattenLayer(l_in, outdim=1), lambda x: x.reshape(-1)),
        "flatten_2": (FlattenLayer(l_in), lambda x: x.reshape(2, -1)),
        "flatten_3": (FlattenLayer(l_in, 3), lambda x: x.reshape(2, 3, -1)),
        "flatten_4": (FlattenLayer(l_in, 4), lambda x: x),
        "dimshuffle_perm": (DimshuffleLayer(l_in, (0, 3, 1, 2)), lambda x: x.transpose(0, 3, 1, 2)),
        "dimshuffle_x": (
            DimshuffleLayer(l_in, ("x", 2, 0, "x", 1, 3)),
            lambda x: x.transpose(2, 0, 1, 3)[None, :, :, None],
        ),
    }
    names = list(layers)
    fn = pytensor.function(
        [l_in.input_var, size], get_output([layers[n][0] for n in names]), on_unused_input="ignore"
    )
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    outputs = dict(zip(names, fn(x, 6), strict=True))
    return {"layers": layers, "x": x, "outputs": outputs}


@pytest.mark.parametrize(
    "key",
    [
        "reshape_refs",
        "reshape_batch",
        "reshape_all",
        "reshape_swap",
        "reshape_symbolic",
        "flatten_1",
        "flatten_2",
        "flatten_3",
        "flatten_4",
        "dimshuffle_perm",
        "dimshuffle_x",
    ],
)
def test_output_matches_numpy(case, key):
    layer, reference = case["layers"][key]
    expected = reference(case["x"])
    got = case["outputs"][key]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    # Static shape: the computed one with unknown sizes where the batch size enters.
    static = layer.output_shape
    assert len(static) == expected.ndim
    assert all(s is None or s == e for s, e in zip(static, expected.shape, strict=True))


@pytest.mark.parametrize(
    ("in_shape", "spec", "out_shape"),
    [
        ((None, 100, 20), ([0], [1], 5, -1), (None, 100, 5, 4)),
        ((None, 100, 20), ([0], -1), (None, 2000)),
        ((None, 100, 20), (-1,), (None,)),
        ((None, 100, 20), (-1, 20), (None, 20)),
        ((10, 100, 20), (-1, 20), (1000, 20)),
        ((10, 100, 20), ([2], [1], [0]), (20, 100, 10)),
        ((None, None, 6), ([1], [0], 2, 3), (None, None, 2, 3)),
        ((None, None, 6), ([1], [0], -1), (None, None, 6)),
        ((4, 6), [2, 12], (2, 12)),
    ],
)
def test_reshape_output_shape(in_shape, spec, out_shape):
    layer = ReshapeLayer(in_shape, spec)
    assert layer.output_shape == out_shape
    assert all(isinstance(s, int) or s is None for s in layer.output_shape)


def test_reshape_shape_for_other_input():
    layer = ReshapeLayer((None, 4, 6), ([0], -1))
    assert layer.get_output_shape_for((5, 4, 6)) == (5, 24)
    with pytest.raises(ValueError, match=r"\(5, 4, 6\) cannot be reshaped.*total sizes differ"):
        ReshapeLayer((None, 4, 6), (7, -1)).get_output_shape_for((5, 4, 6))


@pytest.mark.parametrize("spec", [(5, -1), (5, 5), ([0], 5, -1)])
def test_reshape_total_size_mismatch(spec):
    with pytest.raises(ValueError, match=r"ReshapeLayer\(name='r'\).*total sizes differ"):
        ReshapeLayer((2, 4, 6), spec, name="r")


def test_reshape_size_check_with_unknown_sizes():
    # An unknown size only defers the check...
    assert ReshapeLayer((None, 4, 6), (5, -1)).output_shape == (5, None)
    # ...unless it is copied through [i]: 4 * 6 does not split into rows of 5 whatever the batch.
    with pytest.raises(ValueError, match="total sizes differ"):
        ReshapeLayer((None, 4, 6), ([0], 5, -1))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ((0, -1), "has 0; sizes must be positive or -1"),
        ((-2, 12), "has -2"),
        ((-1, -1), "-1 more than once"),
        (([0, 1], 12), r"\[0, 1\].*one-element list"),
        (([-1], 12), r"\[-1\]"),
        ((["a"], 12), r"\['a'\]"),
        (("a", 12), "has 'a'"),
        ((2.0, 12), "has 2.0"),
        (([3], -1), r"refers to input axis \[3\].*has 3 axes"),
    ],
)
def test_reshape_misuse(spec, match):
    with pytest.raises(ValueError, match=match) as info:
        ReshapeLayer((None, 4, 6), spec, name="r")
    assert "ReshapeLayer(name='r')" in str(info.value)


def test_reshape_symbolic_entry_must_be_int_scalar():
    with pytest.raises(ValueError, match="integer scalar"):
        ReshapeLayer((None, 4, 6), ([0], pt.dscalar(), -1))
    with pytest.raises(ValueError, match="ndim 1"):
        ReshapeLayer((None, 4, 6), ([0], pt.lvector(), -1))
    assert ReshapeLayer((None, 4, 6), ([0], pt.lscalar(), -1)).output_shape == (None, None, None)


def test_reshape_of_symbolic_sizes():
    # sizes taken from a symbolic input shape are unknown statically; the graph uses them
    x = pt.tensor3("x")
    batch, steps, features = x.shape
    layer = ReshapeLayer(InputLayer((None, None, None)), (batch * steps, [2]))
    assert layer.get_output_shape_for((batch, steps, features)) == (None, None)
    assert layer.get_output_shape_for((batch, steps, 7)) == (None, 7)
    fn = pytensor.function([x], get_output(layer, x))
    for shape in ((3, 5, 6), (4, 5, 7)):
        a = np.arange(np.prod(shape), dtype=x.dtype).reshape(shape)
        np.testing.assert_array_equal(fn(a), a.reshape(shape[0] * shape[1], shape[2]))


@pytest.mark.parametrize(
    ("outdim", "out_shape"),
    [(1, (None,)), (2, (None, 60)), (3, (None, 3, 20)), (4, (None, 3, 4, 5))],
)
def test_flatten_output_shape(outdim, out_shape):
    assert FlattenLayer((None, 3, 4, 5), outdim).output_shape == out_shape
    assert FlattenLayer((None, 3, None, 5), 2).output_shape == (None, None)


@pytest.mark.parametrize(
    ("outdim", "exc", "match"),
    [
        (0, ValueError, "at least 1, got 0"),
        (5, ValueError, "outdim=5 exceeds"),
        (2.0, TypeError, "2.0"),
    ],
)
def test_flatten_misuse(outdim, exc, match):
    with pytest.raises(exc, match=match) as info:
        # too large an outdim is found at use (Lasagne checks nothing at construction)
        _ = FlattenLayer((None, 3, 4, 5), outdim, name="f").output_shape
    assert "FlattenLayer(name='f')" in str(info.value)


@pytest.mark.parametrize(
    ("in_shape", "pattern", "out_shape"),
    [
        ((None, 3, 4), (0, 2, 1), (None, 4, 3)),
        ((None, 3, 4), ("x", 0, 1, "x", 2), (1, None, 3, 1, 4)),
        ((None, 1, 4), (0, 2), (None, 4)),
        ((2, None, 4), (2, 0), (4, 2)),
    ],
)
def test_dimshuffle_output_shape(in_shape, pattern, out_shape):
    assert DimshuffleLayer(in_shape, pattern).output_shape == out_shape


def test_dimshuffle_drops_unknown_axis_checked_at_run_time():
    layer = DimshuffleLayer((None, None, 3), (0, 2))
    x = pt.tensor3()
    fn = pytensor.function([x], layer.get_output_for(x))
    value = np.arange(6, dtype=np.float32).reshape(2, 1, 3)
    np.testing.assert_array_equal(fn(value), value[:, 0, :])
    with pytest.raises(Exception, match="1"):
        fn(np.zeros((2, 2, 3), np.float32))


@pytest.mark.parametrize(
    ("pattern", "match"),
    [
        ((0, 0, 1, 2), "names axis 0 twice"),
        ((0, "y", 1, 2), "has 'y'"),
        ((0, 1, 2, 3), "has 3, but the input shape"),
        ((0, 2), "drops input axis 1 of size 3"),
    ],
)
def test_dimshuffle_misuse(pattern, match):
    with pytest.raises(ValueError, match=match) as info:
        DimshuffleLayer((None, 3, 4), pattern, name="d")
    assert "DimshuffleLayer(name='d')" in str(info.value)


def test_aliases_and_unknown_keyword():
    assert reshape is ReshapeLayer and flatten is FlattenLayer and dimshuffle is DimshuffleLayer
    for cls, args in [(ReshapeLayer, ((-1,),)), (FlattenLayer, ()), (DimshuffleLayer, ((1, 0),))]:
        with pytest.raises(TypeError, match=rf"{cls.__name__}.*'nam'"):
            cls((None, 3), *args, nam="x")

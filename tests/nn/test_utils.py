"""Tests of the Lasagne helpers in bntrain.nn.utils: create_param, one_hot, inspect_kwargs..."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bntrain.nn.layers import InputLayer, Layer, get_output
from bntrain.nn.utils import as_theano_expression, create_param, inspect_kwargs, one_hot


@pytest.mark.parametrize("shape", [(10, 1, 20), (1, 2), (3, 1), (2, 3), (1, 4, 1, 1)])
def test_size_one_axes_are_broadcastable(shape):
    want = tuple(s == 1 for s in shape)
    assert create_param(np.zeros, shape).broadcastable == want
    assert create_param(np.zeros(shape, np.float32), shape).broadcastable == want


def test_custom_layer_bias_of_shape_1_n_1_1_adds_to_a_4d_input():
    class Biased(Layer):
        def __init__(self, incoming, **kwargs):
            super().__init__(incoming, **kwargs)
            self.b = self.add_param(
                np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1), (1, 3, 1, 1), "b"
            )

        def get_output_for(self, input, **kwargs):
            return input + self.b

    l_in = InputLayer((None, 3, 2, 2))
    x = np.ones((2, 3, 2, 2), np.float32)
    out = pytensor.function([l_in.input_var], get_output(Biased(l_in)))(x)
    np.testing.assert_array_equal(out, x + np.arange(3).reshape(1, 3, 1, 1))


@pytest.mark.parametrize("spec", [2, 2.5, np.int64(3), np.float32(0.5)])
def test_scalar_specs_make_0d_parameters(spec):
    p = create_param(spec, (), "s")
    assert p.get_value().shape == () and p.get_value() == spec and p.name == "s"


def test_create_param_errors_have_lasagne_types():
    with pytest.raises(TypeError, match="not a numpy array"):
        create_param({}, (1, 2))
    with pytest.raises(TypeError, match="returned dict"):
        create_param(lambda shape: {}, (1, 2))
    with pytest.raises(ValueError, match=r"returned an array of shape \(\)"):
        create_param(lambda shape: np.array(1), (1, 2))
    with pytest.raises(ValueError, match="non-positive"):
        create_param(np.zeros, (0, 2))


def test_one_hot_matches_numpy():
    a = np.array([3, 0, 2, 2], dtype=np.int32)
    want = np.eye(4)[a]
    got = one_hot(a).eval()
    assert got.dtype == pytensor.config.floatX
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(one_hot(pt.constant(a), 6).eval(), np.eye(6)[a])


def test_inspect_kwargs_lists_the_optional_arguments():
    assert inspect_kwargs(inspect_kwargs) == []
    assert inspect_kwargs(lambda a, b, c=42, *, bar="asdf": 0) == ["c", "bar"]
    assert inspect_kwargs(lambda x, *args, **kwargs: 0) == []


def test_as_theano_expression():
    v = pt.matrix()
    assert as_theano_expression(v) is v
    np.testing.assert_array_equal(as_theano_expression([[1, 2]]).eval(), [[1, 2]])
    with pytest.raises(TypeError, match="not a PyTensor expression"):
        as_theano_expression({})


def test_compute_norms_of_a_vector_are_absolute_values_and_lists_are_refused():
    from bntrain.nn.utils import compute_norms

    v = np.array([-3.0, 4.0, 0.5], np.float32)
    norms = compute_norms(v)
    assert norms.dtype == np.float32
    np.testing.assert_allclose(norms, np.abs(v))
    np.testing.assert_allclose(compute_norms(pt.constant(v)).eval(), np.abs(v))
    with pytest.raises(RuntimeError, match="Unsupported type list"):
        compute_norms([[1, 2], [3, 4]])

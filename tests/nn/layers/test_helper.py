"""Tests of the layer base classes, InputLayer and the graph helpers."""

from __future__ import annotations

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bntrain.nn.layers import (
    InputLayer,
    Layer,
    MergeLayer,
    count_params,
    get_all_layers,
    get_all_param_values,
    get_all_params,
    get_output,
    get_output_shape,
    set_all_param_values,
)

F32 = np.float32


class Affine(Layer):
    """Per-unit scale and shift, plus a non-trainable statistic updated on every call."""

    def __init__(self, incoming, scale=2.0, **kwargs):
        super().__init__(incoming, **kwargs)
        n = self.input_shape[1]
        self.W = self.add_param(np.full(n, scale, F32), (n,), "W")
        self.b = self.add_param(np.zeros(n, F32), (n,), "b", regularizable=False)
        self.stat = self.add_param(
            np.zeros(n), (n,), "stat", trainable=False, regularizable=False, counter=True
        )

    def get_output_for(self, input, collect_updates=None, track=False, **kwargs):
        if track and collect_updates is not None:
            collect_updates[self.stat] = self.stat + input.sum(axis=0)
        return input * self.W + self.b


class Concat(MergeLayer):
    """Concatenate along axis 1."""

    def get_output_shape_for(self, input_shapes):
        sizes = [s[1] for s in input_shapes]
        total = None if None in sizes else sum(sizes)
        return (input_shapes[0][0], total) + tuple(input_shapes[0][2:])

    def get_output_for(self, inputs, **kwargs):
        return pt.concatenate(inputs, axis=1)


class Tracking(Affine):
    """An Affine layer that declares its extra get_output keyword."""

    def __init__(self, incoming, **kwargs):
        super().__init__(incoming, **kwargs)
        self.get_output_kwargs = ["track"]


def evaluate(inputs, outputs, *values):
    return pytensor.function(inputs, outputs, mode="FAST_COMPILE")(*values)


@pytest.fixture
def diamond():
    """in -> (a, b) -> concat -> top, with a second input joining at concat."""
    l_in = InputLayer((None, 3), name="in")
    a = Affine(l_in, scale=2.0, name="a")
    b = Affine(l_in, scale=3.0, name="b")
    l_in2 = InputLayer((None, 2), name="in2")
    cat = Concat([a, b, l_in2], name="cat")
    top = Affine(cat, scale=0.5, name="top")
    return l_in, a, b, l_in2, cat, top


# --------------------------------------------------------------------------- get_all_layers


def test_get_all_layers_topological_order_with_merge(diamond):
    l_in, a, b, l_in2, cat, top = diamond
    assert get_all_layers(top) == [l_in, a, b, l_in2, cat, top]
    assert get_all_layers(cat) == [l_in, a, b, l_in2, cat]
    assert get_all_layers(a) == [l_in, a]


def test_get_all_layers_several_roots_and_treat_as_input(diamond):
    l_in, a, b, l_in2, cat, top = diamond
    assert get_all_layers([b, a]) == [l_in, b, a]
    assert get_all_layers([top, a]) == [l_in, a, b, l_in2, cat, top]
    assert get_all_layers(top, treat_as_input=[cat]) == [cat, top]
    assert get_all_layers(top, treat_as_input=[a]) == [a, l_in, b, l_in2, cat, top]


def test_get_all_layers_every_layer_after_its_inputs():
    rng = np.random.default_rng(0)
    layers = [InputLayer((None, 2))]
    for _ in range(12):
        picks = rng.choice(len(layers), size=min(2, len(layers)), replace=False)
        layers.append(Concat([layers[i] for i in picks]))
    order = get_all_layers(layers[-1])
    assert len(order) == len(set(order))
    position = {layer: i for i, layer in enumerate(order)}
    for layer in order[1:]:
        assert all(position[inc] < position[layer] for inc in layer.input_layers)


# --------------------------------------------------------------------------- get_output


def test_get_output_default_inputs_and_dict(diamond):
    l_in, a, b, l_in2, cat, top = diamond
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3)).astype(F32)
    x2 = rng.normal(size=(4, 2)).astype(F32)
    expected = 0.5 * np.concatenate([2 * x, 3 * x, x2], axis=1)
    out = get_output(top)
    assert out.dtype == "float32"
    np.testing.assert_allclose(evaluate([l_in.input_var, l_in2.input_var], out, x, x2), expected)
    # dict: replace the second input by an expression of the first, and an inner layer
    v = pt.matrix("v")
    out = get_output(top, inputs={l_in2: v[:, :2] * 10})
    np.testing.assert_allclose(
        evaluate([l_in.input_var, v], out, x, x),
        0.5 * np.concatenate([2 * x, 3 * x, 10 * x[:, :2]], axis=1),
        rtol=1e-6,
    )
    x8 = rng.normal(size=(4, 8)).astype(F32)
    out = get_output(top, inputs={cat: v})
    np.testing.assert_allclose(evaluate([v], out, x8), 0.5 * x8)


def test_get_output_single_expression_and_list():
    l_in = InputLayer((None, 3))
    a = Affine(l_in, scale=2.0)
    b = Affine(a, scale=-1.0)
    v = pt.matrix("v")
    x = np.arange(6, dtype=F32).reshape(2, 3)
    out_a, out_b = get_output([a, b], v)
    res_a, res_b = evaluate([v], [out_a, out_b], x)
    np.testing.assert_allclose(res_a, 2 * x)
    np.testing.assert_allclose(res_b, -2 * x)
    # a numpy array is accepted as the expression
    np.testing.assert_allclose(get_output(b, x).eval(mode="FAST_COMPILE"), -2 * x)


def test_get_output_errors(diamond):
    l_in, a, b, l_in2, cat, top = diamond
    with pytest.raises(ValueError, match="multiple input layers"):
        get_output(top, pt.matrix())
    floating = Affine((None, 3))
    with pytest.raises(ValueError, match="free-floating"):
        get_output(Affine(floating))


def test_get_output_warns_about_unused_kwarg_with_suggestion():
    l_in = InputLayer((None, 3))
    top = Tracking(Affine(l_in))
    with pytest.warns(UserWarning, match=r"'determinstic' \(perhaps you meant deterministic\)"):
        get_output(top, determinstic=True)
    with pytest.warns(UserWarning, match=r"'trak' \(perhaps you meant track\)"):
        get_output(top, trak=True)
    with pytest.warns(UserWarning, match="unused kwargs: 'zzzz'$"):
        get_output(top, zzzz=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_output(top, deterministic=True)


def test_get_output_collects_updates():
    l_in = InputLayer((None, 2))
    a = Tracking(l_in, name="a")
    top = Tracking(a, name="top")
    out, updates = get_output(top, track=True, return_updates=True)
    assert list(updates) == [a.stat, top.stat]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is dropped with a warning any more
        get_output(top, track=True)
    out, updates = get_output(top, return_updates=True)
    assert len(updates) == 0
    x = np.array([[1, 2], [3, 4]], dtype=F32)
    out, updates = get_output(top, track=True, return_updates=True)
    f = pytensor.function([l_in.input_var], out, updates=updates, mode="FAST_COMPILE")
    f(x)
    f(x)
    np.testing.assert_allclose(a.stat.get_value(), 2 * x.sum(axis=0))
    np.testing.assert_allclose(top.stat.get_value(), 2 * (2 * x).sum(axis=0))


# --------------------------------------------------------------------------- shapes


def test_get_output_shape(diamond):
    l_in, a, b, l_in2, cat, top = diamond
    assert get_output_shape(top) == (None, 8)
    assert get_output_shape([a, cat]) == [(None, 3), (None, 8)]
    with pytest.raises(ValueError, match="multiple input layers"):
        get_output_shape(top, (5, 3))
    assert get_output_shape(top, {l_in: (5, 3), l_in2: (5, 4)}) == (5, 10)
    assert get_output_shape([a, top], {l_in2: (7, 1)}) == [(None, 3), (None, 7)]
    single = Affine(InputLayer((None, 4)))
    assert get_output_shape(single, (9, 4)) == (9, 4)


def test_symbolic_output_shape_is_rejected():
    class Bad(Layer):
        def get_output_shape_for(self, input_shape):
            return (pt.iscalar(),)

    class BadMerge(Concat):
        def get_output_shape_for(self, input_shapes):
            return (pt.iscalar(),)

    with pytest.raises(ValueError, match="Bad \\(name='bad'\\) returned a symbolic output shape"):
        _ = Bad((3,), name="bad").output_shape
    with pytest.raises(ValueError, match="BadMerge \\(name=None\\) returned a symbolic"):
        _ = BadMerge([(3,), (3,)]).output_shape


# --------------------------------------------------------------------------- params


def test_add_param_names_tags_and_float32():
    layer = Affine((None, 3), name="aff")
    assert [p.name for p in layer.get_params()] == ["aff.W", "aff.b", "aff.stat"]
    assert layer.stat.dtype == "float32"  # np.zeros(n) is float64: cast on creation
    assert layer.params[layer.W] == {"trainable", "regularizable"}
    assert layer.params[layer.stat] == {"counter"}
    unnamed = Affine((None, 3))
    assert unnamed.W.name == "W"


def test_get_all_params_tag_filtering(diamond):
    l_in, a, b, l_in2, cat, top = diamond
    everything = [a.W, a.b, a.stat, b.W, b.b, b.stat, top.W, top.b, top.stat]
    assert get_all_params(top) == everything
    assert get_all_params(top, trainable=True) == [a.W, a.b, b.W, b.b, top.W, top.b]
    assert get_all_params(top, regularizable=True) == [a.W, b.W, top.W]
    assert get_all_params(top, trainable=True, regularizable=False) == [a.b, b.b, top.b]
    assert get_all_params(top, trainable=False) == [a.stat, b.stat, top.stat]
    assert get_all_params(top, counter=True) == [a.stat, b.stat, top.stat]
    assert get_all_params(a, counter=False, regularizable=False) == [a.b]


def test_get_params_unwraps_expression_params():
    w = pytensor.shared(np.ones(3, F32), name="w")
    layer = Layer((None, 3))
    layer.add_param(w * 2, (3,), "doubled")
    assert layer.get_params() == [w]
    assert [p.name for p in layer.get_params(unwrap_shared=False)] == ["doubled"]


def test_shared_param_reused_once():
    l_in = InputLayer((None, 3))
    a = Affine(l_in)
    b = Affine(a)
    b.add_param(a.W, (3,), "tied")
    assert get_all_params(b, trainable=True).count(a.W) == 1


def test_count_params(diamond):
    l_in, a, b, l_in2, cat, top = diamond
    assert count_params(top) == 3 * 3 + 3 * 3 + 3 * 8
    assert count_params(top, trainable=True) == 2 * 3 + 2 * 3 + 2 * 8
    assert count_params(top, regularizable=True) == 3 + 3 + 8
    assert isinstance(count_params(top), int)
    assert count_params(l_in) == 0


def test_get_and_set_all_param_values_roundtrip(diamond):
    l_in, a, b, l_in2, cat, top = diamond
    rng = np.random.default_rng(2)
    values = get_all_param_values(top)
    assert [v.shape for v in values] == [(3,)] * 6 + [(8,)] * 3
    new = [rng.normal(size=v.shape) for v in values]  # float64: cast on set
    set_all_param_values(top, new)
    for p, v in zip(get_all_params(top), new, strict=True):
        assert p.get_value().dtype == np.float32
        np.testing.assert_allclose(p.get_value(), v.astype(F32))
    trainable = [
        np.full(v.shape, i, F32) for i, v in enumerate(get_all_param_values(top, trainable=True))
    ]
    set_all_param_values(top, trainable, trainable=True)
    np.testing.assert_array_equal(top.b.get_value(), np.full(8, 5, F32))
    np.testing.assert_allclose(top.stat.get_value(), new[8].astype(F32))


def test_set_all_param_values_mismatch(diamond):
    l_in, a, b, l_in2, cat, top = diamond
    before = get_all_param_values(top)
    values = [v + 1 for v in before]
    with pytest.raises(ValueError, match="got 8 values to set 9 parameters"):
        set_all_param_values(top, values[:-1])
    values[3] = np.zeros((4,), F32)
    with pytest.raises(
        ValueError, match=r"b\.W has shape \(3,\) but value to set has shape \(4,\)"
    ):
        set_all_param_values(top, values)
    # nothing was set: the values are checked before any is assigned
    for p, v in zip(get_all_params(top), before, strict=True):
        np.testing.assert_array_equal(p.get_value(), v)


# --------------------------------------------------------------------------- InputLayer / Layer


def test_input_layer():
    l_in = InputLayer((None, 3, 4), name="x")
    assert l_in.output_shape == (None, 3, 4)
    assert l_in.input_var.dtype == "float32" and l_in.input_var.ndim == 3
    assert l_in.input_var.name == "x.input"
    assert l_in.get_params() == []
    var = pt.itensor3("ids")
    assert InputLayer((2, 3, 4), input_var=var).input_var is var
    with pytest.raises(ValueError, match="InputLayer.*non-positive"):
        InputLayer((None, 0))
    with pytest.raises(ValueError, match="InputLayer.*non-integer"):
        InputLayer((None, 2.5))
    with pytest.raises(ValueError, match="3 dimensions"):
        InputLayer((None, 3, 4), input_var=pt.matrix())
    with pytest.raises(TypeError, match="InputLayer.*'shapes'"):
        InputLayer((None, 3), shapes=(1,))


def test_layer_rejects_non_positive_input_shape():
    with pytest.raises(ValueError, match=r"Affine.*input_shape=\(None, 0\).*'bad'"):
        Affine((None, 0), name="bad")
    with pytest.raises(ValueError, match=r"Concat.*'badcat'"):
        Concat([(None, 2), (None, -1)], name="badcat")


class Bare(Layer):
    """A custom layer in the shortest Lasagne form: no keyword arguments at all."""

    def get_output_for(self, input):
        return 2 * input


class OnlyDeterministic(Layer):
    def get_output_for(self, input, deterministic=False):
        return input if deterministic else -input


def test_layers_get_only_the_keywords_they_accept():
    l_in = InputLayer((None, 2))
    top = OnlyDeterministic(Bare(l_in))
    x = np.array([[1, -2]], dtype=F32)
    for kwargs, sign in (({}, -1), ({"deterministic": True}, 1)):
        out, updates = get_output(top, return_updates=True, **kwargs)
        np.testing.assert_array_equal(out.eval({l_in.input_var: x}), sign * 2 * x)
        assert len(updates) == 0
    # a keyword no layer takes is still reported
    with pytest.warns(
        UserWarning, match=r"unused kwargs: 'determinstic' \(perhaps you meant deterministic\)"
    ):
        get_output(top, determinstic=True)


def test_keywords_of_a_catch_all_layer_count_as_accepted():
    class Picky(Layer):
        def get_output_for(self, input, flavour="plain", **kwargs):
            return input

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_output(Picky(InputLayer((None, 2))), flavour="salty")


def test_collect_updates_only_reaches_layers_that_name_it():
    seen = []

    class CatchAll(Layer):
        """A Lasagne-style layer: takes **kwargs, never asked for bntrain's keyword."""

        def get_output_for(self, input, **kwargs):
            seen.append(dict(kwargs))
            return input

    l_in = InputLayer((None, 2))
    top = Tracking(CatchAll(l_in), name="top")
    out, updates = get_output(top, return_updates=True, deterministic=True, track=True)
    assert seen == [{"deterministic": True, "track": True}]
    assert list(updates) == [top.stat]  # the layer naming the keyword still gets the dict
    x = np.array([[1, -2], [3, 5]], dtype=F32)
    f = pytensor.function([l_in.input_var], out, updates=updates, mode="FAST_COMPILE")
    np.testing.assert_array_equal(f(x), 2 * x)
    np.testing.assert_array_equal(top.stat.get_value(), x.sum(axis=0))

"""No float64 anywhere: a small batch-normalized net compiles to an all-float32 graph."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import bntrain.nn as lasagne
from bntrain.nn.layers import (
    DenseLayer,
    InputLayer,
    Layer,
    batch_norm,
    get_all_params,
    get_output,
)

F32 = np.float32


def float64_nodes(fn) -> list[str]:
    """Describe every node of a compiled function with a float64 input or output."""
    bad = []
    for node in fn.maker.fgraph.toposort():
        for var in (*node.inputs, *node.outputs):
            if getattr(var.type, "dtype", None) == "float64":
                bad.append(f"{node} ({var} : {var.type})")
    return bad


@pytest.fixture(scope="module")
def network():
    rng = np.random.default_rng(0)
    l_in = InputLayer((None, 6))
    hidden = DenseLayer(
        l_in,
        5,
        W=rng.normal(0.0, 0.5, (6, 5)).astype(F32),
        nonlinearity=lasagne.nonlinearities.rectify,
        name="hidden",
    )
    hidden_bn = batch_norm(hidden)
    out = DenseLayer(
        hidden_bn,
        3,
        W=rng.normal(0.0, 0.5, (5, 3)).astype(F32),
        nonlinearity=lasagne.nonlinearities.softmax,
        name="out",
    )
    targets = pt.ivector("targets")
    prediction, bn_updates = get_output(out, return_updates=True)
    loss = lasagne.objectives.categorical_crossentropy(prediction, targets).mean()
    params = get_all_params(out, trainable=True)
    updates = lasagne.updates.nesterov_momentum(loss, params, learning_rate=0.1, momentum=0.9)
    updates.update(bn_updates)
    x = rng.normal(1.0, 2.0, (8, 6)).astype(F32)
    y = rng.integers(0, 3, 8).astype(np.int32)
    return l_in, out, targets, loss, updates, bn_updates, x, y


def test_graph_is_float32_before_compiling(network):
    _, out, _, loss, updates, bn_updates, _, _ = network
    assert loss.dtype == "float32"
    assert len(bn_updates) == 2
    for var, expr in updates.items():
        assert var.dtype == expr.dtype == "float32", var
    assert all(p.dtype == "float32" for p in get_all_params(out))


@pytest.mark.parametrize("mode", [None, "JAX"])
def test_compiled_training_function_has_no_float64(network, mode):
    l_in, out, targets, loss, updates, bn_updates, x, y = network
    train = pytensor.function(
        [l_in.input_var, targets], loss, updates=list(updates.items()), mode=mode
    )
    assert float64_nodes(train) == []
    before = {p: p.get_value() for p in updates}
    loss_value = np.asarray(train(x, y))
    assert loss_value.dtype == np.float32 and np.isfinite(loss_value)
    after = {p: p.get_value() for p in updates}
    for p in updates:
        assert after[p].dtype == np.float32
        p.set_value(before[p])  # leave the shared state as found for the other mode
    # the step did run: the BN mean moved to alpha * batch mean of the (bias-free) dense output
    hidden_w = get_all_params(out)[0]
    bn_mean = next(iter(bn_updates))
    expected = 0.1 * (x.astype(np.float64) @ before[hidden_w]).mean(axis=0)
    np.testing.assert_allclose(after[bn_mean], expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(after[hidden_w], before[hidden_w])


def test_float64_detector_is_not_vacuous():
    x = pt.vector("x", dtype="float32")
    fn = pytensor.function([x], pt.cast(x, "float64") * 2)
    assert float64_nodes(fn) != []


def test_add_param_casts_float64_array_to_float32():
    layer = Layer((None, 3), name="layer")
    param = layer.add_param(np.zeros((3,)), (3,), "zeros")
    assert np.zeros((3,)).dtype == np.float64
    assert param.dtype == "float32"
    assert param.get_value().dtype == np.float32
    assert (param * pt.constant(np.float32(2))).dtype == "float32"

"""compute_bn_stats against a float64 NumPy reference of the same networks."""

from __future__ import annotations

import numpy as np
import pytest

import bntrain.nn as nn
from bntrain.bnstats import (
    BnLayerStats,
    bn_levels,
    compute_bn_stats,
    report_rows,
)
from bntrain.commands.recompute import report_path_for
from bntrain.model import Network
from bntrain.nn import layers as L

MODE = "NUMBA"


class ArrayDS:
    """The part of the Dataset API compute_bn_stats uses, over an in-memory array."""

    def __init__(self, x):
        self.x = x
        self.reads = []

    def __len__(self):
        return len(self.x)

    def read(self, sl):
        self.reads.append((sl.start, sl.stop))
        return self.x[sl], None


class Scale:
    """A preprocessor multiplying by a constant (checks that preprocessing is applied)."""

    def __init__(self, factor):
        self.factor = np.float32(factor)

    def apply(self, x):
        return x * self.factor


def _network(out) -> Network:
    layers = L.get_all_layers(out)
    return Network(input_layer=layers[0], output_layer=out, layers=layers, n_classes=3)


def _randomize_bn(net, rng):
    for bn in net.bn_layers:
        shape = bn.beta.get_value().shape
        bn.beta.set_value(rng.normal(size=shape).astype(np.float32))
        bn.gamma.set_value(rng.uniform(0.5, 1.5, size=shape).astype(np.float32))
        bn.mean.set_value(rng.normal(size=shape).astype(np.float32))
        bn.inv_std.set_value(rng.uniform(0.5, 2.0, size=shape).astype(np.float32))


def dense_net(seed=0):
    rng = np.random.default_rng(seed)
    net = L.InputLayer((None, 5), name="input")
    for i, units in enumerate((7, 6)):
        net = L.DenseLayer(net, units, W=nn.init.GlorotUniform(rng=rng), name=f"d{i}")
        net = L.batch_norm(net, epsilon=1e-3)
    out = L.DenseLayer(net, 3, nonlinearity=nn.nonlinearities.softmax, name="out")
    network = _network(out)
    _randomize_bn(network, rng)
    return network


def conv_net(seed=1):
    rng = np.random.default_rng(seed)
    net = L.InputLayer((None, 2, 5, 5), name="input")
    for i, filters in enumerate((3, 4)):
        net = L.Conv2DLayer(
            net, filters, (3, 3), pad="same", W=nn.init.GlorotUniform(rng=rng), name=f"c{i}"
        )
        net = L.batch_norm(net, epsilon=1e-4)
    net = L.GlobalPoolLayer(net, name="gp")
    out = L.DenseLayer(net, 3, nonlinearity=nn.nonlinearities.softmax, name="out")
    network = _network(out)
    _randomize_bn(network, rng)
    return network


# --------------------------------------------------------------------------- NumPy reference


def _conv(x, w, pad, flip):
    if flip:
        w = w[:, :, ::-1, ::-1]
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    h, wd = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for a in range(k):
        for b in range(k):
            out += np.einsum("nchw,fc->nfhw", xp[:, :, a : a + h, b : b + wd], w[:, :, a, b])
    return out


def ref_bn_inputs(network, x, use=None):
    """Float64 forward pass to the BN inputs.

    BN layers named in ``use`` (name -> (mean, var)) normalize with those, the others with
    their batch's statistics.
    """
    use = use or {}
    values = {}
    bn_inputs = {}
    for layer in network.layers:
        if isinstance(layer, L.InputLayer):
            values[layer] = x.astype(np.float64)
            continue
        h = values[layer.input_layer]
        p = {k.name.split(".")[-1]: k.get_value().astype(np.float64) for k in layer.params}
        if isinstance(layer, L.DenseLayer):
            h = h.reshape(len(h), -1) @ p["W"]
        elif isinstance(layer, L.Conv2DLayer):
            h = _conv(h, p["W"], layer.resolved_pad, layer.flip_filters)
        elif isinstance(layer, L.BatchNormLayer):
            bn_inputs[layer.name] = h
            if layer.name in use:
                mean, var = use[layer.name]
            else:
                mean, var = h.mean(axis=layer.axes), h.var(axis=layer.axes)
            shape = [1 if a in layer.axes else -1 for a in range(h.ndim)]
            inv = 1.0 / np.sqrt(var + layer.epsilon)
            h = (h - mean.reshape(shape)) * (p["gamma"] * inv).reshape(shape)
            h = h + p["beta"].reshape(shape)
        elif isinstance(layer, L.NonlinearityLayer):
            assert layer.nonlinearity is nn.nonlinearities.rectify
            h = np.maximum(h, 0)
        else:  # past the last BN layer
            break
        values[layer] = h
    return bn_inputs


def ref_stats(network, x, batch_size, estimator, mode):
    names = [bn.name for bn in network.bn_layers]
    axes = {bn.name: bn.axes for bn in network.bn_layers}
    groups = [names] if mode == "batch" else [[n] for n in names]
    settled = {}
    result = {}
    for group in groups:
        per_batch = {n: [] for n in group}
        for s in range(0, len(x), batch_size):
            got = ref_bn_inputs(network, x[s : s + batch_size], use=dict(settled))
            for n in group:
                per_batch[n].append(got[n])
        for n in group:
            ax = axes[n]
            if estimator == "population":
                allv = np.concatenate(per_batch[n])
                mean, var = allv.mean(axis=ax), allv.var(axis=ax)
            else:
                mean = np.mean([b.mean(axis=ax) for b in per_batch[n]], axis=0)
                m = [b.size // b.mean(axis=ax).size for b in per_batch[n]]
                var = np.mean(
                    [b.var(axis=ax) * k / (k - 1) for b, k in zip(per_batch[n], m, strict=True)],
                    axis=0,
                )
            result[n] = (mean, var)
        if mode == "layerwise":
            settled.update({n: result[n] for n in group})
    return result


# --------------------------------------------------------------------------- fixtures

CASES = {
    # dataset size not a multiple of the batch size: the last batch is smaller
    "dense": (dense_net, (23, 5), 8),
    "conv": (conv_net, (11, 2, 5, 5), 4),
}


@pytest.fixture(scope="module")
def nets():
    rng = np.random.default_rng(42)
    out = {}
    for key, (make, shape, batch) in CASES.items():
        x = (rng.normal(size=shape) * 2 + 0.5).astype(np.float32)
        out[key] = (make(), x, batch)
    return out


@pytest.fixture(scope="module")
def results(nets):
    cache = {}

    def get(key, mode, estimator):
        if (key, mode, estimator) not in cache:
            net, x, batch = nets[key]
            cache[key, mode, estimator] = compute_bn_stats(
                net, ArrayDS(x), None, batch, estimator=estimator, mode=mode, mode_name=MODE
            )
        return cache[key, mode, estimator]

    return get


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("estimator", ["population", "batch-mean"])
@pytest.mark.parametrize("mode", ["batch", "layerwise"])
@pytest.mark.parametrize("key", ["dense", "conv"])
def test_matches_float64_numpy_reference(nets, results, key, mode, estimator):
    net, x, batch = nets[key]
    got = results(key, mode, estimator)
    ref = ref_stats(net, x, batch, estimator, mode)
    assert list(got) == [bn.name for bn in net.bn_layers]
    assert got.passes == (1 if mode == "batch" else 2)
    assert got.n_examples == len(x)
    for bn in net.bn_layers:
        s = got[bn.name]
        mean, var = ref[bn.name]
        assert s.mean.dtype == np.float64 and s.var.dtype == np.float64
        assert s.mean.shape == bn.mean.get_value().shape
        values_per_example = int(np.prod([bn.input_shape[a] for a in bn.axes[1:]]))
        assert s.count == len(x) * values_per_example
        np.testing.assert_allclose(s.mean, mean, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(s.var, var, rtol=2e-5, atol=2e-6)


def test_estimators_and_modes_differ_where_they_should(results):
    # Guards the reference comparison against testing the same thing four times.
    a = results("dense", "batch", "population")["d1_bn"]
    b = results("dense", "batch", "batch-mean")["d1_bn"]
    c = results("dense", "layerwise", "population")["d1_bn"]
    assert not np.allclose(a.var, b.var, rtol=1e-3)
    assert not np.allclose(a.var, c.var, rtol=1e-3)
    first_a = results("dense", "batch", "population")["d0_bn"]
    first_c = results("dense", "layerwise", "population")["d0_bn"]
    np.testing.assert_allclose(first_a.var, first_c.var, rtol=1e-12)


def test_population_does_not_depend_on_batch_order(nets, results):
    for key in ("dense", "conv"):
        net, x, batch = nets[key]
        perm = np.random.default_rng(7).permutation(len(x))
        for mode in ("layerwise", "batch"):
            base = results(key, mode, "population")
            shuffled = compute_bn_stats(
                net,
                ArrayDS(x[perm]),
                None,
                batch,
                estimator="population",
                mode=mode,
                mode_name=MODE,
            )
            # batch mode: only the first layer's inputs do not depend on the batch composition
            names = [bn.name for bn in net.bn_layers]
            for name in names if mode == "layerwise" else names[:1]:
                np.testing.assert_allclose(
                    shuffled[name].mean, base[name].mean, rtol=1e-6, atol=1e-7
                )
                np.testing.assert_allclose(shuffled[name].var, base[name].var, rtol=1e-6)


def test_moving_averages_untouched_and_data_streamed_in_order(nets):
    net, x, batch = nets["dense"]
    before = [(bn.mean.get_value(), bn.inv_std.get_value()) for bn in net.bn_layers]
    ds = ArrayDS(x)
    compute_bn_stats(net, ds, None, batch, mode="layerwise", mode_name=MODE)
    for bn, (mean, inv_std) in zip(net.bn_layers, before, strict=True):
        np.testing.assert_array_equal(bn.mean.get_value(), mean)
        np.testing.assert_array_equal(bn.inv_std.get_value(), inv_std)
    one_pass = [(0, 8), (8, 16), (16, 23)]
    assert ds.reads == one_pass * 2


def test_preprocessing_is_applied(nets, results):
    net, x, batch = nets["dense"]
    got = compute_bn_stats(net, ArrayDS(x / 4), Scale(4), batch, mode_name=MODE)
    base = results("dense", "batch", "population")
    for name in base:
        np.testing.assert_allclose(got[name].mean, base[name].mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[name].var, base[name].var, rtol=1e-5)


def test_jax_backend_reduces_in_float32_to_the_same_values(nets, results):
    net, x, batch = nets["conv"]
    got = compute_bn_stats(net, ArrayDS(x), None, batch, mode="batch", mode_name="JAX")
    base = results("conv", "batch", "population")
    for name in base:
        assert got[name].count == base[name].count
        np.testing.assert_allclose(got[name].mean, base[name].mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[name].var, base[name].var, rtol=1e-5)


def _input_bn(epsilon=1e-4):
    l_in = L.InputLayer((None, 3), name="input")
    bn = L.BatchNormLayer(l_in, epsilon=epsilon, name="bn")
    bn.beta.set_value(np.array([0.5, -1.25, 3.0], np.float32))
    bn.gamma.set_value(np.array([2.0, 0.7, 1.5], np.float32))
    return _network(bn), bn


def test_constant_channel_gives_exactly_beta_at_inference():
    import pytensor

    net, bn = _input_bn()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 3)).astype(np.float32)
    x[:, 1] = np.float32(0.1)  # not exactly representable: a float32 sum could drift
    stats = compute_bn_stats(net, ArrayDS(x), None, 5, mode_name=MODE)
    s = stats["bn"]
    assert s.var[1] == 0.0 and s.mean[1] == np.float64(np.float32(0.1))
    bn.mean.set_value(s.mean.astype(np.float32))
    bn.inv_std.set_value((1 / np.sqrt(s.var + bn.epsilon)).astype(np.float32))
    f = pytensor.function(
        [net.input_layer.input_var], L.get_output(bn, deterministic=True), mode=MODE
    )
    y = f(x)
    assert np.all(y[:, 1] == np.float32(-1.25))


@pytest.mark.parametrize(
    "mode_name, mean_rtol, mean_atol",
    [(MODE, 1e-12, 0.0), ("JAX", 1e-9, 1e-7)],  # JAX reduces in float32 (corrected two-pass)
)
def test_large_mean_small_std_keeps_its_variance(mode_name, mean_rtol, mean_atol):
    net, _ = _input_bn()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1001, 3))
    x[:, 2] = 1e4 + 1e-2 * x[:, 2]
    x = x.astype(np.float32)
    x64 = x.astype(np.float64)
    exact = x64.var(axis=0)
    batches = [x64[i : i + 64] for i in range(0, len(x64), 64)]  # the last one holds 41
    expected = {  # (mean, var) of each estimator, in float64
        "population": (x64.mean(axis=0), exact),
        "batch-mean": (
            np.mean([b.mean(axis=0) for b in batches], axis=0),
            np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0),
        ),
    }
    for estimator, (mean, var) in expected.items():
        s = compute_bn_stats(net, ArrayDS(x), None, 64, estimator=estimator, mode_name=mode_name)
        np.testing.assert_allclose(s["bn"].var, var, rtol=1e-6, err_msg=estimator)
        np.testing.assert_allclose(
            s["bn"].mean, mean, rtol=mean_rtol, atol=mean_atol, err_msg=estimator
        )
    assert not np.allclose(expected["batch-mean"][1], exact, rtol=1e-4)  # they differ here
    # E[x^2] - E[x]^2 in float32 would be useless here (guards the test's difficulty):
    x32 = x[:, 2]
    naive = np.mean(x32 * x32, dtype=np.float32) - np.mean(x32, dtype=np.float32) ** 2
    assert abs(naive - exact[2]) > 0.5 * exact[2]


def test_bn_levels_group_parallel_branches():
    l_in = L.InputLayer((None, 4), name="input")
    a = L.BatchNormLayer(L.DenseLayer(l_in, 3, name="da"), name="a")
    b = L.BatchNormLayer(L.DenseLayer(l_in, 3, name="db"), name="b")
    c = L.BatchNormLayer(L.DenseLayer(a, 3, name="dc"), name="c")
    d = L.BatchNormLayer(L.ConcatLayer([b, c], name="cat"), name="d")
    e = L.BatchNormLayer(L.DenseLayer(b, 2, name="de"), name="e")
    bns = [x for x in L.get_all_layers([d, e]) if isinstance(x, L.BatchNormLayer)]
    groups = bn_levels(bns)
    assert [sorted(x.name for x in g) for g in groups] == [["a", "b"], ["c", "e"], ["d"]]


def test_bad_arguments_raise(nets):
    net, x, batch = nets["dense"]
    ds = ArrayDS(x)
    with pytest.raises(ValueError, match="estimator must be one of .*'median'"):
        compute_bn_stats(net, ds, None, batch, estimator="median")
    with pytest.raises(ValueError, match="mode must be one of .*'all'"):
        compute_bn_stats(net, ds, None, batch, mode="all")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        compute_bn_stats(net, ds, None, 0)
    plain = L.DenseLayer(L.InputLayer((None, 5), name="input"), 3, name="out")
    with pytest.raises(ValueError, match="no batch-norm layers"):
        compute_bn_stats(_network(plain), ds, None, batch)
    with pytest.raises(ValueError, match="no examples"):
        compute_bn_stats(net, ArrayDS(x[:0]), None, batch)


def test_report_rows_measure_ema_distance():
    net, bn = _input_bn(epsilon=0.5)
    bn.mean.set_value(np.array([1.0, 2.0, 0.0], np.float32))
    bn.inv_std.set_value(np.array([1.0, 0.5, 0.25], np.float32))
    stats = {"bn": BnLayerStats(np.array([1.0, 1.0, 1.0]), np.array([0.5, 3.5, 15.5]), 12)}
    (row,) = report_rows(net, stats)
    std = np.array([1.0, 2.0, 4.0])  # sqrt(var + 0.5)
    dm = np.array([0.0, 1.0, 1.0]) / std
    ds = np.abs(np.array([1.0, 2.0, 4.0]) - std) / std
    assert row.name == "bn" and row.count == 12
    assert row.mean_rel_diff_max == pytest.approx(dm.max())
    assert row.mean_rel_diff_mean == pytest.approx(dm.mean())
    assert row.std_rel_diff_max == pytest.approx(ds.max()) and row.std_rel_diff_max == 0.0
    bn.inv_std.set_value(np.array([2.0, 0.5, 0.25], np.float32))
    (row,) = report_rows(net, stats)
    assert row.std_rel_diff_max == pytest.approx(0.5)
    assert row.std_rel_diff_mean == pytest.approx(0.5 / 3)


def test_report_path_is_next_to_the_checkpoint(tmp_path):
    assert report_path_for(tmp_path / "run" / "best.h5") == tmp_path / "run" / "best.bn_stats.json"


@pytest.mark.parametrize("mode_name", [MODE, "JAX"])
@pytest.mark.parametrize("n", [5, 32, 70])
def test_every_batch_is_merged_once(mode_name, n):
    # JAX outputs are read back one batch late (after the next dispatch): the
    # first, the last and a lone batch must each be merged exactly once.
    net, _ = _input_bn()
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(n, 3)) * [1.0, 3.0, 0.5] + [0.0, -2.0, 7.0]).astype(np.float32)
    ds = ArrayDS(x)
    s = compute_bn_stats(net, ds, None, 32, mode_name=mode_name)["bn"]
    ref = x.astype(np.float64)
    assert s.count == n
    assert ds.reads == [(a, min(a + 32, n)) for a in range(0, n, 32)]
    np.testing.assert_allclose(s.mean, ref.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s.var, ref.var(axis=0), rtol=1e-6)


@pytest.mark.parametrize("mode_name", [MODE, "JAX"])
@pytest.mark.parametrize("axes", [(0,), (0, 2), (0, 2, 3)])
def test_any_axes_against_numpy(mode_name, axes):
    # statistics per position (0,), per channel and column (0, 2), per channel (0, 2, 3):
    # the packed per-batch vector must unpack into the right shapes and order
    l_in = L.InputLayer((None, 2, 3, 4), name="input")
    bn = L.BatchNormLayer(l_in, axes=axes, name="bn")
    rng = np.random.default_rng(9)
    x = (rng.normal(size=(45, 2, 3, 4)) * 2 + rng.normal(size=(1, 2, 3, 4)) * 5).astype(np.float32)
    s = compute_bn_stats(_network(bn), ArrayDS(x), None, 16, mode_name=mode_name)["bn"]
    ref = x.astype(np.float64)
    assert s.mean.shape == bn.mean.get_value().shape
    assert s.count == int(np.prod([x.shape[a] for a in axes]))
    np.testing.assert_allclose(s.mean, ref.mean(axis=axes), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s.var, ref.var(axis=axes), rtol=1e-5)

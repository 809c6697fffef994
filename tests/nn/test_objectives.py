"""Tests for bntrain.nn.objectives against NumPy references."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from bntrain.nn import nonlinearities as nl
from bntrain.nn import objectives as obj

N, C = 6, 4


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(C), size=N).astype(np.float32)
    labels = rng.integers(0, C, size=N).astype(np.int32)
    p_bin = rng.uniform(0.05, 0.95, size=N).astype(np.float32)
    t_bin = rng.integers(0, 2, size=N).astype(np.int8)
    scores = rng.normal(size=(N, C)).astype(np.float32)
    logits = rng.normal(size=(N, C)).astype(np.float32) * 1000  # huge: softmax underflows
    weights = rng.uniform(0, 2, size=N).astype(np.float32)
    return {
        "probs": probs,
        "labels": labels,
        "onehot": np.eye(C, dtype=np.float32)[labels],
        "soft": rng.dirichlet(np.ones(C), size=N).astype(np.float32),
        "p_bin": p_bin,
        "t_bin": t_bin,
        "t_pm": (2 * t_bin.astype(np.float32) - 1),
        "scores": scores,
        "logits": logits,
        "weights": weights,
        "elem": rng.normal(size=N).astype(np.float32),
        "b": rng.normal(size=N).astype(np.float32),
        "probs3": rng.dirichlet(np.ones(C), size=(2, 3)).astype(np.float32),
        "labels3": rng.integers(0, C, size=(2, 3)).astype(np.int32),
    }


@pytest.fixture(scope="module")
def results(data):
    """Compile every expression into one function and evaluate it once."""
    v = {
        "probs": pt.fmatrix(),
        "labels": pt.ivector(),
        "onehot": pt.fmatrix(),
        "soft": pt.fmatrix(),
        "p_bin": pt.fvector(),
        "t_bin": pt.bvector(),
        "t_pm": pt.fvector(),
        "scores": pt.fmatrix(),
        "logits": pt.fmatrix(),
        "weights": pt.fvector(),
        "elem": pt.fvector(),
        "b": pt.fvector(),
        "probs3": pt.ftensor3(),
        "labels3": pt.imatrix(),
    }
    col = pt.tensor("col", dtype="float32", shape=(None, 1))
    sm = nl.softmax(v["logits"])
    cce_sm = obj.aggregate(obj.categorical_crossentropy(sm, v["labels"]))
    exprs = {
        "bce": obj.binary_crossentropy(v["p_bin"], v["t_bin"]),
        "bce_col": obj.binary_crossentropy(col, v["t_pm"] * 0 + v["t_bin"]),
        "cce_int": obj.categorical_crossentropy(v["probs"], v["labels"]),
        "cce_onehot": obj.categorical_crossentropy(v["probs"], v["onehot"]),
        "cce_soft": obj.categorical_crossentropy(v["probs"], v["soft"]),
        "cce_3d": obj.categorical_crossentropy(v["probs3"], v["labels3"]),
        "cce_softmax": cce_sm,
        "cce_softmax_grad": pytensor.grad(cce_sm, v["logits"]),
        "cce_softmax_onehot": obj.categorical_crossentropy(sm, v["onehot"]),
        "sq": obj.squared_error(v["elem"], v["b"]),
        "sq_col": obj.squared_error(col, v["b"]),
        "hinge_logodds": obj.binary_hinge_loss(v["elem"], v["t_bin"], log_odds=True),
        "hinge_probs": obj.binary_hinge_loss(v["p_bin"], v["t_bin"], delta=0.5, log_odds=False),
        "hinge_pm": obj.binary_hinge_loss(v["elem"], v["t_pm"], log_odds=True, binary=False),
        "mc_hinge_int": obj.multiclass_hinge_loss(v["scores"], v["labels"]),
        "mc_hinge_onehot": obj.multiclass_hinge_loss(v["scores"], v["onehot"], delta=0.3),
        "bin_acc": obj.binary_accuracy(v["p_bin"], v["t_bin"]),
        "bin_acc_07": obj.binary_accuracy(v["p_bin"], v["t_bin"], threshold=0.7),
        "cat_acc": obj.categorical_accuracy(v["scores"], v["labels"]),
        "cat_acc_onehot": obj.categorical_accuracy(v["scores"], v["onehot"]),
        "cat_acc_top2": obj.categorical_accuracy(v["scores"], v["labels"], top_k=2),
        "cat_acc_top4": obj.categorical_accuracy(v["scores"], v["labels"], top_k=4),
        "agg_mean": obj.aggregate(v["elem"]),
        "agg_sum": obj.aggregate(v["elem"], mode="sum"),
        "agg_wmean": obj.aggregate(v["elem"], v["weights"]),
        "agg_wsum": obj.aggregate(v["elem"], v["weights"], mode="sum"),
        "agg_norm": obj.aggregate(v["elem"], v["weights"], mode="normalized_sum"),
        "agg_acc": obj.aggregate(obj.categorical_accuracy(v["scores"], v["labels"])),
        "agg_bool": obj.aggregate(pt.gt(v["elem"], 0)),
    }
    for name, e in exprs.items():
        assert e.dtype == "float32", name
    inputs = [*v.values(), col]
    fn = pytensor.function(inputs, list(exprs.values()), on_unused_input="ignore")
    values = [data[k] for k in v] + [data["p_bin"][:, None]]
    out = dict(zip(exprs, fn(*values), strict=True))
    out["_fn"] = fn
    return out


def _close(a, b, **kw):
    np.testing.assert_allclose(
        np.asarray(a), b, rtol=kw.get("rtol", 1e-5), atol=kw.get("atol", 1e-6)
    )


def test_no_float64_in_compiled_graph(results):
    fg = results["_fn"].maker.fgraph
    dtypes = {v.type.dtype for v in fg.variables if hasattr(v.type, "dtype")}
    assert "float64" not in dtypes
    for o in fg.outputs:
        assert o.type.dtype == "float32"


def test_binary_crossentropy(results, data):
    p, t = data["p_bin"].astype(np.float64), data["t_bin"]
    want = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    _close(results["bce"], want)
    # A (N, 1) prediction column and a target vector are aligned, not broadcast to (N, N).
    assert results["bce_col"].shape == (N, 1)
    _close(results["bce_col"][:, 0], want)


def test_categorical_crossentropy(results, data):
    logp = np.log(data["probs"].astype(np.float64))
    want = -logp[np.arange(N), data["labels"]]
    _close(results["cce_int"], want)
    _close(results["cce_onehot"], want)
    _close(results["cce_soft"], -(data["soft"] * logp).sum(axis=1))
    logp3 = np.log(data["probs3"].astype(np.float64))
    want3 = -np.take_along_axis(logp3, data["labels3"][..., None], axis=-1)[..., 0]
    assert results["cce_3d"].shape == (2, 3)
    _close(results["cce_3d"], want3)


def test_categorical_crossentropy_of_softmax_is_stable(results, data):
    logsm = _np_log_softmax(data["logits"].astype(np.float64))
    want = -logsm[np.arange(N), data["labels"]]
    assert np.isfinite(results["cce_softmax"]) and np.isfinite(results["cce_softmax_grad"]).all()
    _close(results["cce_softmax"], want.mean(), rtol=1e-5)
    _close(results["cce_softmax_onehot"], want, rtol=1e-5)
    grad = (np.exp(logsm) - np.eye(C)[data["labels"]]) / N
    _close(results["cce_softmax_grad"], grad)


def test_categorical_crossentropy_gradient_finite_differences(data):
    labels = data["labels"]

    def fun(z):
        return obj.aggregate(obj.categorical_crossentropy(nl.softmax(z), labels))

    verify_grad(fun, [data["scores"].astype(np.float64)], rng=np.random.default_rng(3))


def test_squared_error(results, data):
    _close(results["sq"], (data["elem"].astype(np.float64) - data["b"]) ** 2)
    assert results["sq_col"].shape == (N, 1)
    _close(results["sq_col"][:, 0], (data["p_bin"].astype(np.float64) - data["b"]) ** 2)


def test_binary_hinge_loss(results, data):
    t_pm = 2.0 * data["t_bin"] - 1
    x = data["elem"].astype(np.float64)
    _close(results["hinge_logodds"], np.maximum(0, 1 - x * t_pm))
    _close(results["hinge_pm"], np.maximum(0, 1 - x * t_pm))
    p = data["p_bin"].astype(np.float64)
    _close(results["hinge_probs"], np.maximum(0, 0.5 - np.log(p / (1 - p)) * t_pm), rtol=1e-4)


def test_binary_hinge_loss_default_log_odds_warns():
    with pytest.warns(FutureWarning, match="log_odds"):
        obj.binary_hinge_loss(pt.fvector(), pt.fvector())


def _np_mc_hinge(scores, labels, delta):
    correct = scores[np.arange(len(labels)), labels]
    rest = np.where(np.eye(scores.shape[1], dtype=bool)[labels], -np.inf, scores).max(axis=1)
    return np.maximum(0, rest - correct + delta)


def test_multiclass_hinge_loss(results, data):
    s = data["scores"].astype(np.float64)
    _close(results["mc_hinge_int"], _np_mc_hinge(s, data["labels"], 1.0))
    _close(results["mc_hinge_onehot"], _np_mc_hinge(s, data["labels"], 0.3))


def test_binary_accuracy(results, data):
    p, t = data["p_bin"], data["t_bin"]
    _close(results["bin_acc"], ((p >= 0.5) == t).astype(np.float32))
    _close(results["bin_acc_07"], ((p >= 0.7) == t).astype(np.float32))


def test_categorical_accuracy(results, data):
    s, y = data["scores"], data["labels"]
    top1 = (s.argmax(axis=1) == y).astype(np.float32)
    _close(results["cat_acc"], top1)
    _close(results["cat_acc_onehot"], top1)
    top2 = np.argsort(s, axis=1)[:, -2:]
    _close(results["cat_acc_top2"], (top2 == y[:, None]).any(axis=1).astype(np.float32))
    _close(results["cat_acc_top4"], np.ones(N))
    assert 0 < results["cat_acc"].sum() < results["cat_acc_top2"].sum() <= N


def test_aggregate(results, data):
    x, w = data["elem"].astype(np.float64), data["weights"]
    _close(results["agg_mean"], x.mean())
    _close(results["agg_sum"], x.sum())
    _close(results["agg_wmean"], (x * w).mean())
    _close(results["agg_wsum"], (x * w).sum())
    _close(results["agg_norm"], (x * w).sum() / w.sum())
    _close(results["agg_acc"], (data["scores"].argmax(1) == data["labels"]).mean())
    _close(results["agg_bool"], (x > 0).mean())


def test_aggregate_errors():
    with pytest.raises(ValueError, match="require weights"):
        obj.aggregate(pt.fvector(), mode="normalized_sum")
    with pytest.raises(ValueError, match="'median'"):
        obj.aggregate(pt.fvector(), mode="median")


def test_rank_mismatch_and_bad_arguments():
    with pytest.raises(TypeError, match="rank mismatch"):
        obj.categorical_crossentropy(pt.fmatrix(), pt.ftensor3())
    with pytest.raises(TypeError, match="integers"):
        obj.categorical_crossentropy(pt.fmatrix(), pt.fvector())
    with pytest.raises(TypeError, match="rank mismatch"):
        obj.multiclass_hinge_loss(pt.fmatrix(), pt.fscalar())
    with pytest.raises(TypeError, match="rank mismatch"):
        obj.categorical_accuracy(pt.fmatrix(), pt.ftensor3())
    with pytest.raises(ValueError, match="top_k.*0"):
        obj.categorical_accuracy(pt.fmatrix(), pt.ivector(), top_k=0)


def test_align_targets_only_for_static_column():
    p, t = obj.align_targets(pt.fmatrix(), pt.fvector())
    assert t.ndim == 1
    p, t = obj.align_targets(pt.tensor(dtype="float32", shape=(None, 1)), pt.fvector())
    assert t.ndim == 2 and t.type.shape[1] == 1


@pytest.mark.parametrize("delta", [1.0, 0.3])
def test_huber_loss_matches_numpy(delta):
    rng = np.random.default_rng(17)
    p = rng.normal(size=(6, 3)).astype(np.float32)
    t = rng.normal(size=(6, 3)).astype(np.float32)
    got = obj.huber_loss(pt.constant(p), pt.constant(t), delta=delta).eval()
    assert got.dtype == np.float32
    d = np.abs(t.astype(np.float64) - p)
    want = np.where(d <= delta, 0.5 * d**2, delta * (d - 0.5 * delta))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert (d <= delta).any() and (d > delta).any()  # both branches exercised

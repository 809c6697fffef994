"""Tests for bntrain.nn.updates: every rule against a hand-written NumPy loop.

One function holding every rule's updates is compiled once; it runs three steps
with a shared learning rate changed between steps, and each rule's parameters
and state are compared with a float64 NumPy implementation of Lasagne's rule.
"""

from collections import OrderedDict

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bntrain.nn import updates as U

LRS = [0.1, 0.03, 0.2]
CONST_LR = 0.05
WD = 0.1
CLIP = 0.5

_rng = np.random.default_rng(0)
W0 = _rng.normal(size=(3, 2)).astype(np.float32)
B0 = _rng.normal(size=2).astype(np.float32)
CW = _rng.normal(size=(3, 2)).astype(np.float32)
CB = _rng.normal(size=2).astype(np.float32)


def _loss(W, b):
    return pt.sum(pt.sin(W) * CW) + pt.sum(pt.sqr(b - CB))


def _np_grads(ps):
    W, b = ps
    return [np.cos(W) * CW, 2 * (b - CB)]


# name -> builder(loss, params, lr_shared) -> updates
BUILDERS = {
    "sgd": lambda loss, ps, lr: U.sgd(loss, ps, lr),
    "sgd_const_lr": lambda loss, ps, lr: U.sgd(loss, ps, CONST_LR),
    "sgd_clipped": lambda loss, ps, lr: U.sgd(
        U.total_norm_constraint(pytensor.grad(loss, ps), CLIP), ps, lr
    ),
    "momentum": lambda loss, ps, lr: U.momentum(loss, ps, lr),
    "momentum_f64": lambda loss, ps, lr: U.momentum(loss, ps, lr, momentum=np.float64(0.5)),
    "nesterov": lambda loss, ps, lr: U.nesterov_momentum(loss, ps, lr),
    "adagrad": lambda loss, ps, lr: U.adagrad(loss, ps, lr),
    "rmsprop": lambda loss, ps, lr: U.rmsprop(loss, ps, lr),
    "adadelta": lambda loss, ps, lr: U.adadelta(loss, ps, lr),
    "adam": lambda loss, ps, lr: U.adam(loss, ps, lr),
    "adamax": lambda loss, ps, lr: U.adamax(loss, ps, lr),
    "amsgrad": lambda loss, ps, lr: U.amsgrad(loss, ps, lr),
    "adamw": lambda loss, ps, lr: U.apply_weight_decay(U.adam(loss, ps, lr), ps[:1], lr, WD),
}

EXPECTED_STATE = {
    "sgd": [],
    "sgd_const_lr": [],
    "sgd_clipped": [],
    "momentum": ["{W}.velocity", "param1.velocity"],
    "momentum_f64": ["{W}.velocity", "param1.velocity"],
    "nesterov": ["{W}.velocity", "param1.velocity"],
    "adagrad": ["{W}.accu", "param1.accu"],
    "rmsprop": ["{W}.accu", "param1.accu"],
    "adadelta": ["{W}.accu", "{W}.delta_accu", "param1.accu", "param1.delta_accu"],
    "adam": ["{W}.m", "{W}.v", "param1.m", "param1.v", "adam.t"],
    "adamax": ["{W}.m", "{W}.u", "param1.m", "param1.u", "adamax.t"],
    "amsgrad": [
        "{W}.m",
        "{W}.v",
        "{W}.v_hat",
        "param1.m",
        "param1.v",
        "param1.v_hat",
        "amsgrad.t",
    ],
    "adamw": ["{W}.m", "{W}.v", "param1.m", "param1.v", "adam.t"],
}


# --- NumPy references (float64), Lasagne's formulas -------------------------------------------


def _ref(rule, steps_lr):
    ps = [W0.astype(np.float64), B0.astype(np.float64)]
    st = {}
    zeros = lambda: [np.zeros_like(p) for p in ps]  # noqa: E731
    history = []
    for t, lr in enumerate(steps_lr, start=1):
        gs = _np_grads(ps)
        if rule == "sgd":
            ps = [p - lr * g for p, g in zip(ps, gs, strict=True)]
        elif rule == "sgd_const_lr":
            ps = [p - CONST_LR * g for p, g in zip(ps, gs, strict=True)]
        elif rule == "sgd_clipped":
            norm = np.sqrt(sum((g**2).sum() for g in gs))
            mult = min(norm, CLIP) / (1e-7 + norm)
            ps = [p - lr * g * mult for p, g in zip(ps, gs, strict=True)]
        elif rule in ("momentum", "momentum_f64", "nesterov"):
            mu = 0.5 if rule == "momentum_f64" else 0.9
            vs = st.setdefault("velocity", zeros())
            for i, g in enumerate(gs):
                vs[i] = mu * vs[i] - lr * g
                if rule == "nesterov":
                    ps[i] = ps[i] + mu * vs[i] - lr * g
                else:
                    ps[i] = ps[i] + vs[i]
        elif rule in ("adagrad", "rmsprop"):
            acc = st.setdefault("accu", zeros())
            for i, g in enumerate(gs):
                acc[i] = acc[i] + g**2 if rule == "adagrad" else 0.9 * acc[i] + 0.1 * g**2
                ps[i] = ps[i] - lr * g / np.sqrt(acc[i] + 1e-6)
        elif rule == "adadelta":
            acc = st.setdefault("accu", zeros())
            dacc = st.setdefault("delta_accu", zeros())
            for i, g in enumerate(gs):
                acc[i] = 0.95 * acc[i] + 0.05 * g**2
                step = g * np.sqrt(dacc[i] + 1e-6) / np.sqrt(acc[i] + 1e-6)
                ps[i] = ps[i] - lr * step
                dacc[i] = 0.95 * dacc[i] + 0.05 * step**2
        elif rule in ("adam", "adamw"):
            m = st.setdefault("m", zeros())
            v = st.setdefault("v", zeros())
            a_t = lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            for i, g in enumerate(gs):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g**2
                new = ps[i] - a_t * m[i] / (np.sqrt(v[i]) + 1e-8)
                if rule == "adamw" and i == 0:
                    new = new - lr * WD * ps[i]
                ps[i] = new
            st["t"] = float(t)
        elif rule == "adamax":
            m = st.setdefault("m", zeros())
            u = st.setdefault("u", zeros())
            a_t = lr / (1 - 0.9**t)
            for i, g in enumerate(gs):
                m[i] = 0.9 * m[i] + 0.1 * g
                u[i] = np.maximum(0.999 * u[i], np.abs(g))
                ps[i] = ps[i] - a_t * m[i] / (u[i] + 1e-8)
            st["t"] = float(t)
        elif rule == "amsgrad":
            m = st.setdefault("m", zeros())
            v = st.setdefault("v", zeros())
            v_hat = st.setdefault("v_hat", zeros())
            a_t = lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            for i, g in enumerate(gs):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g**2
                v_hat[i] = np.maximum(v_hat[i], v[i])
                ps[i] = ps[i] - a_t * m[i] / (np.sqrt(v_hat[i]) + 1e-8)
            st["t"] = float(t)
        else:  # pragma: no cover
            raise AssertionError(rule)
        history.append([p.copy() for p in ps])
    return history, st


# --- the compiled run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run():
    lr = pytensor.shared(np.float32(LRS[0]), name="lr")
    all_updates = OrderedDict()
    per_rule = {}
    for rule, build in BUILDERS.items():
        W = pytensor.shared(W0.copy(), name=f"{rule}.W")
        b = pytensor.shared(B0.copy())  # unnamed: its state is called param1.<slot>
        ups = build(_loss(W, b), [W, b], lr)
        per_rule[rule] = {"params": [W, b], "updates": ups}
        all_updates.update(ups)
    fn = pytensor.function([], [], updates=all_updates)
    history = {rule: [] for rule in BUILDERS}
    for step_lr in LRS:
        lr.set_value(np.float32(step_lr))
        fn()
        for rule, d in per_rule.items():
            history[rule].append([p.get_value() for p in d["params"]])
    return {"fn": fn, "per_rule": per_rule, "history": history}


@pytest.mark.parametrize("rule", list(BUILDERS))
def test_three_steps_match_numpy(run, rule):
    want, _ = _ref(rule, LRS)
    got = run["history"][rule]
    for step, (g_ps, w_ps) in enumerate(zip(got, want, strict=True)):
        for g, w in zip(g_ps, w_ps, strict=True):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{rule} step {step}")
    # The rule really moved the parameters, and differently for each learning rate.
    assert not np.allclose(got[0][0], W0)


@pytest.mark.parametrize("rule", list(BUILDERS))
def test_state_names_and_values(run, rule):
    d = run["per_rule"][rule]
    state = U.optimizer_state(d["updates"], d["params"])
    assert list(state) == [n.format(W=f"{rule}.W") for n in EXPECTED_STATE[rule]]
    _, ref_state = _ref(rule, LRS)
    for name, var in state.items():
        value = var.get_value()
        assert value.dtype == np.float32, name
        if name.endswith(".t"):
            assert value == 3.0
            continue
        slot = name.rsplit(".", 1)[1]
        index = 1 if name.startswith("param1.") else 0
        param = d["params"][index]
        assert var.type.shape == param.type.shape
        np.testing.assert_allclose(
            value, ref_state[slot][index], rtol=1e-4, atol=1e-6, err_msg=name
        )


def test_no_float64_in_compiled_update_graph(run):
    fg = run["fn"].maker.fgraph
    dtypes = {v.type.dtype for v in fg.variables if hasattr(v.type, "dtype")}
    assert "float64" not in dtypes
    # The updates themselves (before rewriting) are float32 too.
    for d in run["per_rule"].values():
        for var, expr in d["updates"].items():
            assert expr.dtype == var.dtype == "float32"


# --- norm constraints -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def constraints():
    rng = np.random.default_rng(1)
    vals = {
        "a": rng.normal(size=(4, 3)).astype(np.float32),
        "b": rng.normal(size=5).astype(np.float32),
        "c": rng.normal(size=(3, 2, 2, 2)).astype(np.float32) * 3,
    }
    a, b, c = pt.fmatrix(), pt.fvector(), pt.ftensor4()
    big, norm_big = U.total_norm_constraint([a, b], max_norm=1.0, return_norm=True)
    small = U.total_norm_constraint([a, b], max_norm=1000.0)
    outs = [
        *big,
        norm_big,
        *small,
        U.norm_constraint(a, 1.0),
        U.norm_constraint(c, 2.0),
        U.norm_constraint(a, 0.5, norm_axes=(1,)),
    ]
    for o in outs:
        assert o.dtype == "float32"
    fn = pytensor.function([a, b, c], outs)
    return vals, fn(vals["a"], vals["b"], vals["c"]), fn


def test_total_norm_constraint(constraints):
    vals, out, _ = constraints
    a, b = vals["a"].astype(np.float64), vals["b"].astype(np.float64)
    norm = np.sqrt((a**2).sum() + (b**2).sum())
    assert norm > 1.0
    np.testing.assert_allclose(out[2], norm, rtol=1e-6)
    mult = 1.0 / (1e-7 + norm)
    np.testing.assert_allclose(out[0], a * mult, rtol=1e-5)
    np.testing.assert_allclose(out[1], b * mult, rtol=1e-5)
    np.testing.assert_allclose(np.sqrt((out[0] ** 2).sum() + (out[1] ** 2).sum()), 1.0, rtol=1e-5)
    # under the threshold: unchanged (up to epsilon)
    np.testing.assert_allclose(out[3], a, rtol=1e-6)
    np.testing.assert_allclose(out[4], b, rtol=1e-6)


def _np_norm_constraint(x, max_norm, axes):
    norms = np.sqrt((x**2).sum(axis=axes, keepdims=True))
    return x * (np.clip(norms, 0, max_norm) / (1e-7 + norms))


def test_norm_constraint(constraints):
    vals, out, _ = constraints
    a, c = vals["a"].astype(np.float64), vals["c"].astype(np.float64)
    np.testing.assert_allclose(out[5], _np_norm_constraint(a, 1.0, (0,)), rtol=1e-5)
    np.testing.assert_allclose(out[6], _np_norm_constraint(c, 2.0, (1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(out[7], _np_norm_constraint(a, 0.5, (1,)), rtol=1e-5)
    assert np.sqrt((out[5] ** 2).sum(axis=0)).max() <= 1.0 + 1e-6


def test_norm_constraint_needs_axes_for_1d():
    with pytest.raises(ValueError, match="dimensionality 1"):
        U.norm_constraint(pt.fvector(), 1.0)
    with pytest.raises(ValueError, match="empty"):
        U.total_norm_constraint([], 1.0)


# --- construction-time behaviour (no compiling) -----------------------------------------------


def _params(*names):
    return [pytensor.shared(np.zeros((2, 2), np.float32), name=n) for n in names]


def test_get_or_compute_grads():
    ps = _params("x", "y")
    grads = [pt.ones((2, 2)), pt.zeros((2, 2))]
    assert U.get_or_compute_grads(grads, ps) == grads
    computed = U.get_or_compute_grads(pt.sum(ps[0] * 3) + pt.sum(ps[1]), ps)
    assert len(computed) == 2 and all(g.dtype == "float32" for g in computed)
    with pytest.raises(ValueError, match="1 gradient expressions for 2 parameters"):
        U.get_or_compute_grads(grads[:1], ps)
    with pytest.raises(ValueError, match="shared variables only"):
        U.get_or_compute_grads(grads, [ps[0], ps[1] * 2])


def test_default_hyperparameters_are_lasagnes():
    import inspect

    def defaults(fn):
        return {
            k: p.default
            for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    assert defaults(U.adam) == {
        "learning_rate": 0.001,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
    }
    assert defaults(U.adamax) == {
        "learning_rate": 0.002,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
    }
    assert defaults(U.adagrad) == {"learning_rate": 1.0, "epsilon": 1e-6}
    assert defaults(U.rmsprop) == {"learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6}
    assert defaults(U.adadelta) == {"learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-6}
    assert defaults(U.momentum) == {"momentum": 0.9}
    assert defaults(U.apply_nesterov_momentum) == {"params": None, "momentum": 0.9}
    assert defaults(U.total_norm_constraint) == {"epsilon": 1e-7, "return_norm": False}


def test_apply_momentum_defaults_to_all_update_keys():
    ps = _params("x", "y")
    ups = U.apply_momentum(U.sgd([pt.ones((2, 2))] * 2, ps, 0.1))
    assert list(U.optimizer_state(ups, ps)) == ["x.velocity", "y.velocity"]
    only_y = U.apply_nesterov_momentum(U.sgd([pt.ones((2, 2))] * 2, ps, 0.1), [ps[1]])
    assert list(U.optimizer_state(only_y, ps)) == ["y.velocity"]


def test_optimizer_state_rejects_duplicate_and_unnamed():
    ps = _params("W", "W")  # e.g. two unnamed layers
    ups = U.momentum([pt.ones((2, 2))] * 2, ps, 0.1)
    with pytest.raises(ValueError, match="'W.velocity'"):
        U.optimizer_state(ups, ps)
    ps1, ps2 = _params("a"), _params("b")
    merged = OrderedDict(U.adam([pt.ones((2, 2))], ps1))
    merged.update(U.adam([pt.ones((2, 2))], ps2))
    with pytest.raises(ValueError, match="'adam.t'"):
        U.optimizer_state(merged, ps1 + ps2)
    anon = pytensor.shared(np.float32(0))
    with pytest.raises(ValueError, match="no name"):
        U.optimizer_state({anon: anon + 1}, [])


def test_apply_weight_decay_errors_and_no_mutation():
    ps = _params("x", "y")
    ups = U.sgd([pt.ones((2, 2))] * 2, ps, 0.1)
    before = dict(ups)
    decayed = U.apply_weight_decay(ups, ps[:1], 0.1, 0.01)
    assert dict(ups) == before and decayed[ps[1]] is ups[ps[1]]
    assert decayed[ps[0]] is not ups[ps[0]]
    with pytest.raises(ValueError, match="'z' has no update"):
        U.apply_weight_decay(ups, _params("z"), 0.1, 0.01)
    with pytest.raises(ValueError, match="weight_decay.*-0.1"):
        U.apply_weight_decay(ups, ps, 0.1, -0.1)


def test_learning_rate_types():
    ps = _params("x")
    g = [pt.ones((2, 2))]
    for lr in (0.1, np.float64(0.1), pt.dscalar(), pytensor.shared(0.1), pt.iscalar()):
        ups = U.sgd(g, ps, lr)
        assert ups[ps[0]].dtype == "float32"
    with pytest.raises(TypeError, match=r"sgd: learning_rate.*'0.1'"):
        U.sgd(g, ps, "0.1")
    with pytest.raises(TypeError, match="adam: beta1"):
        U.adam(g, ps, beta1=None)

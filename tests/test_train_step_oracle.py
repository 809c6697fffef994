"""The compiled training step against a float64 NumPy oracle, on every backend.

The oracle is written from the documented semantics only (README, the docstrings of
``bntrain.graphs.build_train_step``, ``bntrain.nn.updates`` and ``BatchNormLayer``), never by
calling bntrain's math:

* loss: mean categorical cross-entropy of the softmax output; ``weight_decay`` adds
  ``weight_decay / 2 * sum(p**2)`` over the regularizable parameters (every ``W`` and every
  batch-norm ``gamma``; not ``b``, not ``beta``), except ``adamw``, which shrinks those
  parameters by ``lr * weight_decay * p`` after the Adam step (decoupled);
* batch norm in training: the batch's mean and *biased* variance over the normalized axes,
  ``y = (x - mean) * gamma / sqrt(var + epsilon) + beta``; the stored averages follow
  ``s <- (1 - alpha) * s + alpha * s_B`` for ``mean`` and for ``inv_std = 1 / sqrt(var + eps)``;
* a ``conv2d`` layer is a true convolution (filters flipped, Lasagne's default), ``pad: same``;
* the update rules and slot names of ``bntrain.nn.updates`` (``velocity``, ``accu`` with
  ``rho = 0.9``, ``m``, ``v`` and ``adam.t``).

The backward pass is written out by hand, batch norm's included.  Each case compiles one
training step, runs three steps with three learning rates, and compares the losses,
accuracies, parameters, optimizer slots and moving averages.
"""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest

from bntrain.backend import resolve_runtime
from bntrain.config import parse_config
from bntrain.errors import BntrainError
from bntrain.graphs import build_train_step
from bntrain.model import build_network
from bntrain.nn import layers as L

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]
BATCH, STEPS, LRS = 8, 3, (0.1, 0.05, 0.2)
ALPHA, BN_EPS = 0.3, 1e-3
MOMENTUM, BETA1, BETA2, OPT_EPS, RHO = 0.8, 0.85, 0.99, 1e-3, 0.9

NETS = {
    # name: (layers YAML, one example's shape)
    "dense": (
        "- {type: dense, units: 4, nonlinearity: tanh}\n"
        "- {type: dense, units: 3, nonlinearity: softmax}",
        (5,),
    ),
    "conv": (
        "- {type: conv2d, filters: 2, size: 3, nonlinearity: relu}\n"
        "- {type: flatten}\n"
        "- {type: dense, units: 3, nonlinearity: softmax}",
        (1, 4, 4),
    ),
}


def config_text(net: str, optimizer: str, weight_decay: float, clip=None) -> str:
    layers = textwrap.indent(NETS[net][0], "    ")
    clip_key = f", grad_clip_norm: {clip}" if clip is not None else ""
    return (
        "name: oracle\n"
        "data: {train: {builtin: digits, split: train}}\n"
        "model:\n"
        f"  batch_norm: {{insert: auto, epsilon: {BN_EPS}, alpha: {ALPHA}}}\n"
        "  layers:\n"
        f"{layers}\n"
        "training:\n"
        "  epochs: 1\n"
        f"  batch_size: {BATCH}\n"
        f"  optimizer: {{name: {optimizer}, lr: {LRS[0]}, {OPTIMIZER_KEYS[optimizer]}"
        f"weight_decay: {weight_decay}{clip_key}}}\n"
    )


#: Each optimizer's own keys (its schema refuses the others').
OPTIMIZER_KEYS = {
    "sgd": "",
    "momentum": f"momentum: {MOMENTUM}, ",
    "nesterov": f"momentum: {MOMENTUM}, ",
    "rmsprop": f"epsilon: {OPT_EPS}, ",
    "adam": f"beta1: {BETA1}, beta2: {BETA2}, epsilon: {OPT_EPS}, ",
    "adamw": f"beta1: {BETA1}, beta2: {BETA2}, epsilon: {OPT_EPS}, ",
}


# ------------------------------------------------------------------ the NumPy oracle


def bn_forward(h, P, name, axes):
    """Training-mode batch norm; returns (output, cache)."""
    shape = [1 if a in axes else s for a, s in enumerate(h.shape)]
    mean = h.mean(axis=axes)
    var = h.var(axis=axes)  # biased
    inv = 1 / np.sqrt(var + BN_EPS)
    xhat = (h - mean.reshape(shape)) * inv.reshape(shape)
    out = xhat * P[f"{name}.gamma"].reshape(shape) + P[f"{name}.beta"].reshape(shape)
    return out, (xhat, inv, shape, mean, var)


def bn_backward(dout, cache, P, name, axes, grads):
    xhat, inv, shape, _, _ = cache
    count = int(np.prod([dout.shape[a] for a in axes]))
    grads[f"{name}.gamma"] = (dout * xhat).sum(axis=axes)
    grads[f"{name}.beta"] = dout.sum(axis=axes)
    dxhat = dout * P[f"{name}.gamma"].reshape(shape)
    s1 = dxhat.sum(axis=axes).reshape(shape)
    s2 = (dxhat * xhat).sum(axis=axes).reshape(shape)
    return inv.reshape(shape) / count * (count * dxhat - s1 - xhat * s2)


def conv_cols(x, k):
    """``cols[n, c, u, v, i, j] = xpad[n, c, i + u, j + v]`` for a k x k 'same' convolution."""
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    n, c, h, w = x.shape
    cols = np.empty((n, c, k, k, h, w))
    for u in range(k):
        for v in range(k):
            cols[:, :, u, v] = xp[:, :, u : u + h, v : v + w]
    return cols


def forward_backward(net, P, x, y):
    """Loss, accuracy, gradients of the mean cross-entropy, batch statistics {bn: (mean, var)}."""
    grads, stats = {}, {}
    n = len(x)
    if net == "dense":
        h = x @ P["dense1.W"]
        z, cache = bn_forward(h, P, "dense1_bn", (0,))
        a = np.tanh(z)
        flat = a
    else:
        W = P["conv1.W"]
        cols = conv_cols(x, W.shape[-1])
        h = np.einsum("ncuvij,fcuv->nfij", cols, W[:, :, ::-1, ::-1])  # true convolution
        z, cache = bn_forward(h, P, "conv1_bn", (0, 2, 3))
        a = np.maximum(z, 0)
        flat = a.reshape(n, -1)
    bn = "dense1_bn" if net == "dense" else "conv1_bn"
    stats[bn] = cache[3], cache[4]
    last = "dense2" if net == "dense" else "dense1"
    o = flat @ P[f"{last}.W"] + P[f"{last}.b"]
    e = np.exp(o - o.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    acc = np.mean(p.argmax(axis=1) == y)
    do = p.copy()
    do[np.arange(n), y] -= 1
    do /= n
    grads[f"{last}.W"] = flat.T @ do
    grads[f"{last}.b"] = do.sum(axis=0)
    da = (do @ P[f"{last}.W"].T).reshape(a.shape)
    if net == "dense":
        dz = da * (1 - a**2)
        dh = bn_backward(dz, cache, P, bn, (0,), grads)
        grads["dense1.W"] = x.T @ dh
    else:
        dz = da * (z > 0)
        dh = bn_backward(dz, cache, P, bn, (0, 2, 3), grads)
        grads["conv1.W"] = np.einsum("nfij,ncuvij->fcuv", dh, cols)[:, :, ::-1, ::-1]
    return loss, acc, grads, stats


def regularizable(name: str) -> bool:
    return name.endswith(".W") or name.endswith(".gamma")


class Oracle:
    """Parameters, optimizer slots and moving averages of one training run, in float64."""

    def __init__(self, net, optimizer, weight_decay, params, clip=None):
        self.net, self.opt, self.wd, self.clip = net, optimizer, weight_decay, clip
        self.P = {k: v.astype(np.float64) for k, v in params.items()}
        self.trainable = [k for k in self.P if not k.endswith((".mean", ".inv_std"))]
        self.slots: dict[str, np.ndarray] = {}
        zero = {k: np.zeros_like(self.P[k]) for k in self.trainable}
        if optimizer in ("momentum", "nesterov"):
            self.slots.update({f"{k}.velocity": zero[k].copy() for k in self.trainable})
        elif optimizer == "rmsprop":
            self.slots.update({f"{k}.accu": zero[k].copy() for k in self.trainable})
        elif optimizer in ("adam", "adamw"):
            self.slots.update({f"{k}.m": zero[k].copy() for k in self.trainable})
            self.slots.update({f"{k}.v": zero[k].copy() for k in self.trainable})
            self.slots["adam.t"] = np.float64(0)

    def step(self, x, y, lr):
        P, S = self.P, self.slots
        loss, acc, grads, stats = forward_backward(self.net, P, x, y)
        if self.wd and self.opt != "adamw":
            for k in self.trainable:
                if regularizable(k):
                    grads[k] = grads[k] + self.wd * P[k]
        if self.clip is not None:
            norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
            grads = {k: g * min(norm, self.clip) / (1e-7 + norm) for k, g in grads.items()}
        old = {k: P[k].copy() for k in self.trainable}
        if self.opt in ("adam", "adamw"):
            S["adam.t"] += 1
            t = S["adam.t"]
            a_t = lr * np.sqrt(1 - BETA2**t) / (1 - BETA1**t)
        for k in self.trainable:
            g = grads[k]
            if self.opt == "sgd":
                P[k] = P[k] - lr * g
            elif self.opt == "momentum":
                S[f"{k}.velocity"] = MOMENTUM * S[f"{k}.velocity"] - lr * g
                P[k] = P[k] + S[f"{k}.velocity"]
            elif self.opt == "nesterov":
                S[f"{k}.velocity"] = MOMENTUM * S[f"{k}.velocity"] - lr * g
                P[k] = P[k] + MOMENTUM * S[f"{k}.velocity"] - lr * g
            elif self.opt == "rmsprop":
                S[f"{k}.accu"] = RHO * S[f"{k}.accu"] + (1 - RHO) * g**2
                P[k] = P[k] - lr * g / np.sqrt(S[f"{k}.accu"] + OPT_EPS)
            else:
                S[f"{k}.m"] = BETA1 * S[f"{k}.m"] + (1 - BETA1) * g
                S[f"{k}.v"] = BETA2 * S[f"{k}.v"] + (1 - BETA2) * g**2
                P[k] = P[k] - a_t * S[f"{k}.m"] / (np.sqrt(S[f"{k}.v"]) + OPT_EPS)
                if self.opt == "adamw" and self.wd and regularizable(k):
                    P[k] = P[k] - lr * self.wd * old[k]
        for bn, (mean, var) in stats.items():
            P[f"{bn}.mean"] = (1 - ALPHA) * P[f"{bn}.mean"] + ALPHA * mean
            P[f"{bn}.inv_std"] = (1 - ALPHA) * P[f"{bn}.inv_std"] + ALPHA / np.sqrt(var + BN_EPS)
        return loss, acc


# ------------------------------------------------------------------ the cases


def _mode(backend: str) -> str:
    try:
        return resolve_runtime(backend, "cpu").mode
    except BntrainError as exc:  # e.g. backend c without BLAS
        pytest.skip(str(exc))


def _cases():
    """Every optimizer with and without weight decay on JAX (each meets both networks);
    on Numba and C, slow to compile, one dense and one conv case with weight decay."""
    nets = list(NETS)
    cases = []
    for i, opt in enumerate(OPTIMIZERS):
        for j, wd in enumerate((0.0, 0.05)):
            net = nets[(i + j) % 2]
            cases.append(pytest.param("jax", opt, net, wd, None, id=f"jax-{opt}-{net}-wd{wd}"))
    cases.append(pytest.param("jax", "momentum", "dense", 0.05, 0.05, id="jax-momentum-dense-clip"))
    for backend in ("numba", "c"):
        for opt, net in (("adamw", "dense"), ("nesterov", "conv")):
            cases.append(
                pytest.param(backend, opt, net, 0.05, None, id=f"{backend}-{opt}-{net}-wd0.05")
            )
    return cases


def _batches(net, seed=0):
    rng = np.random.default_rng(seed)
    shape = NETS[net][1]
    for _ in range(STEPS):
        x = rng.normal(size=(BATCH, *shape)) * 2 + 0.5
        y = rng.integers(0, 3, BATCH)
        yield x.astype(np.float32), y.astype(np.int32)


@pytest.mark.parametrize("backend, optimizer, net, weight_decay, clip", _cases())
def test_training_step_matches_numpy_oracle(backend, optimizer, net, weight_decay, clip):
    mode = _mode(backend)
    cfg = parse_config(config_text(net, optimizer, weight_decay, clip), source="oracle.yaml")
    network = build_network(cfg.model, NETS[net][1], seed=1)
    rng = np.random.default_rng(2)
    params = {p.name: p for p in L.get_all_params(network.output_layer)}
    for name, p in params.items():  # away from the initial constants, so that every term counts
        value = p.get_value()
        if name.endswith((".gamma", ".inv_std")):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif name.endswith((".beta", ".mean", ".b")):
            value = rng.normal(0, 0.3, value.shape)
        p.set_value(np.asarray(value, dtype=np.float32))
    oracle = Oracle(
        net, optimizer, weight_decay, {k: p.get_value() for k, p in params.items()}, clip
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = build_train_step(
            network, cfg.training, mode, batch_size=BATCH, lr_table=np.float32(LRS)
        )
    assert sorted(step.optimizer_state) == sorted(oracle.slots)
    for lr, (x, y) in zip(LRS, _batches(net), strict=True):
        loss, acc = step.fn(x, y)  # the step counter picks the step's rate from the table
        want_loss, want_acc = oracle.step(x.astype(np.float64), y, lr)
        assert float(loss) == pytest.approx(want_loss, rel=1e-5)
        assert float(acc) == pytest.approx(want_acc)
    for name, p in params.items():
        np.testing.assert_allclose(
            p.get_value(), oracle.P[name], rtol=2e-4, atol=2e-6, err_msg=name
        )
    for name, var in step.optimizer_state.items():
        np.testing.assert_allclose(
            var.get_value(), oracle.slots[name], rtol=2e-4, atol=1e-7, err_msg=name
        )

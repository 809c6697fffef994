"""Time one training step of a small CNN built on bntrain's convolution Ops.

Network (batch 64, input 3x32x32): conv3x3 32 (pad 1) -> BN -> ReLU -> maxpool 2
-> conv3x3 64 (pad 1) -> BN -> ReLU -> maxpool 2 -> dense 10 -> softmax
cross-entropy, plain SGD.  Batch norm is written inline (batch statistics) so
that the timing isolates convolution and pooling.

Usage::

    .venv/bin/python scripts/bench_conv.py                 # default (Numba) and JAX modes
    .venv/bin/python scripts/bench_conv.py --modes NUMBA --pool views --steps 30

``--pool views`` forces the strided-views pooling graph instead of the
reshape form the layers pick for non-overlapping windows.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import pytensor
import pytensor.tensor as pt

from bntrain.nn import init
from bntrain.nn.layers import Conv2DLayer, DenseLayer, InputLayer, MaxPool2DLayer, get_output
from bntrain.nn.layers.pool import _pool_views

F32 = np.float32


def _batch_norm(x, gamma, beta):
    axes = (0, 2, 3)
    count = pt.cast(x.shape[0] * x.shape[2] * x.shape[3], "float32")
    mean = x.sum(axis=axes, keepdims=True, acc_dtype="float32") / count
    centered = x - mean
    var = pt.sqr(centered).sum(axis=axes, keepdims=True, acc_dtype="float32") / count
    scale = gamma.dimshuffle("x", 0, "x", "x") * pt.reciprocal(pt.sqrt(var + F32(1e-4)))
    return centered * scale + beta.dimshuffle("x", 0, "x", "x")


class _ViewsMaxPool(MaxPool2DLayer):
    """Max pooling forced onto the strided-views graph (for comparison)."""

    def get_output_for(self, input, **kwargs):
        out = self.output_shape[2:]
        hw = self.input_shape[2:]
        return _pool_views(input, self.pool_size, self.stride, self.pad, hw, out, True, "max")


def build(batch: int, pool: str, rng: np.random.Generator):
    """Return the inputs, the loss and the SGD updates of the benchmark network."""
    pool_layer = _ViewsMaxPool if pool == "views" else MaxPool2DLayer
    l_in = InputLayer((batch, 3, 32, 32))
    w_init = init.HeNormal(rng=rng)
    c1 = Conv2DLayer(l_in, 32, 3, pad=1, W=w_init, b=None, nonlinearity=None)
    c2 = Conv2DLayer(pool_layer(c1, 2), 64, 3, pad=1, W=w_init, b=None, nonlinearity=None)
    dense = DenseLayer(pool_layer(c2, 2), 10, W=w_init, nonlinearity=None)
    bn = [(pytensor.shared(np.ones(n, F32)), pytensor.shared(np.zeros(n, F32))) for n in (32, 64)]

    x = pt.tensor4("x")
    y = pt.ivector("y")
    # batch norm + ReLU after each convolution, before its pooling layer
    h = pt.maximum(_batch_norm(get_output(c1, x), *bn[0]), F32(0))
    h = pt.maximum(_batch_norm(get_output(c2, {c1: h}), *bn[1]), F32(0))
    logits = get_output(dense, {c2: h})
    picked = pt.special.log_softmax(logits, axis=1)[pt.arange(batch), y]
    loss = -picked.sum(acc_dtype="float32") / F32(batch)
    params = [c1.W, c2.W, dense.W, dense.b] + [p for gb in bn for p in gb]
    grads = pytensor.grad(loss, params)
    updates = [(p, p - F32(0.01) * g) for p, g in zip(params, grads, strict=True)]
    return x, y, loss, updates


def time_mode(mode: str, batch: int, steps: int, pool: str) -> tuple[float, float, float]:
    """Compile and time the step in ``mode``; return (compile s, median ms, min ms)."""
    rng = np.random.default_rng(0)
    x, y, loss, updates = build(batch, pool, rng)
    start = time.perf_counter()
    step = pytensor.function([x, y], loss, updates=updates, mode=mode)
    xb = rng.standard_normal((batch, 3, 32, 32)).astype(F32)
    yb = rng.integers(0, 10, batch).astype(np.int32)
    step(xb, yb)
    compile_s = time.perf_counter() - start
    for _ in range(3):
        step(xb, yb)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        np.asarray(jax.block_until_ready(step(xb, yb)))  # JAX dispatches asynchronously
        times.append((time.perf_counter() - t0) * 1e3)
    return compile_s, float(np.median(times)), float(np.min(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["NUMBA", "JAX"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pool", choices=["auto", "views"], default="auto")
    args = parser.parse_args()
    for mode in args.modes:
        compile_s, median, best = time_mode(mode, args.batch, args.steps, args.pool)
        print(
            f"{mode:>6} pool={args.pool}: {median:7.1f} ms/step median, {best:7.1f} min "
            f"(batch {args.batch}, first call incl. compile {compile_s:.1f} s)"
        )


if __name__ == "__main__":
    main()

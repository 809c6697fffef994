"""Time ``recompute-stats`` (batch mode) against a plain inference pass over the same data.

Usage::

    .venv/bin/python scripts/bench_recompute.py [--backend NUMBA|JAX] [--n-mlp 20000] [--n-cnn 4000]

For each network (an MLP-BN 784-512-512-512-10 and a small CNN-BN on 3x32x32)
it reports the time of :func:`bntrain.bnstats.compute_bn_stats` (compile
excluded, measured separately) and of a deterministic prediction pass with the
same batch size, and their ratio.  Data are random (seeded); every timing is the
best of ``--repeat`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

import numpy as np

import bntrain.nn as nn
from bntrain.bnstats import _compile_pass, compute_bn_stats
from bntrain.graphs import build_predict
from bntrain.model import Network
from bntrain.nn import layers as L

__all__ = ["main"]


class _ArrayDS:
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def read(self, sl):
        return self.x[sl], None


def _network(out) -> Network:
    layers = L.get_all_layers(out)
    return Network(input_layer=layers[0], output_layer=out, layers=layers, n_classes=10)


def mlp(rng) -> Network:
    net = L.InputLayer((None, 784), name="input")
    for i in range(3):
        net = L.batch_norm(L.DenseLayer(net, 512, W=nn.init.GlorotUniform(rng=rng), name=f"fc{i}"))
    return _network(L.DenseLayer(net, 10, nonlinearity=nn.nonlinearities.softmax, name="out"))


def cnn(rng) -> Network:
    net = L.InputLayer((None, 3, 32, 32), name="input")
    for i, filters in enumerate((32, 64)):
        conv = L.Conv2DLayer(
            net, filters, (3, 3), pad="same", W=nn.init.GlorotUniform(rng=rng), name=f"conv{i}"
        )
        net = L.MaxPool2DLayer(L.batch_norm(conv), (2, 2), name=f"pool{i}")
    net = L.batch_norm(L.DenseLayer(net, 128, W=nn.init.GlorotUniform(rng=rng), name="fc"))
    return _network(L.DenseLayer(net, 10, nonlinearity=nn.nonlinearities.softmax, name="out"))


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench(name, network, x, batch_size, mode_name, repeat) -> dict:
    ds = _ArrayDS(x)
    predict = build_predict(network, mode_name)

    def infer():
        for s in range(0, len(x), batch_size):
            np.asarray(predict(x[s : s + batch_size]))

    def recompute():
        compute_bn_stats(network, ds, None, batch_size, mode="batch", mode_name=mode_name)

    infer()
    recompute()  # warm-up: caches of the compiled graphs
    t_compile = _best(lambda: _compile_pass(network, network.bn_layers, [], mode_name), repeat)
    t_infer = _best(infer, repeat)
    t_total = _best(recompute, repeat)
    t_stats = t_total - t_compile
    return {
        "net": name,
        "examples": len(x),
        "batch": batch_size,
        "inference_s": t_infer,
        "recompute_s": t_stats,
        "compile_s": t_compile,
        "ratio": t_stats / t_infer,
    }


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main(argv=None) -> None:
    """Run the benchmark and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="NUMBA", help="PyTensor mode (NUMBA or JAX)")
    ap.add_argument("--n-mlp", type=int, default=20000)
    ap.add_argument("--n-cnn", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = [
        bench(
            "MLP-BN 784-512x3-10",
            mlp(rng),
            rng.normal(size=(args.n_mlp, 784)).astype(np.float32),
            args.batch_size,
            args.backend,
            args.repeat,
        ),
        bench(
            "CNN-BN 3x32x32",
            cnn(rng),
            rng.normal(size=(args.n_cnn, 3, 32, 32)).astype(np.float32),
            args.batch_size,
            args.backend,
            args.repeat,
        ),
    ]
    print(f"CPU: {_cpu_model()}; backend {args.backend}; best of {args.repeat}")
    print("| network | examples | batch | inference (s) | recompute (s) | ratio | compile (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['net']} | {r['examples']} | {r['batch']} | {r['inference_s']:.3f} | "
            f"{r['recompute_s']:.3f} | {r['ratio']:.2f}x | {r['compile_s']:.2f} |"
        )


if __name__ == "__main__":
    main()

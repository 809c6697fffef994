"""Time ``recompute-stats`` (batch mode) against a plain inference pass over the same data.

Usage::

    .venv/bin/python scripts/bench_recompute.py [--backend NUMBA|JAX] [--n-mlp 20000] [--n-cnn 4000]

For each network (an MLP-BN 784-512-512-512-10 and a small CNN-BN on 3x32x32)
it compares :func:`bntrain.bnstats.compute_bn_stats` with the inference pass
``bntrain eval`` makes (``build_predict`` + ``predict_dataset``, the last batch
padded where the backend compiles per batch shape), same data and batch size,
two ways that treat both sides alike:

``warm`` (compile excluded on both sides)
    Both functions are compiled and called once on every batch shape first;
    then the inference loop and :func:`bntrain.bnstats._run_pass` (the loop
    ``compute_bn_stats`` runs: reading, the calls, the float64 merges) are timed.
    This is the cost per example, what grows with the data.
``cold`` (compile included on both sides)
    A fresh ``build_predict`` + pass against a fresh ``compute_bn_stats``
    (graph building and compiling included).  Inference compiles one batch
    shape (it pads the last batch); with JAX ``compute_bn_stats`` compiles two
    when the data leave a short last batch (padding would change that batch's
    statistics), so the cold ratio falls towards the warm one as data grow.

The two sides alternate within each round; the figures are medians over
``--repeat`` rounds after a warm-up (the machine may be shared).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

import numpy as np

import bntrain.nn as nn
from bntrain.bnstats import _batches, _compile_pass, _run_pass, compute_bn_stats
from bntrain.graphs import build_predict
from bntrain.metrics import predict_dataset
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


class _Identity:
    def apply(self, x):
        return x


def bench(name, network, x, batch_size, mode_name, repeat) -> dict:
    """Median seconds of inference and recompute, compile excluded (warm) and included (cold)."""
    ds = _ArrayDS(x)
    pad_last = str(mode_name).upper() == "JAX"  # what ``bntrain eval`` does (static batch)
    bns = list(network.bn_layers)
    shapes = sorted({len(x[s : s + batch_size]) for s in range(0, len(x), batch_size)})

    def infer(predict):
        predict_dataset(predict, ds, _Identity(), batch_size, pad_last=pad_last)

    predict = build_predict(network, mode_name)
    stats_fn = _compile_pass(network, bns, [], mode_name)
    for m in shapes:  # compile every batch shape before the warm timings
        np.asarray(predict(x[:batch_size] if pad_last else x[:m]))
        [np.asarray(v) for v in stats_fn(x[:m])]

    def infer_warm():
        infer(predict)

    def recompute_warm():
        _run_pass(stats_fn, bns, _batches(ds, None, batch_size), "population")

    def infer_cold():
        infer(build_predict(network, mode_name))

    def recompute_cold():
        compute_bn_stats(network, ds, None, batch_size, mode="batch", mode_name=mode_name)

    infer_cold()
    recompute_cold()  # warm-up: imports, caches
    runs = {"infer_warm": [], "recompute_warm": [], "infer_cold": [], "recompute_cold": []}
    fns = {"infer_warm": infer_warm, "recompute_warm": recompute_warm}
    fns.update({"infer_cold": infer_cold, "recompute_cold": recompute_cold})
    for _ in range(repeat):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            runs[key].append(time.perf_counter() - t)
    med = {key: float(np.median(v)) for key, v in runs.items()}
    return {
        "net": name,
        "examples": len(x),
        "batch": batch_size,
        "inference_s": med["infer_warm"],
        "recompute_s": med["recompute_warm"],
        "ratio": med["recompute_warm"] / med["infer_warm"],
        "inference_cold_s": med["infer_cold"],
        "recompute_cold_s": med["recompute_cold"],
        "cold_ratio": med["recompute_cold"] / med["infer_cold"],
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
    ap.add_argument("--repeat", type=int, default=5)
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
    print(f"CPU: {_cpu_model()}; backend {args.backend}; median of {args.repeat} rounds")
    print(
        "| network | examples | batch | warm: inference (s) | recompute (s) | ratio "
        "| cold: inference (s) | recompute (s) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['net']} | {r['examples']} | {r['batch']} | {r['inference_s']:.3f} | "
            f"{r['recompute_s']:.3f} | {r['ratio']:.2f}x | {r['inference_cold_s']:.3f} | "
            f"{r['recompute_cold_s']:.3f} | {r['cold_ratio']:.2f}x |"
        )


if __name__ == "__main__":
    main()

"""The PyTorch side of ``scripts/bench.py``: time eager training of one benchmark model.

Run by ``scripts/bench.py`` under the interpreter given by ``--torch-python``
(by default ``.venv-torch/bin/python``, set up by ``scripts/bench_setup.sh``)::

    .venv-torch/bin/python scripts/bench_torch.py --spec '{"kind": "mlp", ...}' --steps 20

It does not import bntrain (PyTorch and the project may live in different
Pythons).  The model, the data (NumPy ``default_rng(seed)``), the optimizer
(SGD, Nesterov momentum 0.9) and the batch-norm settings (epsilon 1e-4,
moving-average factor 0.1) match ``bench.py``'s bntrain side.  The last line
of the output is one JSON object: samples/s, median step time, time from
process start to the end of the first step, and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

__all__ = ["build_model", "time_steps", "run_fit", "main"]

EPS = 1e-4  # bntrain's BatchNormLayer default
BN_MOMENTUM = 0.1  # bntrain's alpha


def build_model(spec: dict):
    """Return the ``torch.nn.Module`` for a benchmark ``spec`` (see ``bench.py``'s ``SPECS``)."""
    import torch.nn as tnn

    kind = spec["kind"]
    if kind == "mlp":
        layers, width = [], spec["inputs"]
        for units in spec["hidden"]:
            layers += [
                tnn.Linear(width, units, bias=False),
                tnn.BatchNorm1d(units, eps=EPS, momentum=BN_MOMENTUM),
                tnn.ReLU(),
            ]
            width = units
        layers.append(tnn.Linear(width, spec["classes"]))
        return tnn.Sequential(*layers)
    if kind == "cnn":
        layers, ch, hw = [], spec["channels"], spec["hw"]
        for filters in spec["filters"]:
            layers += [
                tnn.Conv2d(ch, filters, 3, padding=1, bias=False),
                tnn.BatchNorm2d(filters, eps=EPS, momentum=BN_MOMENTUM),
                tnn.ReLU(),
                tnn.MaxPool2d(2),
            ]
            ch, hw = filters, hw // 2
        layers += [tnn.Flatten(), tnn.Linear(ch * hw * hw, spec["classes"])]
        return tnn.Sequential(*layers)
    if kind == "resnet":
        return _resnet(spec)
    raise ValueError(f"unknown model kind {kind!r}")


def _resnet(spec: dict):
    import torch.nn as tnn

    def conv_bn(cin, cout, k, stride):
        return [
            tnn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            tnn.BatchNorm2d(cout, eps=EPS, momentum=BN_MOMENTUM),
        ]

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = tnn.Sequential(
                *conv_bn(cin, cout, 3, stride), tnn.ReLU(), *conv_bn(cout, cout, 3, 1)
            )
            self.short = (
                tnn.Sequential(*conv_bn(cin, cout, 1, stride))
                if stride != 1 or cin != cout
                else tnn.Identity()
            )

        def forward(self, x):
            return tnn.functional.relu(self.body(x) + self.short(x))

    ch = spec["stem"]
    layers = [*conv_bn(spec["channels"], ch, 3, 1), tnn.ReLU()]
    for i, width in enumerate(spec["stages"]):
        layers.append(Block(ch, width, 1 if i == 0 else 2))
        ch = width
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(ch, spec["classes"])]
    return tnn.Sequential(*layers)


def input_shape(spec: dict) -> tuple[int, ...]:
    """One example's shape."""
    if spec["kind"] == "mlp":
        return (spec["inputs"],)
    return (spec["channels"], spec["hw"], spec["hw"])


def make_batches(spec: dict, seed: int, count: int = 4):
    """``count`` random float32 batches and int labels, from ``np.random.default_rng(seed)``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (spec["batch"], *input_shape(spec))
    return [
        (
            rng.normal(size=shape).astype(np.float32),
            rng.integers(0, spec["classes"], size=spec["batch"]).astype(np.int32),
        )
        for _ in range(count)
    ]


def peak_mib() -> float:
    """This process's peak resident memory in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step, batch: int, steps: int, warmup: int, t0: float) -> dict:
    """Call ``step(i)`` once, ``warmup`` more times, then ``steps`` timed times; the figures.

    ``step`` must wait for its result (both sides read the loss back).  Returns
    ``batch``, ``samples_s`` (batch / median step: robust to a busy neighbour),
    ``mean_samples_s``, ``step_ms`` (median) and ``first_step_s`` (from ``t0``,
    the process start, to the end of the first step).
    """
    import numpy as np

    step(0)
    first_step_s = time.time() - t0
    for i in range(warmup):
        step(i + 1)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    median = float(np.median(times))
    return {
        "batch": batch,
        "samples_s": batch / median,
        "mean_samples_s": batch * steps / float(np.sum(times)),
        "step_ms": median * 1e3,
        "first_step_s": first_step_s,
    }


def run(
    spec: dict,
    steps: int,
    warmup: int,
    device: str,
    threads: int,
    seed: int,
    t0: float,
    gpu_precision: str = "tf32",
):
    """Train ``steps`` timed steps after the first and ``warmup`` more; return the result dict."""
    import torch

    if device == "gpu":  # the same arithmetic as the JAX side; the fastest cuDNN algorithms
        tf32 = gpu_precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    model = build_model(spec).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = [
        (torch.from_numpy(x).to(dev), torch.from_numpy(y).long().to(dev))
        for x, y in make_batches(spec, seed)
    ]

    def step(i):
        x, y = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()  # synchronises, as a training loop that logs the loss does

    return {
        "framework": "pytorch",
        "backend": f"eager-{'cuda' if device == 'gpu' else 'cpu'}",
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        **time_steps(step, spec["batch"], steps, warmup, t0),
        "peak_mib": peak_mib(),
        "device_peak_mib": (torch.cuda.max_memory_allocated() / 2**20 if device == "gpu" else None),
        "gpu_precision": gpu_precision if device == "gpu" else None,
    }


def run_fit(spec: dict, epochs: int, examples: int, threads: int, seed: int) -> dict:
    """A hand-written training loop over in-memory tensors, timed per epoch (``bench.py --fit``).

    What a PyTorch user writes: each epoch shuffles the examples
    (``torch.randperm``), trains on every full batch, adds ``loss.item()`` and the
    batch's correct count to running sums, and saves the ``state_dict``.  The
    examples per second cover epochs 2 to ``epochs`` (epoch 1 warms up).
    """
    import tempfile

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xs = torch.from_numpy(rng.normal(size=(examples, *input_shape(spec))).astype(np.float32))
    ys = torch.from_numpy(rng.integers(0, spec["classes"], size=examples)).long()
    model = build_model(spec).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (examples // spec["batch"]))
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    batch, n_batches = spec["batch"], examples // spec["batch"]
    ends = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(epochs):
            order = torch.randperm(examples, generator=gen)
            loss_sum = correct = 0.0
            for b in range(n_batches):
                idx = order[b * batch : (b + 1) * batch]
                x, y = xs[idx], ys[idx]
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.item()
                correct += (out.argmax(1) == y).sum().item()
            torch.save(model.state_dict(), f"{tmp}/last.pt")
            ends.append(time.perf_counter())
    timed = n_batches * batch * (epochs - 1)
    return {
        "framework": "pytorch",
        "backend": "eager-cpu",
        "version": torch.__version__,
        "samples_s": timed / (ends[-1] - ends[0]),
        "epoch_s": [b - a for a, b in zip(ends, ends[1:], strict=False)],
        "peak_mib": peak_mib(),
    }


def main(argv=None) -> None:
    """Parse the arguments, run, print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True, help="the model spec, as JSON")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--t0", type=float, default=None, help="process start (time.time())")
    ap.add_argument("--gpu-precision", choices=("tf32", "float32"), default="tf32")
    ap.add_argument("--fit", action="store_true", help="time the epoch loop (run_fit)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--examples", type=int, default=4096)
    args = ap.parse_args(argv)
    if args.fit:
        result = run_fit(json.loads(args.spec), args.epochs, args.examples, args.threads, args.seed)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    t0 = args.t0 if args.t0 is not None else time.time()
    result = run(
        json.loads(args.spec),
        args.steps,
        args.warmup,
        args.device,
        args.threads,
        args.seed,
        t0,
        args.gpu_precision,
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

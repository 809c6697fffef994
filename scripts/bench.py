"""Training throughput of bntrain against PyTorch eager, side by side on one machine.

Usage::

    .venv/bin/python scripts/bench.py                    # full run on the CPU (a few minutes)
    .venv/bin/python scripts/bench.py --smoke            # tiny sizes, seconds: checks every column
    .venv/bin/python scripts/bench.py --device gpu       # bntrain on JAX/CUDA, PyTorch on CUDA
    .venv/bin/python scripts/bench.py --traffic          # JAX mode: host<->device bytes per step,
                                                         # and bytes all-reduced over the devices
    .venv/bin/python scripts/bench.py --fit              # bntrain fit end to end vs a PyTorch loop

Models (batch-normalized, float32, SGD with Nesterov momentum 0.9, random data
from ``np.random.default_rng(seed)`` generated in each process):

* ``mlp``: MLP-BN 784-512-512-512-10, batch 128;
* ``cnn``: CNN-BN, batch 64, 3x32x32: conv3x3 32 -> BN -> ReLU -> maxpool 2 -> conv3x3 64 ->
  BN -> ReLU -> maxpool 2 -> dense 10;
* ``resnet``: conv3x3 16 -> BN -> ReLU, three stages of one basic residual block (16, 32, 64
  channels, stride 2 between stages, 1x1 conv + BN shortcut where the shape changes), global
  average pool, dense 10; batch 64, 3x32x32.

Every measurement runs in a fresh subprocess: the bntrain side under this
Python, the PyTorch side (``scripts/bench_torch.py``) under ``--torch-python``;
they alternate for ``--rounds`` rounds and the table shows medians.  Both use
``os.cpu_count()`` threads (``torch.set_num_threads``; OMP/MKL/OpenBLAS/Numba
threads through the environment).  Columns: samples/s, ratio (bntrain /
PyTorch), MFU (analytic model FLOPs per step, training = 3x forward with a
forward FLOP = 2 MACs, divided by the measured float32 sgemm peak of NumPy),
peak resident memory of the subprocess, and the time from process start to
the end of the first training step (imports and compilation included).  A
second table gives recompute-stats time against an inference pass (from
``scripts/bench_recompute.py``) and the quick start's time to first step.
``--json PATH`` writes everything as JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["SPECS", "SMOKE_SPECS", "model_macs", "sgemm_peak", "main"]

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"

SPECS = {
    "mlp": {"kind": "mlp", "inputs": 784, "hidden": [512, 512, 512], "classes": 10, "batch": 128},
    "cnn": {
        "kind": "cnn",
        "channels": 3,
        "hw": 32,
        "filters": [32, 64],
        "classes": 10,
        "batch": 64,
    },
    "resnet": {
        "kind": "resnet",
        "channels": 3,
        "hw": 32,
        "stem": 16,
        "stages": [16, 32, 64],
        "classes": 10,
        "batch": 64,
    },
}
SMOKE_SPECS = {
    "mlp": {"kind": "mlp", "inputs": 20, "hidden": [16, 16, 16], "classes": 10, "batch": 8},
    "cnn": {"kind": "cnn", "channels": 3, "hw": 8, "filters": [4, 4], "classes": 10, "batch": 4},
    "resnet": {
        "kind": "resnet",
        "channels": 3,
        "hw": 8,
        "stem": 4,
        "stages": [4, 4, 4],
        "classes": 10,
        "batch": 4,
    },
}
LABELS = {"mlp": "MLP-BN", "cnn": "CNN-BN", "resnet": "ResNet-BN"}
COLUMNS = [
    "model",
    "framework",
    "backend",
    "samples/s",
    "ratio",
    "MFU",
    "peak MiB",
    "first step s",
]
GPU_PRECISION = {"tf32": "tensorfloat32", "float32": "highest"}  # JAX_DEFAULT_MATMUL_PRECISION
RECOMPUTE_COLUMNS = ["measure", "backend", "examples", "bntrain s", "reference s", "ratio"]


# --------------------------------------------------------------------------------------------
# analytic FLOPs


def model_macs(spec: dict) -> int:
    """Multiply-accumulates of one example's forward pass (convolutions and dense layers)."""
    kind = spec["kind"]
    if kind == "mlp":
        widths = [spec["inputs"], *spec["hidden"], spec["classes"]]
        return sum(a * b for a, b in zip(widths, widths[1:], strict=False))
    if kind == "cnn":
        macs, ch, hw = 0, spec["channels"], spec["hw"]
        for f in spec["filters"]:
            macs += hw * hw * f * ch * 9
            ch, hw = f, hw // 2
        return macs + ch * hw * hw * spec["classes"]
    if kind == "resnet":
        hw, ch = spec["hw"], spec["stem"]
        macs = hw * hw * ch * spec["channels"] * 9
        for i, width in enumerate(spec["stages"]):
            stride = 1 if i == 0 else 2
            out = (hw - 1) // stride + 1
            macs += out * out * width * ch * 9 + out * out * width * width * 9
            if stride != 1 or ch != width:
                macs += out * out * width * ch  # 1x1 shortcut
            ch, hw = width, out
        return macs + ch * spec["classes"]
    raise ValueError(f"unknown model kind {kind!r}")


def train_flops_per_example(spec: dict) -> float:
    """Training FLOPs per example: forward 2 FLOPs per MAC, backward twice the forward."""
    return 3.0 * 2.0 * model_macs(spec)


def sgemm_peak(n: int = 2048, repeat: int = 5) -> float:
    """Best float32 matrix-product rate of NumPy here, in FLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def worker_gpu_peak(n: int = 8192, repeat: int = 10) -> dict:
    """Best float32 matrix-product rate of JAX on the GPU (at the precision the env asks for)."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    dev = jax.devices()[0]
    return {
        "flops": 2.0 * n**3 / best,
        "device": dev.device_kind,
        "precision": str(jax.config.jax_default_matmul_precision),
    }


def _device_peak_mib() -> float | None:
    """Peak device memory JAX's allocator has held (GPU only), in MiB."""
    import jax

    dev = jax.devices()[0]
    if dev.platform != "gpu":
        return None
    stats = dev.memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


# --------------------------------------------------------------------------------------------
# bntrain side (runs in a subprocess: ``bench.py --worker ...``)


def _training_config(lr: float = 0.01):
    from bntrain.config import parse_config

    text = (
        "data: {train: {builtin: digits, split: train}}\n"
        "model: {layers: [{type: dense, units: 10, nonlinearity: softmax}]}\n"
        "training: {epochs: 1, batch_size: 8, "
        f"optimizer: {{name: nesterov, lr: {lr}, momentum: 0.9}}}}\n"
        "output: {dir: run}\n"
    )
    return parse_config(text, source="bench.yaml").training


def build_bntrain_network(spec: dict, seed: int = 0):
    """Build the benchmark model with ``bntrain.nn`` (BN after every conv/dense but the last)."""
    import bntrain.nn as nn
    from bntrain.model import Network
    from bntrain.nn import layers as L

    rng = np.random.default_rng(seed)
    relu = nn.nonlinearities.rectify
    count = [0]

    def w():
        return nn.init.GlorotUniform(rng=rng)

    def name(prefix):  # unique layer names: optimizer state is stored by parameter name
        count[0] += 1
        return f"{prefix}{count[0]}"

    def conv_bn(net, filters, size, stride, nonlinearity):
        conv = L.Conv2DLayer(
            net,
            filters,
            size,
            stride=stride,
            pad=size // 2,
            W=w(),
            nonlinearity=nonlinearity,
            name=name("conv"),
        )
        return L.batch_norm(conv, epsilon=1e-4, alpha=0.1)

    kind = spec["kind"]
    if kind == "mlp":
        net = L.InputLayer((None, spec["inputs"]), name="input")
        for units in spec["hidden"]:
            dense = L.DenseLayer(net, units, W=w(), nonlinearity=relu, name=name("fc"))
            net = L.batch_norm(dense, epsilon=1e-4, alpha=0.1)
    elif kind == "cnn":
        net = L.InputLayer((None, spec["channels"], spec["hw"], spec["hw"]), name="input")
        for filters in spec["filters"]:
            net = L.MaxPool2DLayer(conv_bn(net, filters, 3, 1, relu), 2)
    elif kind == "resnet":
        net = L.InputLayer((None, spec["channels"], spec["hw"], spec["hw"]), name="input")
        net = conv_bn(net, spec["stem"], 3, 1, relu)
        ch = spec["stem"]
        for i, width in enumerate(spec["stages"]):
            stride = 1 if i == 0 else 2
            body = conv_bn(conv_bn(net, width, 3, stride, relu), width, 3, 1, None)
            short = net if stride == 1 and ch == width else conv_bn(net, width, 1, stride, None)
            net = L.NonlinearityLayer(L.ElemwiseSumLayer([body, short]), relu)
            ch = width
        net = L.GlobalPoolLayer(net)
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    out = L.DenseLayer(
        net, spec["classes"], W=w(), nonlinearity=nn.nonlinearities.softmax, name="out"
    )
    layers = L.get_all_layers(out)
    return Network(input_layer=layers[0], output_layer=out, layers=layers, n_classes=10)


def _import_torch_side():
    sys.path.insert(0, str(SCRIPTS))
    import bench_torch

    return bench_torch


def worker_train(spec: dict, steps: int, warmup: int, mode: str, seed: int, t0: float) -> dict:
    """Compile and time the bntrain training step for ``spec`` (in this process)."""
    import pytensor

    from bntrain.graphs import build_train_step

    torch_side = _import_torch_side()  # the data and the timing loop both sides share
    batches = torch_side.make_batches(spec, seed)
    network = build_bntrain_network(spec, seed)
    static = spec["batch"] if mode == "JAX" else None  # JAX compiles for one batch shape
    step_fn = build_train_step(network, _training_config(), mode, batch_size=static)

    def step(i):
        x, y = batches[i % len(batches)]
        loss, acc = step_fn.fn(x, y)
        return float(loss), float(acc)  # what fit does with the outputs

    return {
        "framework": "bntrain",
        "backend": mode.lower(),
        "version": f"pytensor {pytensor.__version__}",
        **torch_side.time_steps(step, spec["batch"], steps, warmup, t0),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device_peak_mib": _device_peak_mib() if mode == "JAX" else None,
    }


def worker_recompute(smoke: bool, mode: str) -> dict:
    """recompute-stats time / inference time on the MLP-BN (``scripts/bench_recompute.py``)."""
    sys.path.insert(0, str(SCRIPTS))
    import bench_recompute

    rng = np.random.default_rng(0)
    n, batch, repeat = (64, 16, 1) if smoke else (20000, 256, 3)
    x = rng.normal(size=(n, 784)).astype(np.float32)
    row = bench_recompute.bench("MLP-BN", bench_recompute.mlp(rng), x, batch, mode, repeat)
    return {
        "examples": n,
        "recompute_s": row["recompute_s"],
        "inference_s": row["inference_s"],
        "ratio": row["ratio"],
    }


def worker_quickstart(config_path: str, mode_backend: str, device: str, t0: float) -> dict:
    """Follow ``bntrain fit``'s path on a config up to the end of its first training step."""
    import bntrain.cli  # noqa: F401  (the command imports it too)
    from bntrain.backend import resolve_runtime
    from bntrain.config import load_config
    from bntrain.data import BatchIterator, Preprocessor
    from bntrain.graphs import build_predict, build_train_step
    from bntrain.inputs import open_config_data
    from bntrain.model import build_network

    config = load_config(config_path)
    runtime = resolve_runtime(mode_backend or config.backend, device or config.device)
    tr = config.training
    data = open_config_data(config)
    try:
        network = build_network(config.model, data.input_shape, seed=tr.seed)
        pre = config.data.preprocess
        preprocess = Preprocessor(scale=pre.scale, standardize=pre.standardize)
        if pre.standardize:
            preprocess.fit(data.train, tr.batch_size)
        t_compile = time.perf_counter()
        static = tr.batch_size if runtime.static_batch else None
        step_fn = build_train_step(network, tr, runtime.mode, batch_size=static)
        build_predict(network, runtime.mode)
        compile_s = time.perf_counter() - t_compile
        batches = BatchIterator(
            data.train,
            tr.batch_size,
            shuffle=tr.shuffle,
            seed=tr.seed,
            epoch=0,
            preprocess=preprocess,
        )
        x, y = next(iter(batches))
        float(step_fn.fn(x, y)[0])
        first = time.time() - t0
        batches.close()
    finally:
        data.close()
    return {"backend": runtime.backend, "first_step_s": first, "compile_s": compile_s}


def worker_traffic(smoke: bool) -> dict:
    """JAX mode: where parameters and optimizer state live between steps, and recompiles."""
    import jax
    import pytensor

    from bntrain.graphs import build_train_step
    from bntrain.nn import layers as L

    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: (
            compiles.append(secs) if name == "/jax/core/compile/backend_compile_duration" else None
        )
    )
    spec = dict((SMOKE_SPECS if smoke else SPECS)["mlp"])
    batch = spec["batch"]
    rng = np.random.default_rng(0)
    network = build_bntrain_network(spec, 0)
    step_fn = build_train_step(
        network, _training_config(), "JAX"
    )  # dynamic: an MLP traces per shape
    params = L.get_all_params(network.output_layer)
    state = list(step_fn.optimizer_state.values())
    bn_avgs = [p for p in params if p not in L.get_all_params(network.output_layer, trainable=True)]
    trainable = L.get_all_params(network.output_layer, trainable=True)
    kept = trainable + state + bn_avgs
    x = rng.normal(size=(batch, spec["inputs"])).astype(np.float32)
    y = rng.integers(0, 10, size=batch).astype(np.int32)
    partial = batch - 3 if batch > 4 else batch - 1
    xp, yp = x[:partial].copy(), y[:partial].copy()

    def on_host(var) -> bool:
        return not isinstance(var.get_value(borrow=True), jax.Array)

    before = [on_host(v) for v in kept]
    step_fn.fn(x, y)
    n_first = len(compiles)
    host_bytes = []
    full_ms, part_ms = [], []
    for _ in range(6):
        for xs, ys, times in ((x, y, full_ms), (xp, yp, part_ms)):
            t = time.perf_counter()
            float(step_fn.fn(xs, ys)[0])
            times.append((time.perf_counter() - t) * 1e3)
        host_bytes.append(sum(v.get_value(borrow=True).nbytes for v in kept if on_host(v)))
    constant_shared = [
        v
        for v in step_fn.fn.maker.fgraph.inputs
        if isinstance(v, pytensor.compile.SharedVariable) and v not in kept
    ]
    return {
        "device": str(jax.devices()[0]),
        "model": LABELS["mlp"],
        "batch": batch,
        "partial_batch": partial,
        "param_vars": len(trainable),
        "param_bytes": int(sum(v.get_value(borrow=True).nbytes for v in trainable)),
        "state_vars": len(state) + len(bn_avgs),
        "state_bytes": int(sum(v.get_value(borrow=True).nbytes for v in state + bn_avgs)),
        "on_host_before_first_call": int(sum(before)),
        "param_state_bytes_copied_per_step": int(max(host_bytes)),
        "param_state_vars_held_as_jax_arrays": int(sum(not on_host(v) for v in kept)),
        "other_shared_bytes_per_step": int(
            sum(np.asarray(v.get_value(borrow=True)).nbytes for v in constant_shared)
        ),
        "other_shared": [v.name for v in constant_shared],
        "input_bytes_per_step": int(x.nbytes + y.nbytes),
        "output_bytes_per_step": 8,
        "compiles_first_call": n_first,
        "compiles_in_12_steps_alternating_full_partial": len(compiles) - n_first,
        "full_step_ms_median": statistics.median(full_ms),
        "partial_step_ms_median_after_first": statistics.median(part_ms[1:]),
        "partial_step_ms_first": part_ms[0],
        **_allreduce_traffic(spec, x, y),
    }


def _allreduce_traffic(spec: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """Bytes all-reduced (and gathered) per data-parallel step over every local device.

    Read from the HLO text of the program XLA compiled for the sharded step; one
    device has no collectives (simulate several on the CPU with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``).
    """
    import jax

    from bntrain.graphs import build_train_step
    from bntrain.parallel import DataParallel, traffic_bytes

    platform = jax.devices()[0].platform
    n = len([d for d in jax.local_devices() if d.platform == platform])
    if n < 2 or len(x) % n:
        return {"data_parallel_devices": n, "all_reduce_bytes_per_step": None}
    network = build_bntrain_network(spec, 0)
    step = build_train_step(network, _training_config(), "JAX", batch_size=len(x))
    traffic = traffic_bytes(DataParallel(n, platform).wrap(step.fn).compiled_text(x, y))
    return {
        "data_parallel_devices": n,
        "all_reduce_bytes_per_step": traffic.get("all-reduce", 0),
        "all_gather_bytes_per_step": traffic.get("all-gather", 0),
    }


def worker_profile(spec: dict, mode: str, steps: int) -> dict:
    """Where a training step's time goes: each layer type's forward+backward compiled alone.

    PyTensor's Numba linker compiles the whole graph into one function, so
    ``profile=True`` cannot split it by Op; instead every group of layers of one
    type (with the batch's real shapes) is compiled on its own, with the cost
    ``sum(out * r)`` (fixed random ``r``) and the gradients a training step needs.
    """
    from collections import OrderedDict

    import pytensor
    import pytensor.tensor as pt

    from bntrain.graphs import build_train_step
    from bntrain.nn import layers as L
    from bntrain.nn import objectives

    rng = np.random.default_rng(1)
    x_val, y_val = _import_torch_side().make_batches(spec, 0, 1)[0]
    net = build_bntrain_network(spec)
    x, y = net.input_layer.input_var, pt.ivector("y")

    def median_ms(fn, *inputs):
        for _ in range(2):
            fn(*inputs)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            out = fn(*inputs)  # JAX returns before it has computed: wait for every output
            [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
            times.append(time.perf_counter() - t)
        return float(np.min(times)) * 1e3  # best of: the machine may be shared

    result = OrderedDict()
    step = build_train_step(
        net, _training_config(), mode, batch_size=spec["batch"] if mode == "JAX" else None
    )
    result["full training step"] = median_ms(step.fn, x_val, y_val)
    out = L.get_output(net.output_layer)
    loss = objectives.categorical_crossentropy(out, y).mean()
    result["forward + loss only"] = median_ms(
        pytensor.function([x, y], loss, mode=mode), x_val, y_val
    )
    # real activations to feed each layer
    layers = L.get_all_layers(net.output_layer)[1:]
    acts = L.get_output(layers, deterministic=False)
    values = pytensor.function([x], acts, mode=mode)(x_val)
    act_of = {layer: np.asarray(v) for layer, v in zip(layers, values, strict=True)}
    act_of[net.input_layer] = x_val
    groups: dict[str, list] = OrderedDict()
    for layer in layers:
        groups.setdefault(type(layer).__name__, []).append(layer)
    for kind, members in groups.items():
        inputs, feeds, cost, wrt = [], [], 0, []
        for layer in members:
            if isinstance(layer, L.MergeLayer):
                srcs = [act_of[i] for i in layer.input_layers]
                vars_ = [pt.tensor(dtype="float32", shape=v.shape) for v in srcs]
                outv = L.get_output(layer, dict(zip(layer.input_layers, vars_, strict=True)))
                feeds += srcs
            else:
                src = act_of[layer.input_layer]
                vars_ = [pt.tensor(dtype="float32", shape=src.shape)]
                outv = L.get_output(layer, {layer.input_layer: vars_[0]})
                feeds.append(src)
            inputs += vars_
            r = rng.normal(size=act_of[layer].shape).astype(np.float32)
            cost = cost + (outv * r).sum()
            wrt += vars_ + layer.get_params(trainable=True)
        grads = pytensor.grad(cost, wrt)
        fn = pytensor.function(inputs, grads, mode=mode)
        result[f"{kind} x{len(members)} (fwd+bwd)"] = median_ms(fn, *feeds)
    return result


def _worker_main(args) -> None:
    spec = json.loads(args.spec) if args.spec else None
    if args.worker == "train":
        out = worker_train(spec, args.steps, args.warmup, args.mode, args.seed, args.t0)
    elif args.worker == "recompute":
        out = worker_recompute(args.smoke, args.mode)
    elif args.worker == "profile":
        out = worker_profile(spec, args.mode, args.steps)
    elif args.worker == "quickstart":
        out = worker_quickstart(args.config, args.backend_name, args.device_name, args.t0)
    elif args.worker == "fit":
        from bench_fit import worker_fit

        out = worker_fit(spec, args.epochs, args.examples, args.augment, args.seed)
    elif args.worker == "gpu-peak":
        out = worker_gpu_peak()
    else:
        out = worker_traffic(args.smoke)
    sys.stdout.write(json.dumps(out) + "\n")


# --------------------------------------------------------------------------------------------
# driver


def _thread_env(threads: int, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    for key in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    ):
        env[key] = str(threads)
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.update(extra or {})
    return env


def _run_json(cmd: list[str], env: dict, timeout: float) -> dict | None:
    """Run a worker; return its last stdout line as JSON, or None (with stderr shown) on failure."""
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        print(f"bench: timed out after {timeout:.0f} s: {' '.join(cmd[:4])} ...", file=sys.stderr)
        return None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        print(
            f"bench: worker failed ({proc.returncode}): {' '.join(cmd[:6])}\n{tail}",
            file=sys.stderr,
        )
        return None
    return json.loads(lines[-1])


def find_torch_python(requested: str | None) -> str | None:
    """The interpreter for the PyTorch side, or None when no PyTorch is available."""
    if requested:
        return requested if shutil.which(requested) or Path(requested).exists() else None
    candidate = ROOT / ".venv-torch" / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


def _fmt(value, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def _median(results: list[dict], key: str):
    values = [r[key] for r in results if r is not None and r.get(key) is not None]
    return statistics.median(values) if values else None


def machine_description(torch_python: str | None, peak: float, threads: int) -> str:
    """One paragraph: CPU, cores, versions."""
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    probe = (
        "import pytensor, jax, numba, numpy; "
        "print(f'pytensor {pytensor.__version__}, jax {jax.__version__}, "
        "numba {numba.__version__}, numpy {numpy.__version__}')"
    )
    ours = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True
    ).stdout.strip()
    torch_v = "n/a"
    if torch_python:
        torch_v = subprocess.run(
            [
                torch_python,
                "-c",
                "import torch, sys; print(torch.__version__, sys.version.split()[0])",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
    return (
        f"CPU: {model}, {os.cpu_count()} cores, {threads} threads; "
        f"load average {os.getloadavg()[0]:.2f}; float32 sgemm peak (numpy) "
        f"{peak / 1e9:.1f} GFLOP/s; Python {platform.python_version()}: {ours}; "
        f"PyTorch: {torch_v}"
    )


def run_benchmark(args) -> dict:
    """Run every measurement; return the rows and the machine description."""
    threads = args.threads or os.cpu_count() or 1
    env = _thread_env(
        threads,
        {"JAX_PLATFORMS": "cpu"}
        if args.device == "cpu"
        else {"JAX_DEFAULT_MATMUL_PRECISION": GPU_PRECISION[args.gpu_precision]},
    )
    specs = SMOKE_SPECS if args.smoke else SPECS
    if args.batch:
        specs = {name: dict(spec, batch=args.batch) for name, spec in specs.items()}
    steps = args.steps or (3 if args.smoke else 30)
    warmup = 1 if args.smoke else 5
    mode = "JAX" if args.device == "gpu" else args.backend.upper()
    torch_python = find_torch_python(args.torch_python)
    if args.device == "gpu":  # the GPU's own float32 matrix rate, measured by JAX
        gpu = _run_json([sys.executable, __file__, "--worker", "gpu-peak"], env, args.timeout)
        peak = gpu["flops"] if gpu else float("nan")
    else:
        peak = sgemm_peak(512 if args.smoke else 2048, 3 if args.smoke else 5)
    results: dict[tuple[str, str], list] = {}
    for _ in range(args.rounds):
        for name in args.models:
            spec = json.dumps(specs[name])
            t0 = time.time()
            results.setdefault((name, "bntrain"), []).append(
                _run_json(
                    [sys.executable, __file__, "--worker", "train", "--spec", spec,
                     "--steps", str(steps), "--warmup", str(warmup), "--mode", mode,
                     "--t0", repr(t0)],
                    env,
                    args.timeout,
                )
            )  # fmt: skip
            if torch_python:
                t0 = time.time()
                results.setdefault((name, "pytorch"), []).append(
                    _run_json(
                        [torch_python, str(SCRIPTS / "bench_torch.py"), "--spec", spec,
                         "--steps", str(steps), "--warmup", str(warmup), "--device", args.device,
                         "--threads", str(threads), "--t0", repr(t0),
                         "--gpu-precision", args.gpu_precision],
                        env,
                        args.timeout,
                    )
                )  # fmt: skip
    rows = []
    for name in args.models:
        flops = train_flops_per_example(specs[name])
        ours = results[(name, "bntrain")]
        theirs = results.get((name, "pytorch"), [])
        ours_rate, theirs_rate = _median(ours, "samples_s"), _median(theirs, "samples_s")
        for framework, res in (("bntrain", ours), ("pytorch", theirs)):
            rate = _median(res, "samples_s")
            ok = [r for r in res if r]
            backend = (
                ok[0]["backend"] if ok else (mode.lower() if framework == "bntrain" else "n/a")
            )
            ratio = ours_rate / theirs_rate if ours_rate and theirs_rate else None
            rows.append(
                {
                    "model": LABELS[name],
                    "framework": framework,
                    "backend": backend,
                    "samples/s": _fmt(rate, ".0f"),
                    "ratio": _fmt(ratio, ".2f") if framework == "bntrain" else "",
                    "MFU": _fmt(None if rate is None else 100 * rate * flops / peak, ".1f")
                    + ("%" if rate is not None else ""),
                    "peak MiB": _fmt(
                        _median(res, "device_peak_mib" if args.device == "gpu" else "peak_mib"),
                        ".0f",
                    ),
                    "first step s": _fmt(_median(res, "first_step_s"), ".1f"),
                    "step ms": _fmt(_median(res, "step_ms"), ".2f"),
                    "runs": len(ok),
                }
            )
    extra = []
    if not args.no_recompute:
        rec = _run_json(
            [sys.executable, __file__, "--worker", "recompute", "--mode", mode]
            + (["--smoke"] if args.smoke else []),
            env,
            args.timeout,
        )
        extra.append(
            {
                "measure": "recompute-stats / inference pass (MLP-BN)",
                "backend": mode.lower(),
                "examples": str(rec["examples"]) if rec else "n/a",
                "bntrain s": _fmt(rec and rec["recompute_s"], ".3f"),
                "reference s": _fmt(rec and rec["inference_s"], ".3f"),
                "ratio": _fmt(rec and rec["ratio"], ".2f"),
                "raw": rec,
            }
        )
    if not args.no_quickstart:
        qs = {}
        qs_cmd = [sys.executable, __file__, "--worker", "quickstart", "--config",
                  str(args.quickstart_config), "--mode", mode]  # fmt: skip
        if args.device == "gpu":
            qs_cmd += ["--device-name", "gpu"]
        if args.smoke:  # one run with the usual compile cache
            qs["default cache"] = _run_json(qs_cmd + ["--t0", repr(time.time())], env, args.timeout)
        else:  # an empty compile cache, then the same cache again
            with tempfile.TemporaryDirectory() as cold:
                cold_env = dict(env, PYTENSOR_FLAGS=f"base_compiledir={cold}", NUMBA_CACHE_DIR=cold)
                for label in ("cold cache", "warm cache"):
                    qs[label] = _run_json(
                        qs_cmd + ["--t0", repr(time.time())], cold_env, args.timeout
                    )
        for label, r in qs.items():
            extra.append(
                {
                    "measure": f"quick start: time to first step ({label})",
                    "backend": r["backend"] if r else "n/a",
                    "examples": "",
                    "bntrain s": _fmt(r and r["first_step_s"], ".1f"),
                    "reference s": "10 (target)",
                    "ratio": _fmt(r and r["first_step_s"] / 10.0, ".2f"),
                }
            )
    machine = machine_description(torch_python, peak, threads)
    if args.device == "gpu":
        machine += (
            f"; GPU: {gpu['device'] if gpu else 'n/a'}, float32 matrix peak (JAX, "
            f"{args.gpu_precision}) {peak / 1e12:.1f} TFLOP/s; 'peak MiB' is GPU memory "
            "(allocator peak); PyTorch with cudnn.benchmark"
        )
    return {
        "machine": machine,
        "sgemm_gflops": peak / 1e9,
        "rounds": args.rounds,
        "steps": steps,
        "rows": rows,
        "extra": extra,
        "raw": {f"{k[0]}/{k[1]}": v for k, v in results.items()},
    }


def run_fit_benchmark(args) -> dict:
    """``--fit``: alternate the step, fit, fit + augment and PyTorch loop runs; medians as rows."""
    from bench_fit import FIT_SIZES, SMOKE_FIT_SIZES

    threads = args.threads or os.cpu_count() or 1
    env = _thread_env(threads, {"JAX_PLATFORMS": "cpu"})
    specs = SMOKE_SPECS if args.smoke else SPECS
    sizes = SMOKE_FIT_SIZES if args.smoke else FIT_SIZES
    torch_python = find_torch_python(args.torch_python)
    models = [m for m in args.models if m != "resnet"]  # the ResNet has no YAML twin here
    keys = ("step", "fit", "augment", "torch")
    res: dict[tuple[str, str], list] = {}
    for _ in range(args.rounds):
        for name in models:
            spec = json.dumps(specs[name])
            examples, epochs = sizes[name]
            sized = ["--epochs", str(epochs), "--examples", str(examples)]
            runs = {
                "step": [sys.executable, __file__, "--worker", "train", "--spec", spec, "--steps",
                         str(3 if args.smoke else 30), "--warmup", "5", "--mode", "JAX"],
                "fit": [sys.executable, __file__, "--worker", "fit", "--spec", spec, *sized],
            }  # fmt: skip
            if specs[name]["kind"] != "mlp":
                runs["augment"] = runs["fit"] + ["--augment"]
            if torch_python:
                runs["torch"] = [torch_python, str(SCRIPTS / "bench_torch.py"), "--fit",
                                 "--spec", spec, "--threads", str(threads), *sized]  # fmt: skip
            for key, cmd in runs.items():
                res.setdefault((name, key), []).append(_run_json(cmd, env, args.timeout))
    rows = []
    for name in models:
        rate = {key: _median(res.get((name, key), []), "samples_s") for key in keys}

        def ratio(a, b, rate=rate):
            return _fmt(rate[a] / rate[b], ".2f") if rate[a] and rate[b] else "n/a"

        rows.append(
            {
                "model": LABELS[name],
                "step only": _fmt(rate["step"], ".0f"),
                "fit": _fmt(rate["fit"], ".0f"),
                "fit / step": ratio("fit", "step"),
                "PyTorch loop": _fmt(rate["torch"], ".0f"),
                "fit / PyTorch": ratio("fit", "torch"),
                "fit + augment": _fmt(rate["augment"], ".0f"),
                "augment / plain": ratio("augment", "fit"),
                "peak MiB fit": _fmt(_median(res[(name, "fit")], "peak_mib"), ".0f"),
                "peak MiB PyTorch": _fmt(_median(res.get((name, "torch"), []), "peak_mib"), ".0f"),
            }
        )
    return {
        "machine": machine_description(torch_python, sgemm_peak(512, 3), threads),
        "rounds": args.rounds,
        "rows": rows,
        "raw": {f"{k[0]}/{k[1]}": v for k, v in res.items()},
    }


def _table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps (seconds)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument(
        "--backend",
        choices=("numba", "jax"),
        default="jax",
        help="on the CPU (default: jax, what backend: auto picks)",
    )
    ap.add_argument("--models", nargs="+", choices=list(SPECS), default=list(SPECS))
    ap.add_argument("--batch", type=int, default=None, help="override every model's batch size")
    ap.add_argument(
        "--gpu-precision",
        choices=sorted(GPU_PRECISION),
        default="tf32",
        help="float32 matrix products and convolutions on the GPU, both frameworks: TF32 "
        "(JAX's default; PyTorch's for convolutions) or full float32",
    )
    ap.add_argument("--rounds", type=int, default=None, help="default 3 (1 with --smoke)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per run")
    ap.add_argument("--threads", type=int, default=None, help="default os.cpu_count()")
    ap.add_argument("--torch-python", default=None, help="interpreter with PyTorch")
    ap.add_argument("--timeout", type=float, default=600.0, help="per subprocess, seconds")
    ap.add_argument(
        "--traffic", action="store_true", help="JAX host<->device and all-reduce traffic report"
    )
    ap.add_argument(
        "--fit",
        action="store_true",
        help="bntrain fit end to end vs a hand-written PyTorch loop (and with augmentation)",
    )
    ap.add_argument(
        "--profile",
        choices=list(SPECS),
        default=None,
        help="time each layer type's forward+backward alone (what dominates a step)",
    )
    ap.add_argument("--no-recompute", action="store_true")
    ap.add_argument("--no-quickstart", action="store_true")
    ap.add_argument(
        "--quickstart-config", default=str(ROOT / "configs" / "digits_mlp.yaml"), type=Path
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    # worker-only arguments
    ap.add_argument(
        "--worker",
        choices=("train", "recompute", "quickstart", "traffic", "profile", "gpu-peak", "fit"),
    )
    ap.add_argument("--epochs", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--examples", type=int, default=4096, help=argparse.SUPPRESS)
    ap.add_argument("--augment", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="NUMBA", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--backend-name", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device-name", default=None, help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.worker:
        if args.t0 is None:
            args.t0 = time.time()
        if args.worker == "quickstart":
            args.backend_name = {"NUMBA": "numba", "JAX": "jax"}.get(args.mode.upper())
        _worker_main(args)
        return 0
    if args.rounds is None:
        args.rounds = 1 if args.smoke else 3
    if args.traffic:
        threads = args.threads or os.cpu_count() or 1
        env = _thread_env(threads, {"JAX_PLATFORMS": ""} if args.device == "gpu" else None)
        cmd = [sys.executable, __file__, "--worker", "traffic"] + (
            ["--smoke"] if args.smoke else []
        )
        report = _run_json(cmd, env, args.timeout)
        if report is None:
            return 1
        print("JAX mode, host<->device traffic per training step")
        for key, value in report.items():
            print(f"  {key}: {value}")
        if args.json:
            args.json.write_text(json.dumps({"traffic": report}, indent=2))
        return 0
    if args.fit:
        from bench_fit import FIT_COLUMNS

        result = run_fit_benchmark(args)
        print(result["machine"])
        print(f"median of {result['rounds']} alternating rounds; samples/s")
        print()
        print(_table(result["rows"], FIT_COLUMNS))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    if args.profile:
        threads = args.threads or os.cpu_count() or 1
        specs = SMOKE_SPECS if args.smoke else SPECS
        mode = "JAX" if args.device == "gpu" else args.backend.upper()
        cmd = [sys.executable, __file__, "--worker", "profile", "--mode", mode,
               "--spec", json.dumps(specs[args.profile]), "--steps", str(args.steps or 20)]  # fmt: skip
        report = _run_json(cmd, _thread_env(threads), args.timeout)
        if report is None:
            return 1
        full = report["full training step"]
        print(f"{LABELS[args.profile]}, {mode} mode: best ms per call (share of a full step)")
        for key, ms in report.items():
            print(f"  {key}: {ms:.2f} ms ({100 * ms / full:.0f}%)")
        if args.json:
            args.json.write_text(json.dumps({"profile": report}, indent=2))
        return 0
    if args.device == "gpu":
        from subprocess import run as _run

        probe = _run(
            [sys.executable, "-c", "from bntrain.backend import gpu_available as g; print(g())"],
            capture_output=True,
            text=True,
        )
        if probe.stdout.strip() != "True":
            print("bench: --device gpu but JAX sees no GPU", file=sys.stderr)
            return 2
    result = run_benchmark(args)
    print(result["machine"])
    print(f"median of {result['rounds']} alternating rounds, {result['steps']} timed steps each")
    print()
    print(_table(result["rows"], COLUMNS))
    if result["extra"]:
        print()
        print(_table(result["extra"], RECOMPUTE_COLUMNS))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fit-level side of ``bench.py --fit``: ``bntrain fit`` end to end, and its table.

Per model and round, each in a fresh subprocess, alternating: the bntrain
training step alone (``bench.py``'s step worker), ``bntrain.train.fit`` on a
config equal to the benchmark model, the same ``fit`` with augmentation
(random crop with 4 pixels of padding and horizontal flips; image models
only), and ``bench_torch.py --fit``, a PyTorch epoch loop over in-memory
tensors.  Both fits train on the same random data (``np.random.default_rng``),
shuffled, with SGD (Nesterov momentum 0.9) and a cosine schedule, read the
loss and accuracy of every batch and save a checkpoint each epoch; bntrain's
``fit`` also writes ``metrics.csv`` and the curves picture, as it does by
default.  Examples per second cover epochs 2 to the last (epoch 1 compiles
and warms up).
"""

from __future__ import annotations

import json
import resource
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

__all__ = ["FIT_COLUMNS", "FIT_SIZES", "SMOKE_FIT_SIZES", "fit_config", "worker_fit"]

#: Examples and epochs per model: a few seconds an epoch on a 2-core CPU.
FIT_SIZES = {"mlp": (40960, 4), "cnn": (4096, 3), "resnet": (2048, 3)}
SMOKE_FIT_SIZES = {"mlp": (64, 2), "cnn": (32, 2), "resnet": (32, 2)}
FIT_COLUMNS = [
    "model",
    "step only",
    "fit",
    "fit / step",
    "PyTorch loop",
    "fit / PyTorch",
    "fit + augment",
    "augment / plain",
    "peak MiB fit",
    "peak MiB PyTorch",
]


def _layers(spec: dict) -> list[dict]:
    kind = spec["kind"]
    if kind == "mlp":
        return [{"type": "dense", "units": u, "nonlinearity": "relu"} for u in spec["hidden"]]
    if kind == "cnn":
        out = []
        for f in spec["filters"]:
            out += [
                {"type": "conv2d", "filters": f, "size": 3, "pad": "same"},
                {"type": "maxpool2d", "size": 2},
            ]
        return out
    raise ValueError(f"bench --fit has no YAML for model kind {kind!r}")


def fit_config(spec: dict, epochs: int, augment: bool) -> str:
    """The YAML of the benchmark model as a bntrain config (data in ``train.npz`` beside it)."""
    layers = [
        *_layers(spec),
        {"type": "dense", "units": spec["classes"], "nonlinearity": "softmax"},
    ]
    shape = (
        [spec["inputs"]] if spec["kind"] == "mlp" else [spec["channels"], spec["hw"], spec["hw"]]
    )
    aug = ""
    if augment:
        aug = f"  augment: {{random_crop: {{size: [{spec['hw']}, {spec['hw']}], pad: 4}}, hflip: true}}\n"
    return (
        "name: bench\n"
        "data:\n  train: {path: train.npz}\n" + aug + "model:\n"
        f"  input_shape: {shape}\n"
        "  batch_norm: {insert: auto, epsilon: 1.0e-4, alpha: 0.1}\n"
        "  layers:\n"
        + textwrap.indent("\n".join(f"- {json.dumps(layer)}" for layer in layers), "    ")
        + "\ntraining:\n"
        f"  epochs: {epochs}\n"
        f"  batch_size: {spec['batch']}\n"
        "  optimizer: {name: nesterov, lr: 0.01, momentum: 0.9}\n"
        "  schedule: {name: cosine}\n"
        "  recompute_stats: false\n"
        "output: {dir: run}\n"
    )


def worker_fit(spec: dict, epochs: int, examples: int, augment: bool, seed: int) -> dict:
    """Run ``bntrain.train.fit`` in this process; examples per second over epochs 2..last."""
    from bntrain.config import load_config
    from bntrain.train import fit

    rng = np.random.default_rng(seed)
    shape = (
        (spec["inputs"],) if spec["kind"] == "mlp" else (spec["channels"], spec["hw"], spec["hw"])
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        x = rng.normal(size=(examples, *shape)).astype(np.float32)
        np.savez(folder / "train.npz", X=x, y=rng.integers(0, spec["classes"], examples))
        del x
        (folder / "bench.yaml").write_text(fit_config(spec, epochs, augment))
        ends: list[float] = []
        fit(load_config(folder / "bench.yaml"), log=lambda line: ends.append(time.perf_counter()))
    timed = examples // spec["batch"] * spec["batch"] * (epochs - 1)
    return {
        "framework": "bntrain",
        "samples_s": timed / (ends[-1] - ends[0]),
        "epoch_s": [b - a for a, b in zip(ends, ends[1:], strict=False)],
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }

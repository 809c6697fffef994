"""Data-parallel checks on 4 simulated CPU devices (tests/test_distributed.py runs this).

Not a test module.  ``python tests/_dist_child.py WORKDIR`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX is imported,
trains tiny runs on 1, 2 and 4 devices and prints one JSON object of
measured differences (the test module asserts on them).  With
``BNTRAIN_DIST_GPUS=N`` (scripts/gpu_check.sh on a machine with N >= 2 GPUs)
it runs the same checks on N GPUs instead (resuming 1 -> N -> N // 2; with
N = 1, the one-GPU case, everything runs on that device).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

GPUS = int(os.environ.get("BNTRAIN_DIST_GPUS", "0"))
N = GPUS or 4
if not GPUS and __name__ == "__main__":  # not when pytest imports it (--doctest-modules)
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"

import h5py  # noqa: E402
import numpy as np  # noqa: E402

if __package__:  # imported as tests._dist_child
    from ._dist_config import CONFIG
else:  # run as a script: this folder is on sys.path
    from _dist_config import CONFIG

from bntrain import train as train_module  # noqa: E402
from bntrain.commands.eval import evaluate_command  # noqa: E402
from bntrain.commands.recompute import recompute_stats_command  # noqa: E402
from bntrain.config import load_config  # noqa: E402
from bntrain.graphs import build_train_step  # noqa: E402
from bntrain.inputs import open_config_data  # noqa: E402
from bntrain.model import build_network  # noqa: E402
from bntrain.nn.layers import get_all_params  # noqa: E402
from bntrain.parallel import DataParallel, traffic_bytes  # noqa: E402


def arrays(path: Path, group: str) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f[group].visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a, (sorted(a), sorted(b))
    return max(float(np.max(np.abs(np.asarray(a[k], float) - np.asarray(b[k], float)))) for k in a)


def split(path: Path) -> tuple[dict, dict]:
    """(trainable parameters, BN moving averages) of a checkpoint."""
    params = arrays(path, "model/layers")
    stats = {k: v for k, v in params.items() if k.endswith(("mean", "inv_std"))}
    return {k: v for k, v in params.items() if k not in stats}, stats


def fit(work: Path, name: str, devices, *sets: str, resume: Path | None = None) -> Path:
    cfg = load_config(work / "dist.yaml", [f"output.dir={name}", *sets])
    train_module.fit(cfg, devices=devices, resume=resume)
    return work / name


class OneDevice(DataParallel):
    """The reference for ``sync: false``: the same ghost-BN graph, on one device."""

    def __init__(self, n_devices: int, platform: str = "cpu") -> None:
        super().__init__(1, platform)


def main(work: Path) -> dict:
    (work / "dist.yaml").write_text(CONFIG)
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 on a GPU
    out = {"devices_seen": len(jax.devices()), "devices": N}
    one = fit(work, "one", 1)
    four = fit(work, "four", N)
    p1, s1 = split(one / "last.h5")
    p4, s4 = split(four / "last.h5")
    out["sync_params"], out["sync_stats"] = max_diff(p1, p4), max_diff(s1, s4)

    ghost4 = fit(work, "ghost4", N, "model.batch_norm.sync=false")
    real = train_module.DataParallel
    train_module.DataParallel = OneDevice
    try:
        ghost1 = fit(work, "ghost1", N, "model.batch_norm.sync=false")
    finally:
        train_module.DataParallel = real
    g4, gs4 = split(ghost4 / "last.h5")
    g1, gs1 = split(ghost1 / "last.h5")
    out["ghost_params"], out["ghost_stats"] = max_diff(g4, g1), max_diff(gs4, gs1)
    out["ghost_vs_sync"] = max_diff(g4, p4)

    # recompute-stats and eval, data-parallel; 100 is not a multiple of 64 (a short last batch)
    stats = {}
    for n in (1, N):
        target = work / f"stats{n}.h5"
        recompute_stats_command(one / "last.h5", output=target, devices=n, batch_size=60)
        stats[n] = arrays(target, "bn_stats")
    out["recompute"] = max_diff(stats[1], stats[N])
    for kind in ("population", "batch"):
        m1, m4 = (
            evaluate_command(work / "stats1.h5", stats=kind, devices=n, batch_size=60)
            for n in (1, N)
        )
        out[f"eval_{kind}"] = max(
            abs(m1["loss"] - m4["loss"]), abs(m1["accuracy"] - m4["accuracy"])
        )

    # resume 1 -> 4 -> 2 devices continues the run: equal to 3 epochs on one device
    whole = fit(work, "whole", 1, "training.epochs=3")
    moved = fit(work, "moved", 1)
    fit(work, "moved", N, "training.epochs=2", resume=moved)
    fit(work, "moved", max(1, N // 2), "training.epochs=3", resume=moved)
    pw, sw = split(whole / "last.h5")
    pm, sm = split(moved / "last.h5")
    out["resume_params"], out["resume_stats"] = max_diff(pw, pm), max_diff(sw, sm)

    out["traffic"] = step_traffic(work)
    return out


def step_traffic(work: Path) -> dict:
    """Collectives in the compiled 4-device step, and the bytes of the trainable parameters."""
    cfg = load_config(work / "dist.yaml", [])
    data = open_config_data(cfg)
    shape = tuple(data.input_shape)
    data.close()
    network = build_network(cfg.model, shape, seed=1)
    step = build_train_step(network, cfg.training, "JAX", batch_size=64)
    sharded = DataParallel(N, "gpu" if GPUS else "cpu").wrap(step.fn)
    x = np.zeros((64, *shape), np.float32)
    y = np.zeros(64, np.int32)
    hlo = sharded.compiled_text(x, y)
    traffic = traffic_bytes(hlo)
    # parameters are float32: a float all-gather would mean they are not kept replicated
    traffic["float_gathers"] = len(re.findall(r"= \(?f\d+\[[^=]*? all-gather\(", hlo))
    params = get_all_params(network.output_layer, trainable=True)
    traffic["param_bytes"] = sum(p.get_value().nbytes for p in params)
    return traffic


#: On GPUs (scripts/gpu_check.sh) the child itself fails when a difference exceeds these.
GPU_LIMITS = {
    "sync_params": 1e-5,
    "sync_stats": 1e-6,
    "ghost_params": 1e-5,
    "ghost_stats": 1e-6,
    "recompute": 1e-6,
    "resume_params": 1e-5,
    "resume_stats": 1e-6,
}

if __name__ == "__main__":
    result = main(Path(sys.argv[1]))
    print("RESULT " + json.dumps(result))
    over = {k: result[k] for k, limit in GPU_LIMITS.items() if GPUS and result[k] > limit}
    sys.exit(f"over the limits: {over}" if over else 0)

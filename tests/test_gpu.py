"""On an NVIDIA GPU: the conv Ops, fit, recompute-stats, eval and resume agree with the CPU.

Skipped without a GPU (CI has none); ``scripts/gpu_check.sh`` runs them with ``pytest -m gpu``.
JAX computes float32 matrix products and convolutions in TF32 on recent GPUs by default; these
tests ask for full float32 (``JAX_DEFAULT_MATMUL_PRECISION=highest``, set in-process by
``conftest.py``) so that GPU and CPU results can be compared with float32 tolerances.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from bntrain.backend import gpu_available

from .conftest import TINY_MLP, h5_datasets
from .nn.ops.test_conv_ops import CONFIGS, conv_reference, grads_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="no GPU visible to JAX"),
]

TINY_CNN = TINY_MLP.replace(
    "  layers:\n    - {type: dense, units: 16, nonlinearity: relu}\n",
    "  input_shape: [1, 8, 8]\n"
    "  layers:\n"
    "    - {type: conv2d, filters: 6, size: 3, pad: same, nonlinearity: relu}\n"
    "    - {type: maxpool2d, size: 2}\n"
    "    - {type: dense, units: 16, nonlinearity: relu}\n",
)


def bntrain(*args, device_env: str, cwd) -> subprocess.CompletedProcess:
    """Run ``python -m bntrain ARGS`` in a fresh process; ``device_env`` 'cpu' hides the GPU."""
    env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest")
    env.pop("JAX_PLATFORMS", None)
    if device_env == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "bntrain", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_conv_ops_on_gpu_match_the_float64_reference():
    import jax
    import pytensor
    import pytensor.tensor as pt

    from bntrain.nn.ops import Conv2d

    rng = np.random.default_rng(11)
    for x_shape, w_shape, stride, pad in CONFIGS:
        for flip in (True, False):
            x = rng.standard_normal(x_shape).astype(np.float32)
            w = rng.standard_normal(w_shape).astype(np.float32)
            xv, wv = pt.tensor4(), pt.tensor4()
            out = Conv2d(stride, pad, flip)(xv, wv)
            g = rng.standard_normal(conv_reference(x, w, stride, pad, flip).shape)
            gx, gw = pytensor.grad((out * g.astype(np.float32)).sum(), [xv, wv])
            fn = pytensor.function([xv, wv], [out, gx, gw], mode="JAX")
            got = fn(x, w)
            assert {d.platform for d in jax.devices()} >= {"gpu"}
            want = [
                conv_reference(x, w, stride, pad, flip),
                *grads_reference(x, w, g, stride, pad, flip),
            ]
            for a, b in zip(got, want, strict=True):
                a = np.asarray(a)
                assert a.dtype == np.float32
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))


def test_train_step_keeps_parameters_on_the_gpu():
    from bntrain.config import parse_config
    from bntrain.graphs import build_train_step
    from bntrain.model import build_network
    from bntrain.nn import layers as L

    cfg = parse_config(TINY_CNN, source="tiny_cnn.yaml")
    net = build_network(cfg.model, (1, 8, 8), seed=0)
    step = build_train_step(net, cfg.training, "JAX", batch_size=8)
    rng = np.random.default_rng(0)
    for _ in range(2):
        step.fn(
            rng.normal(size=(8, 1, 8, 8)).astype(np.float32),
            rng.integers(0, 10, 8).astype(np.int32),
        )
    params = L.get_all_params(net.output_layer)
    on_device = [p.get_value(borrow=True) for p in params]
    assert all(hasattr(v, "devices") for v in on_device), [type(v) for v in on_device]
    assert {d.platform for v in on_device for d in v.devices()} == {"gpu"}


@pytest.mark.parametrize("config", [TINY_MLP, TINY_CNN], ids=["mlp", "cnn"])
def test_fit_recompute_eval_on_gpu_agree_with_cpu(tmp_path, config):
    import jax

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(config)
    bntrain("fit", cfg, "--device", "gpu", "--quiet", device_env="gpu", cwd=tmp_path)
    run = tmp_path / "run"
    run_info = yaml.safe_load((run / "config.yaml").read_text())["run"]
    assert run_info["device"] == "gpu"
    assert run_info["device_name"] == next(
        d.device_kind for d in jax.devices() if d.platform == "gpu"
    )
    for device in ("gpu", "cpu"):
        bntrain(
            "recompute-stats", run / "best.h5", "--device", device, "--output", tmp_path / f"{device}.h5",
            "--quiet", device_env=device, cwd=tmp_path,
        )  # fmt: skip
    gpu, cpu = h5_datasets(tmp_path / "gpu.h5"), h5_datasets(tmp_path / "cpu.h5")
    stats = sorted(k for k in gpu if k.startswith("bn_stats/"))
    assert stats and stats == sorted(k for k in cpu if k.startswith("bn_stats/"))
    for key in stats:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-4, atol=1e-5, err_msg=key)
    metrics = {
        device: json.loads(
            bntrain(
                "eval", tmp_path / f"{device}.h5", "--device", device, "--json",
                device_env=device, cwd=tmp_path,
            ).stdout.strip().splitlines()[-1]
        )
        for device in ("gpu", "cpu")
    }  # fmt: skip
    assert metrics["gpu"]["accuracy"] == pytest.approx(metrics["cpu"]["accuracy"], abs=1e-9)
    assert metrics["gpu"]["loss"] == pytest.approx(metrics["cpu"]["loss"], rel=1e-4)


def test_a_gpu_run_resumes_on_the_cpu(tmp_path):
    from bntrain.config import load_config
    from bntrain.train import fit

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CNN)
    sets = ["training.epochs=3", "training.recompute_stats=false"]
    fit(load_config(cfg, [*sets, "output.dir=straight"]), device="gpu")

    def interrupt_after_epoch_1(line):
        if line.startswith("epoch 1/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            load_config(cfg, [*sets, "output.dir=moved"]), log=interrupt_after_epoch_1, device="gpu"
        )
    bntrain(
        "fit", cfg, "--quiet", *[f"--set={s}" for s in sets], "--set", "output.dir=moved",
        "--resume", tmp_path / "moved", "--device", "cpu", device_env="cpu", cwd=tmp_path,
    )  # fmt: skip
    straight, moved = (
        h5_datasets(tmp_path / "straight" / "last.h5"),
        h5_datasets(tmp_path / "moved" / "last.h5"),
    )
    params = [k for k in straight if k.startswith("model/layers/")]
    assert params and sorted(straight) == sorted(moved)
    for key in params:  # same run, two devices for the last two epochs: float32-close
        np.testing.assert_allclose(moved[key], straight[key], rtol=2e-3, atol=2e-4, err_msg=key)

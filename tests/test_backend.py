"""Backend and device selection (``bntrain.backend``) and, on a GPU, GPU-vs-CPU training."""

from __future__ import annotations

import textwrap

import numpy as np
import pytensor
import pytest

from bntrain.backend import Runtime, gpu_available, resolve_runtime
from bntrain.errors import UsageError

NO_GPU = (
    "device gpu requested but JAX sees no GPU; install the CUDA plugin with "
    "pip install 'bntrain[gpu]', or use --device cpu"
)
NO_BLAS = (
    "backend c needs a BLAS library PyTensor can link "
    "(pytensor.config.blas__ldflags is empty); use backend numba"
)
HAS_GPU = gpu_available()
cpu_only = pytest.mark.skipif(HAS_GPU, reason="expectations for a machine without a GPU")


@cpu_only
@pytest.mark.parametrize("backend", ["auto", "jax"])
def test_gpu_without_gpu_is_a_usage_error(backend):
    with pytest.raises(UsageError) as info:
        resolve_runtime(backend, "gpu")
    assert str(info.value) == NO_GPU
    assert info.value.exit_code == 2


@pytest.mark.parametrize("backend", ["numba", "c"])
def test_gpu_with_a_cpu_only_backend(backend):
    with pytest.raises(UsageError) as info:
        resolve_runtime(backend, "gpu")
    assert str(info.value) == (
        f"backend '{backend}' runs on the CPU only; use backend: jax (or auto) with device: gpu"
    )


@cpu_only
@pytest.mark.parametrize(
    ("backend", "device", "expected"),
    [
        ("auto", "auto", Runtime("jax", "cpu")),
        ("auto", "cpu", Runtime("jax", "cpu")),
        ("numba", "auto", Runtime("numba", "cpu")),
        ("numba", "cpu", Runtime("numba", "cpu")),
        ("jax", "auto", Runtime("jax", "cpu")),
        ("jax", "cpu", Runtime("jax", "cpu")),
    ],
)
def test_cpu_combinations(backend, device, expected):
    got = resolve_runtime(backend, device)
    assert got == expected
    assert got.mode == {"numba": "NUMBA", "jax": "JAX"}[expected.backend]
    assert got.static_batch is (expected.backend == "jax")


def test_default_arguments_are_auto():
    assert resolve_runtime() == resolve_runtime("auto", "auto")


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_backend_c_without_blas(device):
    with pytensor.config.change_flags(blas__ldflags=""):
        with pytest.raises(UsageError) as info:
            resolve_runtime("c", device)
    assert str(info.value) == NO_BLAS
    assert "\n" not in str(info.value)


def test_backend_c_with_blas():
    with pytensor.config.change_flags(blas__ldflags="-lblas"):
        got = resolve_runtime("c", "cpu")
    assert got == Runtime("c", "cpu")
    assert got.mode == "C"
    assert not got.static_batch


@pytest.mark.parametrize(
    ("backend", "device", "message"),
    [
        ("torch", "cpu", "backend 'torch' is unknown; use one of auto, jax, numba, c"),
        ("auto", "tpu", "device 'tpu' is unknown; use one of auto, cpu, gpu"),
    ],
)
def test_unknown_values(backend, device, message):
    with pytest.raises(UsageError, match=f"^{message}$"):
        resolve_runtime(backend, device)


def test_gpu_available_respects_jax_platforms_cpu(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert gpu_available() is False


# ---------------------------------------------------------------------------------------------
# On a GPU machine (scripts/gpu_check.sh runs ``pytest -m gpu``)

_GPU_CONFIG = textwrap.dedent(
    """\
    data:
      train: {builtin: digits, split: train}
    model:
      batch_norm: {insert: auto, epsilon: 1.0e-4, alpha: 0.1}
      layers:
        - {type: conv2d, filters: 8, size: 3, pad: same, nonlinearity: relu}
        - {type: maxpool2d, size: 2}
        - {type: dense, units: 32, nonlinearity: relu}
        - {type: dense, units: 10, nonlinearity: softmax}
    training:
      epochs: 1
      batch_size: 32
      optimizer: {name: nesterov, lr: 0.05, momentum: 0.9}
      seed: 1
    output: {dir: run}
    """
)


def _train_steps(mode: str, steps: int = 4):
    from bntrain.config import parse_config
    from bntrain.graphs import build_train_step
    from bntrain.model import build_network
    from bntrain.nn import layers as L

    cfg = parse_config(_GPU_CONFIG, source="gpu.yaml")
    net = build_network(cfg.model, (1, 8, 8), seed=cfg.training.seed)
    step = build_train_step(net, cfg.training, mode)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        x = rng.normal(size=(32, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 10, size=32).astype(np.int32)
        losses.append(float(np.asarray(step.fn(x, y)[0])))
    values = [np.asarray(v) for v in L.get_all_param_values(net.output_layer)]
    return np.array(losses), values


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to JAX")
def test_gpu_training_matches_cpu():
    import jax

    assert resolve_runtime("auto", "gpu") == Runtime("jax", "gpu")
    assert resolve_runtime("auto", "auto") == Runtime("jax", "gpu")
    with jax.default_matmul_precision("highest"):  # no TF32: compare float32 with float32
        gpu_losses, gpu_params = _train_steps("JAX")
    cpu_losses, cpu_params = _train_steps("NUMBA")
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-3, atol=1e-4)
    for g, c in zip(gpu_params, cpu_params, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, c, rtol=1e-3, atol=1e-4)

"""Backend (PyTensor mode) and device selection.

``backend: auto`` picks JAX, on the CPU (measured fastest there and quickest
to compile, see ``docs/benchmarks.md``) and on a GPU (the only backend that
reaches it).  Numba (``backend: numba``) runs every graph for any batch size
with one compiled function and keeps float64 statistics inside the graph.
``device: auto`` means a GPU when JAX sees one, else the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import UsageError

__all__ = ["Runtime", "resolve_runtime", "gpu_available", "device_name"]

_MODES = {"numba": "NUMBA", "jax": "JAX", "c": "C"}


@dataclass(frozen=True)
class Runtime:
    """The resolved backend and device.

    Attributes
    ----------
    backend : str
        ``numba``, ``jax`` or ``c``.
    device : str
        ``cpu`` or ``gpu``.
    """

    backend: str
    device: str

    @property
    def mode(self) -> str:
        """The PyTensor mode name to compile functions with."""
        return _MODES[self.backend]

    @property
    def static_batch(self) -> bool:
        """Whether compiled functions want one fixed batch shape (JAX traces per shape)."""
        return self.backend == "jax"


def gpu_available() -> bool:
    """Return whether JAX sees an NVIDIA GPU (without failing when it does not)."""
    if os.environ.get("JAX_PLATFORMS", "").strip() == "cpu":
        return False
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        return False


def device_name(runtime: Runtime) -> str:
    """What the run computes on, for the record: the GPU's model, else the CPU's."""
    if runtime.device == "gpu":
        import jax

        return next(d.device_kind for d in jax.devices() if d.platform == "gpu")
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _c_blas_available() -> bool:
    """Whether PyTensor's C backend found a BLAS to link (its gemm fails to compile without)."""
    import warnings

    with warnings.catch_warnings():  # PyTensor warns once when it finds no BLAS
        warnings.simplefilter("ignore")
        import pytensor

        return bool(str(pytensor.config.blas__ldflags).strip())


def _pin_jax_to_cpu() -> None:
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")
    except RuntimeError:  # backends already initialised: device choice is made per function
        pass


def resolve_runtime(backend: str = "auto", device: str = "auto") -> Runtime:
    """Resolve ``auto`` choices and check that the requested device exists.

    Raises
    ------
    UsageError
        If a GPU is requested and none is usable, a GPU with a CPU-only backend,
        or backend ``c`` without a BLAS library PyTensor can link.
    """
    if backend not in ("auto", *_MODES):
        raise UsageError(f"backend {backend!r} is unknown; use one of auto, jax, numba, c")
    if device not in ("auto", "cpu", "gpu"):
        raise UsageError(f"device {device!r} is unknown; use one of auto, cpu, gpu")
    if device == "gpu":
        if backend in ("numba", "c"):
            raise UsageError(
                f"backend {backend!r} runs on the CPU only; use backend: jax (or auto) with device: gpu"
            )
        if not gpu_available():
            raise UsageError(
                "device gpu requested but JAX sees no GPU; install the CUDA plugin with "
                "pip install 'bntrain[gpu]', or use --device cpu"
            )
        return Runtime("jax", "gpu")
    if device == "auto" and backend in ("auto", "jax") and gpu_available():
        return Runtime("jax", "gpu")
    if backend == "c" and not _c_blas_available():
        raise UsageError(
            "backend c needs a BLAS library PyTensor can link "
            "(pytensor.config.blas__ldflags is empty); use backend numba"
        )
    if backend in ("auto", "jax"):
        _pin_jax_to_cpu()
    return Runtime("jax" if backend == "auto" else backend, "cpu")

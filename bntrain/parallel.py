"""Data parallelism on JAX's own sharding: one SPMD program over several devices.

A JAX-mode function that PyTensor compiled is called with its batch sharded
over a 1-D device mesh (``jax.sharding.NamedSharding``, axis ``"batch"``) and
with every shared variable's storage holding a replicated array.  XLA then
partitions the program itself and inserts the cross-device reductions (the
gradient sums and, for batch norm, the batch statistics), so batch norm over
the global batch -- synchronized batch norm -- needs no hand-written
all-reduce.  Updated shared values come back replicated.  See
``docs/distributed.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .errors import UsageError

__all__ = [
    "DataParallel",
    "check_global_batch",
    "collectives",
    "data_parallel_wrap",
    "resolve_devices",
    "traffic_bytes",
]


def resolve_devices(spec: str | int, runtime) -> int:
    """The number of devices to run on: ``auto`` = every local GPU, 1 on the CPU.

    Parameters
    ----------
    spec : {'auto'} or int
        The ``devices`` config key (or ``--devices``).
    runtime : bntrain.backend.Runtime
        The resolved backend and device.

    Raises
    ------
    UsageError
        A count below 1, more devices than JAX sees, or several devices with a
        backend other than JAX.
    """
    if spec == "auto":
        return len(_local_devices(runtime.device)) if runtime.device == "gpu" else 1
    n = int(spec)
    if n < 1:
        raise UsageError(f"devices: {n} is not a device count; use auto or a number >= 1")
    if n == 1:
        return 1
    if runtime.backend != "jax":
        raise UsageError(
            f"devices: {n} needs backend jax (data parallelism runs on JAX's sharding); "
            f"backend {runtime.backend!r} runs on one device"
        )
    have = len(_local_devices(runtime.device))
    if n > have:
        kind = "GPUs" if runtime.device == "gpu" else "CPU devices"
        hint = (
            "; on the CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N to simulate N"
            if runtime.device == "cpu"
            else ""
        )
        raise UsageError(f"devices: {n} requested but JAX sees {have} {kind}; use {have}{hint}")
    return n


def _local_devices(kind: str) -> list:
    import jax

    return [d for d in jax.local_devices() if d.platform == kind]


def check_global_batch(batch_size: int, n_devices: int, key: str = "training.batch_size") -> None:
    """Refuse a global batch that ``n_devices`` cannot share evenly.

    Raises
    ------
    UsageError
        Naming the nearest batch sizes that divide evenly.
    """
    if batch_size % n_devices == 0:
        return
    lower = batch_size // n_devices * n_devices
    upper = lower + n_devices
    nearest = f"{lower} or {upper}" if lower > 0 else f"{upper}"
    raise UsageError(
        f"{key}: {batch_size} does not divide evenly over {n_devices} devices (it is the global "
        f"batch); use {nearest}"
    )


def data_parallel_wrap(spec: str | int, runtime) -> Callable | None:
    """:meth:`DataParallel.wrap` for ``spec`` devices, or None for one device.

    Raises
    ------
    UsageError
        As :func:`resolve_devices`.
    """
    n = resolve_devices(spec, runtime)
    return DataParallel(n, runtime.device).wrap if n > 1 else None


class DataParallel:
    """Run compiled JAX-mode functions over ``n_devices`` local devices.

    Parameters
    ----------
    n_devices : int
        How many devices of ``platform`` to use (the first ones).
    platform : str
        ``cpu`` or ``gpu``.
    """

    def __init__(self, n_devices: int, platform: str = "cpu") -> None:
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        devices = _local_devices(platform)[:n_devices]
        self.n_devices = len(devices)
        self.mesh = Mesh(np.array(devices), ("batch",))
        self.batch = NamedSharding(self.mesh, PartitionSpec("batch"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self._jax = jax

    def wrap(self, fn) -> Callable:
        """``fn`` (a JAX-mode ``pytensor`` function) as a data-parallel callable.

        The returned callable takes the same arguments.  Inputs whose first axis
        divides evenly over the devices are sharded along it; others (a short
        last batch) go in whole, and the program runs replicated.
        """
        return _Sharded(fn, self)

    def shard(self, value, dtype):
        """Place one batch input on the mesh, split along its first axis when it divides."""
        arr = np.asarray(value, dtype=dtype)
        if arr.ndim and len(arr) % self.n_devices == 0:
            return self._jax.device_put(arr, self.batch)
        return self._jax.device_put(arr, self.replicated)

    def replicate(self, value):
        """``value`` (an array or a pytree of arrays) replicated on every device."""
        return self._jax.device_put(value, self.replicated)


class _Sharded:
    """A compiled function whose inputs are sharded and shared storage kept replicated."""

    def __init__(self, fn, dp: DataParallel) -> None:
        fn.trust_input = True  # keep sharded arrays as they are (no conversion to NumPy)
        self.fn = fn
        self.dp = dp
        cells = fn.vm.inputs
        self._explicit = [
            (cells[i], inp.variable.type.dtype)
            for i, inp in enumerate(fn.maker.inputs)
            if not inp.implicit
        ]
        self._shared = [cells[i] for i, inp in enumerate(fn.maker.inputs) if inp.implicit]

    def _place(self, args) -> list:
        if len(args) != len(self._explicit):
            raise TypeError(f"expected {len(self._explicit)} inputs, got {len(args)}")
        for cell in self._shared:  # set_value() and checkpoints put NumPy values back
            if getattr(cell[0], "sharding", None) != self.dp.replicated:
                cell[0] = self.dp.replicate(cell[0])
        return [self.dp.shard(a, dtype) for a, (_, dtype) in zip(args, self._explicit, strict=True)]

    def __call__(self, *args):
        return self.fn(*self._place(args))

    def compiled_text(self, *args) -> str:
        """The HLO text of the program XLA compiled for these inputs (after partitioning)."""
        placed = self._place(args)
        for (cell, _), value in zip(self._explicit, placed, strict=True):
            cell[0] = value
        values = [cell[0] for cell in self.fn.vm.inputs]
        return self.fn.vm.jit_fn.lower(*values).compile().as_text()


_COLLECTIVE = re.compile(
    r"=\s*(\(?[^=]*?\)?)\s+(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)"
    r"(?:-start)?\("
)
_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|f16|bf16|s32|u32|f32|s64|u64|f64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2}


def collectives(hlo_text: str) -> list[tuple[str, int]]:
    """Each cross-device operation in compiled HLO text: ``(kind, bytes of its result)``."""
    found = []
    for result, kind in _COLLECTIVE.findall(hlo_text):
        size = 0
        for dtype, dims in _SHAPE.findall(result):
            count = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
            size += count * _BYTES.get(dtype, 8 if dtype.endswith("64") else 4)
        found.append((kind, size))
    return found


def traffic_bytes(hlo_text: str) -> dict[str, int]:
    """Bytes per step moved by each kind of collective in compiled HLO text."""
    totals: dict[str, int] = {}
    for kind, size in collectives(hlo_text):
        totals[kind] = totals.get(kind, 0) + size
    return totals

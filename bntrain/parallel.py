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
    "check_parallel_config",
    "collectives",
    "data_parallel_wrap",
    "resolve_devices",
    "traffic_bytes",
]


def resolve_devices(spec: str | int, runtime) -> int:
    """The number of devices to run on: ``auto`` = every GPU, one per process on the CPU.

    With several processes (:mod:`bntrain.distributed`) the count is over all
    of them, and each process uses the same number of its own devices.

    Parameters
    ----------
    spec : {'auto'} or int
        The ``devices`` config key (or ``--devices``).
    runtime : bntrain.backend.Runtime
        The resolved backend and device.

    Raises
    ------
    UsageError
        A count below 1, more devices than JAX sees, several devices with a
        backend other than JAX, or a count the processes cannot share evenly.
    """
    from .distributed import current

    procs = current().count
    if spec == "auto":
        return len(_local_devices(runtime.device)) * procs if runtime.device == "gpu" else procs
    n = int(spec)
    if n < 1:
        raise UsageError(f"devices: {n} is not a device count; use auto or a number >= 1")
    if n == 1 and procs == 1:
        return 1
    if runtime.backend != "jax":
        raise UsageError(
            f"devices: {n} needs backend jax (data parallelism runs on JAX's sharding); "
            f"backend {runtime.backend!r} runs on one device"
        )
    if n % procs:
        raise UsageError(
            f"devices: {n} does not divide evenly over {procs} processes; use a multiple of {procs}"
        )
    have = len(_local_devices(runtime.device))
    if n // procs > have:
        kind = "GPUs" if runtime.device == "gpu" else "CPU devices"
        hint = (
            "; on the CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N to simulate N"
            if runtime.device == "cpu"
            else ""
        )
        each = " per process" if procs > 1 else ""
        raise UsageError(
            f"devices: {n} requested but JAX sees {have} {kind}{each}; use {have * procs}{hint}"
        )
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


def check_parallel_config(config, n_devices: int) -> None:
    """Refuse a config that cannot run data-parallel on ``n_devices``.

    Raises
    ------
    UsageError
        A global batch the devices cannot share (see :func:`check_global_batch`),
        or ``batch_norm.sync: false`` with ``kind: renorm``.
    """
    check_global_batch(config.training.batch_size, n_devices)
    bn = config.model.batch_norm
    if n_devices > 1 and not bn.sync and bn.kind == "renorm":
        raise UsageError(
            "model.batch_norm.sync: false (per-device statistics) cannot be combined with "
            "kind renorm; use sync: true or kind bn"
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
    """Run compiled JAX-mode functions over ``n_devices`` devices, of one process or several.

    Parameters
    ----------
    n_devices : int
        How many devices of ``platform`` to use: the first ones of this
        process, or with several processes (:mod:`bntrain.distributed`) the
        first ``n_devices / processes`` of each, in process order.
    platform : str
        ``cpu`` or ``gpu``.
    """

    def __init__(self, n_devices: int, platform: str = "cpu") -> None:
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        from .distributed import current

        self.processes = current().count
        if self.processes > 1:
            per = max(1, n_devices // self.processes)
            mine = [d for d in jax.devices() if d.platform == platform]
            devices = [
                d
                for p in range(self.processes)
                for d in sorted((d for d in mine if d.process_index == p), key=lambda d: d.id)[:per]
            ]
        else:
            devices = _local_devices(platform)[:n_devices]
        self.n_devices = len(devices)
        self.mesh = Mesh(np.array(devices), ("batch",))
        self.batch = NamedSharding(self.mesh, PartitionSpec("batch"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self._jax = jax

    def wrap(self, fn, local: bool = False) -> Callable:
        """``fn`` (a JAX-mode ``pytensor`` function) as a data-parallel callable.

        The returned callable takes the same arguments.  Inputs whose first axis
        divides evenly over the devices are sharded along it; others (a short
        last batch) go in whole, and the program runs replicated.  With
        ``local`` and several processes, each process passes only its own
        slice of the batch (consecutive, in process order).  Outputs come back
        whole on every process.
        """
        return _Sharded(fn, self, local and self.processes > 1)

    def shard(self, value, dtype, local: bool = False):
        """Place one batch input on the mesh, split along its first axis when it divides.

        ``local``: ``value`` is this process's slice of the batch.
        """
        arr = np.asarray(value, dtype=dtype)
        if local:
            shape = (len(arr) * self.processes, *arr.shape[1:])
            return self._jax.make_array_from_process_local_data(self.batch, arr, shape)
        if arr.ndim and len(arr) % self.n_devices == 0:
            return self._jax.device_put(arr, self.batch)
        return self._jax.device_put(arr, self.replicated)

    def replicate(self, value):
        """``value`` (an array or a pytree of arrays) replicated on every device."""
        return self._jax.device_put(value, self.replicated)

    def fetch(self, value):
        """An output as this process can read it: whole, gathered from the other processes."""
        if getattr(value, "is_fully_addressable", True) or value.is_fully_replicated:
            return value
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(value, tiled=True)


class _Sharded:
    """A compiled function whose inputs are sharded and shared storage kept replicated."""

    def __init__(self, fn, dp: DataParallel, local: bool = False) -> None:
        fn.trust_input = True  # keep sharded arrays as they are (no conversion to NumPy)
        self.fn = fn
        self.dp = dp
        self.local = local
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
        return [
            self.dp.shard(a, dtype, self.local)
            for a, (_, dtype) in zip(args, self._explicit, strict=True)
        ]

    def __call__(self, *args):
        out = self.fn(*self._place(args))
        if self.dp.processes == 1:
            return out
        return (
            [self.dp.fetch(v) for v in out] if isinstance(out, list | tuple) else self.dp.fetch(out)
        )

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

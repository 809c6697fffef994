"""Several processes (hosts) as one data-parallel run, on ``jax.distributed``.

:func:`join` connects this process to the others before JAX starts its
backends: with ``--coordinator HOST:PORT --num-processes N --process-id I``,
or with the environment JAX reads itself (``JAX_COORDINATOR_ADDRESS``, or a
SLURM job step of several tasks).  The device mesh of
:class:`bntrain.parallel.DataParallel` then spans every process's devices;
each process reads only its slice of every training batch, only process 0
writes files, and :meth:`Cluster.agree` lets every process stop at the same
step.  On the CPU the cross-process reductions run on Gloo.  See
``docs/distributed.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

__all__ = ["Cluster", "ClusterSpec", "join"]

_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class ClusterSpec:
    """``--coordinator``, ``--num-processes`` and ``--process-id`` as given (all or none)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def check(self) -> None:
        """Refuse options that cannot describe a cluster.

        Raises
        ------
        UsageError
            Only some of the three options, a coordinator that is not
            ``HOST:PORT``, or a process id outside ``0 .. N-1``.
        """
        given = [v is not None for v in (self.coordinator, self.num_processes, self.process_id)]
        if not any(given):
            return
        if not all(given):
            raise UsageError(
                "--coordinator, --num-processes and --process-id go together; give all three "
                "(or none, to use JAX_COORDINATOR_ADDRESS or SLURM's environment)"
            )
        m = _HOST_PORT.match(self.coordinator)
        if m is None or not 0 < int(m["port"]) < 65536:
            raise UsageError(
                f"--coordinator: {self.coordinator!r} is not HOST:PORT (e.g. 10.0.0.1:12355, "
                f"a port 1..65535 that process 0's host can listen on)"
            )
        if self.num_processes < 1:
            raise UsageError(f"--num-processes: {self.num_processes} must be >= 1")
        if not 0 <= self.process_id < self.num_processes:
            raise UsageError(
                f"--process-id: {self.process_id} must be in 0..{self.num_processes - 1} "
                f"(--num-processes {self.num_processes})"
            )

    @property
    def given(self) -> bool:
        return self.coordinator is not None


@dataclass(frozen=True)
class Cluster:
    """This process's place among the processes of one run."""

    index: int = 0
    count: int = 1

    @property
    def writer(self) -> bool:
        """Whether this process writes files (checkpoints, metrics, plots): process 0."""
        return self.index == 0

    def agree(self, values: list[int]) -> list[int]:
        """Each value's maximum over every process (a collective: all call it, in step)."""
        if self.count == 1:
            return [int(v) for v in values]
        from jax.experimental import multihost_utils

        every = multihost_utils.process_allgather(np.asarray(values, dtype=np.int32))
        return [int(v) for v in np.asarray(every).reshape(self.count, -1).max(axis=0)]

    @contextmanager
    def all_or_none(self, what: str) -> Iterator[None]:
        """Run a block on every process; when it fails on one, every process fails after it.

        A collective at the end of the block: the process that failed re-raises
        its own error, the others raise a :class:`~bntrain.errors.UsageError`
        saying that another process failed ``what``.
        """
        try:
            yield
        except Exception:
            self.agree([1])
            raise
        if self.agree([0])[0]:
            raise UsageError(
                f"another process of this run failed {what}; its error says why (process "
                f"{self.index} of {self.count} stops too)"
            )

    def barrier(self, name: str) -> None:
        """Wait until every process got here."""
        if self.count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


_joined: Cluster | None = None


def _from_environment() -> bool:
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    return "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def join(spec: ClusterSpec | None = None) -> Cluster:
    """Connect to the run's other processes (once per process) and say where this one is.

    Without options and without a cluster environment this is one process and
    nothing is initialized.

    Raises
    ------
    UsageError
        As :meth:`ClusterSpec.check`; or ``jax.distributed`` could not connect.
    """
    global _joined
    spec = spec or ClusterSpec()
    spec.check()
    if _joined is not None:
        return _joined
    if not spec.given and not _from_environment():
        _joined = Cluster()
        return _joined
    import jax

    # the CPU's collectives across processes (GPUs use NCCL whatever this says)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX's preemption service would take SIGTERM for itself; bntrain stops every process at
    # the same step on SIGINT/SIGTERM (Cluster.agree in the training loop)
    jax.config.update("jax_enable_preemption_service", False)
    try:
        if spec.given:
            jax.distributed.initialize(spec.coordinator, spec.num_processes, spec.process_id)
        else:
            jax.distributed.initialize()
    except (RuntimeError, ValueError) as exc:
        where = spec.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or "SLURM"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"jax.distributed could not connect to {where}: {first}; check that every process "
            f"got the same --coordinator and --num-processes"
        ) from None
    _joined = Cluster(jax.process_index(), jax.process_count())
    return _joined


def current() -> Cluster:
    """The cluster :func:`join` connected to (one process if it was not called)."""
    return _joined or Cluster()

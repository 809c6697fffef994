"""Several processes as one run (``jax.distributed`` on 127.0.0.1, CPU collectives on Gloo).

Each process runs ``bntrain fit`` from its own folder holding the same config,
so that whatever a process writes is visible: only process 0's folder may get
a run folder.  One process with the same global batch is the reference.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.data import BatchIterator
from bntrain.distributed import Cluster, ClusterSpec
from bntrain.errors import UsageError

from ._dist_config import CONFIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    return env


def _fit_processes(
    folders: list[Path], *extra: str, while_running=None
) -> list[subprocess.CompletedProcess]:
    """``bntrain fit`` in each folder at once, as the processes of one run.

    ``while_running(procs)`` is called once all are started.
    """
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bntrain.cli", "fit", str(folder / "mh.yaml"), "-q", *extra]
            + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(len(folders))]
            + ["--process-id", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for i, folder in enumerate(folders)
    ]
    if while_running is not None:
        while_running(procs)
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def _folders(tmp_path: Path, names: str) -> list[Path]:
    folders = []
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "mh.yaml").write_text(CONFIG)
        folders.append(tmp_path / name)
    return folders


def _layers(path: Path) -> dict:
    out = {}

    def keep(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f["model/layers"].visititems(keep)
    return out


def test_two_processes_reach_the_parameters_of_one(tmp_path):
    p0, p1, one = _folders(tmp_path, "ABC")
    results = _fit_processes([p0, p1])
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    assert not (p1 / "runs").exists()  # only process 0 writes
    written = {f.name for f in (p0 / "runs" / "dist").iterdir()}
    assert {"best.h5", "config.yaml", "curves.png", "last.h5", "metrics.csv"} <= written
    ref = subprocess.run(
        [sys.executable, "-m", "bntrain.cli", "fit", str(one / "mh.yaml"), "-q"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    got, want = _layers(p0 / "runs/dist/last.h5"), _layers(one / "runs/dist/last.h5")
    assert got.keys() == want.keys() and got
    for key in got:
        limit = 1e-6 if key.endswith(("mean", "inv_std")) else 1e-5
        np.testing.assert_allclose(got[key], want[key], atol=limit, rtol=0, err_msg=key)


def test_a_process_that_fails_stops_the_others(tmp_path):
    p0, p1 = _folders(tmp_path, "AB")
    (p0 / "runs" / "dist").mkdir(parents=True)
    (p0 / "runs" / "dist" / "notes.txt").write_text("not a run folder")  # process 0 refuses it
    r0, r1 = _fit_processes([p0, p1])
    assert r0.returncode == 2 and "Error: " in r0.stderr and "Traceback" not in r0.stderr
    assert r1.returncode == 2, r1.stderr[-3000:]
    assert r1.stderr.strip().splitlines()[-1] == (
        "Error: another process of this run failed to prepare the run folder; its error says "
        "why (process 1 of 2 stops too)"
    )
    assert not (p1 / "runs").exists()


@pytest.mark.parametrize("signalled", [0, 1])
def test_a_signal_to_one_process_stops_all_after_the_same_step(tmp_path, signalled):
    p0, p1 = _folders(tmp_path, "AB")
    metrics = p0 / "runs" / "dist" / "metrics.csv"

    def interrupt_after_the_first_epoch(procs):
        while not metrics.exists() and procs[0].poll() is None:
            time.sleep(0.1)  # polling for the file, not timing anything
        procs[signalled].send_signal(signal.SIGTERM)  # the other learns it from the agreement

    results = _fit_processes(
        [p0, p1], "--set", "training.epochs=1000", while_running=interrupt_after_the_first_epoch
    )
    lines = [r.stderr.strip().splitlines()[-1] for r in results]
    assert [r.returncode for r in results] == [143, 143], lines
    steps = {line.split("training stopped after step ")[1].split(";")[0] for line in lines}
    assert len(steps) == 1 and all(line.startswith("Error: SIGTERM received") for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--coordinator", "127.0.0.1:1234"],
            "--coordinator, --num-processes and --process-id go together; give all three "
            "(or none, to use JAX_COORDINATOR_ADDRESS or SLURM's environment)",
        ),
        (
            ["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
            "--coordinator: 'localhost' is not HOST:PORT (e.g. 10.0.0.1:12355, a port 1..65535 "
            "that process 0's host can listen on)",
        ),
        (
            ["--coordinator", "h:70000", "--num-processes", "2", "--process-id", "0"],
            "--coordinator: 'h:70000' is not HOST:PORT (e.g. 10.0.0.1:12355, a port 1..65535 "
            "that process 0's host can listen on)",
        ),
        (
            ["--coordinator", "h:1234", "--num-processes", "2", "--process-id", "2"],
            "--process-id: 2 must be in 0..1 (--num-processes 2)",
        ),
        (
            ["--coordinator", "h:1234", "--num-processes", "0", "--process-id", "0"],
            "--num-processes: 0 must be >= 1",
        ),
    ],
)
@pytest.mark.parametrize("command", ["fit", "eval", "recompute-stats"])
def test_bad_cluster_options_are_one_line_usage_errors(tmp_path, command, args, message):
    target = tmp_path / ("mh.yaml" if command == "fit" else "best.h5")
    target.write_text(CONFIG)
    r = CliRunner().invoke(main, [command, str(target), *args])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [f"Error: {message}"]


def test_cluster_spec_alone():
    ClusterSpec().check()  # one process: nothing to check
    ClusterSpec("[::1]:80", 1, 0).check()
    with pytest.raises(UsageError, match="go together"):
        ClusterSpec(None, 2, 1).check()
    assert Cluster().writer and not Cluster(1, 2).writer
    assert Cluster().agree([3, 0]) == [3, 0]  # one process: nothing to exchange


def test_devices_count_over_every_process(monkeypatch):
    from bntrain import distributed
    from bntrain.backend import Runtime
    from bntrain.parallel import resolve_devices

    monkeypatch.setattr(distributed, "_joined", Cluster(1, 2))
    assert resolve_devices("auto", Runtime("jax", "cpu")) == 2  # one CPU device per process
    with pytest.raises(UsageError) as err:
        resolve_devices(1, Runtime("jax", "cpu"))
    assert str(err.value) == (
        "devices: 1 does not divide evenly over 2 processes; use a multiple of 2"
    )
    with pytest.raises(UsageError, match="^devices: 4 requested but JAX sees "):
        resolve_devices(4, Runtime("jax", "cpu"))


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_process_reads_its_consecutive_slice_of_every_batch(shuffle):
    from bntrain.data.base import ArrayDataset

    ds = ArrayDataset(np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 3)

    def batches(part):
        it = BatchIterator(ds, 8, shuffle=shuffle, seed=3, epoch=1, drop_last=True, part=part)
        return [b[0] for b in it]

    whole = batches((0, 1))
    parts = [batches((i, 4)) for i in range(4)]
    assert len(whole) == 2
    for b, batch in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[b] for p in parts]), batch)
        assert all(len(p[b]) == 2 for p in parts)
    with pytest.raises(ValueError, match="part"):
        BatchIterator(ds, 6, shuffle=False, seed=0, epoch=0, part=(0, 4))

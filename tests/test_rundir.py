"""Run folders: --force replaces only what bntrain made; one process at a time; bad metrics.csv.

The refusals happen before anything is compiled, so most of these run in a second.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import bntrain.train as T
from bntrain.cli import main
from bntrain.config import load_config
from bntrain.errors import TrainingError, UsageError
from bntrain.rundir import LOCK, MARKER, PID, new_run_folder, run_lock
from bntrain.train import fit

from .conftest import TINY_MLP

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--set", "training.epochs=1", "--set", "training.recompute_stats=false", "--quiet"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture
def project(tmp_path) -> Path:
    """A folder holding a config, a canary file, and nothing bntrain made."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(TINY_MLP)
    (folder / "canary.txt").write_text("keep me")
    return folder


def _intact(folder: Path) -> None:
    assert (folder / "canary.txt").read_text() == "keep me"
    assert (folder / "tiny.yaml").read_text() == TINY_MLP


# --------------------------------------------------------------------------- --force (A.1)


def test_force_never_deletes_the_config_folder(project):
    """The repro of issue 11 A.1: output.dir '.' and --force deleted the canary and the config."""
    result = run("fit", project / "tiny.yaml", "--set", "output.dir=.", "--force", *QUICK)
    assert error(result) == (
        f"Error: run folder '{project}' is the config's folder; bntrain never replaces it: "
        f"set output.dir to a folder of its own (e.g. runs/<name>)"
    )
    _intact(project)


@pytest.mark.parametrize("out", ["..", "/"])
def test_force_never_deletes_a_folder_holding_the_config(project, out):
    result = run("fit", project / "tiny.yaml", "--set", f"output.dir={out}", "--force", *QUICK)
    folder = os.path.normpath(project / out) if out == ".." else "/"
    assert error(result).startswith(
        f"Error: run folder '{folder}' contains the config's folder ({project.resolve()}); "
        f"bntrain never replaces it"
    )
    assert "--force" not in result.output
    _intact(project)


def test_force_never_deletes_a_folder_bntrain_did_not_create(project, tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8")
    result = run("fit", project / "tiny.yaml", "--set", f"output.dir={other}", "--force", *QUICK)
    assert error(result) == (
        f"Error: run folder '{other}' is not empty and was not created by bntrain (it has no "
        f".bntrain-run file); bntrain never deletes it: set output.dir to a new folder, or "
        f"empty it yourself"
    )
    assert (other / "holiday.jpg").read_bytes() == b"\xff\xd8"


@pytest.mark.parametrize("which", ["current", "home"])
def test_force_never_deletes_the_current_or_home_folder(project, tmp_path, monkeypatch, which):
    folder = tmp_path / which
    folder.mkdir()
    (folder / MARKER).write_text("{}")  # even one that looks like a run folder
    (folder / "notes.txt").write_text("mine")
    if which == "current":
        monkeypatch.chdir(folder)
    else:
        monkeypatch.setenv("HOME", str(folder))
    result = run("fit", project / "tiny.yaml", "--set", f"output.dir={folder}", "--force", *QUICK)
    assert error(result).startswith(f"Error: run folder '{folder}' is the {which} folder; ")
    assert (folder / "notes.txt").read_text() == "mine"


def test_force_replaces_a_run_folder_bntrain_created(tmp_path):
    folder = tmp_path / "run"
    with new_run_folder(folder):
        (folder / "last.h5").write_bytes(b"old")
        (folder / "sub").mkdir()
        (folder / "sub" / "x").write_text("old")
    with pytest.raises(UsageError, match="already exists; pass --force to replace it"):
        with new_run_folder(folder):
            pass
    assert (folder / "last.h5").read_bytes() == b"old"
    with new_run_folder(folder, force=True):
        assert sorted(p.name for p in folder.iterdir()) == [MARKER, LOCK, PID]


def test_output_dir_that_is_a_file_is_refused(project):
    (project / "taken").write_text("x")
    result = run("fit", project / "tiny.yaml", "--set", "output.dir=taken", *QUICK)
    assert error(result) == (
        f"Error: run folder '{project / 'taken'}' is a file, not a folder; choose another output.dir"
    )


# --------------------------------------------------------------------------- a NaN before the first checkpoint (A.7)


def test_a_run_stopped_before_its_first_checkpoint_is_replaced_without_force(project, monkeypatch):
    real = T.build_train_step

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)
        inner = step.fn
        step.fn = lambda x, y: (np.float32("nan"), inner(x, y)[1])
        return step

    cfg = load_config(
        project / "tiny.yaml", ["training.epochs=1", "training.recompute_stats=false"]
    )
    with monkeypatch.context() as m:
        m.setattr(T, "build_train_step", poisoned)
        with pytest.raises(TrainingError, match="no checkpoint was written"):
            fit(cfg)
    run_dir = project / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == [MARKER, LOCK, "config.yaml"]
    result = fit(cfg)  # no --force needed
    assert result.epochs_done == 1 and (run_dir / "last.h5").exists()


# --------------------------------------------------------------------------- the lock (A.3)


def _lock_is_held(folder: Path) -> bool:
    with open(folder / LOCK) as fh:  # a second open file: flock conflicts even in one process
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_fit_holds_the_lock_while_it_trains(project):
    seen = []

    def log(line):
        if line.startswith("epoch 1/"):
            run_dir = project / "run"
            seen.append((_lock_is_held(run_dir), (run_dir / PID).read_text().strip()))

    cfg = load_config(
        project / "tiny.yaml", ["training.epochs=1", "training.recompute_stats=false"]
    )
    fit(cfg, log=log, after=lambda result: seen.append((_lock_is_held(result.run_dir), "after")))
    assert seen == [(True, str(os.getpid())), (True, "after")]
    assert not _lock_is_held(project / "run") and not (project / "run" / PID).exists()


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A finished 1-epoch run (copied by the tests that change it)."""
    folder = tmp_path_factory.mktemp("one_epoch")
    (folder / "tiny.yaml").write_text(TINY_MLP)
    fit(load_config(folder / "tiny.yaml", ["training.epochs=1", "training.recompute_stats=false"]))
    return folder


def test_a_second_process_gets_in_use(one_epoch, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(one_epoch, project)
    run_dir = project / "run"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from bntrain.rundir import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True); sys.stdin.read()",
            str(run_dir),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        expected = f"Error: run folder {run_dir} is in use (pid {holder.pid})"
        cfg = project / "tiny.yaml"
        assert error(run("fit", cfg, "--force", *QUICK)) == expected
        assert (
            error(run("fit", cfg, *QUICK[:-1], "--set=training.epochs=2", "--resume", run_dir))
            == expected
        )
        last = run_dir / "last.h5"
        assert error(run("recompute-stats", last, "--quiet")) == expected  # in place
        after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
        assert {k: v for k, v in after.items() if k != PID} == before
        out = tmp_path / "elsewhere.h5"  # a new file outside the run folder needs no lock
        assert run("recompute-stats", last, "--output", out, "--quiet").exit_code == 0
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with run_lock(run_dir):  # released when the other process ends
        assert _lock_is_held(run_dir)


# --------------------------------------------------------------------------- resume with a bad metrics.csv (A.6)


@pytest.mark.parametrize(
    "content, why",
    [
        ("", "'{path}' is empty"),
        ("\x00\xff garbage", "'{path}' does not start with bntrain's header"),
        (",".join(T.METRICS_COLUMNS) + "\nnot,a,row\n", "{path}:2: not a row bntrain wrote"),
    ],
)
def test_resume_with_a_bad_metrics_file_is_one_error(one_epoch, tmp_path, content, why):
    shutil.copytree(one_epoch, tmp_path / "p")
    cfg, run_dir = tmp_path / "p" / "tiny.yaml", tmp_path / "p" / "run"
    path = run_dir / "metrics.csv"
    path.write_text(content)
    result = run("fit", cfg, *QUICK[:-1], "--set=training.epochs=2", "--resume", run_dir)
    assert error(result) == (
        f"Error: --resume: {why.format(path=path)}; move it away to continue with a new metrics.csv"
    )
    assert path.read_text() == content

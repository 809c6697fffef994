"""Run folders: create one, replace only what bntrain made, and lock it while in use.

A run folder that bntrain creates holds a marker file, :data:`MARKER`
(``.bntrain-run``), written before anything else.  ``fit --force`` replaces
only a folder that holds the marker, or an empty one, and never a folder that
holds the config, the current folder or the home folder (nor one of their
ancestors, ``/`` included).  A folder in which a run stopped before its first
checkpoint (only ``config.yaml`` and the marker) is replaced without
``--force``.

While a command uses a run folder it holds an exclusive lock on
``<folder>/.bntrain.lock`` (the ``filelock`` package; released when the
process exits, however it exits); the holder's pid is in
``<folder>/.bntrain.pid`` while it holds the lock.  See ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import filelock

from . import __version__
from .checkpoint import TMP_PREFIX
from .errors import UsageError

__all__ = ["MARKER", "LOCK", "PID", "run_lock", "new_run_folder", "checked_folder"]

MARKER = ".bntrain-run"
LOCK = ".bntrain.lock"
PID = ".bntrain.pid"

#: What a run folder holds before its first checkpoint (besides the lock files).
_PRELUDE = {MARKER, "config.yaml"}

#: Locks this process holds: resolved folder -> [FileLock, depth], so that nested use is allowed.
_held: dict[Path, list] = {}


def checked_folder(path: str | os.PathLike, what: str = "run folder") -> Path:
    """``path`` as a Path, refused in one line if the OS cannot use it as a folder name.

    Raises
    ------
    UsageError
        A NUL byte, a name too long for the file system, or an existing file.
    """
    text = os.fspath(path)
    if "\0" in text:
        raise UsageError(f"{what} {text!r} contains a NUL byte; choose another output.dir")
    folder = Path(text)
    try:
        folder.exists()
    except OSError as exc:
        raise UsageError(
            f"{what} '{folder}' cannot be used: {exc.strerror or exc}; choose another output.dir"
        ) from None
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what} '{folder}' is a file, not a folder; choose another output.dir")
    return folder


def _holder(folder: Path) -> str:
    try:
        return (folder / PID).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock of the run folder ``folder`` (which must exist).

    Nested use in one process is allowed (the lock is taken once).  The lock
    file stays in the folder after release, so that every process locks the
    same file.

    Raises
    ------
    UsageError
        ``run folder X is in use (pid N)`` if another process holds it, or
        the folder cannot hold the lock file.
    """
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    lock = filelock.FileLock(folder / LOCK, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise UsageError(f"run folder {folder} is in use (pid {_holder(folder)})") from None
    except OSError as exc:
        raise UsageError(f"cannot lock run folder '{folder}': {exc.strerror or exc}") from None
    _held[key] = [lock, 1]
    try:
        try:
            (folder / PID).write_text(f"{os.getpid()}\n")
        except OSError as exc:
            raise UsageError(
                f"cannot write to run folder '{folder}': {exc.strerror or exc}"
            ) from None
        yield folder
    finally:
        del _held[key]
        (folder / PID).unlink(missing_ok=True)
        lock.release()


def _protected(folder: Path, keep: Iterable[Path]) -> str | None:
    """Why ``folder`` must never be replaced, or None."""
    here = folder.resolve()
    named = [(Path(p), "the config's folder") for p in keep]
    named += [(Path.cwd(), "the current folder"), (Path.home(), "the home folder")]
    for other, noun in named:
        other = other.resolve()
        if here == other:
            return f"is {noun}"
        if here in other.parents:
            return f"contains {noun} ({other})"
    return None


def _is_lock_file(entry: Path) -> bool:
    return entry.name in (LOCK, PID)


def _contents(folder: Path) -> list[Path]:
    """What a replace would delete (everything but the lock files)."""
    return sorted(p for p in folder.iterdir() if not _is_lock_file(p))


def _before_first_checkpoint(entries: list[Path]) -> bool:
    return all(
        p.name in _PRELUDE or (p.name.startswith(TMP_PREFIX) and p.name.endswith(".h5"))
        for p in entries
    )


@contextmanager
def new_run_folder(
    path: str | os.PathLike, *, force: bool = False, keep: Iterable[Path] = ()
) -> Iterator[Path]:
    """Create (or replace) the run folder ``path``, hold its lock, and mark it as bntrain's.

    Parameters
    ----------
    path : path-like
        The run folder.
    force : bool
        Replace a run folder bntrain created (``fit --force``).
    keep : iterable of Path
        Folders that must survive (the config's folder); ``path`` may be none of
        them nor contain one.  The current and home folders are always kept.

    Raises
    ------
    UsageError
        Naming the folder and why it is not replaced.
    """
    folder = checked_folder(path)
    keep = list(keep)
    try:
        entries = _contents(folder) if folder.exists() else []
        if entries:
            why = _protected(folder, keep)
            if why is not None:
                raise UsageError(
                    f"run folder '{folder}' {why}; bntrain never replaces it: set output.dir "
                    f"to a folder of its own (e.g. runs/<name>)"
                )
            if not (folder / MARKER).is_file():
                raise UsageError(
                    f"run folder '{folder}' is not empty and was not created by bntrain (it has "
                    f"no {MARKER} file); bntrain never deletes it: set output.dir to a new folder, "
                    f"or empty it yourself"
                )
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create run folder '{folder}': {exc.strerror or exc}") from None
    with run_lock(folder):
        try:
            entries = _contents(folder)  # again: another process may have written meanwhile
            if entries and not force and not _before_first_checkpoint(entries):
                raise UsageError(
                    f"run folder '{folder}' already exists; pass --force to replace it, "
                    f"or --resume {folder} to continue it"
                )
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            marker = {"bntrain": __version__, "created": datetime.now(UTC).isoformat()}
            (folder / MARKER).write_text(json.dumps(marker) + "\n")
        except OSError as exc:
            raise UsageError(
                f"cannot prepare run folder '{folder}': {exc.strerror or exc}"
            ) from None
        yield folder

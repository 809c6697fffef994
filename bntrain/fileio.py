"""Atomic file replacement: the one way bntrain writes a file that must never be half-written.

:func:`atomic_path` writes the complete file under a temporary name in the
target's folder (``.tmp-<name>.<random>.tmp``), flushes it to the disk
(``fsync``), renames it over the target (``os.replace``, atomic on POSIX) and
fsyncs the folder, so that after a crash or a kill the target is either the old
file or the new one, never a mix.  The temporary file is removed when the write
fails; one left by a killed process is recognised by :func:`is_temp_name` and
deleted by :func:`clean_temp_files`.

A new file gets the mode a plain ``open(path, "w")`` would give it under the
current umask (``0o666 & ~umask``, not ``mkstemp``'s ``0o600``); a replaced file
keeps its permission bits, as it would with ``open``.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TMP_PREFIX",
    "TMP_SUFFIX",
    "atomic_path",
    "atomic_open",
    "atomic_write_text",
    "is_temp_name",
    "clean_temp_files",
]

#: Every temporary name starts with this (``read_checkpoint`` refuses such names).
TMP_PREFIX = ".tmp-"
#: ... and ends with this.
TMP_SUFFIX = ".tmp"


def _folder_of(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _create_temp(path: Path) -> Path:
    """Create an empty, new temporary file next to ``path`` (mode ``0o666 & ~umask``)."""
    folder = _folder_of(path)
    while True:
        tmp = folder / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; replace ``path`` on success.

    The body writes the complete file at the yielded path (by any means: h5py,
    NumPy, ``open``) and closes it; it may also read it back to check it.  When
    the body returns, the file is fsynced, renamed over ``path``, and the folder
    fsynced.  When the body (or any step) raises, the temporary file is removed,
    ``path`` is left as it was, and the exception propagates (an
    :class:`OSError` for a failed disk operation).

    Parameters
    ----------
    path : path-like
        The file to create or replace.

    Yields
    ------
    Path
        An empty file in the same folder, named ``.tmp-<name>.<random>.tmp``.

    Examples
    --------
    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.json") as tmp:
    ...     _ = tmp.write_text(json.dumps({"x": 1}))
    >>> json.loads((folder / "a.json").read_text())
    {'x': 1}
    >>> sorted(p.name for p in folder.iterdir())
    ['a.json']
    """
    path = Path(path)
    tmp = _create_temp(path)
    try:
        yield tmp
        try:
            old = path.stat()
        except FileNotFoundError:
            old = None
        if old is not None and stat.S_ISREG(old.st_mode):
            os.chmod(tmp, stat.S_IMODE(old.st_mode))  # a replaced file keeps its mode
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(_folder_of(path), directory=True)


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a file object whose content replaces ``path`` atomically when the block ends.

    Parameters
    ----------
    path : path-like
        The file to create or replace.
    mode : {'w', 'wb'}
        Text or binary.
    **kwargs
        Passed to :func:`open` (``newline``, ``encoding``...).

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "m.csv"
    >>> with atomic_open(target, newline="") as fh:
    ...     _ = fh.write("epoch,loss\\n1,0.5\\n")
    >>> target.read_text().splitlines()
    ['epoch,loss', '1,0.5']
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()


def atomic_write_text(path: str | os.PathLike[str], text: str, **kwargs: Any) -> None:
    """Replace ``path`` atomically with ``text`` (see :func:`atomic_path`)."""
    with atomic_open(path, "w", **kwargs) as fh:
        fh.write(text)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file name that :func:`atomic_path` creates.

    Also true for the ``.tmp-<name>.<random>.h5`` names of earlier bntrain
    versions, so that their leftovers are cleaned too.

    Examples
    --------
    >>> is_temp_name(".tmp-last.h5.1a2b3c4d.tmp"), is_temp_name(".tmp-notes.txt")
    (True, False)
    """
    return name.startswith(TMP_PREFIX) and name.endswith((TMP_SUFFIX, ".h5"))


def clean_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in ``folder``.

    Only names for which :func:`is_temp_name` is true are touched.  Call it when
    nothing else writes in ``folder`` (fit and resume do, before training
    starts).

    Parameters
    ----------
    folder : path-like
        A run folder (a missing folder gives an empty list).

    Returns
    -------
    list of Path
        The files deleted.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        if is_temp_name(entry.name) and entry.is_file():
            try:
                entry.unlink()
            except FileNotFoundError:
                continue
            removed.append(entry)
    return removed

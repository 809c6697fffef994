"""``bntrain data list`` and ``bntrain data fetch``: the download cache of the standard datasets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.remote import cached_path, data_dir, sha256_of
from ..data.standard import STANDARD, STANDARD_SPLITS, converted_path, prepare
from ..errors import UsageError

__all__ = ["CachedFile", "data_list_command", "data_fetch_command"]


@dataclass
class CachedFile:
    """One row of ``bntrain data list``.

    ``state`` is ``'ok'`` (present; a download whose SHA-256 matches, or a
    converted file), ``'missing'``, or ``'bad checksum'`` (present but damaged:
    the next use downloads it again).
    """

    dataset: str
    path: Path
    size: int | None
    state: str


def _row(dataset: str, path: Path, expected_sha256: str | None) -> CachedFile:
    if not path.is_file():
        return CachedFile(dataset, path, None, "missing")
    state = "ok"
    if expected_sha256 is not None and sha256_of(path) != expected_sha256:
        state = "bad checksum"
    return CachedFile(dataset, path, path.stat().st_size, state)


def data_list_command() -> tuple[Path, list[CachedFile]]:
    """The cache folder and, for every standard dataset, its downloads and converted files."""
    rows = []
    for name, spec in STANDARD.items():
        rows += [_row(name, cached_path(f), f.sha256) for f in spec.files]
        rows += [_row(name, converted_path(name, s), None) for s in STANDARD_SPLITS]
    return data_dir(), rows


def data_fetch_command(name: str, *, progress: bool = False) -> list[Path]:
    """Download and convert the standard dataset ``name``; return its converted files.

    Raises
    ------
    UsageError
        An unknown name (exit 2).
    bntrain.errors.DataError
        A download failed (exit 2; the message says where to put the file by hand).
    """
    if name not in STANDARD:
        raise UsageError(f"unknown dataset {name!r} (available: {', '.join(STANDARD)})")
    return prepare(name, where=f"data fetch {name}", progress=progress)

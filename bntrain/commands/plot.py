"""``bntrain plot``: compare the learning curves of run folders in one picture."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from ..plots import plot_learning_curves, read_metrics

__all__ = ["plot_command"]


def _labels(runs: Sequence[Path]) -> list[str]:
    """Folder names, with the parent added where two runs share a name."""
    names = [r.name or str(r) for r in runs]
    return [
        f"{r.parent.name}/{n}" if names.count(n) > 1 and r.parent.name else n
        for r, n in zip(runs, names, strict=True)
    ]


def plot_command(runs: Sequence, out, metric: str | None = None) -> Path:
    """Draw the learning curves of ``runs`` (run folders) into the PNG ``out``.

    Raises
    ------
    UsageError
        ``out`` is not a .png file, or an unknown ``metric``.
    DataError
        A folder without a readable ``metrics.csv``.
    """
    if Path(out).suffix.lower() != ".png":
        raise UsageError(f"-o: '{out}' must be a .png file")
    paths = [Path(r) for r in runs]
    data = [read_metrics(p) for p in paths]
    return plot_learning_curves(list(zip(_labels(paths), data, strict=True)), out, metric=metric)

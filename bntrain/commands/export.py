"""``bntrain export``: write a checkpoint's network for deployment (ONNX or NPZ)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import read_checkpoint
from ..errors import UsageError
from ..export import EXPORT_FORMATS, fold_batch_norm, graph_from_checkpoint, write_npz, write_onnx

__all__ = ["ExportResult", "export_command"]


@dataclass
class ExportResult:
    """What :func:`export_command` wrote."""

    path: Path
    format: str
    stats: str
    folded: list[str]
    n_nodes: int


def export_command(
    checkpoint, out, *, fmt: str = "onnx", stats: str | None = None, fold_bn: bool = True
) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (see :mod:`bntrain.export`).

    Raises
    ------
    UsageError
        An unknown format or statistics choice, or an output path that is the checkpoint.
    CheckpointError
        An unreadable checkpoint, or a layer the exporter cannot write (named).
    """
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
    out, src = Path(out), Path(checkpoint)
    if out.exists() and src.exists() and os.path.samefile(out, src):
        raise UsageError(f"-o: '{out}' is the checkpoint being exported; choose another path")
    graph = graph_from_checkpoint(read_checkpoint(src), stats)
    folded = fold_batch_norm(graph) if fold_bn else []
    (write_onnx if fmt == "onnx" else write_npz)(graph, out)
    return ExportResult(out, fmt, graph.stats, folded, len(graph.nodes))

"""Fine-tuning: start a network from another run's checkpoint (``model.init_from``).

Parameters are matched by layer name and parameter name (``fc1/W``); each is
*loaded* (same name and shape), *new* (not in the checkpoint: keeps its
initialization) or *skipped* (another shape, with ``model.skip_mismatched:
true``; without it a shape mismatch is an error).  Layers of the checkpoint
that this network lacks are listed as unused.  Where the checkpoint holds
recomputed whole-set statistics (``/bn_stats``), a batch-norm layer's ``mean``
and ``inv_std`` come from them rather than from its moving averages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bnstats import load_population
from .checkpoint import _param_short_name, read_checkpoint
from .errors import CheckpointError
from .nn import layers as L

__all__ = ["InitReport", "init_from_checkpoint"]


@dataclass
class InitReport:
    """What :func:`init_from_checkpoint` did, one ``(path, shape text)`` pair per parameter."""

    loaded: list = field(default_factory=list)
    new: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    population: list = field(default_factory=list)

    def lines(self, path) -> list[str]:
        """The report as log lines."""
        out = [
            f"init_from {path}: {len(self.loaded)} loaded, {len(self.new)} new, "
            f"{len(self.skipped)} skipped"
        ]
        for what in ("loaded", "new", "skipped", "unused"):
            out += [f"  {what} {name} {shape}" for name, shape in getattr(self, what)]
        if self.population:
            out.append(f"  batch-norm statistics from /bn_stats: {', '.join(self.population)}")
        return out


def init_from_checkpoint(network, path: Path, skip_mismatched: bool = False) -> InitReport:
    """Load the parameters of the checkpoint at ``path`` into ``network`` by name.

    Raises
    ------
    CheckpointError
        If the file is no checkpoint, a value is not finite, or (unless
        ``skip_mismatched``) a parameter has another shape.
    """
    ckpt = read_checkpoint(path)
    report = InitReport()
    ours = set()
    for layer in network.layers:
        saved = ckpt.params.get(layer.name, {})
        for param in layer.params:
            short = _param_short_name(layer, param)
            key = f"{layer.name}/{short}"
            ours.add(key)
            shape = param.get_value(borrow=True).shape
            if short not in saved:
                report.new.append((key, list(shape)))
                continue
            value = np.asarray(saved[short])
            if value.shape != shape:
                text = f"{list(value.shape)} -> {list(shape)}"
                if not skip_mismatched:
                    raise CheckpointError(
                        f"model.init_from: '{path}' /model/layers/{key} has shape "
                        f"{list(value.shape)} but this model's is {list(shape)}; set "
                        f"model.skip_mismatched: true to keep this model's initialization"
                    )
                report.skipped.append((key, text))
                continue
            if not np.all(np.isfinite(value)):
                raise CheckpointError(
                    f"model.init_from: '{path}' /model/layers/{key} holds non-finite values"
                )
            param.set_value(value.astype(param.dtype))
            report.loaded.append((key, list(shape)))
        if isinstance(layer, L.BatchNormLayer) and layer.name in (ckpt.bn_stats or {}):
            stats = ckpt.bn_stats[layer.name]
            if np.shape(stats["mean"]) == layer.mean.get_value(borrow=True).shape:
                load_population(layer, stats["mean"], stats["var"])
                report.population.append(layer.name)
    for name, saved in ckpt.params.items():
        for short, value in saved.items():
            if f"{name}/{short}" not in ours:
                report.unused.append((f"{name}/{short}", list(np.shape(value))))
    return report

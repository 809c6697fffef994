"""Which batch-normalization layer a config asks for, and the renorm ramp.

``model.batch_norm.kind`` picks :class:`~bntrain.nn.layers.BatchNormLayer`
(``bn``) or :class:`~bntrain.nn.layers.BatchReNormLayer` (``renorm``);
``virtual_batch_size`` picks :class:`~bntrain.nn.layers.GhostBatchNormLayer`.
Batch renorm's bounds ramp linearly with the optimizer step (the paper keeps
``r_max = 1, d_max = 0`` at first and relaxes them gradually):
``r_max(t) = 1 + (r_max - 1) * min(t / warmup_steps, 1)`` and
``d_max(t) = d_max * min(t / warmup_steps, 1)``, where ``t`` is the number of
optimizer steps done before the step; ``warmup_steps: 0`` uses the set values
from the first step.  Every renorm layer of a network shares the two bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytensor

from .nn import layers as L

__all__ = ["RenormRamp", "ramp_values", "normalization_kind"]


def ramp_values(step: int, r_max: float, d_max: float, warmup_steps: int) -> tuple[float, float]:
    """``(r_max, d_max)`` in force for the optimizer step after ``step`` steps."""
    frac = 1.0 if warmup_steps == 0 else min(step / warmup_steps, 1.0)
    return 1.0 + (r_max - 1.0) * frac, d_max * frac


@dataclass
class RenormRamp:
    """The shared ``r_max``/``d_max`` variables of a network's renorm layers and their ramp."""

    r_max: float
    d_max: float
    warmup_steps: int

    def __post_init__(self) -> None:
        r, d = ramp_values(0, self.r_max, self.d_max, self.warmup_steps)
        self.r_var = pytensor.shared(np.float32(r), name="renorm_r_max")
        self.d_var = pytensor.shared(np.float32(d), name="renorm_d_max")

    def set_step(self, step: int) -> None:
        """Set the bounds for the step after ``step`` optimizer steps."""
        r, d = ramp_values(step, self.r_max, self.d_max, self.warmup_steps)
        self.r_var.set_value(np.float32(r))
        self.d_var.set_value(np.float32(d))


def normalization_kind(bn_cfg, ramp: RenormRamp | None) -> tuple[type, dict]:
    """The batch-norm layer class ``model.batch_norm`` asks for and its extra arguments."""
    if bn_cfg.kind == "renorm":
        return L.BatchReNormLayer, {"r_max": ramp.r_var, "d_max": ramp.d_var}
    if bn_cfg.virtual_batch_size is not None:
        return L.GhostBatchNormLayer, {"virtual_batch_size": bn_cfg.virtual_batch_size}
    return L.BatchNormLayer, {}

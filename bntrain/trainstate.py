"""Where a training run is: :class:`TrainState`, with one way to save it and one way back.

:meth:`TrainState.to_checkpoint` writes a whole checkpoint (network, optimizer
slots, learning rate, dropout generators, preprocessing, counters, best metric,
the epoch's running sums); :meth:`TrainState.from_checkpoint` puts all of it
back.  The layout is in ``docs/checkpoint.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import Checkpoint, load_params, save_checkpoint
from .data import Preprocessor
from .errors import CheckpointError
from .graphs import TrainStep
from .model import Network

__all__ = ["Best", "EpochMeter", "TrainState"]


@dataclass
class Best:
    """The best value of ``metric`` so far (higher is better for ``*_acc``) and its epoch."""

    metric: str
    value: float | None = None
    epoch: int | None = None

    def update(self, value: float | None, epoch: int) -> bool:
        """Record ``value`` of ``epoch`` if it is finite and improves; return whether it did."""
        if value is None or not math.isfinite(value):
            return False
        if self.value is not None:
            higher = self.metric.endswith("acc")
            if not (value > self.value if higher else value < self.value):
                return False
        self.value, self.epoch = value, epoch
        return True


@dataclass
class EpochMeter:
    """The running training loss and accuracy of the current epoch (the one place they add up)."""

    loss_sum: float = 0.0
    acc_sum: float = 0.0
    seen: int = 0

    def add(self, loss: float, acc: float, n: int) -> None:
        """Count a finite step of ``n`` examples with mean ``loss`` and ``acc``."""
        self.loss_sum += loss * n
        self.acc_sum += acc * n
        self.seen += n

    def means(self) -> tuple[float, float]:
        """Mean loss and accuracy over the examples seen (0 before any)."""
        n = max(self.seen, 1)
        return self.loss_sum / n, self.acc_sum / n


@dataclass
class TrainState:
    """Where a run is: everything ``last.h5`` holds, and nothing else.

    The counters and metric state are fields; the parameters and batch-norm
    averages (``network``), the optimizer slots, learning rate and dropout
    generators (``step_fn``) and the preprocessing are reached through the
    objects training updates in place.
    """

    network: Network
    step_fn: TrainStep
    preprocess: Preprocessor
    optimizer: str
    config_text: str
    best: Best
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps done
    nan_streak: int = 0  # non-finite losses in a row
    meter: EpochMeter = field(default_factory=EpochMeter)

    def advance(self, stepped: bool = True) -> None:
        """Count a (micro-)batch trained; ``stepped``: it closed an optimizer step."""
        self.step += int(stepped)
        self.batch += 1

    def account(self, loss: float, acc: float, n: int) -> bool:
        """Add a batch's results to the epoch's sums; False (counting the streak) if not finite.

        Called in the order the batches ran, possibly a few batches after
        :meth:`advance` (the loop reads the results from the device in bunches).
        """
        if not math.isfinite(loss):
            self.nan_streak += 1
            return False
        self.nan_streak = 0
        self.meter.add(loss, acc, n)
        return True

    def end_epoch(self, value: float | None) -> bool:
        """Close the epoch whose best-metric value is ``value``; return whether it is the best."""
        self.epoch += 1
        self.batch = 0
        self.meter = EpochMeter()
        return self.best.update(value, self.epoch)

    @property
    def lr(self) -> float:
        """The learning rate of the last optimizer step done (of the first, before any)."""
        return self.step_fn.lr_at(self.step - 1)

    def to_checkpoint(self, path: Path) -> None:
        """Write this state (and the network, optimizer and generators) to ``path`` atomically."""
        lr = self.lr
        save_checkpoint(
            path,
            layers=self.network.layers,
            config_text=self.config_text,
            epoch=self.epoch,
            step=self.step,
            optimizer_state={k: v.get_value() for k, v in self.step_fn.optimizer_state.items()},
            optimizer_attrs={"name": self.optimizer, "lr": lr, "step": self.step},
            rng_states={
                layer.name: self.step_fn.rng_state(layer) for layer in self.network.dropout_layers
            },
            train_state={
                "epoch": self.epoch,
                "batch": self.batch,
                "step": self.step,
                "best_metric": self.best.metric,
                "best_value": self.best.value,
                "best_epoch": self.best.epoch,
                "lr": lr,
                "nan_streak": self.nan_streak,
                "loss_sum": self.meter.loss_sum,
                "acc_sum": self.meter.acc_sum,
                "seen": self.meter.seen,
            },
            preprocess_state=self.preprocess.state(),
        )

    @classmethod
    def from_checkpoint(
        cls, ckpt: Checkpoint, *, network, step_fn, optimizer: str, config_text: str, best: Best
    ) -> TrainState:
        """Put everything :meth:`to_checkpoint` wrote back (sections checked by _check_sections).

        Raises
        ------
        CheckpointError
            Naming the missing or mis-shaped part.
        """
        where = f"--resume: '{ckpt.path}'"
        load_params(ckpt, network.layers)
        for name, var in step_fn.optimizer_state.items():
            if name not in ckpt.optimizer:
                raise CheckpointError(f"{where} lacks optimizer state /optimizer/{name}")
            value = ckpt.optimizer[name]
            if value.shape != var.get_value(borrow=True).shape:
                raise CheckpointError(f"{where}: /optimizer/{name} has shape {list(value.shape)}")
            var.set_value(value.astype(var.dtype))
        for layer in network.dropout_layers:
            if layer.name not in ckpt.rng:
                raise CheckpointError(f"{where} lacks /rng/{layer.name}")
            try:
                step_fn.set_rng_state(layer, ckpt.rng[layer.name])
            except ValueError as exc:
                raise CheckpointError(f"{where}: {exc}") from None
        try:
            preprocess = Preprocessor.from_state(ckpt.preprocess)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{where}: /preprocess is damaged ({exc})") from None
        ts = ckpt.train_state
        state = cls(network, step_fn, preprocess, optimizer, config_text, best)
        state.epoch, state.step = int(ts["epoch"]), int(ts["step"])
        step_fn.set_step(state.step)
        state.batch = int(ts.get("batch", 0) or 0)
        state.nan_streak = int(ts.get("nan_streak", 0) or 0)
        if state.batch:
            for key in ("loss_sum", "acc_sum", "seen"):
                if key not in ts:
                    raise CheckpointError(
                        f"{where} stopped inside an epoch but lacks /train_state {key}"
                    )
            state.meter = EpochMeter(float(ts["loss_sum"]), float(ts["acc_sum"]), int(ts["seen"]))
        if ts.get("best_value", "") != "":
            best.value, best.epoch = float(ts["best_value"]), int(ts["best_epoch"])
        return state

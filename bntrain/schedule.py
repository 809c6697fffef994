"""Learning-rate schedules, as a pure function of the training step."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["learning_rate", "lr_table", "steps_per_epoch"]


def learning_rate(
    schedule, base_lr: float, step: int, steps_per_epoch: int, total_epochs: int
) -> float:
    """Return the learning rate for training step ``step`` (0-based).

    Parameters
    ----------
    schedule : bntrain.config.ScheduleConfig
        ``name`` is ``constant``, ``step`` (times ``gamma`` every ``step_size``
        epochs), ``cosine`` (from ``base_lr`` down to ``min_lr`` at the last
        step) or ``multistep`` (times ``gamma`` from each of ``milestones`` on, counted
        in steps or epochs as ``unit`` says); ``warmup_epochs`` first ramps linearly
        up to ``base_lr``.
    base_lr : float
        The optimizer's ``lr``.
    step, steps_per_epoch, total_epochs : int
        The position in training.
    """
    warmup_steps = schedule.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    epoch_pos = step / steps_per_epoch
    if schedule.name == "constant":
        return base_lr
    if schedule.name == "step":
        return base_lr * schedule.gamma ** math.floor(epoch_pos / schedule.step_size)
    if schedule.name == "cosine":
        span = max(total_epochs * steps_per_epoch - warmup_steps, 1)
        t = min((step - warmup_steps) / span, 1.0)
        return schedule.min_lr + (base_lr - schedule.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule.name == "multistep":
        where = step if schedule.unit == "steps" else epoch_pos
        return base_lr * schedule.gamma ** sum(where >= m for m in schedule.milestones)
    raise ValueError(f"unknown schedule {schedule.name!r}")


def steps_per_epoch(n_batches: int, accumulate: int = 1) -> int:
    """Optimizer steps in an epoch of ``n_batches``: cycles of ``accumulate`` micro-batches."""
    return math.ceil(n_batches / accumulate)


def lr_table(training, steps_per_epoch: int) -> np.ndarray:
    """The float32 learning rate of every optimizer step of a run, in order.

    ``training`` is the config's ``training`` section.  Where the rate never
    changes, the table holds the one value (a step past the end of a table uses
    its last value).
    """
    steps = max(training.epochs * steps_per_epoch, 1)
    rates = np.array(
        [
            learning_rate(
                training.schedule, training.optimizer.lr, s, steps_per_epoch, training.epochs
            )
            for s in range(steps)
        ],
        dtype=np.float32,
    )
    return rates[:1] if (rates == rates[0]).all() else rates

"""Learning-rate schedules, as a pure function of the training step."""

from __future__ import annotations

import math

__all__ = ["learning_rate"]


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

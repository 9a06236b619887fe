"""The learning-rate schedule: linear warm-up, then cosine, linear or no decay to a floor.

A pure function of the step (as in nanoGPT) rather than a stateful torch scheduler: the step number is then the
whole scheduler state, and a resumed run cannot drift from an uninterrupted one.
"""

from __future__ import annotations

import math

from sweep_engine.errors import ConfigError
from sweep_engine.spec import ScheduleSpec

KINDS = ("cosine", "linear", "constant")


def check_schedule(schedule: ScheduleSpec) -> None:
    """Raise ConfigError unless the schedule's kind, warm-up and floor are valid."""
    problems = []
    if schedule.kind not in KINDS:
        problems.append(f"`schedule.kind` must be one of {KINDS}, but got {schedule.kind!r}")
    if schedule.warmup_steps < 0:
        problems.append(f"`schedule.warmup_steps >= 0` must hold, but got {schedule.warmup_steps}")
    if not 0.0 <= schedule.decay_floor <= 1.0:
        problems.append(f"`0 <= schedule.decay_floor <= 1` must hold, but got {schedule.decay_floor}")
    if problems:
        raise ConfigError("; ".join(problems))


def lr_at(step: int, peak_lr: float, schedule: ScheduleSpec, max_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based).

    Warm-up rises linearly to the peak over `warmup_steps` steps (step 0 already gets peak / (warmup + 1), so no
    step is wasted at LR 0); the decay then runs from the end of warm-up to `max_steps`, the step at the token
    cap, where it reaches `decay_floor` x peak. A run that stops early (overfitting) never reaches the floor.

    Args:
        step: Optimizer step, counted from 0.
        peak_lr: The peak learning rate (the swept `lr`).
        schedule: Kind, warm-up steps and floor.
        max_steps: Steps to the token cap: the decay horizon.

    Returns:
        The learning rate.
    """
    warmup = schedule.warmup_steps
    if step < warmup:
        return peak_lr * (step + 1) / (warmup + 1)
    if schedule.kind == "constant":
        return peak_lr
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule.kind == "cosine" else 1.0 - progress
    floor = schedule.decay_floor
    return peak_lr * (floor + (1.0 - floor) * shape)

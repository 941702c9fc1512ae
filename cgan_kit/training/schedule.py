"""Learning-rate schedules as pure functions of the step, so resuming needs no scheduler state."""

from __future__ import annotations

import math


def lr_factor(schedule: str, step: int, total: int, decay_start: float = 0.5) -> float:
    """The multiplier of the base learning rate for the update made at ``step`` (0-based).

    - "constant": 1 throughout.
    - "linear_decay": 1 until ``decay_start * total`` steps, then linearly down to 0 at ``total``
      (the paper's 100 epochs constant + 100 epochs decaying).
    - "cosine": from 1 to 0 along half a cosine over the whole run.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear_decay":
        start = decay_start * total
        if step < start:
            return 1.0
        return max(0.0, 1.0 - (step - start) / max(1.0, total - start))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    raise ValueError(f"unknown schedule {schedule!r}")

"""The learning-rate schedule: linear warmup, then cosine decay to a floor at the last step; and
fitting the number of epochs to a wall-clock budget (``train.fit_to_budget``).

A capped run that simply stops at ``train.max_minutes`` ends with the learning rate still high
(a 7-epoch cosine cut after 4 epochs never anneals). With ``train.fit_to_budget`` the schedule's
length is re-planned every FIT_EVERY_STEPS steps from the time left and the recent pace, so the
learning rate reaches its floor where the budget ends (mid-epoch, most often). The plan depends
on the machine's measured speed, so such a run is reproducible only as far as its speed is.

"""
from __future__ import annotations

import math

FIT_EVERY_STEPS = 10         # fit_to_budget re-plans the schedule's end this often
STEP_EMA = 0.05              # weight of the newest step in the pace (about the last 20 steps)


def lr_lambda(step: int, warmup: int, total: int, final_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``final_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class CosineSchedule:
    """``lr_lambda`` as a callable object for ``LambdaLR``: its ``total`` can be shortened during
    training, and ``LambdaLR.state_dict`` saves it (resume continues the same schedule)."""

    def __init__(self, warmup: int, total: int, final_ratio: float):
        self.warmup, self.total, self.final_ratio = warmup, total, final_ratio

    def __call__(self, step: int) -> float:
        return lr_lambda(step, self.warmup, self.total, self.final_ratio)


def fitted_total(full_steps: int, done: int, left_s: float, step_s: float) -> int:
    """The schedule's length when ``done`` steps are done, ``left_s`` of the budget is left and a
    step takes ``step_s``: never past ``full_steps`` (the configured epochs)."""
    return min(full_steps, done + max(0, int(left_s / max(step_s, 1e-9))))

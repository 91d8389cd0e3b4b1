"""The learning-rate schedule: linear warmup, then cosine decay to a floor at the last step; and
fitting the number of epochs to a wall-clock budget (``train.fit_to_budget``).

A capped run that simply stops at ``train.max_minutes`` ends with the learning rate still high
(a 7-epoch cosine cut after 4 epochs never anneals); fitting the epoch count at every epoch's
end to the time left makes the schedule end where the budget does.
"""
from __future__ import annotations

import math


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


def fitted_epochs(budget_s: float, epoch_s: float, epochs: int) -> int:
    """Epochs that fit in ``budget_s`` of training when one takes ``epoch_s``: at least 1, at
    most ``epochs``. An epoch that would end within 5% past the budget still counts (the cap
    then stops it at the schedule's floor, where the last steps change little)."""
    if budget_s <= 0 or epoch_s <= 0:
        return epochs
    return max(1, min(epochs, math.floor(budget_s / epoch_s * 1.05)))

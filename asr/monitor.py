"""TensorBoard event files for a training run: ``EXP_DIR/tensorboard``.

Scalars, by optimizer step (the scheduler's step count, so a resumed run continues the same
curves): ``train/loss``, ``train/lr``, ``train/grad_norm`` every ``log_every`` steps; by epoch:
``dev/wer``, ``dev/cer``, ``train/epoch_loss``, ``train/audio_s_per_s`` (throughput),
``train/skipped_batches``, ``train/split_batches``. Written by rank 0; everything is buffered
and flushed in the background by TensorBoard's writer (costs well under 1% of a step).

    tensorboard --logdir exp/digits/tensorboard
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

EPOCH_SCALARS = {"wer": "dev/wer", "cer": "dev/cer", "loss": "train/epoch_loss",
                 "audio_s_per_s": "train/audio_s_per_s", "skipped_batches": "train/skipped_batches",
                 "split_batches": "train/split_batches", "lr": "train/epoch_lr"}


class TrainMonitor:
    """Scalars of one run into TensorBoard event files (a no-op when ``enabled`` is False)."""

    def __init__(self, exp_dir: str | Path, enabled: bool = True, log_every: int = 10):
        self.log_every, self.writer = max(1, log_every), None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(exp_dir) / "tensorboard"), flush_secs=30)

    def step(self, step: int, loss: float, lr: float, grad_norm) -> None:
        """After optimizer step ``step`` (1-based); ``grad_norm`` a float or 0-dim tensor."""
        if self.writer is not None and step % self.log_every == 0:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/grad_norm", float(grad_norm), step)

    def epoch(self, stats: dict, step: int) -> None:
        """An epoch's end-of-epoch record (``train_log.jsonl``), at optimizer step ``step``."""
        if self.writer is None:
            return
        for key, tag in EPOCH_SCALARS.items():
            if isinstance(stats.get(key), (int, float)):
                self.writer.add_scalar(tag, stats[key], stats.get("epoch", step))
        self.writer.add_scalar("dev/wer_by_step", stats.get("wer", float("nan")), step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under ``log_dir``: tag -> [(step, value)] (for reports
    and tests)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

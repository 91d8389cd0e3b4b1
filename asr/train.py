"""The training loop: CTC loss, Adam, clipping, warmup + cosine LR, dev WER every epoch, early
stopping, best checkpoint, exact resume from atomic mid-epoch checkpoints, fault counting, and
data-parallel training under torchrun.

Read :func:`train` first: it is the whole loop (epochs of batch steps, dev evaluation, the best
model and the training state checkpointed at each epoch end); the rest are its steps.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import average_payloads, init_from_checkpoint, model_payload
from .config import require, to_dict
from .batching import BatchIterator, PlanBatches
from .dataset import TrainingSet, cmvn_sample
from .errors import AsrError
from .features import compute_cmvn
from .files import atomic_save
from .model import BiLSTMCTC, LatencyControlled, count_parameters
from .monitor import TrainMonitor
from .plots import training_figure
from .recognizer import Recognizer
from .runtime import Amp, DeviceName, Runtime
from .schedule import FIT_EVERY_STEPS, STEP_EMA, CosineSchedule, fitted_total
from .score import error_rates
from .text import Tokenizer

# The loop reads a recipe config's sections (train, model, features, data, augment) and digest();
# it is typed Any so that this module does not import the recipe layer above it.
RecipeConfig = Any

log = logging.getLogger(__name__)

STATE_FORMAT = "asr-train-state-v1"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, batching, schedule and stopping."""

    epochs: int = 20
    max_minutes: float = 0.0       # wall-clock cap on training; 0 = none
    fit_to_budget: bool = False    # with max_minutes: the LR schedule ends where the budget does,
                                   # at the measured pace (asr.schedule); else the cap cuts it
    max_batch_frames: int = 20000  # padded input frames per batch
    lr: float = 1.5e-3
    warmup_steps: int = 300
    final_lr_ratio: float = 0.05   # cosine decay to lr * ratio at the last epoch
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    patience: int = 5              # epochs without dev improvement before stopping
    average_last: int = 0          # average the weights of the last N epochs (0, 1: off); the
                                   # average becomes best.pt when its dev WER is no worse
    seed: int = 1234
    threads: int = 2
    workers: int = 0               # batch-loading processes (0: in the training loop)
    sortagrad: bool = False        # first epoch in order of increasing length (DeepSpeech 2)
    checkpoint_every: int = 200    # steps between mid-epoch state checkpoints (0: epoch ends only)
    eval_batch_frames: int = 40000 # padded frames per batch when decoding dev after each epoch
    device: DeviceName = "cpu"
    amp: Amp = "off"               # autocast precision; fp16 adds loss scaling; auto: bf16 where
                                   # the device computes it natively, else off
    progress: bool = True          # a progress bar per epoch (on a terminal only)
    init_from: str = ""            # fine-tune: start from this model's weights (shared units' rows)
    stream_chunk: tuple[int, ...] = ()   # (chunk, look-ahead) output frames: chunk-aware training
                                   # of the latency-controlled BiLSTM that streaming runs
    freeze_layers: int = 0         # fine-tuning: keep CMVN and the lowest N BiLSTM layers fixed
    tensorboard: bool = True       # event files in EXP_DIR/tensorboard (asr.monitor)
    log_every: int = 10            # optimizer steps between TensorBoard step scalars

    def check(self, where: str) -> None:
        require(self.epochs >= 1, f"{where}.epochs", "must be >= 1")
        require(self.max_batch_frames >= 100, f"{where}.max_batch_frames", "must be >= 100")
        require(self.lr > 0, f"{where}.lr", "must be > 0")
        require(0 < self.final_lr_ratio <= 1, f"{where}.final_lr_ratio", "must be in (0, 1]")
        require(self.grad_clip > 0, f"{where}.grad_clip", "must be > 0")
        require(self.patience >= 1, f"{where}.patience", "must be >= 1")
        require(self.average_last >= 0, f"{where}.average_last", "must be >= 0")
        require(self.threads >= 1, f"{where}.threads", "must be >= 1")
        require(self.workers >= 0, f"{where}.workers", "must be >= 0")
        require(self.checkpoint_every >= 0, f"{where}.checkpoint_every", "must be >= 0")
        require(self.max_minutes >= 0, f"{where}.max_minutes", "must be >= 0 (0: no cap)")
        require(self.warmup_steps >= 0, f"{where}.warmup_steps", "must be >= 0")
        require(self.freeze_layers >= 0, f"{where}.freeze_layers", "must be >= 0")
        require(self.log_every >= 1, f"{where}.log_every", "must be >= 1")
        require(self.eval_batch_frames >= 100, f"{where}.eval_batch_frames", "must be >= 100")
        require(not self.stream_chunk or (len(self.stream_chunk) == 2 and self.stream_chunk[0] >= 1
                                          and self.stream_chunk[1] >= 0),
                f"{where}.stream_chunk", "must be [] or [chunk >= 1, look-ahead >= 0]")


def train(cfg: "RecipeConfig", train_set: TrainingSet, dev_set: TrainingSet, exp_dir: str | Path,
          tokenizer: Tokenizer, runtime: Runtime | None = None) -> Path:
    """Train and return the path of the best checkpoint (lowest dev WER).

    Resumes exactly (same batches, augmentation draws and dropout masks) from ``exp_dir/last.pt``,
    written atomically every ``train.checkpoint_every`` steps and at every epoch end. ``runtime``
    (device, process group, threads, precision) defaults to the one ``cfg.train`` describes.
    """
    tc, exp_dir = cfg.train, Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    rt = runtime or Runtime.create(tc.device, tc.amp, tc.threads)
    tr = make_trainer(cfg, train_set, exp_dir, tokenizer, rt)
    if (exp_dir / "last.pt").exists():
        tr.load_state(exp_dir / "last.pt")
        tr.say("resumed from %s at epoch %d, batch %d", exp_dir / "last.pt", tr.prog.epoch + 1, tr.prog.batch)
    if tc.max_minutes and tc.amp == "auto" and rt.amp == "off" and rt.device.type == "cpu":
        tr.say("no native bf16 on this CPU: training in fp32, which may be several times slower; "
               "train.max_minutes=%s %s", tc.max_minutes,
               "fits the schedule to the time (train.fit_to_budget)" if tc.fit_to_budget
               else f"may stop the {tc.epochs}-epoch schedule early")
    tr.say("%.2fM parameters, %d train / %d dev utterances, device %s (%s), %d process(es)",
           count_parameters(tr.model) / 1e6, len(train_set.ids), len(dev_set.ids), rt.device,
           rt.precision, rt.dist.world)
    try:
        while tr.prog.epoch < tc.epochs and tr.prog.bad_epochs < tc.patience:
            capped = run_epoch(tr)                 # batch steps (mid-epoch state checkpoints)
            stats = end_epoch(tr, dev_set)         # dev WER, best.pt, last.pt
            tr.log_record(stats)
            tr.monitor.epoch(stats, tr.sched.last_epoch)
            if capped:
                tr.say("stopping: max_minutes=%s reached", tc.max_minutes)
                break
    finally:                                       # an interrupted run keeps its scalars
        tr.monitor.close()
    averaged = average_last_epochs(tr, dev_set)
    if averaged:
        tr.log_record(averaged)
    tr.monitor.close()
    if rt.dist.main:
        try:
            training_figure(exp_dir)
        except Exception as e:          # a figure must never fail a finished training
            log.warning("training figure not drawn: %s: %s", type(e).__name__, e)
    rt.dist.barrier()
    return exp_dir / "best.pt"


def run_epoch(tr: Trainer) -> bool:
    """Run the epoch in progress from its next batch; returns True if the time cap was hit."""
    tc, p = tr.cfg.train, tr.prog
    tr.model.train()
    plan = tr.batches.epoch(p.epoch)
    spent = sum(h["time_s"] for h in p.history)
    bar = tqdm(total=len(plan), initial=p.batch, desc=f"epoch {p.epoch + 1}", leave=False,
               mininterval=2.0, file=sys.stderr,
               disable=not (tc.progress and sys.stderr.isatty()))     # no bar frames in log files
    t0 = time.perf_counter()
    for index, collated in epoch_batches(tr, plan):
        run_batch(tr, plan[index], index, collated)
        p.batch = index + 1
        now = time.perf_counter()
        p.seconds += now - t0
        tr.step_s = now - t0 if not tr.step_s else (1 - STEP_EMA) * tr.step_s + STEP_EMA * (now - t0)
        t0 = now
        if tc.fit_to_budget and tc.max_minutes and p.batch % FIT_EVERY_STEPS == 0:
            fit_schedule(tr, tr.step_s)
        bar.update(1)
        bar.set_postfix(loss=f"{p.loss_sum / max(p.utts, 1):.3f}", refresh=False)
        if tc.checkpoint_every and p.batch % tc.checkpoint_every == 0 and p.batch < len(plan):
            tr.save_state()
        if tc.max_minutes and tr.dist.any_true(spent + p.seconds > tc.max_minutes * 60):
            bar.close()
            return True
    bar.close()
    return False


def run_batch(tr: Trainer, batch: list[int], index: int, collated=False) -> None:
    """Collate (unless ``collated`` is given), augment and step; an out-of-memory batch is
    retried as two halves (one step each), a single utterance that does not fit is skipped;
    both are counted."""
    p = tr.prog
    shard = tr.dist.shard(batch)
    if collated is False:
        collated = tr.batches.collate(shard, tr.batches.batch_rng(p.epoch, index), p.epoch) if shard else None
    if collated is None:                   # fewer utterances than ranks, or no loadable audio
        p.skipped += 1
        return
    x, lens, targets, tgt_lens = collated
    del collated
    try:
        loss = train_step(tr, x, lens, targets, tgt_lens, len(batch) / tr.dist.world)
    except RuntimeError as e:
        if not _is_oom(e) or tr.dist.active:   # ranks must stay in step: no split under DDP
            raise
        del x, targets
        tr.opt.zero_grad(set_to_none=True)
        if len(batch) == 1:
            p.skipped += 1
            return
        p.split += 1
        half = len(batch) // 2
        run_batch(tr, batch[:half], index)
        run_batch(tr, batch[half:], index)
        return
    if loss is None:
        p.skipped += 1
        return
    tr.sched.step()
    tr.monitor.step(tr.sched.last_epoch, loss, tr.opt.param_groups[0]["lr"], tr.grad_norm)
    p.loss_sum += loss * len(batch) / tr.dist.world      # this rank's sum of utterance losses
    p.utts += len(shard)
    p.frames += int(lens.sum())


def train_step(tr: Trainer, x, lens, targets, tgt_lens, denom: float | None = None) -> float | None:
    """One optimizer step on loss = sum of CTC losses / ``denom`` (default: the batch size).

    Returns the loss, or None when the loss or the gradient norm is not finite on any rank (then
    nothing is applied anywhere)."""
    non_blocking = tr.device.type == "cuda"
    x, lens = x.to(tr.device, non_blocking=non_blocking), lens.to(tr.device)
    targets, tgt_lens = targets.to(tr.device), tgt_lens.to(tr.device)
    amp = tr.amp
    with torch.autocast(tr.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16,
                        enabled=amp != "off"):
        log_probs, out_lens = tr.net(x, lens)
    loss = F.ctc_loss(log_probs.float().transpose(0, 1), targets, out_lens, tgt_lens,
                      blank=0, reduction="sum", zero_infinity=True) / (denom or x.shape[0])
    if not tr.dist.all_true(bool(torch.isfinite(loss))):
        return None
    tr.opt.zero_grad(set_to_none=True)
    if tr.scaler is not None:
        tr.scaler.scale(loss).backward()
        tr.scaler.unscale_(tr.opt)
    else:
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.cfg.train.grad_clip)
    tr.grad_norm = grad_norm               # a tensor: read (a device sync) only when logged
    if not torch.isfinite(grad_norm):      # gradients are already averaged: same on every rank
        tr.opt.zero_grad(set_to_none=True)
        if tr.scaler is not None:
            tr.scaler.update()
        return None
    if tr.scaler is not None:
        tr.scaler.step(tr.opt)
        tr.scaler.update()
    else:
        tr.opt.step()
    return loss.item()


def _is_oom(e: RuntimeError) -> bool:
    return "out of memory" in str(e) or "can't allocate memory" in str(e)


def end_epoch(tr: Trainer, dev_set: TrainingSet) -> dict:
    """Dev WER, best checkpoint, history, then a state checkpoint at the next epoch's start."""
    p, cfg = tr.prog, tr.cfg
    loss_sum, utts, frames = tr.dist.sum([p.loss_sum, p.utts, p.frames])
    stats = {"epoch": p.epoch + 1, "loss": loss_sum / max(utts, 1), "time_s": p.seconds,
             "audio_s_per_s": frames * cfg.features.hop_ms / 1000 / max(p.seconds, 1e-9),
             "skipped_batches": p.skipped, "split_batches": p.split, "lr": tr.opt.param_groups[0]["lr"],
             "amp": tr.amp}
    stats.update(evaluate(tr, dev_set))
    improved = stats["wer"] < p.best
    p.best, p.bad_epochs = (stats["wer"], 0) if improved else (p.best, p.bad_epochs + 1)
    info = {"epoch": p.epoch + 1, "dev_wer": stats["wer"], "config": to_dict(cfg), "precision": tr.rt.precision}
    if improved and tr.dist.main:
        atomic_save(tr.payload(info), tr.exp_dir / "best.pt")
        (tr.exp_dir / "best_single.pt").unlink(missing_ok=True)   # stale once a new epoch is best
    keep_epoch_model(tr, info)
    p.history.append(stats)
    p.new_epoch()
    tr.save_state()
    faults = f" skipped {stats['skipped_batches']} split {stats['split_batches']} batches" \
        if stats["skipped_batches"] or stats["split_batches"] else ""
    tr.say("epoch %3d loss %.3f dev WER %.2f%% CER %.2f%% lr %.2e %.0fs (%.0fx real time)%s%s", stats["epoch"],
           stats["loss"], stats["wer"], stats["cer"], stats["lr"], stats["time_s"], stats["audio_s_per_s"],
           " *" if improved else "", faults)
    return stats


def fit_schedule(tr: Trainer, step_s: float) -> None:
    """``train.fit_to_budget`` (every FIT_EVERY_STEPS steps): end the cosine schedule where
    ``train.max_minutes`` runs out at the recent pace; ranks agree (the mean of theirs)."""
    spent = sum(h["time_s"] for h in tr.prog.history) + tr.prog.seconds
    step_s, spent = (v / tr.dist.world for v in tr.dist.sum([step_s, spent]))
    tr.sched.lr_lambdas[0].total = fitted_total(tr.full_steps, tr.sched.last_epoch,
                                                tr.cfg.train.max_minutes * 60 - spent, step_s)


def evaluate(tr: Trainer, data: TrainingSet) -> dict:
    """Dev WER/CER (greedy); under DDP each rank decodes a shard and every rank gets the same result."""
    tr.model.eval()
    rec = Recognizer.from_model(tr.model, tr.cfg.features, tr.tokenizer)
    ids = tr.dist.shard(data.ids)
    hyps = {i: h.text for i, h in zip(ids, rec.decode_features(tr.dist.shard(data.feats), tr.cfg.train.eval_batch_frames))}
    tr.model.train()
    hyps = {k: v for part in tr.dist.gather(hyps) for k, v in part.items()}
    rates = error_rates(dict(zip(data.ids, data.texts)), hyps)
    return {"wer": rates.wer, "cer": rates.cer}


@dataclass
class Progress:
    """Where training stands: everything resume needs besides weights, optimizer and RNGs."""

    epoch: int = 0              # epoch in progress (0-based)
    batch: int = 0              # next batch of that epoch
    loss_sum: float = 0.0       # running sums of the epoch in progress
    utts: int = 0
    frames: int = 0
    skipped: int = 0            # batches with non-finite loss or gradients, never applied
    split: int = 0              # batches split in two after running out of memory
    seconds: float = 0.0
    best: float = float("inf")
    bad_epochs: int = 0
    history: list = field(default_factory=list)

    def new_epoch(self) -> None:
        self.epoch, self.batch = self.epoch + 1, 0
        self.loss_sum, self.utts, self.frames, self.skipped, self.split, self.seconds = 0.0, 0, 0, 0, 0, 0.0


@dataclass
class Trainer:
    """Everything the loop's steps share: config, model (and its DDP wrapper ``net``), optimizer,
    LR schedule, batch plan, runtime and progress."""

    cfg: "RecipeConfig"
    model: BiLSTMCTC
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    batches: BatchIterator
    tokenizer: Tokenizer
    exp_dir: Path
    net: torch.nn.Module        # the model, or its DistributedDataParallel wrapper
    rt: Runtime
    scaler: torch.amp.GradScaler | None = None     # fp16 only
    prog: Progress = field(default_factory=Progress)
    monitor: TrainMonitor = field(default_factory=lambda: TrainMonitor("", enabled=False))
    grad_norm: object = 0.0                        # of the last step (a tensor)
    full_steps: int = 0                            # the schedule's length: train.epochs of steps
    step_s: float = 0.0                            # recent seconds per step (fit_to_budget)

    @property
    def device(self) -> torch.device:
        return self.rt.device

    @property
    def dist(self):
        return self.rt.dist

    @property
    def amp(self) -> str:
        return self.rt.amp

    def say(self, msg: str, *args) -> None:
        """Log on rank 0 only."""
        if self.dist.main:
            log.info(msg, *args)

    def log_record(self, record: dict) -> None:
        """Append one JSON line to ``train_log.jsonl`` (rank 0)."""
        if self.dist.main:
            with (self.exp_dir / "train_log.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def payload(self, info: dict | None = None) -> dict:
        return model_payload(self.model, self.cfg.features, self.tokenizer, info)

    def save_state(self) -> None:
        """Atomic training-state checkpoint: model, optimizer, scheduler, RNGs, sampler position.
        Written by rank 0 only."""
        if not self.dist.main:
            return
        atomic_save({
            "format": STATE_FORMAT, "model": self.payload(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "progress": asdict(self.prog), "config_digest": self.cfg.digest(),
            "torch_rng": torch.get_rng_state(),
        }, self.exp_dir / "last.pt")

    def load_state(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT or state.get("config_digest") != self.cfg.digest():
            raise AsrError(f"{path}: not a training state of this config; move it away to start over")
        self.model.load_state_dict(state["model"]["state_dict"])
        self.opt.load_state_dict(state["optimizer"])          # moves its state to the params' device
        self.sched.load_state_dict(state["scheduler"])
        self.prog = Progress(**state["progress"])
        torch.set_rng_state(state["torch_rng"])


def make_trainer(cfg: "RecipeConfig", train_set: TrainingSet, exp_dir: Path, tokenizer: Tokenizer,
                 rt: Runtime) -> Trainer:
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = BiLSTMCTC(cfg.model, cfg.features.n_mels, len(tokenizer))
    if tc.init_from:                       # its CMVN too: the weights were trained on it
        copied = init_from_checkpoint(model, tc.init_from, tokenizer, cfg.features)
        log.info("initialised from %s: %d tensors copied, not copied: %s", tc.init_from,
                 len(copied["copied"]), copied["not_copied"] or "none")
    else:
        model.set_cmvn(*compute_cmvn(cmvn_sample(train_set.feats, cfg.data.cmvn_utterances, tc.seed)))
    freeze_lower_layers(model, tc.freeze_layers)
    model.to(rt.device)
    net = LatencyControlled(model, *tc.stream_chunk) if tc.stream_chunk else model
    if rt.dist.active:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr, weight_decay=tc.weight_decay)
    batches = BatchIterator(train_set.feats, train_set.targets, tc.max_batch_frames, cfg.augment, tc.seed,
                            tc.sortagrad)
    total_steps = tc.epochs * len(batches.epoch(0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, CosineSchedule(tc.warmup_steps, total_steps, tc.final_lr_ratio))
    scaler = torch.amp.GradScaler(rt.device.type) if rt.amp == "fp16" else None
    monitor = TrainMonitor(exp_dir, tc.tensorboard and rt.dist.main, tc.log_every)
    return Trainer(cfg, model, opt, sched, batches, tokenizer, exp_dir, net, rt, scaler, monitor=monitor,
                   full_steps=total_steps)


def freeze_lower_layers(model: BiLSTMCTC, n: int) -> None:
    """Fine-tuning: the lowest ``n`` BiLSTM layers keep their weights (CMVN is never trained)."""
    if n > len(model.layers):
        raise AsrError(f"train.freeze_layers={n}: the model has only {len(model.layers)} layers")
    for layer in model.layers[:n]:
        layer.requires_grad_(False)
    if n:
        log.info("frozen: the lowest %d of %d BiLSTM layers", n, len(model.layers))


def epoch_path(exp_dir: Path, epoch: int) -> Path:
    return exp_dir / f"epoch{epoch}.pt"


def keep_epoch_model(tr: Trainer, info: dict) -> None:
    """With ``train.average_last`` = N >= 2, the model of each epoch end is written as
    ``epoch<k>.pt``; those older than the last N are deleted."""
    n, epoch = tr.cfg.train.average_last, info["epoch"]
    if n < 2 or not tr.dist.main:
        return
    atomic_save(tr.payload(info), epoch_path(tr.exp_dir, epoch))
    for old in tr.exp_dir.glob("epoch*.pt"):
        if old.stem[5:].isdigit() and int(old.stem[5:]) <= epoch - n:
            old.unlink()


def average_last_epochs(tr: Trainer, dev_set: TrainingSet) -> dict | None:
    """Average the models of the last ``train.average_last`` epochs into ``avg.pt`` and score
    it on dev; it becomes ``best.pt`` when its WER is no worse than the best single epoch's
    (which is then kept as ``best_single.pt``). Returns the log record, or None when off."""
    n, done, exp = tr.cfg.train.average_last, tr.prog.epoch, tr.exp_dir
    tr.dist.barrier()                              # rank 0 wrote the epoch files
    epochs = [e for e in range(max(1, done - n + 1), done + 1) if epoch_path(exp, e).exists()]
    if n < 2 or len(epochs) < 2:
        return None
    payload = average_payloads([epoch_path(exp, e) for e in epochs])
    tr.model.load_state_dict(payload["state_dict"])
    rates = evaluate(tr, dev_set)
    payload["info"].update(epoch=done, averaged_epochs=epochs, dev_wer=rates["wer"])
    chosen = rates["wer"] <= tr.prog.best
    if tr.dist.main:
        atomic_save(payload, exp / "avg.pt")
        best, single = exp / "best.pt", exp / "best_single.pt"
        if chosen:
            if best.exists() and not single.exists():
                os.replace(best, single)
            atomic_save(payload, best)
        elif single.exists():
            os.replace(single, best)
        tr.say("average of epochs %d-%d: dev WER %.2f%% CER %.2f%% (best single epoch %.2f%%)%s", epochs[0],
               epochs[-1], rates["wer"], rates["cer"], tr.prog.best, ": best.pt" if chosen else "")
    return {"averaged_epochs": epochs, **rates, "chosen": chosen}


def epoch_batches(tr: Trainer, plan: list[list[int]]):
    """``(index, collated or False)`` for the rest of the epoch; with ``train.workers`` the
    batches are built ahead in worker processes (pinned memory for a GPU)."""
    if not tr.cfg.train.workers:
        yield from ((i, False) for i in range(tr.prog.batch, len(plan)))
        return
    loader = torch.utils.data.DataLoader(
        PlanBatches(tr.batches, tr.dist.shard, tr.prog.epoch, plan, tr.prog.batch), batch_size=None, shuffle=False,
        num_workers=tr.cfg.train.workers, pin_memory=tr.device.type == "cuda",
        worker_init_fn=lambda _: torch.set_num_threads(1), prefetch_factor=4)
    yield from enumerate(loader, start=tr.prog.batch)

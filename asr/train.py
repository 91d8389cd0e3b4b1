"""The training loop: CTC loss, Adam, clipping, warmup + cosine LR, dev WER every epoch, early
stopping, best checkpoint, exact resume from atomic mid-epoch checkpoints, fault counting, and
data-parallel training under torchrun."""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import DataConfig, FeatureConfig, RecipeConfig, to_dict
from .data import BatchIterator, Utterance, report_skipped, validate_utterances
from .decode import decode_features
from .distributed import Dist, init_from_env
from .features import LazyFeatures, atomic_save, compute_cmvn
from .model import BiLSTMCTC, average_payloads, count_parameters, model_payload
from .score import error_rates
from .text import Tokenizer

STATE_FORMAT = "asr-train-state-v1"


@dataclass
class TrainingSet:
    ids: list[str]
    feats: list[torch.Tensor]       # (T_i, F) float16
    targets: list[list[int]]
    texts: list[str]


def ctc_min_frames(ids: Sequence[int]) -> int:
    """Frames CTC needs for a label sequence: one per label plus a blank between repeats."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))


def build_set(utts: Sequence[Utterance], cache: dict | None, tokenizer: Tokenizer, stack: int,
              name: str, report: Path | None, data_cfg: DataConfig = DataConfig(),
              features: FeatureConfig | None = None) -> TrainingSet:
    """Join manifest text with cached features (``cache``), or with features computed from audio
    when they are used (``cache=None``, ``features`` given); utterances with bad text, no
    features or too few frames for their labels under CTC are skipped, counted and listed in
    ``report``."""
    good, problems = validate_utterances(utts, tokenizer, check_audio=False, oov_policy=data_cfg.oov_policy,
                                         max_duration_s=data_cfg.max_duration_s)
    if cache is None:
        return _lazy_set(good, problems, tokenizer, stack, name, report, data_cfg, features or FeatureConfig())
    by_id = dict(zip(cache["ids"], cache["feats"]))
    out = TrainingSet([], [], [], [])
    for u in good:
        if u.id not in by_id:
            problems.append(f"{u.id}\tno features (audio unreadable)")
            continue
        if not torch.isfinite(by_id[u.id]).all():
            problems.append(f"{u.id}\tnon-finite features")
            continue
        ids = tokenizer.encode(u.text)
        frames = by_id[u.id].shape[0] // stack
        if frames < ctc_min_frames(ids):
            problems.append(f"{u.id}\ttoo short for CTC: {frames} frames < {ctc_min_frames(ids)} needed")
            continue
        out.ids.append(u.id)
        out.feats.append(by_id[u.id])
        out.targets.append(ids)
        out.texts.append(u.text)
    report_skipped(problems, len(utts), name, report)
    if not out.ids:
        raise ValueError(f"{name}: no usable utterances (see {report})")
    return out


def _lazy_set(good: list[Utterance], problems: list[str], tokenizer: Tokenizer, stack: int, name: str,
              report: Path | None, data_cfg: DataConfig, features: FeatureConfig) -> TrainingSet:
    kept, targets = [], []
    lazy = LazyFeatures(good, features, data_cfg.max_duration_s)
    for u, frames in zip(good, lazy.lengths):
        ids = tokenizer.encode(u.text)
        if (frames - 1) // stack < ctc_min_frames(ids):     # -1: durations may round up a frame
            problems.append(f"{u.id}\ttoo short for CTC: {frames // stack} frames < {ctc_min_frames(ids)} needed")
            continue
        kept.append(u)
        targets.append(ids)
    report_skipped(problems, len(good) + len(problems), name, report)
    if not kept:
        raise ValueError(f"{name}: no usable utterances (see {report})")
    return TrainingSet([u.id for u in kept], LazyFeatures(kept, features, data_cfg.max_duration_s),
                       targets, [u.text for u in kept])


def cmvn_sample(feats: Sequence[torch.Tensor], n: int, seed: int) -> Sequence[torch.Tensor]:
    """All of ``feats``, or ``n`` of them drawn at random (CMVN of a large corpus)."""
    if not n or n >= len(feats):
        return feats
    picks = sorted(random.Random(seed).sample(range(len(feats)), n))
    return (feats[i] for i in picks)


def lr_lambda(step: int, warmup: int, total: int, final_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``final_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def evaluate(model: BiLSTMCTC, data: TrainingSet, batch_frames: int, dist: Dist = Dist()) -> dict:
    """Dev WER/CER; under DDP each rank decodes a shard and every rank gets the same result."""
    model.eval()
    ids = dist.shard(data.ids)
    hyps = dict(zip(ids, decode_features(model, dist.shard(data.feats), batch_frames)))
    model.train()
    hyps = {k: v for part in dist.gather(hyps) for k, v in part.items()}
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
    cfg: RecipeConfig
    model: BiLSTMCTC
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    batches: BatchIterator
    tokenizer: Tokenizer
    exp_dir: Path
    net: torch.nn.Module        # the model, or its DistributedDataParallel wrapper
    device: torch.device
    dist: Dist = field(default_factory=Dist)
    scaler: torch.amp.GradScaler | None = None     # fp16 only
    amp: str = "off"                                # train.amp resolved for the device: off | bf16 | fp16
    prog: Progress = field(default_factory=Progress)

    def save_state(self) -> None:
        """Atomic training-state checkpoint: model, optimizer, scheduler, RNGs, sampler position.
        Written by rank 0 only."""
        if not self.dist.main:
            return
        atomic_save({
            "format": STATE_FORMAT, "model": model_payload(self.model, self.cfg.features, self.tokenizer),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "progress": asdict(self.prog), "config_digest": self.cfg.digest(),
            "torch_rng": torch.get_rng_state(),
        }, self.exp_dir / "last.pt")

    def load_state(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT or state.get("config_digest") != self.cfg.digest():
            raise ValueError(f"{path}: not a training state of this config; move it away to start over")
        self.model.load_state_dict(state["model"]["state_dict"])
        self.opt.load_state_dict(state["optimizer"])          # moves its state to the params' device
        self.sched.load_state_dict(state["scheduler"])
        self.prog = Progress(**state["progress"])
        torch.set_rng_state(state["torch_rng"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available (use cpu or auto)")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products in hardware (CPU: AMX or AVX512-BF16;
    elsewhere oneDNN emulates bf16 and autocast would be slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
        return any(check() for check in checks if check is not None)
    return False


def precision_name(amp: str) -> str:
    """A resolved ``train.amp`` as a precision: fp32, bf16 or fp16."""
    return "fp32" if amp == "off" else amp


def resolve_amp(amp: str, device: torch.device) -> str:
    """``train.amp`` for this device: ``auto`` becomes bf16 where it is native, else off."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "off"
    return amp


def make_trainer(cfg: RecipeConfig, train_set: TrainingSet, exp_dir: Path, tokenizer: Tokenizer,
                 dist: Dist = Dist()) -> Trainer:
    tc = cfg.train
    torch.manual_seed(tc.seed)
    device = resolve_device(tc.device)
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    model = BiLSTMCTC(cfg.model, cfg.features.n_mels, len(tokenizer))
    model.set_cmvn(*compute_cmvn(cmvn_sample(train_set.feats, cfg.data.cmvn_utterances, tc.seed)))
    model.tokenizer, model.feature_config = tokenizer, cfg.features   # for dev decoding
    model.to(device)
    net = model
    if dist.active:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    batches = BatchIterator(train_set.feats, train_set.targets, tc.max_batch_frames, cfg.augment, tc.seed,
                            tc.sortagrad)
    total_steps = tc.epochs * len(batches.epoch(0))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, tc.warmup_steps, total_steps, tc.final_lr_ratio))
    amp = resolve_amp(tc.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return Trainer(cfg, model, opt, sched, batches, tokenizer, exp_dir, net, device, dist, scaler, amp)


def train(cfg: RecipeConfig, train_set: TrainingSet, dev_set: TrainingSet, exp_dir: str | Path,
          tokenizer: Tokenizer) -> Path:
    """Train and return the path of the best checkpoint (lowest dev WER).

    Resumes exactly (same batches, augmentation draws and dropout masks) from ``exp_dir/last.pt``,
    written atomically every ``train.checkpoint_every`` steps and at every epoch end.
    """
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    torch.set_num_threads(tc.threads)
    dist = init_from_env(resolve_device(tc.device).type)
    tr = make_trainer(cfg, train_set, exp_dir, tokenizer, dist)
    say = print if dist.main else (lambda *a, **k: None)
    if (exp_dir / "last.pt").exists():
        tr.load_state(exp_dir / "last.pt")
        say(f"[train] resumed from {exp_dir / 'last.pt'} at epoch {tr.prog.epoch + 1}, "
            f"batch {tr.prog.batch}", file=sys.stderr)
    say(f"[train] {count_parameters(tr.model) / 1e6:.2f}M parameters, {len(train_set.ids)} train / "
        f"{len(dev_set.ids)} dev utterances, device {tr.device} ({precision_name(tr.amp)}), "
        f"{dist.world} process(es)", file=sys.stderr)
    log = (exp_dir / "train_log.jsonl").open("a", encoding="utf-8") if dist.main else None
    while tr.prog.epoch < tc.epochs and tr.prog.bad_epochs < tc.patience:
        capped = run_epoch(tr)
        stats = end_epoch(tr, dev_set)
        if log:
            log.write(json.dumps(stats) + "\n")
            log.flush()
        if capped:
            say(f"[train] stopping: max_minutes={tc.max_minutes} reached", file=sys.stderr)
            break
    averaged = average_last_epochs(tr, dev_set)
    if log:
        if averaged:
            log.write(json.dumps(averaged) + "\n")
        log.close()
    dist.barrier()
    return exp_dir / "best.pt"


def epoch_path(exp_dir: Path, epoch: int) -> Path:
    return exp_dir / f"epoch{epoch}.pt"


def keep_epoch_model(tr: Trainer, info: dict) -> None:
    """With ``train.average_last`` = N >= 2, the model of each epoch end is written as
    ``epoch<k>.pt``; those older than the last N are deleted."""
    n, epoch = tr.cfg.train.average_last, info["epoch"]
    if n < 2 or not tr.dist.main:
        return
    atomic_save(model_payload(tr.model, tr.cfg.features, tr.tokenizer, info), epoch_path(tr.exp_dir, epoch))
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
    rates = evaluate(tr.model, dev_set, tr.cfg.decode.batch_frames, tr.dist)
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
        print(f"[train] average of epochs {epochs[0]}-{epochs[-1]}: dev WER {rates['wer']:.2f}% "
              f"CER {rates['cer']:.2f}% (best single epoch {tr.prog.best:.2f}%)"
              f"{': best.pt' if chosen else ''}", file=sys.stderr)
    return {"averaged_epochs": epochs, **rates, "chosen": chosen}


def end_epoch(tr: Trainer, dev_set: TrainingSet) -> dict:
    """Dev WER, best checkpoint, history, then a state checkpoint at the next epoch's start."""
    p, cfg = tr.prog, tr.cfg
    loss_sum, utts, frames = tr.dist.sum([p.loss_sum, p.utts, p.frames])
    stats = {"epoch": p.epoch + 1, "loss": loss_sum / max(utts, 1), "time_s": p.seconds,
             "audio_s_per_s": frames * cfg.features.hop_ms / 1000 / max(p.seconds, 1e-9),
             "skipped_batches": p.skipped, "split_batches": p.split, "lr": tr.opt.param_groups[0]["lr"],
             "amp": tr.amp}
    stats.update(evaluate(tr.model, dev_set, cfg.decode.batch_frames, tr.dist))
    improved = stats["wer"] < p.best
    p.best, p.bad_epochs = (stats["wer"], 0) if improved else (p.best, p.bad_epochs + 1)
    info = {"epoch": p.epoch + 1, "dev_wer": stats["wer"], "config": to_dict(cfg),
            "precision": precision_name(tr.amp)}
    if improved and tr.dist.main:
        atomic_save(model_payload(tr.model, cfg.features, tr.tokenizer, info), tr.exp_dir / "best.pt")
        (tr.exp_dir / "best_single.pt").unlink(missing_ok=True)   # stale once a new epoch is best
    keep_epoch_model(tr, info)
    p.history.append(stats)
    p.new_epoch()
    tr.save_state()
    if not tr.dist.main:
        return stats
    faults = f" skipped {stats['skipped_batches']} split {stats['split_batches']} batches" \
        if stats["skipped_batches"] or stats["split_batches"] else ""
    print(f"[train] epoch {stats['epoch']:3d} loss {stats['loss']:.3f} dev WER {stats['wer']:.2f}% "
          f"CER {stats['cer']:.2f}% lr {stats['lr']:.2e} {stats['time_s']:.0f}s "
          f"({stats['audio_s_per_s']:.0f}x real time){' *' if improved else ''}{faults}", file=sys.stderr)
    return stats


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


def run_batch(tr: Trainer, batch: list[int], index: int, collated=False) -> None:
    """Collate (unless ``collated`` is given), augment and step; an out-of-memory batch is
    retried as two halves (one step each), a single utterance that does not fit is skipped;
    both are counted."""
    p = tr.prog
    shard = tr.dist.shard(batch)
    if collated is False:
        collated = tr.batches.collate(shard, tr.batches.batch_rng(p.epoch, index)) if shard else None
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
    p.loss_sum += loss * len(batch) / tr.dist.world      # this rank's sum of utterance losses
    p.utts += len(shard)
    p.frames += int(lens.sum())


class _PlanBatches(torch.utils.data.Dataset):
    """Batches ``start..`` of an epoch plan, collated in loader workers."""

    def __init__(self, tr: Trainer, plan: list[list[int]], start: int):
        self.batches, self.dist, self.epoch = tr.batches, tr.dist, tr.prog.epoch
        self.plan, self.start = plan, start

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __getitem__(self, k: int):
        index = self.start + k
        shard = self.dist.shard(self.plan[index])
        return self.batches.collate(shard, self.batches.batch_rng(self.epoch, index)) if shard else None


def epoch_batches(tr: Trainer, plan: list[list[int]]):
    """``(index, collated or False)`` for the rest of the epoch; with ``train.workers`` the
    batches are built ahead in worker processes (pinned memory for a GPU)."""
    if not tr.cfg.train.workers:
        yield from ((i, False) for i in range(tr.prog.batch, len(plan)))
        return
    loader = torch.utils.data.DataLoader(
        _PlanBatches(tr, plan, tr.prog.batch), batch_size=None, shuffle=False,
        num_workers=tr.cfg.train.workers, pin_memory=tr.device.type == "cuda",
        worker_init_fn=lambda _: torch.set_num_threads(1), prefetch_factor=4)
    yield from enumerate(loader, start=tr.prog.batch)


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
        t0 = now
        bar.update(1)
        bar.set_postfix(loss=f"{p.loss_sum / max(p.utts, 1):.3f}", refresh=False)
        if tc.checkpoint_every and p.batch % tc.checkpoint_every == 0 and p.batch < len(plan):
            tr.save_state()
        if tc.max_minutes and tr.dist.any_true(spent + p.seconds > tc.max_minutes * 60):
            bar.close()
            return True
    bar.close()
    return False

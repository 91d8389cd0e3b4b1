"""The training loop: CTC loss, Adam, clipping, warmup + cosine LR, dev WER every epoch, early
stopping, best checkpoint, resume from the last epoch."""
from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import RecipeConfig, to_dict
from .data import BatchIterator, Utterance, report_skipped, validate_utterances
from .decode import decode_features
from .features import atomic_save, compute_cmvn
from .model import BiLSTMCTC, count_parameters, model_payload
from .score import error_rates
from .text import CharTokenizer

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


def build_set(utts: Sequence[Utterance], cache: dict, tokenizer: CharTokenizer, stack: int,
              name: str, report: Path | None) -> TrainingSet:
    """Join manifest text with cached features; utterances with bad text, no features or too few
    frames for their labels under CTC are skipped, counted and listed in ``report``."""
    by_id = dict(zip(cache["ids"], cache["feats"]))
    good, problems = validate_utterances(utts, tokenizer, check_audio=False)
    out = TrainingSet([], [], [], [])
    for u in good:
        if u.id not in by_id:
            problems.append(f"{u.id}\tno features (audio unreadable)")
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


def lr_lambda(step: int, warmup: int, total: int, final_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``final_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def evaluate(model: BiLSTMCTC, data: TrainingSet, batch_frames: int) -> dict:
    model.eval()
    hyps = decode_features(model, data.feats, batch_frames)
    model.train()
    rates = error_rates(dict(zip(data.ids, data.texts)), dict(zip(data.ids, hyps)))
    return {"wer": rates.wer, "cer": rates.cer}


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))


def _save_state(path: Path, model, cfg, tokenizer, opt, sched, epoch, best, bad, history, rng) -> None:
    atomic_save({
        "format": STATE_FORMAT, "model": model_payload(model, cfg.features, tokenizer),
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
        "best_wer": best, "bad_epochs": bad, "history": history, "config_digest": cfg.digest(),
        "rng": _rng_state(), "batch_rng": list(rng.getstate()[1]),
    }, path)


def train(cfg: RecipeConfig, train_set: TrainingSet, dev_set: TrainingSet, exp_dir: str | Path,
          tokenizer: CharTokenizer) -> Path:
    """Train and return the path of the best checkpoint (lowest dev WER). Resumes from
    ``exp_dir/last.pt`` when it was written with the same config."""
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    model = BiLSTMCTC(cfg.model, cfg.features.n_mels, len(tokenizer))
    model.set_cmvn(*compute_cmvn(train_set.feats))
    model.tokenizer, model.feature_config = tokenizer, cfg.features   # for dev decoding
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    batches = BatchIterator(train_set.feats, train_set.targets, tc.max_batch_frames, cfg.augment, tc.seed)
    total_steps = tc.epochs * len(batches.epoch(0))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, tc.warmup_steps, total_steps, tc.final_lr_ratio))
    rng = random.Random(tc.seed)
    start_epoch, best, bad, history = 0, float("inf"), 0, []
    last, best_path = exp_dir / "last.pt", exp_dir / "best.pt"
    if last.exists():
        state = torch.load(last, weights_only=True)
        if state.get("config_digest") != cfg.digest():
            raise ValueError(f"{last}: written with a different config; move it away to start over")
        model.load_state_dict(state["model"]["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, best, bad, history = state["epoch"] + 1, state["best_wer"], state["bad_epochs"], state["history"]
        _set_rng_state(state["rng"])
        rng.setstate((3, tuple(state["batch_rng"]), None))
        print(f"[train] resumed from {last} at epoch {start_epoch + 1}", file=sys.stderr)
    print(f"[train] {count_parameters(model) / 1e6:.2f}M parameters, {len(train_set.ids)} train / "
          f"{len(dev_set.ids)} dev utterances, {total_steps} steps planned", file=sys.stderr)
    t_start = time.perf_counter() - sum(h["time_s"] for h in history)
    log = (exp_dir / "train_log.jsonl").open("a", encoding="utf-8")
    for epoch in range(start_epoch, tc.epochs):
        if bad >= tc.patience:
            break
        stats = run_epoch(model, opt, sched, batches, epoch, rng, tc, t_start, cfg.features.hop_ms / 1000)
        stats.update(evaluate(model, dev_set, cfg.decode.batch_frames))
        stats.update(epoch=epoch + 1, lr=opt.param_groups[0]["lr"])
        improved = stats["wer"] < best
        best, bad = (stats["wer"], 0) if improved else (best, bad + 1)
        if improved:
            atomic_save(model_payload(model, cfg.features, tokenizer,
                                      {"epoch": epoch + 1, "dev_wer": stats["wer"], "config": to_dict(cfg)}),
                        best_path)
        history.append(stats)
        _save_state(last, model, cfg, tokenizer, opt, sched, epoch, best, bad, history, rng)
        log.write(json.dumps(stats) + "\n")
        log.flush()
        print(f"[train] epoch {epoch + 1:3d} loss {stats['loss']:.3f} dev WER {stats['wer']:.2f}% "
              f"CER {stats['cer']:.2f}% lr {stats['lr']:.2e} {stats['time_s']:.0f}s "
              f"({stats['audio_s_per_s']:.0f}x real time){' *' if improved else ''}", file=sys.stderr)
        if stats.get("time_cap"):
            print(f"[train] stopping: max_minutes={tc.max_minutes} reached", file=sys.stderr)
            break
    log.close()
    return best_path


def run_epoch(model, opt, sched, batches: BatchIterator, epoch: int, rng: random.Random, tc,
              t_start: float, hop_s: float) -> dict:
    """One pass over the training batches; non-finite losses are skipped and counted."""
    model.train()
    t0 = time.perf_counter()
    plan = batches.epoch(epoch)
    total_loss, n_utts, frames, skipped, capped = 0.0, 0, 0, 0, False
    bar = tqdm(plan, desc=f"epoch {epoch + 1}", disable=not tc.progress, leave=False,
               mininterval=2.0, file=sys.stderr)
    for batch in bar:
        x, lens, targets, tgt_lens = batches.collate(batch, rng)
        log_probs, out_lens = model(x, lens)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, tgt_lens,
                          blank=0, reduction="sum", zero_infinity=True) / x.shape[0]
        if not torch.isfinite(loss):
            skipped += 1
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        if not torch.isfinite(grad_norm):
            skipped += 1
            continue
        opt.step()
        sched.step()
        total_loss += loss.item() * x.shape[0]
        n_utts += x.shape[0]
        frames += int(lens.sum())
        bar.set_postfix(loss=f"{total_loss / n_utts:.3f}", refresh=False)
        if tc.max_minutes and time.perf_counter() - t_start > tc.max_minutes * 60:
            capped = True
            break
    elapsed = time.perf_counter() - t0
    audio_s = frames * hop_s
    return {"loss": total_loss / max(n_utts, 1), "time_s": elapsed, "skipped_batches": skipped,
            "audio_s_per_s": audio_s / elapsed, "time_cap": capped}

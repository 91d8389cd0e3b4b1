#!/usr/bin/env python3
"""Benchmark the default recipe's model: training throughput, transcription real-time factor,
and scoring speed.

    python scripts/benchmark.py [--config recipes/digits/config.yaml] [--sections ...] [--out bench.json]

Training throughput runs the real training step (augmentation, padding, forward, CTC, backward,
clipping, Adam) on the recipe's cached training features when they exist, otherwise on random
features of typical utterance lengths. Transcription RTF is end to end at batch 1: read the file,
resample, segment, log-mels, model, greedy decoding, word alignment. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr.config import load_config  # noqa: E402
from asr.data import BatchIterator, read_manifest  # noqa: E402
from asr.transcribe import transcribe  # noqa: E402
from asr.features import load_feature_cache  # noqa: E402
from asr.model import BiLSTMCTC, count_parameters, load_model  # noqa: E402
from asr.recipe import cache_path, code_version, manifest_path  # noqa: E402
from asr.text import CharTokenizer  # noqa: E402


def training_data(cfg, n_utts: int = 2000):
    """(features, targets, source): the recipe's cached train set or random stand-ins."""
    path = cache_path(cfg, cfg.train_split)
    tok = CharTokenizer()
    if path.exists():
        cache = load_feature_cache(path)
        texts = {u.id: u.text for u in read_manifest(manifest_path(cfg, cfg.train_split))}
        return cache["feats"], [tok.encode(texts[i]) for i in cache["ids"]], str(path)
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(int(torch.randint(80, 450, (1,), generator=g)), cfg.features.n_mels) for _ in range(n_utts)]
    return feats, [tok.encode("one two three")] * n_utts, "random features"


def bench_training(cfg, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    feats, targets, source = training_data(cfg)
    model = BiLSTMCTC(cfg.model, cfg.features.n_mels, len(CharTokenizer())).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    it = BatchIterator(feats, targets, cfg.train.max_batch_frames, cfg.augment, seed=0)
    plan, rng = it.epoch(0), random.Random(0)
    frames, t0 = 0, None
    for k, batch in enumerate(plan[: steps + 3]):
        if k == 3:                       # first steps warm up allocators and kernels
            t0, frames = time.perf_counter(), 0
        x, lens, tgt, tgt_lens = it.collate(batch, rng)
        log_probs, out_lens = model(x, lens)
        loss = F.ctc_loss(log_probs.transpose(0, 1), tgt, out_lens, tgt_lens, reduction="sum", zero_infinity=True)
        opt.zero_grad()
        (loss / x.shape[0]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        frames += int(lens.sum())
    elapsed = time.perf_counter() - t0
    audio_s = frames * cfg.features.hop_ms / 1000
    return {"threads": threads, "steps": min(steps, len(plan) - 3), "data": source,
            "audio_seconds_per_second": round(audio_s / elapsed, 1), "frames_per_second": round(frames / elapsed)}


def bench_transcription(cfg, n_files: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    best = Path(cfg.exp_dir) / "best.pt"
    if best.exists():
        model, which = load_model(best), str(best)
    else:
        model, which = BiLSTMCTC(cfg.model, cfg.features.n_mels, len(CharTokenizer())).eval(), "untrained"
        model.tokenizer, model.feature_config = CharTokenizer(), cfg.features
    split = cfg.test_splits[0] if cfg.test_splits else cfg.dev_split
    files = [u.audio for u in read_manifest(manifest_path(cfg, split))[:n_files]]
    for f in files[:3]:                                   # warm-up
        transcribe(model, f)
    t0 = time.perf_counter()
    audio_s = sum(transcribe(model, f).duration for f in files)
    elapsed = time.perf_counter() - t0
    return {"threads": threads, "model": which, "files": len(files), "audio_seconds": round(audio_s, 1),
            "rtf": round(elapsed / audio_s, 5)}


def bench_scoring(n_utts: int) -> dict:
    """Full ``score_texts`` (sclite alignment, CER, reports, 1000 bootstrap resamples, files)."""
    import tempfile

    from asr.score import score_texts

    torch.set_num_threads(1)
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(2000)]
    refs, hyps = {}, {}
    for i in range(n_utts):
        ref = [rng.choice(vocab) for _ in range(rng.randint(0, 20))]
        hyp = [w if rng.random() > 0.15 else rng.choice(vocab) for w in ref if rng.random() > 0.05]
        refs[f"spk{i % 300}-{i}"], hyps[f"spk{i % 300}-{i}"] = " ".join(ref), " ".join(hyp)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = score_texts(refs, hyps, out_dir=tmp)
        elapsed = time.perf_counter() - t0
    return {"utterances": n_utts, "ref_words": report["summary"]["ref_words"], "seconds": round(elapsed, 2),
            "utterances_per_second": round(n_utts / elapsed)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="recipes/digits/config.yaml")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--files", type=int, default=100, help="files transcribed for the RTF")
    p.add_argument("--scoring-utts", type=int, default=100000, help="utterances for the scoring benchmark")
    p.add_argument("--sections", default="training,transcription,scoring",
                   help="comma-separated subset of training,transcription,scoring")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    cfg = load_config(args.config)
    model = BiLSTMCTC(cfg.model, cfg.features.n_mels, len(CharTokenizer()))
    report = {
        "code_version": code_version(), "config": args.config, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cores": torch.get_num_threads(),
        "model": {**vars(cfg.model), "parameters": count_parameters(model)},
    }
    if "training" in sections:
        report["training"] = bench_training(cfg, args.steps, cfg.train.threads)
    if "transcription" in sections:
        report["transcription_batch1"] = bench_transcription(cfg, args.files, 1)
    if "scoring" in sections:
        report["scoring_1core"] = bench_scoring(args.scoring_utts)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

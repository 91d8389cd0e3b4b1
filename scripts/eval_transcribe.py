#!/usr/bin/env python3
"""Measure the transcription targets on generated speech with a trained model:

1. long recording: test utterances joined with pauses into one file (default 10 min) vs the same
   utterances transcribed one by one (WER of each, and the difference);
2. peak memory of transcribing a short and a long recording (separate processes, max RSS);
3. word start times: separately synthesized words joined with known gaps (median |error|);
4. end-to-end real-time factor on one core.

The decoder is greedy unless ``--method beam|beam_lm`` (with ``--lexicon``/``--lm`` for beam_lm);
``--sections`` picks parts (long,memory,timing,rtf).

    python scripts/eval_transcribe.py --model exp/digits/best.pt --manifest data/digits/test_unseen.jsonl
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asr  # noqa: E402
from asr.audio import SAMPLE_RATE_HZ, load_audio, save_audio  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.score import error_rates  # noqa: E402
from asr.transcribe import frame_energy_db, transcribe  # noqa: E402

GAP_NOISE = 0.0005     # amplitude of the noise between joined utterances (0: digital silence)
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"]


def join_utterances(utts, minutes: float, seed: int = 0):
    """(samples, reference text, utterances used): utterances brought to one level, as in one
    recording, separated by 0.3-1.0 s pauses of low noise (-60 dB below the speech peak)."""
    rng = np.random.default_rng(seed)
    parts, refs, used, total = [], [], [], 0.0
    for u in utts:
        x = level(load_audio(u.audio))
        gap = (GAP_NOISE * rng.standard_normal(int(rng.uniform(0.3, 1.0) * SAMPLE_RATE_HZ))).astype(np.float32)
        parts += [x, gap]
        refs.append(u.text)
        used.append(u)
        total += (x.size + gap.size) / SAMPLE_RATE_HZ
        if total >= minutes * 60:
            break
    return np.concatenate(parts), " ".join(refs), used


def level(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    return (x * peak / (np.abs(x).max() + 1e-9)).astype(np.float32)


def long_recording(rec, utts, minutes: float, tmp: Path) -> dict:
    """``rec``: a :class:`asr.recognizer.Recognizer`; its decoder is used (as everywhere here)."""
    x, ref, used = join_utterances(utts, minutes)
    path = tmp / "long.wav"
    save_audio(path, x)
    joined = transcribe(rec, path).text
    # the same audio, one utterance at a time
    one_by_one = {u.id: transcribe(rec, level(load_audio(u.audio))).text for u in used}
    wer_joined = error_rates({"all": ref}, {"all": joined}).wer
    wer_single = error_rates({u.id: u.text for u in used}, one_by_one).wer
    return {"minutes": round(x.size / SAMPLE_RATE_HZ / 60, 2), "utterances": len(used),
            "wer_joined": round(wer_joined, 2), "wer_one_by_one": round(wer_single, 2),
            "difference": round(wer_joined - wer_single, 2)}, path


def peak_rss_mb(model_path: str, audio: Path) -> float:
    code = ('def peak_mb():\n'
            '    return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1]) / 1024\n'
            'import sys, asr\nasr.load(sys.argv[1]).transcribe(sys.argv[2])\nprint(peak_mb())')
    out = subprocess.run([sys.executable, "-c", code, model_path, str(audio)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def speech_bounds(x: np.ndarray) -> tuple[float, float]:
    """First and last frame (s) within 30 dB of the loudest: the word's true extent."""
    db = frame_energy_db(x)
    idx = np.flatnonzero(db > db.max() - 30)
    return idx[0] * 0.01, idx[-1] * 0.01 + 0.025


def word_timing(rec, n_words: int, tmp: Path, voice: str = "en-us+m7", seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    parts, truth, t = [], [], 0.0
    for i in range(n_words):
        w = DIGITS[rng.integers(len(DIGITS))]
        wav = tmp / f"w{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), w], check=True)
        x = load_audio(wav)
        a, b = speech_bounds(x)
        x = level(x[int(a * SAMPLE_RATE_HZ): int(b * SAMPLE_RATE_HZ)])
        gap = (GAP_NOISE * rng.standard_normal(int(rng.uniform(0.15, 0.6) * SAMPLE_RATE_HZ))).astype(np.float32)
        truth.append((w, t))
        parts += [x, gap]
        t += (x.size + gap.size) / SAMPLE_RATE_HZ
    path = tmp / "words.wav"
    save_audio(path, np.concatenate(parts))
    words = transcribe(rec, path).words
    # compare in order where the recognised word is right (sequence alignment by text)
    import kaldialign
    ali = kaldialign.align([w for w, _ in truth], [w.word for w in words], "*", sclite_mode=True)
    errors, i, j = [], 0, 0
    for r, h in ali:
        if r != "*" and h != "*" and r == h:
            errors.append(abs(words[j].start - truth[i][1]))
        i += r != "*"
        j += h != "*"
    errs = np.array(errors)
    return {"words": n_words, "matched": len(errs), "median_start_error_ms": round(1000 * float(np.median(errs)), 1),
            "p90_start_error_ms": round(1000 * float(np.percentile(errs, 90)), 1)}


def rtf(rec, utts, n: int) -> float:
    files = [u.audio for u in utts[:n]]
    for f in files[:3]:
        transcribe(rec, f)
    t0 = time.perf_counter()
    audio = sum(transcribe(rec, f).duration for f in files)
    return round((time.perf_counter() - t0) / audio, 5)


def main() -> None:  # noqa: C901
    global GAP_NOISE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True, help="utterances to join (e.g. the unseen-voice test set)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--words", type=int, default=200)
    p.add_argument("--gap-noise", type=float, default=GAP_NOISE, help="noise amplitude in pauses")
    p.add_argument("--out")
    p.add_argument("--sections", default="long,memory,timing,rtf")
    p.add_argument("--method", choices=["greedy", "beam", "beam_lm"], default="greedy")
    p.add_argument("--lexicon", default="")
    p.add_argument("--lm", default="")
    p.add_argument("--lm-weight", type=float, default=1.0)
    p.add_argument("--word-score", type=float, default=0.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    GAP_NOISE = args.gap_noise
    sections = set(args.sections.split(","))
    rec = asr.load(args.model)                 # greedy decoder
    if args.method != "greedy":
        from asr.decode import DecodeConfig

        rec = rec.with_decoder(rec.make_decoder(DecodeConfig(lexicon=args.lexicon, lm=args.lm, lm_weight=args.lm_weight,
                                                             word_score=args.word_score), args.method))
    utts = read_manifest(args.manifest)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report = {"model": args.model, "manifest": args.manifest, "gap_noise": GAP_NOISE, "method": args.method}
        if sections & {"long", "memory"}:
            report["long_recording"], long_path = long_recording(rec, utts, args.minutes, tmp)
        if "memory" in sections:
            short = tmp / "short.wav"
            save_audio(short, load_audio(long_path)[: 60 * SAMPLE_RATE_HZ])
            report["peak_rss_mb"] = {"1_min": peak_rss_mb(args.model, short),
                                     f"{report['long_recording']['minutes']}_min": peak_rss_mb(args.model, long_path)}
        if "timing" in sections:
            report["word_timing"] = word_timing(rec, args.words, tmp)
        if "rtf" in sections:
            report[f"rtf_{args.method}_1core"] = rtf(rec, utts, 100)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

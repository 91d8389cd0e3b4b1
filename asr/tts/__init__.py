"""Offline text-to-speech corpus synthesis: a registry of engines (one module each: espeak-ng,
flite, festival, piper, kokoro) and per-utterance speed, pitch, noise and silence variation.

A voice is ``"engine:name"``, e.g. ``espeak:en-us+m3``, ``flite:slt``, ``festival:kal_diphone``,
``piper:joe``, ``kokoro:jm_kumo``. Brace expansion (``espeak:{en,en-us}+{m1,f2}``) keeps configs
short. Adding an engine: a module with an :class:`asr.tts.base.Engine` subclass, plus one line
in ``ENGINES`` below.
"""
from __future__ import annotations

import itertools
import logging
import re
import subprocess
import sys
import tempfile
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from ..audio import SAMPLE_RATE_HZ, AudioError, check_audio, save_audio
from ..data import Utterance
from ..errors import Problem
from .base import Engine, Job, SynthError
from .cache import SynthCache, job_keys
from .espeak import Espeak
from .festival import Festival
from .flite import Flite
from .kokoro import Kokoro
from .piper import Piper

log = logging.getLogger(__name__)

# engine name -> engine (stateless descriptors; per-batch state is made by Engine.synthesize)
ENGINES: dict[str, Engine] = {e.name: e for e in (Espeak(), Flite(), Festival(), Piper(), Kokoro())}

__all__ = ["ENGINES", "Engine", "Job", "SynthError", "expand_voices", "engine_of", "check_voices",
           "synthesize", "postprocess", "native_params", "SynthCache"]


def engine_of(voice: str) -> str:
    return voice.split(":", 1)[0]


def native_params(job: Job) -> tuple[float, float, float]:
    """(engine speed, engine pitch, resample factor) for ``job``; see :meth:`Engine.native_params`."""
    return ENGINES[engine_of(job.voice)].native_params(job)


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
            raise SynthError(f"voice {v!r}: expected 'engine:name' with engine in {tuple(ENGINES)}")
    return list(dict.fromkeys(out))




def missing_engines(voices: Sequence[str]) -> list[str]:
    """Engines among ``voices`` that are not installed here."""
    return [e for e in ENGINES if e in {engine_of(v) for v in voices} and not ENGINES[e].installed()]


def check_voices(voices: Sequence[str]) -> None:
    """Raise :class:`SynthError` naming every voice its engine does not have (or engines not installed)."""
    missing = missing_engines(voices)
    if missing:
        raise SynthError(f"TTS engines not installed: {missing} (run scripts/setup.sh)")
    known = {e: ENGINES[e].voices() for e in {engine_of(v) for v in voices}}
    unknown = [v for v in voices if v.split(":", 1)[1] not in known[engine_of(v)]]
    if unknown:
        raise SynthError(f"unknown TTS voices: {unknown}")


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
    r = ENGINES[engine_of(job.voice)].native_params(job)[2]
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


def _synth_chunk(args: tuple[list[Job], str, list[str] | None, str | None]
                 ) -> tuple[list[Utterance], list[Problem]]:
    """Synthesize jobs of one voice into ``out_dir`` (and the cache, with its keys); returns
    utterances and failures."""
    jobs, out_dir, keys, cache_root = args
    voice = jobs[0].voice
    engine, name = voice.split(":", 1)
    utts, errors = [], []
    with tempfile.TemporaryDirectory() as tmp:
        raw_paths = [Path(tmp) / f"{j.utt_id}.wav" for j in jobs]
        failed = ENGINES[engine].synthesize(jobs, name, raw_paths)
        for k, (job, raw, error) in enumerate(zip(jobs, raw_paths, failed)):
            try:
                if error is not None:
                    raise error
                samples, rate = sf.read(str(raw), dtype="float32")
                audio = postprocess(samples, rate, job)
            except (SynthError, AudioError, OSError, RuntimeError, subprocess.TimeoutExpired) as e:
                errors.append(Problem(job.utt_id, f"{voice}: {e}"))
                continue
            path = Path(out_dir) / f"{job.utt_id}.wav"
            tmp_path = Path(out_dir) / f".{job.utt_id}.tmp.wav"
            save_audio(tmp_path, audio)
            tmp_path.replace(path)       # a new inode: never writes through a link into the cache
            if keys is not None:
                SynthCache(cache_root).store(keys[k], path)
            utts.append(Utterance(job.utt_id, str(path), round(audio.size / SAMPLE_RATE_HZ, 4),
                                  job.text, voice))
    return utts, errors


def _from_cache(chunks: list[list[Job]], out_dir: Path, cache: SynthCache
                ) -> tuple[list[tuple[list[Job], list[str] | None]], list[Utterance]]:
    """Restore cached jobs into ``out_dir``; returns (jobs still to render with their keys, per
    batch; keys None: not cacheable) and the restored utterances. A batch-seeded engine renders
    a batch whole or not at all."""
    versions = {e: ENGINES[e].version() for e in {engine_of(c[0].voice) for c in chunks}}
    todo, restored = [], []
    for chunk in chunks:
        engine = ENGINES[engine_of(chunk[0].voice)]
        if not versions[engine.name]:            # unknown versions: a stale entry could not be told
            todo.append((chunk, None))
            continue
        keys = job_keys(chunk, versions[engine.name], engine.batch_seeded)
        if engine.batch_seeded and any(cache.frames(k) is None for k in keys):
            todo.append((chunk, keys))
            continue
        left = []
        for j, k in zip(chunk, keys):
            path = out_dir / f"{j.utt_id}.wav"
            n = cache.restore(k, path)
            if n is None:
                left.append((j, k))
            else:
                restored.append(Utterance(j.utt_id, str(path), round(n / SAMPLE_RATE_HZ, 4), j.text, j.voice))
        if left:
            todo.append(([j for j, _ in left], [k for _, k in left]))
    return todo, restored


def synthesize(jobs: Sequence[Job], out_dir: str | Path, n_procs: int = 2,
               chunk: int = 40, progress: bool = True, cache: SynthCache | None = None
               ) -> tuple[list[Utterance], list[str]]:
    """Synthesize all ``jobs`` into ``out_dir`` with ``n_procs`` processes; jobs found in
    ``cache`` are restored from it, new ones stored there.

    Returns utterances in job order and a :class:`Problem` per failed job (never silently dropped).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_voice: dict[str, list[Job]] = {}
    for j in jobs:
        by_voice.setdefault(j.voice, []).append(j)
    batches = [js[i: i + chunk] for js in by_voice.values() for i in range(0, len(js), chunk)]
    utts: list[Utterance] = []
    if cache is not None:
        todo, utts = _from_cache(batches, out_dir, cache)
        chunks = [(js, str(out_dir), keys, str(cache.root) if keys else None) for js, keys in todo]
        if utts:
            log.info("%s: %d of %d utterances from the synthesis cache %s", out_dir.name, len(utts),
                     len(jobs), cache.root)
    else:
        chunks = [(js, str(out_dir), None, None) for js in batches]
    errors: list[Problem] = []
    bar = tqdm(total=len(jobs) - len(utts), desc=f"synth {out_dir.name}", unit="utt", file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()), mininterval=1.0)
    with get_context("fork").Pool(n_procs) as pool:
        for u, e in pool.imap_unordered(_synth_chunk, chunks):
            utts.extend(u)
            errors.extend(e)
            bar.update(len(u) + len(e))
    bar.close()
    if progress:
        log.info("%s: %d utterances, %d failed", out_dir.name, len(utts), len(errors))
    order = {j.utt_id: i for i, j in enumerate(jobs)}
    return sorted(utts, key=lambda u: order[u.id]), errors

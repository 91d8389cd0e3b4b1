"""Waveform augmentation for robustness to real recordings: rooms, noise, channels and tempo.

Each kind has a probability and parameter ranges in :class:`WaveAugmentConfig`; one call of
:meth:`WaveAugmenter.__call__` draws everything from the ``random.Random`` it is given (the
training batch's RNG), so batches are the same in any worker process and after a resume.

- reverberation: room impulse responses simulated with the image-source method
  (pyroomacoustics): random shoebox rooms, RT60 in a range, random source/microphone
  positions; a bank of them is simulated once and cached, then applied by FFT convolution;
- additive noise at an SNR range: coloured (white/pink/brown), babble (3-8 other speakers
  mixed), bursts (non-stationary), mains hum with harmonics, music-like tones;
- channel: telephone band (300-3400 Hz through 8 kHz), lossy codecs (MP3, Ogg Vorbis, GSM 6.10,
  mu-law; libsndfile in process), random microphone EQ, clipping, level;
- tempo (pitch kept, ``librosa.effects.time_stretch``).

All signals are (N,) float32 at 16 kHz. A source that cannot be made (a room that fails to
simulate, a codec that fails) is reported and counted in :attr:`WaveAugmenter.failures`, and
that kind is left out for the utterance; the utterance is never lost.
"""
from __future__ import annotations

import io
import logging
import math
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import soundfile as sf
import soxr

from .audio import SAMPLE_RATE_HZ
from .config import require

log = logging.getLogger(__name__)

TELEPHONE_BAND_HZ = (300.0, 3400.0)
TELEPHONE_RATE_HZ = 8000
HUM_HZ = (50.0, 60.0)
MIN_WALL_DISTANCE_M = 0.5        # sources and microphones stay this far from the walls
MAX_RIR_S = 1.5                  # impulse responses are cut here

Codec = Literal["mp3", "ogg", "gsm", "ulaw"]
NoiseKind = Literal["colored", "babble", "bursts", "hum", "tones"]
# codec -> (container format, subtype, sample rate it runs at)
CODECS: dict[str, tuple[str, str, int]] = {
    "mp3": ("MP3", "MPEG_LAYER_III", 16000), "ogg": ("OGG", "VORBIS", 16000),
    "gsm": ("WAV", "GSM610", 8000), "ulaw": ("WAV", "ULAW", 8000)}


@dataclass(frozen=True)
class WaveAugmentConfig:
    """Waveform augmentation of training utterances (``utterance_prob`` 0: off). An utterance is
    augmented with probability ``utterance_prob`` (its audio is loaded and its features computed
    again); each kind then applies with its own probability. The others use cached features."""

    utterance_prob: float = 0.0
    ramp_epochs: int = 0            # the share grows linearly from 0 (epoch 1) to utterance_prob
                                    # (epoch ramp_epochs + 1): clean speech first, for convergence
    tempo_prob: float = 0.0
    tempo_range: tuple[float, float] = (0.7, 1.4)       # > 1 is faster; pitch kept
    tempo_domain: Literal["features", "waveform"] = "features"   # features: the log-mel frames
                                                        # are time-stretched after the other kinds
                                                        # (~0.1 ms); waveform: librosa's phase
                                                        # vocoder first (~17 ms per 2-s utterance,
                                                        # a third of the augmentation's cost)
    reverb_prob: float = 0.0
    rt60_range_s: tuple[float, float] = (0.1, 1.0)
    room_size_range_m: tuple[float, float] = (3.0, 12.0)   # length and width; height 2.4-4 m
    rir_bank: int = 64                                  # rooms simulated once (cached) and reused
    noise_prob: float = 0.0
    snr_db_range: tuple[float, float] = (0.0, 30.0)
    noise_kinds: dict[NoiseKind, float] = field(
        default_factory=lambda: {"colored": 1.0, "babble": 1.0, "bursts": 0.5, "hum": 0.3, "tones": 0.5})
    babble_speakers: tuple[int, int] = (3, 8)
    babble_bank: int = 48                               # babble segments mixed once per run
    telephone_prob: float = 0.0
    codec_prob: float = 0.0
    codecs: tuple[Codec, ...] = ("mp3", "ogg", "gsm", "ulaw")
    eq_prob: float = 0.0
    eq_gain_db: float = 10.0                            # largest boost or cut of one EQ band
    clip_prob: float = 0.0
    clip_level_range: tuple[float, float] = (0.1, 0.6)  # clipping threshold, fraction of the peak
    level_db_range: tuple[float, float] = (-30.0, 0.0)  # peak level after augmentation

    def check(self, where: str) -> None:
        for name in ("utterance_prob", "tempo_prob", "reverb_prob", "noise_prob", "telephone_prob", "codec_prob", "eq_prob",
                     "clip_prob"):
            require(0.0 <= getattr(self, name) <= 1.0, f"{where}.{name}", "must be in [0, 1]")
        require(self.ramp_epochs >= 0, f"{where}.ramp_epochs", "must be >= 0")
        require(0.5 <= self.tempo_range[0] <= self.tempo_range[1] <= 2.0, f"{where}.tempo_range",
                "must satisfy 0.5 <= low <= high <= 2")
        require(0.05 <= self.rt60_range_s[0] <= self.rt60_range_s[1] <= 2.0, f"{where}.rt60_range_s",
                "must satisfy 0.05 <= low <= high <= 2")
        require(2.0 <= self.room_size_range_m[0] <= self.room_size_range_m[1] <= 50.0, f"{where}.room_size_range_m",
                "must satisfy 2 <= low <= high <= 50")
        require(self.snr_db_range[0] <= self.snr_db_range[1], f"{where}.snr_db_range", "low <= high")
        require(all(w >= 0 for w in self.noise_kinds.values()) and sum(self.noise_kinds.values()) > 0,
                f"{where}.noise_kinds", "weights must be >= 0 and not all 0")
        require(1 <= self.babble_speakers[0] <= self.babble_speakers[1], f"{where}.babble_speakers", "1 <= low <= high")
        require(self.rir_bank >= 1 and self.babble_bank >= 1, f"{where}.rir_bank", "banks must be >= 1")
        require(0.0 < self.clip_level_range[0] <= self.clip_level_range[1] <= 1.0, f"{where}.clip_level_range",
                "must satisfy 0 < low <= high <= 1")
        require(self.level_db_range[0] <= self.level_db_range[1] <= 0.0, f"{where}.level_db_range", "low <= high <= 0")
        require(self.eq_gain_db >= 0, f"{where}.eq_gain_db", "must be >= 0")

    def share(self, epoch: int) -> float:
        """Probability that an utterance is augmented in ``epoch`` (0-based)."""
        if self.ramp_epochs <= 0:
            return self.utterance_prob
        return self.utterance_prob * min(1.0, epoch / self.ramp_epochs)

    @property
    def enabled(self) -> bool:
        return self.utterance_prob > 0 and any(p > 0 for p in (self.tempo_prob, self.reverb_prob, self.noise_prob, self.telephone_prob,
                                   self.codec_prob, self.eq_prob, self.clip_prob))


# ---------------------------------------------------------------- rooms
def simulate_rir(rng: np.random.Generator, rt60_range: tuple[float, float] = (0.1, 1.0),
                 size_range: tuple[float, float] = (3.0, 12.0)) -> np.ndarray:
    """One room impulse response (image-source method): a random shoebox room whose wall
    absorption gives an RT60 drawn from ``rt60_range`` (Sabine), random source and microphone
    positions at least ``MIN_WALL_DISTANCE_M`` from the walls. (L,) float32, peak-aligned."""
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(*size_range), rng.uniform(*size_range), rng.uniform(2.4, 4.0)])
    rt60 = rng.uniform(*rt60_range)
    try:
        e_absorption, max_order = pra.inverse_sabine(rt60, dims)
    except ValueError:                      # room too small for that RT60: the most reverberant it allows
        e_absorption, max_order = 0.05, 60
    room = pra.ShoeBox(dims, fs=SAMPLE_RATE_HZ, materials=pra.Material(e_absorption), max_order=min(max_order, 60))
    inner = lambda: rng.uniform(MIN_WALL_DISTANCE_M, dims - MIN_WALL_DISTANCE_M)  # noqa: E731
    room.add_source(inner())
    room.add_microphone(inner())
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    start = max(0, int(np.argmax(np.abs(rir))) - int(0.002 * SAMPLE_RATE_HZ))   # keep 2 ms before the direct path
    rir = rir[start: start + int(MAX_RIR_S * SAMPLE_RATE_HZ)]
    return (rir / (np.abs(rir).max() + 1e-12)).astype(np.float32)


def _rir_job(args: tuple[int, tuple, tuple]) -> np.ndarray | str:
    seed, rt60_range, size_range = args
    try:
        return simulate_rir(np.random.default_rng(seed), rt60_range, size_range)
    except Exception as e:                  # a room that fails to simulate is reported, not fatal
        return f"room {seed}: {type(e).__name__}: {e}"


def rir_bank(cfg: WaveAugmentConfig, seed: int, procs: int = 2) -> tuple[list[np.ndarray], list[str]]:
    """``cfg.rir_bank`` impulse responses (seeded) and the rooms that failed to simulate."""
    from multiprocessing import get_context

    jobs = [(seed * 100003 + k, cfg.rt60_range_s, cfg.room_size_range_m) for k in range(cfg.rir_bank)]
    with get_context("fork").Pool(procs) as pool:
        out = pool.map(_rir_job, jobs)
    return [r for r in out if not isinstance(r, str)], [r for r in out if isinstance(r, str)]


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``rir`` (FFT), same length, level kept."""
    from scipy import signal  # imported when used: ~1 s, never needed by the CLI or the light runtime
    y = signal.fftconvolve(x, rir)[: x.size]
    return (y * (np.abs(x).max() / (np.abs(y).max() + 1e-12))).astype(np.float32)


# ---------------------------------------------------------------- noise
def unit_rms(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to an RMS of 1 (noises are mixed at an SNR from unit-RMS sources)."""
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def colored_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise of ``n`` samples, unit RMS."""
    from scipy import fft as sfft  # imported when used: the CLI and the light runtime never need it
    m = sfft.next_fast_len(n, real=True)      # an FFT of a prime length is 10x slower
    white = rng.standard_normal(m)
    exponent = rng.choice([0.0, 0.5, 1.0])     # spectral slope: power ~ 1 / f^(2*exponent)
    if exponent:
        spec = sfft.rfft(white)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        white = sfft.irfft(spec / f ** exponent, m)
    return unit_rms(white[:n])


def burst_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Non-stationary noise: coloured noise gated on and off in random bursts (20-500 ms)."""
    gate = np.zeros(n)
    t = 0
    while t < n:
        on = int(rng.uniform(0.02, 0.5) * SAMPLE_RATE_HZ)
        gate[t: t + on] = rng.uniform(0.3, 1.0)
        t += on + int(rng.uniform(0.05, 0.8) * SAMPLE_RATE_HZ)
    gate = np.convolve(gate, np.hanning(161) / np.hanning(161).sum(), mode="same")   # 10 ms ramps
    return unit_rms(colored_noise(n, rng) * gate)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and a few harmonics with random amplitudes and phases."""
    t = np.arange(n) / SAMPLE_RATE_HZ
    f0 = HUM_HZ[int(rng.integers(2))]
    x = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 8))
    return unit_rms(x)


def tones(n: int, rng: np.random.Generator) -> np.ndarray:
    """Music-like background: notes of random chords (harmonic tones with decaying envelopes)."""
    x = np.zeros(n)
    t = 0
    while t < n:
        dur = int(rng.uniform(0.15, 0.8) * SAMPLE_RATE_HZ)
        tt = np.arange(min(dur, n - t)) / SAMPLE_RATE_HZ
        env = np.exp(-tt * rng.uniform(1.0, 6.0))
        for midi in rng.integers(45, 85, size=int(rng.integers(1, 4))):
            f = 440.0 * 2 ** ((midi - 69) / 12)
            x[t: t + tt.size] += env * sum(np.sin(2 * np.pi * f * k * tt) / k ** 1.5 for k in range(1, 5))
        t += dur
    return unit_rms(x)


def babble_mix(talkers: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of several talkers at once: each utterance looped, offset at random, at
    its own level within 6 dB. Unit RMS."""
    x = np.zeros(n)
    for s in talkers:
        s = unit_rms(s)
        reps = np.tile(s, int(np.ceil((n + s.size) / max(s.size, 1))) + 1)
        start = int(rng.integers(s.size))
        x += reps[start: start + n] * 10 ** (rng.uniform(-6, 0) / 20)
    return unit_rms(x)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled to ``snr_db`` against the speech RMS (frames above -40 dB of
    the peak, so leading and trailing silence do not count as speech)."""
    speech = x[np.abs(x) > np.abs(x).max() * 0.01]
    rms = np.sqrt(np.mean(speech ** 2)) if speech.size else 1e-4
    return (x + noise[: x.size] * rms * 10 ** (-snr_db / 20)).astype(np.float32)


# ---------------------------------------------------------------- channel
def telephone(x: np.ndarray) -> np.ndarray:
    """Narrowband telephone channel: 300-3400 Hz band-pass, through 8 kHz and back."""
    from scipy import signal  # imported when used: ~1 s, never needed by the CLI or the light runtime
    sos = signal.butter(6, TELEPHONE_BAND_HZ, btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    y = signal.sosfilt(sos, x)
    y = soxr.resample(soxr.resample(y, SAMPLE_RATE_HZ, TELEPHONE_RATE_HZ), TELEPHONE_RATE_HZ, SAMPLE_RATE_HZ)
    return _fit(y, x.size)


def codec(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` encoded with a lossy codec and decoded again (libsndfile in process)."""
    fmt, subtype, rate = CODECS[name]
    y = x if rate == SAMPLE_RATE_HZ else soxr.resample(x, SAMPLE_RATE_HZ, rate)
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1, 1), rate, format=fmt, subtype=subtype)
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float32")
    if rate != SAMPLE_RATE_HZ:
        z = soxr.resample(z, rate, SAMPLE_RATE_HZ)
    return _fit(z, x.size)


def random_eq(x: np.ndarray, rng: np.random.Generator, max_gain_db: float) -> np.ndarray:
    """A microphone's colouring: a smooth random gain curve over frequency (5 bands, +-max dB)."""
    from scipy import fft as sfft  # imported when used: the CLI and the light runtime never need it
    m = sfft.next_fast_len(x.size, real=True)
    spec = sfft.rfft(x, m)
    freqs = np.linspace(0, 1, spec.size)
    knots = rng.uniform(-max_gain_db, max_gain_db, size=6)
    gain_db = np.interp(freqs, np.linspace(0, 1, knots.size), knots)
    return sfft.irfft(spec * 10 ** (gain_db / 20), m)[: x.size].astype(np.float32)


def clip(x: np.ndarray, level: float) -> np.ndarray:
    """Hard clipping at ``level`` times the peak, then back to the original peak."""
    peak = np.abs(x).max() + 1e-12
    return (np.clip(x, -level * peak, level * peak) / level).astype(np.float32)


def tempo(x: np.ndarray, rate: float) -> np.ndarray:
    """Faster (``rate`` > 1) or slower speech with the pitch kept (phase vocoder)."""
    import librosa

    return librosa.effects.time_stretch(np.asarray(x, np.float32), rate=rate).astype(np.float32)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, np.float32)
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


# ---------------------------------------------------------------- the augmenter
class WaveAugmenter:
    """Applies :class:`WaveAugmentConfig` to utterances. ``rirs``: impulse responses (see
    :func:`rir_bank`); ``babble``: unit-RMS babble segments (see :func:`babble_bank`)."""

    def __init__(self, cfg: WaveAugmentConfig, rirs: Sequence[np.ndarray] = (), babble: Sequence[np.ndarray] = ()):
        self.cfg, self.rirs, self.babble = cfg, list(rirs), list(babble)
        self.failures: Counter = Counter()
        kinds = [k for k, w in cfg.noise_kinds.items() if w > 0 and (k != "babble" or self.babble)]
        self.noise_kinds = kinds
        self.noise_weights = [cfg.noise_kinds[k] for k in kinds]

    def draw_tempo(self, rng: random.Random) -> float:
        """The tempo of one augmented utterance (1.0: unchanged, with probability 1 - tempo_prob).
        Drawn when the epoch is planned (:class:`asr.batching.EpochDraws`): it changes the
        utterance's length, which batching must know."""
        return rng.uniform(*self.cfg.tempo_range) if rng.random() < self.cfg.tempo_prob else 1.0

    def __call__(self, x: np.ndarray, rng: random.Random, uid: str = "?", rate: float = 1.0) -> np.ndarray:
        """``rate`` (the talker's tempo, from :meth:`draw_tempo`; applied here with
        ``tempo_domain: waveform``, else to the features by the caller) and one random draw of
        every other kind, in the order a recording happens: tempo, the room, the background, the
        microphone and channel, the level."""
        c, g = self.cfg, np.random.default_rng(rng.randrange(2 ** 32))
        steps: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
        if rate != 1.0 and c.tempo_domain == "waveform":
            steps.append(("tempo", lambda y: tempo(y, rate)))
        if self.rirs and rng.random() < c.reverb_prob:
            steps.append(("reverb", lambda y, h=self.rirs[rng.randrange(len(self.rirs))]: reverberate(y, h)))
        if self.noise_kinds and rng.random() < c.noise_prob:
            kind = rng.choices(self.noise_kinds, self.noise_weights)[0]
            snr = rng.uniform(*c.snr_db_range)
            steps.append((kind, lambda y, k=kind, s=snr: add_noise(y, self.noise(k, y.size, g), s)))
        if rng.random() < c.eq_prob:
            steps.append(("eq", lambda y: random_eq(y, g, c.eq_gain_db)))
        if rng.random() < c.telephone_prob:
            steps.append(("telephone", telephone))
        if c.codecs and rng.random() < c.codec_prob:
            steps.append(("codec", lambda y, name=rng.choice(c.codecs): codec(y, name)))
        if rng.random() < c.clip_prob:
            steps.append(("clip", lambda y, level=rng.uniform(*c.clip_level_range): clip(y, level)))
        level = 10 ** (rng.uniform(*c.level_db_range) / 20)
        for name, step in steps:
            try:
                y = step(x)
                if not np.isfinite(y).all():
                    raise ValueError("non-finite output")
                x = y
            except Exception as e:               # a failed source never loses the utterance
                self.failures[name] += 1
                log.warning("augmentation %s failed on %s (left out): %s: %s", name, uid, type(e).__name__, e)
        peak = float(np.abs(x).max())
        if not math.isfinite(peak) or peak == 0.0:
            return np.zeros_like(x)
        return (x / peak * level).astype(np.float32)

    def noise(self, kind: str, n: int, g: np.random.Generator) -> np.ndarray:
        if kind == "babble":
            seg = self.babble[int(g.integers(len(self.babble)))]
            reps = np.tile(seg, n // seg.size + 2)
            start = int(g.integers(seg.size))
            return reps[start: start + n]
        return {"colored": colored_noise, "bursts": burst_noise, "hum": hum, "tones": tones}[kind](n, g)


def cached_bank(path, key: str, build: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
    """The arrays saved in ``path`` (.npz) when its ``key`` matches, else ``build()`` saved there."""
    from pathlib import Path

    path = Path(path)
    if path.exists():
        with np.load(path) as z:
            if str(z["key"]) == key:
                return [z[f"a{k}"] for k in range(int(z["n"]))]
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")      # ranks building at once do not collide
    np.savez(tmp, key=key, n=len(arrays), **{f"a{k}": a for k, a in enumerate(arrays)})
    tmp.replace(path)
    return arrays


def babble_bank(load: Callable[[int], np.ndarray], n_utts: int, cfg: WaveAugmentConfig, seed: int,
                seconds: float = 8.0) -> tuple[list[np.ndarray], list[str]]:
    """``cfg.babble_bank`` babble segments of ``seconds``, each mixing 3-8 (``babble_speakers``)
    utterances drawn from ``load(i)``, ``0 <= i < n_utts``. Returns the segments and the
    utterances that could not be loaded (reported, replaced by others)."""
    rng = np.random.default_rng(seed)
    bank, failed = [], []
    for _ in range(cfg.babble_bank):
        talkers = []
        for i in rng.integers(n_utts, size=int(rng.integers(cfg.babble_speakers[0], cfg.babble_speakers[1] + 1))):
            try:
                talkers.append(load(int(i)))
            except Exception as e:
                failed.append(f"babble source {int(i)}: {type(e).__name__}: {e}")
        if talkers:
            bank.append(babble_mix(talkers, int(seconds * SAMPLE_RATE_HZ), rng).astype(np.float32))
    return bank, failed

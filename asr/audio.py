"""Audio loading: any format soundfile reads, any rate and channel count -> 16 kHz mono float32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AsrError

SAMPLE_RATE_HZ = 16000
MIN_SOURCE_RATE_HZ = 4000      # below this no speech band survives
MAX_SOURCE_RATE_HZ = 384000
SILENCE_PEAK = 1e-4            # peak amplitude below which a file holds no usable signal
DEAD_CHANNEL_DB = -40.0        # a channel this far below the loudest one is not mixed in
TARGET_PEAK = 0.5              # normalize_level: 99.9th-percentile amplitude after normalisation
MAX_GAIN_DB = 50.0             # normalize_level: never amplify more than this
MAX_ABS_AMPLITUDE = 1e3        # float samples beyond this are not audio (a scaled or corrupt file)


class AudioError(AsrError):
    """An audio file cannot be used; the message names the file and the reason."""


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """(N,) float32 at ``rate`` Hz -> (M,) float32 at ``target`` Hz (soxr, high quality)."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


class BlockResampler:
    """Consecutive blocks at ``rate`` Hz -> float32 blocks at SAMPLE_RATE_HZ (soxr's stream
    resampler, high quality; the identity at SAMPLE_RATE_HZ). ``last``: flush its delay line."""

    def __init__(self, rate: int):
        self.stream = None if rate == SAMPLE_RATE_HZ else \
            soxr.ResampleStream(rate, SAMPLE_RATE_HZ, 1, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool) -> np.ndarray:
        y = x if self.stream is None else self.stream.resample_chunk(x, last=last)
        return y.astype(np.float32, copy=False)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) -> (N,) by averaging the live channels: a channel more than
    ``DEAD_CHANNEL_DB`` below the loudest (a dead or unplugged microphone) is left out, so it
    does not halve the level or add its hiss."""
    if samples.ndim == 1:
        return samples
    rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64), axis=0))
    live = rms >= rms.max() * 10 ** (DEAD_CHANNEL_DB / 20)
    return samples[:, live].mean(axis=1) if live.any() and rms.max() > 0 else samples.mean(axis=1)


def normalize_level(x: np.ndarray) -> np.ndarray:
    """Remove DC offset and bring the level to ``TARGET_PEAK`` (99.9th percentile of |x|, so a
    click does not set it), with at most ``MAX_GAIN_DB`` of gain: very quiet recordings become
    usable, digital silence stays silence."""
    x = x - x.mean(dtype=np.float64)
    peak = float(np.percentile(np.abs(x), 99.9)) if x.size else 0.0
    if peak <= 0:
        return x.astype(np.float32)
    gain = min(TARGET_PEAK / peak, 10 ** (MAX_GAIN_DB / 20))
    return np.clip(x * gain, -1.0, 1.0).astype(np.float32)


def load_audio(path: str | Path, min_seconds: float = 0.0, max_seconds: float | None = None,
               reject_silence: bool = False, start_s: float = 0.0, stop_s: float | None = None) -> np.ndarray:
    """Read ``path`` and return (N,) float32 samples at 16 kHz, mono, in [-1, 1].

    Raises :class:`AudioError` naming the file for unreadable, empty, too short or non-finite
    audio and absurd sample rates; with ``max_seconds`` for files too long (checked from the
    header, before decoding), with ``reject_silence`` for all-silent files. ``start_s`` /
    ``stop_s`` read only that part of the file.
    """
    path = require_regular(path)
    if max_seconds is not None:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise AudioError(f"{path}: cannot read audio ({e})") from None
        check_rate(info.samplerate, str(path))
        length = (stop_s if stop_s is not None else info.frames / info.samplerate) - start_s
        if length > max_seconds:
            raise AudioError(f"{path}: audio too long ({length:.1f} s > {max_seconds} s)")
    try:
        if start_s or stop_s is not None:
            rate = sf.info(str(path)).samplerate
            start, stop = int(round(start_s * rate)), None if stop_s is None else int(round(stop_s * rate))
            if stop is not None and start >= sf.info(str(path)).frames:
                raise AudioError(f"{path}: segment starts at {start_s:.2f} s, after the end of the file")
            samples, rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=False)
        else:
            samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as e:
        raise AudioError(f"{path}: cannot read audio ({e})") from None
    samples = check_audio(samples, rate, str(path), min_seconds)
    if reject_silence and np.abs(samples).max() < SILENCE_PEAK:
        raise AudioError(f"{path}: audio is all silence (peak {np.abs(samples).max():.1e})")
    return samples


def check_audio(samples: np.ndarray, rate: int, name: str, min_seconds: float = 0.0) -> np.ndarray:
    """Validate and convert an in-memory signal; ``name`` is used in error messages."""
    check_rate(rate, name)
    samples = to_mono(np.asarray(samples, dtype=np.float32))
    if samples.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    check_samples(samples, name)
    samples = resample(samples, rate)
    if samples.size < min_seconds * SAMPLE_RATE_HZ:
        raise AudioError(f"{name}: audio too short ({samples.size / SAMPLE_RATE_HZ:.3f} s, "
                         f"need >= {min_seconds:.3f} s)")
    return samples


def require_regular(path: str | Path) -> Path:
    """``path`` if it is a regular file (or a link to one); a FIFO, device, directory or missing
    path is an :class:`AudioError` before anything opens it (opening a FIFO blocks forever)."""
    path = Path(path)
    if not path.is_file():
        what = "no such file" if not path.exists() else "not a regular file (FIFO, device or directory)"
        raise AudioError(f"{path}: cannot read audio ({what})")
    return path


def check_samples(samples: np.ndarray, name: str) -> None:
    """NaN/Inf or absurd amplitudes (a float file holding 1e30) are a named error: they would
    give NaN features and a silent empty transcript."""
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > MAX_ABS_AMPLITUDE:
        raise AudioError(f"{name}: absurd sample amplitude {peak:.3g} (float audio is expected in [-1, 1])")


def check_rate(rate: int, name: str) -> None:
    if not MIN_SOURCE_RATE_HZ <= rate <= MAX_SOURCE_RATE_HZ:
        raise AudioError(f"{name}: unsupported sample rate {rate} Hz "
                         f"(allowed {MIN_SOURCE_RATE_HZ}-{MAX_SOURCE_RATE_HZ})")


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding)."""
    path = require_regular(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{path}: cannot read audio header ({e})") from None
    return info.frames / info.samplerate


def save_audio(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE_HZ) -> None:
    """Write 16-bit PCM WAV, clipping to [-1, 1]."""
    sf.write(str(path), np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16")

"""Log-mel filterbank features, global CMVN statistics and the per-utterance feature cache."""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchaudio

from .audio import SAMPLE_RATE_HZ, AudioError
from .config import require
from .data import load_utterance_audio
from .errors import AsrError, Problem, report_problems
from .files import atomic_save

LOG_FLOOR = 1e-6          # power floor before log, keeps digital silence finite
CACHE_FORMAT = "asr-feats-v1"


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel filterbank front end (fixed 16 kHz input)."""

    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    dither: float = 0.0

    def check(self, where: str) -> None:
        require(self.n_mels > 0, f"{where}.n_mels", "must be > 0")
        require(0 < self.hop_ms <= self.win_ms, f"{where}.hop_ms", "must be in (0, win_ms]")
        require(self.n_fft >= self.win_ms * 16, f"{where}.n_fft", "must cover one window")


class FeatureExtractor(torch.nn.Module):
    """(N,) samples at 16 kHz -> (T, n_mels) log-mel features, T = 1 + N // hop."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE_HZ,
            n_fft=cfg.n_fft,
            win_length=int(round(cfg.win_ms * SAMPLE_RATE_HZ / 1000)),
            hop_length=self.hop,
            n_mels=cfg.n_mels,
            power=2.0,
        )

    @property
    def hop(self) -> int:
        """Frame shift in samples."""
        return int(round(self.cfg.hop_ms * SAMPLE_RATE_HZ / 1000))

    @torch.no_grad()
    def forward(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(samples, dtype=torch.float32)
        if self.cfg.dither > 0:
            x = x + self.cfg.dither * torch.randn_like(x)
        return torch.log(self.mel(x).clamp_min(LOG_FLOOR)).transpose(0, 1).contiguous()


    def power_frames(self, padded: torch.Tensor) -> torch.Tensor:
        """(N,) samples *already padded* -> (T, n_mels) log-mels of every whole window in them
        (``center=False``): what ``forward`` computes on its reflect-padded input. Streaming
        feeds pieces of the padded signal through this and gets the offline frames exactly."""
        spec = self.mel.spectrogram
        power = torch.stft(padded, spec.n_fft, spec.hop_length, spec.win_length, spec.window,
                           center=False, return_complex=True).abs().pow(2)
        return torch.log(self.mel.mel_scale(power).clamp_min(LOG_FLOOR)).transpose(0, 1).contiguous()


class StreamingFeatures:
    """Incremental log-mels: ``accept(samples)`` returns the frames that became complete,
    ``finish()`` the rest. Concatenated, they equal ``FeatureExtractor(cfg)(all samples)``
    (same reflect padding at both ends), frame for frame."""

    def __init__(self, extractor: FeatureExtractor):
        self.x = extractor
        self.half = extractor.cfg.n_fft // 2                # reflect padding at each end (samples)
        self.buf = np.zeros(0, np.float32)                  # padded-domain samples still needed
        self.pos = 0                                        # where the next frame starts in buf
        self.started = False                                # left padding applied
        self.total = 0                                      # real samples accepted
        self.emitted = 0                                    # frames returned

    def accept(self, samples: np.ndarray) -> torch.Tensor:
        """(N,) float32 at 16 kHz -> (T_new, n_mels); T_new may be 0."""
        self.total += samples.size
        self.buf = np.concatenate([self.buf, samples.astype(np.float32, copy=False)])
        if not self.started:
            if self.buf.size <= self.half:                  # reflect needs half + 1 samples
                return self._empty()
            self.buf = np.concatenate([self.buf[1: self.half + 1][::-1], self.buf])
            self.started = True
        return self._frames()

    def finish(self) -> torch.Tensor:
        """The last frames (right reflect padding), as the offline extractor makes them."""
        want = 1 + self.total // self.x.hop - self.emitted
        if self.total == 0 or want <= 0:
            return self._empty()
        if not self.started:                                # shorter than half a window: zero-extend
            frames = self.x(np.pad(self.buf, (0, self.half + 1 - self.buf.size)))
        else:
            self.buf = np.concatenate([self.buf, self.buf[-(self.half + 1): -1][::-1]])
            frames = self._frames()
        self.emitted += min(want, frames.shape[0]) - frames.shape[0]
        return frames[:want]

    def _frames(self) -> torch.Tensor:
        n_fft, hop = self.x.cfg.n_fft, self.x.hop
        avail = self.buf.size - self.pos
        n = 0 if avail < n_fft else 1 + (avail - n_fft) // hop
        if n == 0:
            return self._empty()
        piece = self.buf[self.pos: self.pos + (n - 1) * hop + n_fft]
        frames = self.x.power_frames(torch.from_numpy(np.ascontiguousarray(piece)))
        self.pos += n * hop
        cut = max(0, min(self.pos, self.buf.size - (self.half + 1)))   # keep what right padding needs
        self.buf, self.pos = self.buf[cut:], self.pos - cut
        self.emitted += n
        return frames

    def _empty(self) -> torch.Tensor:
        return torch.zeros(0, self.x.cfg.n_mels)


@functools.lru_cache(maxsize=8)
def cached_extractor(cfg: FeatureConfig) -> FeatureExtractor:
    """One extractor per feature config: building the mel filterbank costs about 1 ms, a
    noticeable share of transcribing a 2-second file."""
    return FeatureExtractor(cfg)


class LazyFeatures(Sequence):
    """Features of ``utts`` computed from audio on access, for corpora too large to cache in
    memory (same values as the cache, float16). ``lengths`` comes from manifest durations."""

    def __init__(self, utts: Sequence, cfg: FeatureConfig, max_seconds: float = 600.0):
        self.utts, self.cfg, self.max_seconds = list(utts), cfg, max_seconds
        self._extractor: FeatureExtractor | None = None
        hop = int(round(cfg.hop_ms * SAMPLE_RATE_HZ / 1000))
        self.lengths = [1 + int(round(u.duration * SAMPLE_RATE_HZ)) // hop for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LazyFeatures(self.utts[i], self.cfg, self.max_seconds)
        if self._extractor is None:          # built lazily: cheap to pickle into loader workers
            self._extractor = FeatureExtractor(self.cfg)
        audio = load_utterance_audio(self.utts[i], max_seconds=self.max_seconds)
        return self._extractor(audio).to(torch.float16)

    def __getstate__(self):
        return {**self.__dict__, "_extractor": None}


def feature_lengths(feats: Sequence[torch.Tensor]) -> list[int]:
    """Frames per utterance without computing lazy features."""
    lengths = getattr(feats, "lengths", None)
    return list(lengths) if lengths is not None else [f.shape[0] for f in feats]


def compute_cmvn(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean and std (each (F,)) over all frames of ``feats`` [(T_i, F)], in float64."""
    total, s, sq = 0, 0.0, 0.0
    for f in feats:                        # one at a time: lazy features are never all in memory
        f64 = f.to(torch.float64)
        total += f64.shape[0]
        s = s + f64.sum(0)
        sq = sq + (f64 * f64).sum(0)
    if total == 0:
        raise ValueError("cannot compute CMVN: no frames")
    mean = s / total
    std = (sq / total - mean * mean).clamp_min(1e-8).sqrt()
    return mean.float(), std.float()


def _cache_key(utts: Sequence, cfg: FeatureConfig, max_seconds: float) -> str:
    h = hashlib.sha256(json.dumps([asdict(cfg), max_seconds], sort_keys=True).encode())
    for u in utts:
        h.update(f"{u.id}\t{u.audio}\t{u.duration:.4f}\t{u.offset}\n".encode())
    return h.hexdigest()[:16]


def build_feature_cache(utts: Sequence, cfg: FeatureConfig, path: str | Path,
                        report: str | Path | None = None, *, max_seconds: float) -> dict:
    """Compute features once per utterance and store them in ``path`` (float16).

    Returns the cache dict ``{"ids", "feats", "key", ...}``. An existing cache with the same key
    (same utterances and feature config) is reused. Unreadable audio is reported by utterance id,
    skipped, counted in ``cache["skipped"]`` and listed in ``report``; so are all-silent files
    and files longer than ``max_seconds``.
    """
    path = Path(path)
    key = _cache_key(utts, cfg, max_seconds)
    if path.exists():
        cache = load_feature_cache(path)
        if cache.get("key") == key:
            return cache
    extractor = FeatureExtractor(cfg)
    ids, feats, errors = [], [], []
    for u in utts:
        try:
            f = extractor(load_utterance_audio(u, max_seconds=max_seconds, reject_silence=True))
        except AudioError as e:
            errors.append(Problem(u.id, str(e)))
            continue
        ids.append(u.id)
        feats.append(f.to(torch.float16))
    report_problems(errors, len(utts), "features (bad audio)", Path(report) if report else None)
    if utts and not ids:      # nothing readable (a moved corpus, a wrong working directory): keep no cache
        raise AsrError(f"{path}: none of the {len(utts)} utterances' audio could be read "
                       f"(first: {errors[0]}); see {report or 'the log'}")
    cache = {"format": CACHE_FORMAT, "key": key, "config": asdict(cfg), "ids": ids,
             "feats": feats, "skipped": len(errors)}
    atomic_save(cache, path)
    return cache


def load_feature_cache(path: str | Path) -> dict:
    cache = torch.load(path, weights_only=True)
    if not isinstance(cache, dict) or cache.get("format") != CACHE_FORMAT:
        raise AsrError(f"{path}: not a feature cache ({CACHE_FORMAT})")
    return cache

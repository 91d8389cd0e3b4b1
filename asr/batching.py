"""Training batches from feature tensors: padding, feature-level augmentation (speed
perturbation, frequency warping, SpecAugment, gain) and the epoch's batch iterator. The torch
half of the data layer; manifests and length bucketing (``asr.data``) stay torch-free."""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .audio import AudioError
from .data import AugmentConfig, bucket_batches

log = logging.getLogger(__name__)

def pad_batch(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(T_i, F)] -> padded (B, T_max, F) float32 and lengths (B,) int64."""
    lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    out = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1])
    for b, f in enumerate(feats):
        out[b, : f.shape[0]] = f
    return out, lens


def speed_perturb(feats: torch.Tensor, factor: float) -> torch.Tensor:
    """(T, F) -> (round(T / factor), F): time-stretch by linear interpolation of frames."""
    if factor == 1.0:
        return feats
    new_t = max(1, int(round(feats.shape[0] / factor)))
    x = feats.t().unsqueeze(0)                     # (1, F, T)
    return F.interpolate(x, size=new_t, mode="linear", align_corners=True)[0].t()


def freq_warp(feats: torch.Tensor, alpha: float, boundary: float = 0.8) -> torch.Tensor:
    """VTLP-style warp of the mel axis of (T, F) features by ``alpha``.

    Bin ``i`` reads source position ``alpha * i`` below ``boundary * F`` and a linear segment
    above it, so both band edges stay fixed (a vocal-tract-length change, roughly).
    """
    if alpha == 1.0:
        return feats
    n = feats.shape[1]
    i = torch.arange(n, dtype=torch.float32)
    b = boundary * (n - 1) / max(alpha, 1.0)
    src = torch.where(i <= b, alpha * i, alpha * b + (n - 1 - alpha * b) * (i - b) / (n - 1 - b))
    src = src.clamp(0, n - 1)
    lo = src.floor().long().clamp(max=n - 2)
    w = (src - lo).unsqueeze(0)
    return feats[:, lo] * (1 - w) + feats[:, lo + 1] * w


def spec_augment(feats: torch.Tensor, cfg: AugmentConfig, rng: random.Random) -> torch.Tensor:
    """SpecAugment frequency and time masks on (T, F) log-mels (masked with the utterance mean)."""
    feats = feats.clone()
    t, n_freq = feats.shape
    fill = feats.mean()
    for _ in range(cfg.freq_masks):
        w = rng.randint(0, cfg.freq_mask_width)
        f0 = rng.randint(0, max(0, n_freq - w))
        feats[:, f0: f0 + w] = fill
    max_w = int(cfg.time_mask_ratio * t)
    for _ in range(cfg.time_masks):
        w = rng.randint(0, max_w)
        t0 = rng.randint(0, max(0, t - w))
        feats[t0: t0 + w] = fill
    return feats


def quiet_lead(feats: torch.Tensor, n: int, rng: random.Random) -> torch.Tensor:
    """(T, F) -> (n + T, F): ``n`` frames of the utterance's own background before it, drawn
    from its quietest tenth of frames (by mean log-mel) in random order."""
    if n <= 0:
        return feats
    quiet = feats.mean(-1).argsort()[: max(1, feats.shape[0] // 10)].tolist()
    return torch.cat([feats[[rng.choice(quiet) for _ in range(n)]], feats])


def augment(feats: torch.Tensor, cfg: AugmentConfig, rng: random.Random, speed: float = 1.0,
            lead: int = 0) -> torch.Tensor:
    """``speed`` perturbation and a ``lead`` of background frames (drawn with the epoch:
    :class:`EpochDraws`), then one random draw of frequency warp, gain and SpecAugment for a
    (T, F) float32 utterance."""
    feats = quiet_lead(speed_perturb(feats, speed), lead, rng)
    feats = freq_warp(feats, rng.uniform(*cfg.warp_range))
    if cfg.gain_db > 0:
        # a gain of g dB shifts log-power by g / 10 * ln(10)
        feats = feats + rng.uniform(-cfg.gain_db, cfg.gain_db) * math.log(10) / 10
    return spec_augment(feats, cfg, rng)


@dataclass(frozen=True)
class EpochDraws:
    """Per utterance, the draws of an epoch that change its length: the feature speed factor,
    whether its waveform is augmented and the tempo it then gets. Drawn before batching from
    (seed, epoch) alone, so batches are made on the lengths they will have (the model runs
    every utterance to its batch's longest: one slowed utterance would lengthen them all)."""

    speed: tuple[float, ...]
    wave: tuple[bool, ...]
    tempo: tuple[float, ...]
    lead: tuple[int, ...] = ()         # background frames prepended (empty: none)

    def stretch(self, i: int) -> float:
        """How much longer utterance ``i`` gets (> 1: longer), its lead not counted."""
        return 1.0 / (self.speed[i] * self.tempo[i])

    def length(self, i: int, frames: int) -> int:
        """Feature frames utterance ``i`` of ``frames`` frames has after the draws."""
        return math.ceil(frames * self.stretch(i)) + (self.lead[i] if self.lead else 0)


class BatchIterator:
    """Yields training batches ``(feats (B,T,F), lens (B,), targets (sum L), target_lens (B,))``."""

    def __init__(self, feats: Sequence[torch.Tensor], targets: Sequence[list[int]],
                 max_frames: int, augment_cfg: AugmentConfig | None, seed: int, sortagrad: bool = False):
        self.feats, self.targets, self.sortagrad = feats, targets, sortagrad
        self.max_frames, self.augment_cfg, self.seed = max_frames, augment_cfg, seed
        lazy = getattr(feats, "lengths", None)        # features computed on access: do not load
        self.lengths = list(lazy) if lazy is not None else [f.shape[0] for f in feats]
        self._draws: tuple[int, EpochDraws] | None = None

    def draws(self, epoch: int) -> EpochDraws:
        """The epoch's length-changing draws (cached: the same in every process)."""
        if self._draws is not None and self._draws[0] == epoch:
            return self._draws[1]
        rng, n, cfg = random.Random(f"{self.seed}-{epoch}-draws"), len(self.lengths), self.augment_cfg
        speed = [rng.choice(cfg.speed_factors) for _ in range(n)] if cfg else [1.0] * n
        wave, tempo = [False] * n, [1.0] * n
        augmenter = getattr(self.feats, "augmenter", None)     # waveform augmentation (asr.dataset)
        if augmenter is not None and augmenter.cfg.enabled:
            share = augmenter.cfg.share(epoch)
            for i in range(n):
                wave[i] = rng.random() < share
                tempo[i] = augmenter.draw_tempo(rng) if wave[i] else 1.0
        lead: tuple[int, ...] = ()
        if cfg is not None and cfg.lead_prob > 0:     # its own stream: the other draws stay as they were
            lrng = random.Random(f"{self.seed}-{epoch}-lead")
            lead = tuple(lrng.randint(*cfg.lead_range_frames) if lrng.random() < cfg.lead_prob else 0
                         for _ in range(n))
        self._draws = (epoch, EpochDraws(tuple(speed), tuple(wave), tuple(tempo), lead))
        return self._draws[1]

    def epoch(self, epoch: int) -> list[list[int]]:
        """The batches (lists of indices) of one epoch, on the lengths its draws give the
        utterances; a pure function of seed and epoch."""
        d = self.draws(epoch)
        lengths = [d.length(i, n) for i, n in enumerate(self.lengths)]
        batches = bucket_batches(lengths, self.max_frames, self.seed + epoch, noise=5)
        if self.sortagrad and epoch == 0:     # SortaGrad: shortest first, CTC leaves the all-blank plateau sooner
            batches.sort(key=lambda b: (max(lengths[i] for i in b), b))
        return batches

    def batch_rng(self, epoch: int, batch: int) -> random.Random:
        """Augmentation draws of one batch: a function of (seed, epoch, batch) alone, so batches
        can be built in any process and order, and a resumed run draws the same."""
        return random.Random(f"{self.seed}-{epoch}-{batch}")

    def collate(self, batch: list[int], rng: random.Random, epoch: int):
        """Padded, augmented batch, or None when no utterance of it could be loaded (lazy
        features: unreadable audio is reported by id and left out). ``epoch`` (0-based) selects
        the epoch's draws (:meth:`draws`): speed, waveform augmentation and tempo."""
        feats, kept, d = [], [], self.draws(epoch)
        for i in batch:
            try:
                feats.append((self.feats.augmented(i, rng, d.tempo[i]) if d.wave[i] else self.feats[i]).float())
                kept.append(i)
            except AudioError as e:
                log.warning("skipping utterance: %s", e)
        if not feats:
            return None
        if self.augment_cfg is not None:
            feats = [augment(f, self.augment_cfg, rng, d.speed[i], d.lead[i] if d.lead else 0)
                     for f, i in zip(feats, kept)]
        x, lens = pad_batch(feats)
        tgt = [self.targets[i] for i in kept]
        targets = torch.tensor([t for seq in tgt for t in seq], dtype=torch.long)
        tgt_lens = torch.tensor([len(t) for t in tgt], dtype=torch.long)
        return x, lens, targets, tgt_lens


class PlanBatches(torch.utils.data.Dataset):
    """Batches ``start..`` of an epoch ``plan``, each this rank's ``shard`` collated (in a loader
    worker: ``train.workers``)."""

    def __init__(self, batches: BatchIterator, shard, epoch: int, plan: list[list[int]], start: int):
        self.batches, self.shard, self.epoch, self.plan, self.start = batches, shard, epoch, plan, start

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __getitem__(self, k: int):
        index = self.start + k
        shard = self.shard(self.plan[index])
        return self.batches.collate(shard, self.batches.batch_rng(self.epoch, index), self.epoch) if shard else None

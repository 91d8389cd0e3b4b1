"""Training sets: manifest utterances joined with their features and token ids, with every
utterance that cannot be trained on (bad text, no features, too short for CTC) reported."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .audio import AudioError
from .augment import WaveAugmenter
from .batching import speed_perturb
from .data import DataConfig, DataError, Utterance, load_utterance_audio, validate_utterances
from .errors import Problem, report_problems
from .features import FeatureConfig, FeatureExtractor, LazyFeatures, feature_lengths
from .text import Tokenizer


@dataclass
class TrainingSet:
    ids: list[str]
    feats: list[torch.Tensor]       # (T_i, F) float16
    targets: list[list[int]]
    texts: list[str]


def ctc_min_frames(ids: Sequence[int]) -> int:
    """Frames CTC needs for a label sequence: one per label plus a blank between repeats."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))


def build_set(utts: Sequence[Utterance], cache: dict | None, tokenizer: Tokenizer, stack: int,
              name: str, report: Path | None, data_cfg: DataConfig = DataConfig(),
              features: FeatureConfig | None = None) -> TrainingSet:
    """Join manifest text with cached features (``cache``), or with features computed from audio
    when they are used (``cache=None``, ``features`` given); utterances with bad text, no
    features or too few frames for their labels under CTC are skipped, counted and listed in
    ``report``."""
    good, problems = validate_utterances(utts, tokenizer, check_audio=False, oov_policy=data_cfg.oov_policy,
                                         max_duration_s=data_cfg.max_duration_s)
    if cache is None:
        return _lazy_set(good, problems, tokenizer, stack, name, report, data_cfg, features or FeatureConfig())
    by_id = dict(zip(cache["ids"], cache["feats"]))
    out = TrainingSet([], [], [], [])
    for u in good:
        if u.id not in by_id:
            problems.append(Problem(u.id, "no features (audio unreadable)"))
            continue
        if not torch.isfinite(by_id[u.id]).all():
            problems.append(Problem(u.id, "non-finite features"))
            continue
        ids = tokenizer.encode(u.text)
        frames = by_id[u.id].shape[0] // stack
        if frames < ctc_min_frames(ids):
            problems.append(Problem(u.id, f"too short for CTC: {frames} frames < {ctc_min_frames(ids)} needed"))
            continue
        out.ids.append(u.id)
        out.feats.append(by_id[u.id])
        out.targets.append(ids)
        out.texts.append(u.text)
    report_problems(problems, len(utts), name, report)
    if not out.ids:
        raise DataError(f"{name}: no usable utterances (see {report})")
    return out


def _lazy_set(good: list[Utterance], problems: list[Problem], tokenizer: Tokenizer, stack: int, name: str,
              report: Path | None, data_cfg: DataConfig, features: FeatureConfig) -> TrainingSet:
    kept, targets = [], []
    lazy = LazyFeatures(good, features, data_cfg.max_duration_s)
    for u, frames in zip(good, lazy.lengths):
        ids = tokenizer.encode(u.text)
        if (frames - 1) // stack < ctc_min_frames(ids):     # -1: durations may round up a frame
            problems.append(Problem(u.id, f"too short for CTC: {frames // stack} frames < {ctc_min_frames(ids)} needed"))
            continue
        kept.append(u)
        targets.append(ids)
    report_problems(problems, len(good) + len(problems), name, report)
    if not kept:
        raise DataError(f"{name}: no usable utterances (see {report})")
    return TrainingSet([u.id for u in kept], LazyFeatures(kept, features, data_cfg.max_duration_s),
                       targets, [u.text for u in kept])


def cmvn_sample(feats: Sequence[torch.Tensor], n: int, seed: int) -> Sequence[torch.Tensor]:
    """All of ``feats``, or ``n`` of them drawn at random (CMVN of a large corpus)."""
    if not n or n >= len(feats):
        return feats
    picks = sorted(random.Random(seed).sample(range(len(feats)), n))
    return (feats[i] for i in picks)


class WaveAugmentedFeatures(Sequence):
    """Training features where a share of the utterances is augmented as audio.

    ``self[i]`` are the plain features (cached or computed on access); ``augmented(i, rng,
    rate)`` loads utterance ``i``'s audio, runs the :class:`WaveAugmenter` (tempo ``rate``, the
    other kinds drawn from the batch's ``rng``) and computes its features anew. Which utterances
    are augmented in an epoch, and their tempo, are drawn when the epoch is planned
    (:class:`asr.batching.EpochDraws`), so batches are made on the lengths they will have.
    """

    def __init__(self, base: Sequence[torch.Tensor], utts: Sequence[Utterance], augmenter: WaveAugmenter,
                 features: FeatureConfig, max_seconds: float):
        self.base, self.utts, self.augmenter = base, list(utts), augmenter
        self.features, self.max_seconds = features, max_seconds
        self.lengths = feature_lengths(base)
        self._extractor: FeatureExtractor | None = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]

    def augmented(self, i: int, rng: random.Random, rate: float = 1.0) -> torch.Tensor:
        if self._extractor is None:          # built lazily: cheap to pickle into loader workers
            self._extractor = FeatureExtractor(self.features)
        u = self.utts[i]
        try:
            audio = load_utterance_audio(u, max_seconds=self.max_seconds)
        except AudioError:
            return self.base[i]              # unreadable now: the plain features (lazy ones re-raise)
        feats = self._extractor(self.augmenter(audio, rng, u.id, rate))
        if rate != 1.0 and self.augmenter.cfg.tempo_domain == "features":
            feats = speed_perturb(feats, rate)     # frames stretched: spectra (pitch) kept
        return feats.to(torch.float16)

    def __getstate__(self):
        return {**self.__dict__, "_extractor": None}


def with_wave_augmentation(data: TrainingSet, utts: Sequence[Utterance], augmenter: WaveAugmenter,
                           features: FeatureConfig, max_seconds: float) -> TrainingSet:
    """``data`` whose features go through :class:`WaveAugmentedFeatures` (``utts``: the
    manifest utterances, looked up by id)."""
    by_id = {u.id: u for u in utts}
    feats = WaveAugmentedFeatures(data.feats, [by_id[i] for i in data.ids], augmenter, features, max_seconds)
    return TrainingSet(data.ids, feats, data.targets, data.texts)

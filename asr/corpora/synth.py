"""Synthesized corpora: voices per split (held-out splits never share a voice with training),
deterministic job lists with per-utterance variation, and split synthesis into manifests."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import require
from .real import CorpusError
from ..data import write_manifest
from ..errors import report_problems
from ..tts.cache import default_cache_dir
from ..tts import Job, SynthCache, check_voices, engine_of, expand_voices, synthesize

@dataclass(frozen=True)
class VoiceGroup:
    """Part of a synthesized split: ``utterances`` spread evenly over ``voices``."""

    voices: tuple[str, ...] = ()   # "engine:voice" specs, brace expansion allowed
    utterances: int = 100


@dataclass(frozen=True)
class SynthConfig:
    """Text-to-speech corpus synthesis with per-utterance variation."""

    splits: dict[str, tuple[VoiceGroup, ...]] = field(default_factory=dict)
    min_digits: int = 1
    max_digits: int = 7
    speed_range: tuple[float, float] = (0.8, 1.25)   # relative speaking rate
    pitch_range: tuple[float, float] = (0.8, 1.25)   # relative pitch
    formant_range: tuple[float, float] = (1.0, 1.0)  # spectral envelope shift (espeak, flite)
    snr_db_range: tuple[float, float] = (10.0, 40.0)
    noise_prob: float = 0.7
    pad_range_s: tuple[float, float] = (0.05, 0.4)  # silence added before/after
    seed: int = 7
    jobs: int = 2

    def check(self, where: str) -> None:
        require(1 <= self.min_digits <= self.max_digits, f"{where}.min_digits", "1 <= min <= max_digits")
        for name, groups in self.splits.items():
            require(len(groups) > 0, f"{where}.splits.{name}", "needs at least one voice group")
            for i, g in enumerate(groups):
                require(len(g.voices) > 0, f"{where}.splits.{name}[{i}].voices", "must not be empty")
                require(g.utterances > 0, f"{where}.splits.{name}[{i}].utterances", "must be > 0")


TextFn = Callable[[random.Random, int], str]   # (rng, utterance index) -> text to speak


def split_voices(cfg: SynthConfig, train_split: str = "train") -> dict[str, list[list[str]]]:
    """Expanded voices per split and voice group; raises CorpusError if a held-out split shares a voice (or, for
    "engine" splits, an engine) with the training split."""
    voices = {name: [expand_voices(g.voices) for g in groups] for name, groups in cfg.splits.items()}
    flat = {name: [v for g in groups for v in g] for name, groups in voices.items()}
    train = set(flat.get(train_split, []))
    train_engines = {engine_of(v) for v in train}
    for name, vs in flat.items():
        if name == train_split:
            continue
        shared = sorted(train & set(vs))
        if shared:
            raise CorpusError(f"split {name!r} shares voices with {train_split!r}: {shared}")
        if "engine" in name and {engine_of(v) for v in vs} & train_engines:
            raise CorpusError(f"split {name!r} must use engines unseen in training, "
                             f"got {sorted({engine_of(v) for v in vs})}")
    return voices


def make_jobs(cfg: SynthConfig, split: str, groups: list[list[str]], text_fn: TextFn) -> list[Job]:
    """Deterministic utterance list for one split (same config -> same texts and variation)."""
    rng = random.Random(f"{cfg.seed}-{split}")
    plan = [voices[k % len(voices)] for voices, g in zip(groups, cfg.splits[split])
            for k in range(g.utterances)]
    jobs = []
    for i, voice in enumerate(plan):
        noisy = rng.random() < cfg.noise_prob
        jobs.append(Job(
            utt_id=f"{split}-{i:06d}",
            text=text_fn(rng, i),
            voice=voice,
            speed=rng.uniform(*cfg.speed_range),
            pitch=rng.uniform(*cfg.pitch_range),
            snr_db=rng.uniform(*cfg.snr_db_range) if noisy else None,
            pad_s=(rng.uniform(*cfg.pad_range_s), rng.uniform(*cfg.pad_range_s)),
            seed=rng.randrange(2 ** 31),
            formant=rng.uniform(*cfg.formant_range),
        ))
    return jobs


def synthesize_splits(cfg: SynthConfig, out_dir: str | Path, text_fns: dict[str, TextFn],
                      train_split: str = "train", progress: bool = True) -> dict[str, Path]:
    """Synthesize every split into ``out_dir/wav/<split>`` and write ``out_dir/<split>.jsonl``.

    A split whose manifest already exists is kept; utterances in the synthesis cache (``asr/tts/cache.py``;
    ``ASR_SYNTH_CACHE=off``: none) are taken from it. Failed syntheses are counted and listed in
    ``out_dir/<split>.skipped.txt``. Returns the manifest path per split.
    """
    out_dir = Path(out_dir)
    voices = split_voices(cfg, train_split)
    missing = sorted(set(voices) - set(text_fns))
    if missing:
        raise CorpusError(f"no text for split(s) {missing}")
    check_voices([v for groups in voices.values() for g in groups for v in g])
    manifests = {}
    for split, vs in voices.items():
        path = out_dir / f"{split}.jsonl"
        manifests[split] = path
        if path.exists():
            continue
        jobs = make_jobs(cfg, split, vs, text_fns[split])
        utts, errors = synthesize(jobs, out_dir / "wav" / split, cfg.jobs, progress=progress,
                                  cache=SynthCache(root) if (root := default_cache_dir()) else None)
        report_problems(errors, len(jobs), f"synth {split}", out_dir / f"{split}.skipped.txt")
        write_manifest(utts, path)
        stats = {"utterances": len(utts), "failed": len(errors), "voices": sum(map(len, vs)),
                 "hours": round(sum(u.duration for u in utts) / 3600, 3)}
        (out_dir / f"{split}.stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return manifests

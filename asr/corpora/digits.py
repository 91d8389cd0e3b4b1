"""TIDIGITS-style connected digits, synthesized offline with TTS voices.

Vocabulary: "oh", "zero" ... "nine"; each utterance is a string of ``min_digits``-``max_digits``
digits. Splits are by voice: every non-training split uses voices never heard in training, and
a split whose name contains "engine" uses a TTS engine never used in training.
"""
from __future__ import annotations

import random
from pathlib import Path


from .synth import SynthConfig, make_jobs, split_voices, synthesize_splits  # noqa: F401  (re-exported)

DIGIT_VOCAB = ("oh", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_string(rng: random.Random, min_digits: int, max_digits: int) -> str:
    return " ".join(rng.choice(DIGIT_VOCAB) for _ in range(rng.randint(min_digits, max_digits)))


def prepare_digits(cfg: SynthConfig, out_dir: str | Path, train_split: str = "train",
                   progress: bool = True) -> dict[str, Path]:
    """Synthesize every split into ``out_dir/wav/<split>`` and write ``out_dir/<split>.jsonl``
    (see :func:`asr.corpora.synth.synthesize_splits`). Returns the manifest path per split."""
    def text_fn(rng: random.Random, i: int) -> str:
        return digit_string(rng, cfg.min_digits, cfg.max_digits)

    return synthesize_splits(cfg, out_dir, {split: text_fn for split in cfg.splits}, train_split, progress)

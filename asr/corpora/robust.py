"""Robustness test splits: a held-out split's audio through named, documented conditions
(a reverberant room, babble, coloured noise, a telephone channel, fast speech, a codec, ...).

Every condition is deterministic (seeded per utterance) and written as its own manifest
``data_dir/<name>.jsonl`` with the source utterances' ids, texts and speakers, so its WER is
comparable with the clean split's. Babble is mixed from *other* utterances of the same held-out
split (voices never heard in training); rooms come from a small bank simulated with the
image-source method at the condition's RT60.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .. import augment as A
from ..audio import SAMPLE_RATE_HZ, AudioError, save_audio
from ..config import require
from ..data import Utterance, load_utterance_audio, read_manifest, write_manifest
from ..errors import Problem, report_problems

log = logging.getLogger(__name__)

ROOMS_PER_CONDITION = 12


@dataclass(frozen=True)
class Condition:
    """One test condition, applied in recording order: tempo, room, noise, channel, clipping."""

    source: str = "test_unseen"                     # the clean held-out split it is made from
    utterances: int = 0                             # > 0: only the source's first N utterances
    tempo: float = 1.0                              # > 1: faster speech (pitch kept)
    rt60_s: float = 0.0                             # > 0: a room with this reverberation time
    noise: Literal["", "colored", "babble", "bursts", "hum", "tones"] = ""
    snr_db: float = 10.0
    babble_speakers: int = 6
    telephone: bool = False                         # 300-3400 Hz through 8 kHz
    codec: Literal["", "mp3", "ogg", "gsm", "ulaw"] = ""
    clip_level: float = 0.0                         # > 0: clipped at this fraction of the peak
    level_db: float = -6.0                          # peak level of the result
    tuned: bool = True                              # False: a final check never tuned on

    def check(self, where: str) -> None:
        require(0.5 <= self.tempo <= 2.0, f"{where}.tempo", "must be in [0.5, 2]")
        require(self.rt60_s == 0 or 0.05 <= self.rt60_s <= 2.0, f"{where}.rt60_s", "0 (none) or 0.05-2 s")
        require(self.babble_speakers >= 1, f"{where}.babble_speakers", "must be >= 1")
        require(0.0 <= self.clip_level < 1.0, f"{where}.clip_level", "0 (none) or in (0, 1)")
        require(self.level_db <= 0, f"{where}.level_db", "must be <= 0")
        require(self.utterances >= 0, f"{where}.utterances", "must be >= 0 (0: all)")


@dataclass(frozen=True)
class RobustConfig:
    """Robustness test splits: condition name (the split's name) -> :class:`Condition`."""

    conditions: dict[str, Condition] = field(default_factory=dict)
    seed: int = 5


def apply_condition(x: np.ndarray, c: Condition, rng: np.random.Generator, rooms: list[np.ndarray],
                    talkers: list[np.ndarray]) -> np.ndarray:
    """(N,) 16 kHz samples through condition ``c`` (``talkers``: babble sources)."""
    if c.tempo != 1.0:
        x = A.tempo(x, c.tempo)
    if c.rt60_s > 0:
        x = A.reverberate(x, rooms[int(rng.integers(len(rooms)))])
    if c.noise == "babble":
        x = A.add_noise(x, A.babble_mix(talkers, x.size, rng), c.snr_db)
    elif c.noise:
        x = A.add_noise(x, {"colored": A.colored_noise, "bursts": A.burst_noise, "hum": A.hum,
                            "tones": A.tones}[c.noise](x.size, rng), c.snr_db)
    if c.telephone:
        x = A.telephone(x)
    if c.codec:
        x = A.codec(x, c.codec)
    if c.clip_level > 0:
        x = A.clip(x, c.clip_level)
    return (x / (np.abs(x).max() + 1e-12) * 10 ** (c.level_db / 20)).astype(np.float32)


def condition_rooms(c: Condition, seed: int) -> list[np.ndarray]:
    """The condition's small bank of rooms, all at its RT60."""
    cfg = A.WaveAugmentConfig(rt60_range_s=(c.rt60_s, c.rt60_s), rir_bank=ROOMS_PER_CONDITION)
    rooms, failed = A.rir_bank(cfg, seed)
    for line in failed:
        log.warning("test room left out: %s", line)
    if not rooms:
        raise AudioError(f"rt60 {c.rt60_s}: no room could be simulated ({failed[:3]})")
    return rooms


def make_condition_split(name: str, c: Condition, source: list[Utterance], out_dir: Path, seed: int
                         ) -> tuple[list[Utterance], list[Problem]]:
    """Write ``out_dir/wav/<name>/*.wav``: every source utterance through ``c``."""
    digest = int(hashlib.sha256(f"{seed}-{name}".encode()).hexdigest()[:8], 16)
    rooms = condition_rooms(c, digest) if c.rt60_s > 0 else []
    wav_dir = out_dir / "wav" / name
    wav_dir.mkdir(parents=True, exist_ok=True)
    utts, problems = [], []
    for k, u in enumerate(source):
        rng = np.random.default_rng([digest, k])
        try:
            x = load_utterance_audio(u)
            talkers = []
            if c.noise == "babble":               # other utterances of the split, never this one
                picks = rng.choice([j for j in range(len(source)) if j != k],
                                   size=min(c.babble_speakers, len(source) - 1), replace=False)
                talkers = [load_utterance_audio(source[int(j)]) for j in picks]
            y = apply_condition(x, c, rng, rooms, talkers)
        except AudioError as e:
            problems.append(Problem(u.id, str(e)))
            continue
        except Exception as e:           # a transform that fails (codec, resampler) loses one item, not the split
            problems.append(Problem(u.id, f"condition {name} failed: {type(e).__name__}: {e}"))
            continue
        path = wav_dir / f"{u.id}.wav"
        save_audio(path, y)
        utts.append(Utterance(u.id, str(path), round(y.size / SAMPLE_RATE_HZ, 4), u.text, u.speaker))
    return utts, problems


def prepare_conditions(cfg: RobustConfig, data_dir: str | Path) -> dict[str, Path]:
    """Every condition split of ``cfg`` as ``data_dir/<name>.jsonl`` (kept when already made
    with the same condition), with ``<name>.condition.json`` describing it."""
    out = Path(data_dir)
    manifests = {}
    for name, c in cfg.conditions.items():
        path, spec = out / f"{name}.jsonl", out / f"{name}.condition.json"
        src_manifest = out / f"{c.source}.jsonl"
        src_hash = hashlib.sha256(src_manifest.read_bytes()).hexdigest()[:16] if src_manifest.is_file() else ""
        desc = json.dumps({"condition": c.__dict__, "seed": cfg.seed, "source": src_hash}, sort_keys=True)
        manifests[name] = path
        if path.exists() and spec.exists() and spec.read_text() == desc:
            continue
        source = read_manifest(out / f"{c.source}.jsonl")
        source = source[: c.utterances] if c.utterances else source
        utts, problems = make_condition_split(name, c, source, out, cfg.seed)
        report_problems(problems, len(source), f"condition {name}", out / f"{name}.skipped.txt")
        write_manifest(utts, path)
        spec.write_text(desc)
        log.info("%s: %d utterances from %s", name, len(utts), c.source)
    return manifests

"""JSONL manifests, length-bucketed batching and feature-level augmentation."""
from __future__ import annotations

import json
import math
import random
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .audio import load_audio
from .augment import WaveAugmentConfig
from .config import require
from .errors import AsrError, Problem
from .text import CharTokenizer, normalize_text

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("id", "audio", "duration", "text", "speaker")

OovPolicy = Literal["map", "drop", "fail"]
FeatureStorage = Literal["cache", "on_the_fly"]


@dataclass(frozen=True)
class DataConfig:
    """What counts as usable training data."""

    oov_policy: OovPolicy = "map"  # characters outside the vocabulary: map | drop | fail
    min_duration_s: float = 0.1
    max_duration_s: float = 60.0   # longer utterances would blow up batch memory
    features: FeatureStorage = "cache"  # cache: computed once, kept in RAM | on_the_fly: from audio per batch
    cmvn_utterances: int = 0       # >0: global CMVN from this many random training utterances
    # speaker prefix -> times each matching training utterance is seen per epoch (a scarce,
    # costly-to-make part of the data, e.g. {"kokoro:": 3}); augmentation differs per copy
    oversample: dict[str, int] = field(default_factory=dict)

    def check(self, where: str) -> None:
        for prefix, times in self.oversample.items():
            require(times >= 1, f"{where}.oversample.{prefix}", "must be >= 1")
        require(self.cmvn_utterances >= 0, f"{where}.cmvn_utterances", "must be >= 0")
        require(0 <= self.min_duration_s < self.max_duration_s, f"{where}.max_duration_s",
                 "must be > min_duration_s >= 0")


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation in training: of the waveform (``wave``: rooms, noise, channel,
    tempo; off by default), then of the features (speed, warp, gain, SpecAugment)."""

    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)   # time-stretch of the feature sequence
    freq_masks: int = 2
    freq_mask_width: int = 15      # mel bins
    time_masks: int = 2
    time_mask_ratio: float = 0.05  # max width of one time mask, fraction of the utterance
    gain_db: float = 6.0           # random +- level shift (log-mel offset)
    warp_range: tuple[float, float] = (1.0, 1.0)  # VTLP-style mel-axis warp factor range
    lead_prob: float = 0.0         # share of utterances that get a longer quiet lead: a streaming
                                   # model then learns to fire a word's first units at the word,
                                   # not at the first frame of its input
    lead_range_frames: tuple[int, int] = (0, 100)   # feature frames of the utterance's own
                                   # background prepended (10 ms each at the default hop)
    wave: WaveAugmentConfig = field(default_factory=WaveAugmentConfig)

    def check(self, where: str) -> None:
        require(all(0.5 <= f <= 2.0 for f in self.speed_factors), f"{where}.speed_factors",
                 "each factor must be in [0.5, 2.0]")
        require(self.freq_masks >= 0 and self.time_masks >= 0, f"{where}.*_masks", "must be >= 0")
        require(0.0 <= self.time_mask_ratio < 0.5, f"{where}.time_mask_ratio", "must be in [0, 0.5)")
        require(self.gain_db >= 0, f"{where}.gain_db", "must be >= 0")
        require(self.freq_mask_width >= 0, f"{where}.freq_mask_width", "must be >= 0")
        require(0.7 <= self.warp_range[0] <= self.warp_range[1] <= 1.3, f"{where}.warp_range",
                 "must satisfy 0.7 <= low <= high <= 1.3")
        require(0.0 <= self.lead_prob <= 1.0, f"{where}.lead_prob", "must be in [0, 1]")
        require(0 <= self.lead_range_frames[0] <= self.lead_range_frames[1] <= 3000,
                f"{where}.lead_range_frames", "must satisfy 0 <= low <= high <= 3000")


class ManifestError(AsrError):
    """A manifest line is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: str          # path to the audio file
    duration: float     # seconds
    text: str           # normalised transcript
    speaker: str
    offset: float | None = None   # seconds; set for a segment [offset, offset + duration] of a file


def read_manifest(path: str | Path) -> list[Utterance]:
    """Parse a JSONL manifest. Malformed lines and duplicate ids raise :class:`ManifestError`."""
    path = Path(path)
    utts, seen = [], {}
    if path.exists() and not path.is_file():
        raise ManifestError(f"{path}: not a regular file (FIFO, device or directory)")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ManifestError(f"{path}: cannot read manifest ({e.strerror})") from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")        # a UTF-8 byte-order mark
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise ManifestError(f"{where}: not valid UTF-8") from None
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: invalid JSON ({e.msg})") from None
        utts.append(_parse_entry(obj, where))
        if utts[-1].id in seen:
            raise ManifestError(f"{where}: duplicate id {utts[-1].id!r} (first on line {seen[utts[-1].id]})")
        seen[utts[-1].id] = lineno
    return utts


def _parse_entry(obj: object, where: str) -> Utterance:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {missing}")
    for key in ("id", "audio", "text", "speaker"):
        if not isinstance(obj[key], str):
            raise ManifestError(f"{where}: field {key!r} must be a string")
    if not obj["id"]:
        raise ManifestError(f"{where}: empty id")
    dur = obj["duration"]
    if isinstance(dur, bool) or not isinstance(dur, (int, float)) or not math.isfinite(dur) or dur <= 0:
        raise ManifestError(f"{where}: duration must be a positive number, got {dur!r}")
    offset = obj.get("offset")
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, (int, float))
                               or not math.isfinite(offset) or offset < 0):
        raise ManifestError(f"{where}: offset must be a non-negative number, got {offset!r}")
    return Utterance(obj["id"], obj["audio"], float(dur), obj["text"], obj["speaker"],
                     None if offset is None else float(offset))


def write_manifest(utts: Sequence[Utterance], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for u in utts:
            row = asdict(u)
            if row["offset"] is None:
                del row["offset"]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


class DataError(AsrError):
    """Training data that the configured policy refuses (``oov_policy: fail``)."""


def apply_oov_policy(u: Utterance, tokenizer: CharTokenizer, policy: str) -> tuple[Utterance | None, Problem | None]:
    """Return the utterance to use (or None to skip) and a problem for the report (None if clean).

    ``map``: normalise the text (case, digits, punctuation), then remove remaining unknown
    characters; ``drop``: skip the utterance; ``fail``: raise :class:`DataError`.
    """
    bad = tokenizer.unknown_chars(u.text)
    if not bad:
        return u, None
    shown = "".join(sorted(bad))
    if policy == "fail":
        raise DataError(f"{u.id}: characters outside the vocabulary: {shown!r} (data.oov_policy=fail)")
    if policy == "drop":
        return None, Problem(u.id, f"characters outside the vocabulary: {shown!r} (dropped)")
    text = normalize_text(u.text)
    text = " ".join("".join(c for c in text if not tokenizer.unknown_chars(c)).split())
    if not text:
        return None, Problem(u.id, f"nothing left after mapping {shown!r}")
    return replace(u, text=text), Problem(u.id, f"mapped {shown!r}: {u.text!r} -> {text!r}", "mapped")


def validate_utterances(utts: Sequence[Utterance], tokenizer: CharTokenizer, check_audio: bool = True,
                        oov_policy: str = "drop", max_duration_s: float = float("inf"),
                        ) -> tuple[list[Utterance], list[Problem]]:
    """Split into usable utterances and problems (empty text, unknown characters
    handled by ``oov_policy``, too long, missing audio). Nothing is dropped silently: every
    skipped or changed utterance has a note."""
    good, notes = [], []
    for u in utts:
        if not u.text.strip():
            notes.append(Problem(u.id, "empty transcript"))
            continue
        if u.duration > max_duration_s:
            notes.append(Problem(u.id, f"too long: {u.duration:.1f} s > data.max_duration_s={max_duration_s}"))
            continue
        if check_audio and not Path(u.audio).is_file():
            notes.append(Problem(u.id, f"audio file not found: {u.audio}"))
            continue
        kept, note = apply_oov_policy(u, tokenizer, oov_policy)
        if note is not None:
            notes.append(note)
        if kept is not None:
            good.append(kept)
    return good, notes


def load_utterance_audio(u: Utterance, **checks) -> np.ndarray:
    """The utterance's 16 kHz samples: the whole file, or its segment when ``offset`` is set."""
    if u.offset is None:
        return load_audio(u.audio, **checks)
    return load_audio(u.audio, start_s=u.offset, stop_s=u.offset + u.duration, **checks)


def oversample(utts: Sequence[Utterance], times: dict[str, int]) -> list[Utterance]:
    """``utts`` with each utterance whose speaker starts with a key of ``times`` repeated that
    many times in all (the first matching key counts); order kept, copies adjacent."""
    out = []
    for u in utts:
        k = next((t for prefix, t in times.items() if u.speaker.startswith(prefix)), 1)
        out.extend([u] * k)
    return out


def bucket_batches(lengths: Sequence[int], max_frames: int, seed: int | None,
                   noise: int = 0) -> list[list[int]]:
    """Group indices into batches of similar length with ``B * T_max <= max_frames``.

    Sorting by length (with +-``noise`` jitter so epochs differ) keeps padding small; batch order
    is shuffled with ``seed`` (``None``: deterministic, longest first, for decoding).
    """
    rng = random.Random(seed)
    keys = [(n + (rng.randint(-noise, noise) if seed is not None and noise else 0), i)
            for i, n in enumerate(lengths)]
    order = [i for _, i in sorted(keys, reverse=True)]
    batches, cur, cur_max = [], [], 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and new_max * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    if seed is not None:
        rng.shuffle(batches)
    return batches

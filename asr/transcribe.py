"""Transcription of recordings of any length: streamed reading, pause-based segmentation, batched
decoding, word timestamps from CTC forced alignment, and text/JSON/SRT/WebVTT/Kaldi output.

Memory stays bounded: audio is read block by block and at most ``max_segment_s`` of pending
audio plus one decoding batch is held at a time.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile as sf

from .align import TokenSpan, forced_align, merge_tokens
from .config import ConfigError
from .errors import Problem
from .text import WORD_START
from .audio import (SAMPLE_RATE_HZ, AudioError, BlockResampler, check_audio, check_rate, check_samples, normalize_level,
                    require_regular, to_mono)

READ_BLOCK_S = 10.0          # seconds read from disk at a time
ENERGY_WIN_S = 0.025
ENERGY_HOP_S = 0.010
SNAP_REACH_S = 0.6           # how far a word boundary may move onto speech


@dataclass(frozen=True)
class SegmentOptions:
    max_segment_s: float = 20.0      # hard cap on one decoded segment
    min_segment_s: float = 1.0       # pieces shorter than this are not split off
    min_pause_s: float = 0.25        # a pause at least this long is a cut point
    threshold_db: float = 12.0       # pause = frame energy below the noise floor + this ...
    speech_range_db: float = 35.0    # ... or more than this below the speech level
    batch_segments: int = 8          # segments decoded together
    snap_words: bool = True          # word boundaries aligned in silence move onto the speech
    normalize: bool = True           # per segment: DC offset removed, level brought to a fixed peak

    def __post_init__(self):
        if not (self.max_segment_s > 0 and self.min_segment_s >= 0 and self.min_pause_s > 0 and self.batch_segments >= 1):
            raise ConfigError(f"segment options: max_segment_s ({self.max_segment_s}) and min_pause_s "
                              f"({self.min_pause_s}) must be > 0, min_segment_s >= 0, batch_segments >= 1")
        if self.min_segment_s > self.max_segment_s:
            object.__setattr__(self, "min_segment_s", self.max_segment_s / 2)   # short caps still cut at pauses


@dataclass
class Word:
    word: str
    start: float                     # seconds from the start of the recording
    end: float
    confidence: float                # geometric mean posterior of its aligned characters, 0..1


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    alternatives: list[dict] = field(default_factory=list)   # N-best: {"text", "score"}, best first


@dataclass
class Transcription:
    text: str
    words: list[Word]
    segments: list[Segment]
    duration: float                  # seconds of audio

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- streaming + segmentation
def stream_audio(source: str | Path | np.ndarray, sample_rate: int | None = None) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks from a file (read block by block) or an array."""
    if isinstance(source, np.ndarray):
        rate = sample_rate or SAMPLE_RATE_HZ
        yield check_audio(source, rate, "<array>")
        return
    require_regular(source)
    try:
        f = sf.SoundFile(str(source))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{source}: cannot read audio ({e})") from None
    with f:
        if f.frames == 0:
            raise AudioError(f"{source}: audio is empty (0 samples)")
        check_rate(f.samplerate, str(source))
        resample = BlockResampler(f.samplerate)
        block = int(READ_BLOCK_S * f.samplerate)
        while True:
            try:
                x = f.read(block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as e:     # e.g. a FLAC that loses sync
                raise AudioError(f"{source}: cannot read audio after {f.tell() / f.samplerate:.1f} s ({e})") from None
            last = x.shape[0] < block
            x = to_mono(x)
            check_samples(x, str(source))
            x = resample(x, last)
            if x.size:
                yield x
            if last:
                return


def frame_energy_db(x: np.ndarray) -> np.ndarray:
    """(N,) samples -> (frames,) energy in dB per 25 ms window, 10 ms hop."""
    win, hop = int(ENERGY_WIN_S * SAMPLE_RATE_HZ), int(ENERGY_HOP_S * SAMPLE_RATE_HZ)
    if x.size < win:
        return np.array([10 * np.log10(np.mean(x ** 2) + 1e-10)])
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
    return 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)


def pauses(x: np.ndarray, opts: SegmentOptions) -> list[tuple[int, int]]:
    """Pauses in ``x`` as (first, last + 1) energy frames: runs of at least ``min_pause_s`` of
    quiet frames (see below), not touching either end."""
    db = frame_energy_db(x)
    # quiet relative to the noise floor, or far below the speech level (a floor of digital
    # silence would otherwise put the threshold under any real background noise)
    level = max(np.percentile(db, 10) + opts.threshold_db, np.percentile(db, 90) - opts.speech_range_db)
    silent = np.append(db < level, False)
    min_run = max(1, int(opts.min_pause_s / ENERGY_HOP_S))
    runs, start = [], None
    for i, s in enumerate(silent):
        if s and start is None:
            start = i
        elif not s and start is not None:
            if i - start >= min_run and start > 0 and i < len(db):
                runs.append((start, i))
            start = None
    return runs


def find_cuts(x: np.ndarray, opts: SegmentOptions) -> list[int]:
    """Sample indices splitting ``x`` at the middle of every pause, keeping pieces of at least
    ``min_segment_s``; if the first piece would still exceed ``max_segment_s``, cut it at its
    quietest frame (second half)."""
    hop = int(ENERGY_HOP_S * SAMPLE_RATE_HZ)
    cap = int(opts.max_segment_s * SAMPLE_RATE_HZ)
    min_len = int(opts.min_segment_s * SAMPLE_RATE_HZ)
    cuts, last = [], 0
    for a, b in pauses(x, opts):
        c = (a + b) // 2 * hop
        if c - last >= min_len:
            if c - last > cap:
                break
            cuts.append(c)
            last = c
    if (cuts[0] if cuts else x.size) > cap:
        db = frame_energy_db(x[:cap])
        half = len(db) // 2
        cuts = [max(1, (half + int(np.argmin(db[half:]))) * hop)]
    return cuts


def segment_stream(blocks: Iterator[np.ndarray], opts: SegmentOptions) -> Iterator[tuple[float, np.ndarray]]:
    """Cut a stream into contiguous segments ``(start_s, samples)`` at pauses (utterance-like
    pieces, as the model was trained on), each at most ``max_segment_s``. Segments tile the
    stream: nothing lost, nothing doubled."""
    cap = int(opts.max_segment_s * SAMPLE_RATE_HZ)
    pending, offset = np.zeros(0, np.float32), 0
    for block in blocks:
        pending = np.concatenate([pending, block])
        while pending.size > cap:
            cuts = find_cuts(pending, opts)
            prev = 0
            for c in cuts:
                yield (offset + prev) / SAMPLE_RATE_HZ, pending[prev:c]
                prev = c
            pending, offset = pending[prev:], offset + prev
    # the tail: split at its pauses too
    prev = 0
    if pending.size > int(opts.min_segment_s * SAMPLE_RATE_HZ) * 2:
        for c in find_cuts(pending, opts):
            yield (offset + prev) / SAMPLE_RATE_HZ, pending[prev:c]
            prev = c
    if pending.size > prev:
        yield (offset + prev) / SAMPLE_RATE_HZ, pending[prev:]


# ---------------------------------------------------------------- decoding + alignment
def as_numpy(x) -> np.ndarray:
    """A torch tensor (any device or float type) or an array as a float32 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu()
    return np.asarray(x, dtype=np.float32)


def align_words(log_probs, ids: list[int], vocab: Sequence[str], frame_s: float,
                offset_s: float) -> list[Word]:
    """Word times from CTC forced alignment of the decoded ids on (T, V) log-probs (a tensor or
    an array). Words end at a space unit (characters) or before a piece carrying the word-start
    mark (BPE)."""
    if not ids:
        return []
    return words_from_spans(merge_tokens(*forced_align(as_numpy(log_probs), ids)), vocab, frame_s, offset_s)


def words_from_spans(spans: Sequence[TokenSpan], vocab: Sequence[str], frame_s: float, offset_s: float) -> list[Word]:
    """Aligned token spans -> words with times and confidence (geometric mean posterior of the
    word's frames)."""
    words, current = [], []

    def close() -> None:
        if current:
            logp = sum(s.score * (s.end - s.start) for s in current) / sum(s.end - s.start for s in current)
            words.append(Word("".join(vocab[s.token] for s in current).replace(WORD_START, ""),
                              round(offset_s + current[0].start * frame_s, 3),
                              round(offset_s + current[-1].end * frame_s, 3),
                              round(float(np.exp(logp)), 4)))
            current.clear()
    for span in spans:
        piece = vocab[span.token]
        if piece in (" ", WORD_START) or piece.startswith(WORD_START):
            close()
        if piece not in (" ", WORD_START):
            current.append(span)
    close()
    return words


def snap_to_speech(words: list[Word], audio: np.ndarray, offset_s: float, opts: SegmentOptions,
                   reach_s: float = SNAP_REACH_S) -> list[Word]:
    """Move word boundaries that CTC put in silence onto the speech. A bidirectional CTC model
    fires its characters anywhere inside the span it has evidence for, often well before the
    word is spoken; a start in a quiet stretch moves forward to the first speech frame (never
    past the word's aligned end), an end in a quiet stretch back to the last one."""
    if not words:
        return words
    db = frame_energy_db(audio)
    level = max(np.percentile(db, 10) + opts.threshold_db, np.percentile(db, 90) - opts.speech_range_db)
    speech = db >= level
    hop = ENERGY_HOP_S

    def frame(t: float) -> int:
        return int(np.clip(round((t - offset_s) / hop), 0, len(speech) - 1))

    out = []
    for w in words:
        a, b = frame(w.start), frame(w.end)
        if not speech[a]:                      # start in silence: first speech frame after it
            ahead = np.flatnonzero(speech[a: min(b, a + int(reach_s / hop)) + 1])
            a = a + int(ahead[0]) if ahead.size else a
        if not speech[b]:                      # end in silence: last speech frame before it
            behind = np.flatnonzero(speech[max(a, b - int(reach_s / hop)): b + 1])
            b = max(a, b - int(reach_s / hop)) + int(behind[-1]) if behind.size else b
        out.append(Word(w.word, round(offset_s + a * hop, 3), round(offset_s + max(a, b) * hop, 3), w.confidence))
    return out


def decode_segments(rec, segs: list[tuple[float, np.ndarray]], opts: SegmentOptions) -> list[Segment]:
    """Decode a batch of ``(start_s, samples)`` segments with ``rec`` (a
    :class:`asr.recognizer.Recognizer` or an :class:`asr.lite.LiteRecognizer`: its features,
    model and decoder) and time their words by aligning the decoded token ids."""
    prep = normalize_level if opts.normalize else (lambda x: x)
    feats = [rec.features(np.pad(prep(x), (0, max(0, rec.min_samples - x.size)))) for _, x in segs]
    log_probs, out_lens = rec.forward(feats)
    hyps = rec.decoder(log_probs, out_lens)
    out = []
    for (start, audio), lp, n, hyp in zip(segs, log_probs, out_lens, hyps):
        words = align_words(lp[: int(n)], hyp.ids, rec.tokenizer.vocab, rec.frame_s, start)
        calibration = getattr(rec, "calibration", None)
        if calibration is not None:
            calibration.apply(words, lp[: int(n)], getattr(hyp, "word_posteriors", None))
        if opts.snap_words:
            words = snap_to_speech(words, audio, start, opts)
        alts = [{"text": t, "score": round(sc, 4)} for t, sc in getattr(hyp, "alternatives", [])]
        out.append(Segment(round(start, 3), round(start + audio.size / SAMPLE_RATE_HZ, 3), hyp.text, words, alts))
    return out


def transcribe(rec, source: str | Path | np.ndarray, sample_rate: int | None = None,
               opts: SegmentOptions | None = None) -> Transcription:
    """Transcribe a file path or a (N,) / (N, C) array (``sample_rate`` defaults to 16 kHz) with
    ``rec`` (a :class:`asr.recognizer.Recognizer`)."""
    opts = opts or SegmentOptions()
    segments: list[Segment] = []
    batch: list[tuple[float, np.ndarray]] = []
    duration = 0.0
    for start, x in segment_stream(stream_audio(source, sample_rate), opts):
        duration = start + x.size / SAMPLE_RATE_HZ
        batch.append((start, x))
        if len(batch) == opts.batch_segments:
            segments += decode_segments(rec, batch, opts)
            batch = []
    if batch:
        segments += decode_segments(rec, batch, opts)
    name = source if not isinstance(source, np.ndarray) else "<array>"
    if duration < MIN_DURATION_S:
        raise AudioError(f"{name}: audio too short ({duration:.3f} s, need >= {MIN_DURATION_S} s)")
    segments = [s for s in segments if s.text]
    return Transcription(" ".join(s.text for s in segments), [w for s in segments for w in s.words],
                         segments, round(duration, 3))


MIN_DURATION_S = 0.1


# ---------------------------------------------------------------- output formats
def _ts(t: float, sep: str) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def subtitle_cues(tr: Transcription, max_s: float = 6.0, max_words: int = 12,
                  max_gap_s: float = 0.8) -> list[tuple[float, float, str]]:
    """Group words into cues: a new cue after a long gap, or when one grows too long."""
    cues, cur = [], []
    for w in tr.words:
        if cur and (w.start - cur[-1].end > max_gap_s or w.end - cur[0].start > max_s or len(cur) >= max_words):
            cues.append((cur[0].start, cur[-1].end, " ".join(x.word for x in cur)))
            cur = []
        cur.append(w)
    if cur:
        cues.append((cur[0].start, cur[-1].end, " ".join(x.word for x in cur)))
    return cues


def to_srt(tr: Transcription) -> str:
    return "".join(f"{i}\n{_ts(a, ',')} --> {_ts(b, ',')}\n{text}\n\n"
                   for i, (a, b, text) in enumerate(subtitle_cues(tr), 1))


def to_vtt(tr: Transcription) -> str:
    return "WEBVTT\n\n" + "".join(f"{_ts(a, '.')} --> {_ts(b, '.')}\n{text}\n\n" for a, b, text in subtitle_cues(tr))


def to_json(tr: Transcription) -> str:
    return json.dumps(tr.to_dict(), indent=1, ensure_ascii=False) + "\n"


WRITERS = {"txt": lambda tr: tr.text + "\n", "json": to_json, "srt": to_srt, "vtt": to_vtt}


def write_outputs(tr: Transcription, base: Path, formats: Sequence[str]) -> list[Path]:
    """Write ``base.<fmt>`` for each format; returns the paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = base.with_name(base.name + "." + fmt)
        path.write_text(WRITERS[fmt](tr), encoding="utf-8")
        paths.append(path)
    return paths


# ---------------------------------------------------------------- many files
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au", ".w64", ".sph"}
_NOT_ID = re.compile(r"[\s/\\]+")


def kaldi_id(text: str) -> str:
    """``text`` as a Kaldi-safe id: whitespace (spaces, tabs, newlines) and slashes become ``_``."""
    return _NOT_ID.sub("_", text).strip("_") or "_"


def list_audio_files(paths: Sequence[str | Path]) -> tuple[list[tuple[Path, str]], list[Problem]]:
    """``(path, id)`` of every audio file to transcribe, and problems. A directory is searched
    recursively for audio suffixes; its files' ids are their paths relative to it. A file given
    alone has its name (without suffix) as id. Anything that is not a regular file (a FIFO, a
    device, a missing path) is a problem, never opened. Ids are unique: a collision
    (``a/x.wav`` and ``b/x.wav`` given alone, ``x.wav`` and ``x.flac``) keeps the suffix, then a
    counter, and is reported."""
    found, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                if f.is_file():
                    found.append((f, f.relative_to(p).with_suffix("").as_posix()))
                elif not f.is_dir():
                    problems.append(Problem(str(f), "not a regular file (FIFO, device or broken link): skipped"))
        elif p.is_file():
            found.append((p, p.stem))
        else:
            reason = "no such file" if not p.exists() and not p.is_symlink() else "not a regular file (FIFO, device or broken link)"
            problems.append(Problem(str(p), reason))
    jobs, used = [], set()
    for path, name in found:
        uid = kaldi_id(name)
        if uid in used:
            base = kaldi_id(f"{name}{path.suffix}")
            uid, k = base, 2
            while uid in used:
                uid, k = f"{base}-{k}", k + 1
            problems.append(Problem(str(path), f"id {kaldi_id(name)!r} taken by another file: written as {uid!r}", "mapped"))
        used.add(uid)
        jobs.append((path, uid))
    return jobs, problems

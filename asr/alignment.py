"""Forced alignment of a *given* transcript to a recording of any length: word and unit times,
and the text that could not be aligned, reported with its span.

Long recordings are aligned piecewise, in the spirit of ctc-segmentation: the audio is read
block by block and cut at pauses (``transcribe.segment_stream``, at most ``piece_s`` seconds a
piece); each piece's log-probs and greedy transcript are kept (about 14 MB per hour of audio,
never the audio itself), the transcript's words are assigned to pieces by aligning them to the
greedy words (edit distance), and each piece is force-aligned on its own words. Memory is
bounded by one piece plus the log-probs. Torch-free: works with the ONNX runtime too.

Text is never silently dropped: words whose piece has too few frames for them, or whose
aligned frames carry almost no posterior for them (``min_confidence``), are listed in
``Alignment.unaligned`` with their word span, text, time range and reason.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .align import AlignmentError, forced_align, merge_tokens, min_frames
from .audio import SAMPLE_RATE_HZ, normalize_level
from .text import normalize_text
from .errors import Problem
from .transcribe import (ENERGY_HOP_S, ENERGY_WIN_S, SegmentOptions, Transcription, Word, as_numpy,
                         frame_energy_db, kaldi_id, segment_stream, stream_audio, words_from_spans)

EPS = "<eps>"
MAX_CELLS = 3e7           # largest trellis aligned at once: ~150 MB (log-probs per state + back pointers)


@dataclass(frozen=True)
class AlignOptions:
    piece_s: float = 20.0            # longest piece of audio aligned at once
    min_confidence: float = 0.02     # a word whose aligned posterior is below this is reported
    snap_words: bool = True          # word boundaries in silence move onto the speech


@dataclass
class Unit:
    unit: str
    start: float
    end: float


@dataclass
class Unaligned:
    first_word: int                  # index into the transcript's words
    end_word: int                    # one past the last
    text: str
    start: float                     # where in the audio it was expected (s)
    end: float
    reason: str


@dataclass
class Alignment:
    words: list[Word]
    units: list[Unit]
    unaligned: list[Unaligned] = field(default_factory=list)
    duration: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Piece:
    start: float                     # seconds
    samples: int
    log_probs: np.ndarray            # (T, V)
    greedy: list[str]


def transcript_words(text: str, tokenizer) -> list[str]:
    """Normalised words of ``text``; an error names every word with characters the model's
    units cannot spell."""
    words = normalize_text(text).split()
    # normalisation drops letters outside Latin (a Cyrillic word vanishes): name those words
    bad = [t for t in text.split() if any(c.isalnum() for c in t) and not normalize_text(t)]
    bad += sorted({w for w in words if tokenizer.unknown_chars(w)})
    if bad:
        raise AlignmentError(f"words the model cannot spell (characters outside its units): {bad[:10]}")
    if not words:
        raise AlignmentError("the transcript is empty after normalisation")
    return words


def _pieces(rec, source, sample_rate, opts: AlignOptions) -> list[_Piece]:
    seg = SegmentOptions(max_segment_s=opts.piece_s)
    out = []
    for start, x in segment_stream(stream_audio(source, sample_rate), seg):
        padded = np.pad(normalize_level(x), (0, max(0, rec.min_samples - x.size)))
        lp = as_numpy(rec.emissions([rec.features(padded)])[0])
        best = lp.argmax(-1)
        ids = best[(best != 0) & (best != np.concatenate([[-1], best[:-1]]))].tolist()
        out.append(_Piece(start, x.size, lp, rec.tokenizer.decode(ids).split()))
    return out


def assign_words(words: Sequence[str], pieces: Sequence[_Piece]) -> tuple[list[int], list[bool]]:
    """The piece of each transcript word, and whether it is *anchored*: aligned (edit distance)
    to an identical greedy word of that piece. A word with no counterpart goes with its
    predecessor's piece (or its successor's) and is not anchored."""
    import kaldialign

    hyp = [(w, k) for k, p in enumerate(pieces) for w in p.greedy]
    where: list[int | None] = []
    anchored: list[bool] = []
    j = 0
    for r, h in kaldialign.align(list(words), [w for w, _ in hyp], EPS):
        if r == EPS:
            j += 1
            continue
        where.append(hyp[j][1] if h != EPS else None)
        anchored.append(h == r)
        j += h != EPS
    prev = next((k for k in where if k is not None), 0)
    owner = []
    for k in where:
        prev = k if k is not None and k >= prev else prev
        owner.append(prev)
    return owner, anchored


def blocks(owner: Sequence[int], anchored: Sequence[bool], frames: Sequence[int], units: Sequence[int],
           max_cells: float = MAX_CELLS) -> list[tuple[int, int, int, int]]:
    """Runs of pieces aligned together: ``(first piece, end piece, first word, end word)``. A
    run ends after piece k where the transcript words on both sides of the cut are anchored in
    their pieces; elsewhere the pieces are joined, so a misrecognised or missing word near a
    cut cannot be pushed into the wrong piece. A run is also cut where going on would make its
    trellis (frames x (2 units + 1) of the run so far and the next piece) exceed ``max_cells``:
    memory stays bounded whatever the recording. ``frames``: per piece; ``units``: per word."""
    out, start_piece, start_word, w = [], 0, 0, 0
    for k in range(len(frames)):
        while w < len(owner) and owner[w] <= k:
            w += 1
        last = k == len(frames) - 1
        safe = last or (w > start_word and anchored[w - 1] and (w == len(owner) or anchored[w]))
        if not safe:
            w_next = w
            while w_next < len(owner) and owner[w_next] <= k + 1:
                w_next += 1
            cells = sum(frames[start_piece: k + 2]) * (2 * sum(units[start_word: w_next]) + 1)
            safe = cells > max_cells
        if safe:
            out.append((start_piece, k + 1, start_word, w))
            start_piece, start_word = k + 1, w
    return out


def align_recording(rec, source: str | Path | np.ndarray, text: str, sample_rate: int | None = None,
                    opts: AlignOptions | None = None) -> Alignment:
    """Align ``text`` to ``source`` (a path or a sample array) with ``rec`` (a Recognizer or
    the light runtime)."""
    opts = opts or AlignOptions()
    words = transcript_words(text, rec.tokenizer)
    pieces = _pieces(rec, source, sample_rate, opts)
    owner, anchored = assign_words(words, pieces)
    result = Alignment([], [], [], round(sum(p.samples for p in pieces) / SAMPLE_RATE_HZ, 3) if pieces else 0.0)
    audio = segment_stream(stream_audio(source, sample_rate), SegmentOptions(max_segment_s=opts.piece_s)) \
        if opts.snap_words else None
    units = [len(rec.tokenizer.encode(w)) + 1 for w in words]
    for p0, p1, a, b in blocks(owner, anchored, [p.log_probs.shape[0] for p in pieces], units):
        x = np.concatenate([next(audio)[1] for _ in range(p0, p1)]) if audio is not None else None
        if b > a:
            _align_block(rec, pieces[p0:p1], words, a, b, x, opts, result)
    if not pieces:                                      # no audio at all: nothing is dropped silently
        result.unaligned.append(Unaligned(0, len(words), " ".join(words), 0.0, 0.0, "no audio to align to"))
    return result


def _align_block(rec, pieces: Sequence[_Piece], words: Sequence[str], a: int, b: int, audio: np.ndarray | None,
                 opts: AlignOptions, out: Alignment) -> None:
    """Force-align words[a:b] on consecutive pieces; append words and units, or report the span."""
    start, end_s = pieces[0].start, pieces[-1].start + pieces[-1].samples / SAMPLE_RATE_HZ
    log_probs = np.concatenate([p.log_probs for p in pieces])
    frame_start = np.concatenate([p.start + np.arange(p.log_probs.shape[0]) * rec.frame_s for p in pieces])
    ids = rec.tokenizer.encode(" ".join(words[a:b]))
    try:
        spans = merge_tokens(*forced_align(log_probs, ids))
    except AlignmentError:
        out.unaligned.append(Unaligned(a, b, " ".join(words[a:b]), round(start, 3), round(end_s, 3),
                                       f"{min_frames(ids)} units do not fit in {log_probs.shape[0]} frames"))
        return

    def t(frame: float, is_end: bool) -> float:
        """Seconds of a frame index in the joined pieces (an end is one past its last frame)."""
        f = int(round(frame))
        return round(float(frame_start[f - 1] + rec.frame_s if is_end else frame_start[f]), 3)
    vocab = rec.tokenizer.vocab
    aligned = [Word(w.word, t(w.start, False), t(w.end, True), w.confidence)
               for w in words_from_spans(spans, vocab, 1.0, 0.0)]
    if opts.snap_words and audio is not None:
        aligned = refine_to_speech(aligned, audio, start)
    for i, w in enumerate(aligned):
        w.word = words[a + i]
        if w.confidence < opts.min_confidence:
            _report_weak(out, a + i, w, opts)
    out.words += aligned
    out.units += [Unit(vocab[s.token], t(s.start, False), t(s.end, True)) for s in spans if vocab[s.token] != " "]


def speech_runs(audio: np.ndarray, opts: SegmentOptions = SegmentOptions(), bridge_s: float = 0.08,
                min_s: float = 0.03) -> list[tuple[float, float]]:
    """Stretches of speech (s from the start of ``audio``) by frame energy, the rule of
    ``transcribe.pauses``; gaps under ``bridge_s`` are bridged, runs under ``min_s`` dropped."""
    db = frame_energy_db(audio)
    level = max(np.percentile(db, 10) + opts.threshold_db, np.percentile(db, 90) - opts.speech_range_db)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (db >= level).astype(int), [0]])))
    runs: list[list[float]] = []
    for a, b in zip(edges[::2] * ENERGY_HOP_S, edges[1::2] * ENERGY_HOP_S + ENERGY_WIN_S - ENERGY_HOP_S):
        if runs and a - runs[-1][1] < bridge_s:
            runs[-1][1] = b
        else:
            runs.append([a, b])
    return [(a, b) for a, b in runs if b - a >= min_s]


def refine_to_speech(words: list[Word], audio: np.ndarray, offset_s: float, reach_s: float = 0.6) -> list[Word]:
    """Word boundaries moved onto the speech they stand for. A BiLSTM CTC model fires early,
    often on the silence before a word, so each word goes to the speech stretch that contains
    its aligned midpoint or, when the midpoint is in a pause, the next stretch within
    ``reach_s``; the words of one stretch share it, cut where the next word's alignment starts
    plus the model's lag (how much earlier than the speech the first words of stretches were
    aligned, median). A word with no stretch in reach keeps its aligned times."""
    runs = [(a + offset_s, b + offset_s) for a, b in speech_runs(audio)]
    home: list[int | None] = []
    k = 0
    for w in words:
        mid = (w.start + w.end) / 2
        while k < len(runs) and runs[k][1] <= mid:
            k += 1
        home.append(k if k < len(runs) and runs[k][0] - mid <= reach_s else None)
    firsts = [i for i, k in enumerate(home) if k is not None and (i == 0 or home[i - 1] != k)]
    # how early this model fires here: measured on the words that begin a stretch, applied to
    # the boundaries inside stretches (between words with no pause)
    lag = float(np.clip(np.median([runs[home[i]][0] - words[i].start for i in firsts]), 0, reach_s)) if firsts else 0.0
    out = [Word(w.word, w.start, w.end, w.confidence) for w in words]
    for i, (w, k) in enumerate(zip(out, home)):
        if k is None:
            continue
        a, b = runs[k]
        first = i == 0 or home[i - 1] != k
        last = i == len(out) - 1 or home[i + 1] != k
        w.start = round(a if first else out[i - 1].end, 3)
        w.end = round(b if last else min(max(words[i + 1].start + lag, w.start), b), 3)
    return out


def _report_weak(out: Alignment, i: int, w: Word, opts: AlignOptions) -> None:
    """Word ``i`` got almost no acoustic evidence: extend the previous report or start one."""
    reason = f"little acoustic evidence (posterior below {opts.min_confidence})"
    last = out.unaligned[-1] if out.unaligned else None
    if last is not None and last.end_word == i and last.reason == reason:
        last.end_word, last.text, last.end = i + 1, f"{last.text} {w.word}", w.end
    else:
        out.unaligned.append(Unaligned(i, i + 1, w.word, w.start, w.end, reason))


# ---------------------------------------------------------------- output formats
def to_ctm(al: Alignment, utt: str) -> str:
    """NIST CTM: ``utt 1 start duration word confidence`` per word."""
    return "".join(f"{utt} 1 {w.start:.3f} {max(0.0, w.end - w.start):.3f} {w.word} {w.confidence:.4f}\n"
                   for w in al.words)


def _tier(name: str, items: Sequence[tuple[float, float, str]], xmax: float) -> list[str]:
    """An IntervalTier tiling [0, xmax]: the items, with empty intervals between them."""
    cells, t = [], 0.0
    for a, b, label in items:
        a, b = max(a, t), max(max(a, t), b)
        if a > t:
            cells.append((t, a, ""))
        cells.append((a, b, label))
        t = b
    if xmax > t:
        cells.append((t, xmax, ""))
    lines = ['        class = "IntervalTier"', f'        name = "{name}"', "        xmin = 0",
             f"        xmax = {xmax}", f"        intervals: size = {len(cells)}"]
    for k, (a, b, label) in enumerate(cells, 1):
        lines += [f"        intervals [{k}]:", f"            xmin = {a}", f"            xmax = {b}",
                  '            text = "{}"'.format(label.replace('"', '""'))]
    return lines


def to_textgrid(al: Alignment) -> str:
    """Praat TextGrid (long text format): a ``words`` and a ``units`` interval tier."""
    xmax = max([al.duration, *(w.end for w in al.words)] or [0.0])
    tiers = [("words", [(w.start, w.end, w.word) for w in al.words]),
             ("units", [(u.start, u.end, u.unit) for u in al.units])]
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {xmax}",
             "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for k, (name, items) in enumerate(tiers, 1):
        lines += [f"    item [{k}]:", *_tier(name, items, xmax)]
    return "\n".join(lines) + "\n"


def to_srt(al: Alignment) -> str:
    from . import transcribe

    return transcribe.to_srt(Transcription(" ".join(w.word for w in al.words), al.words, [], al.duration))


def to_json(al: Alignment) -> str:
    import json

    return json.dumps(al.to_dict(), indent=1, ensure_ascii=False) + "\n"


ALIGN_WRITERS = {"json": to_json, "ctm": None, "textgrid": to_textgrid, "srt": to_srt}


def write_alignment(al: Alignment, base: Path, utt: str, formats: Sequence[str]) -> list[Path]:
    """``base.<ext>`` for each format (TextGrid as ``.TextGrid``)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = base.with_name(base.name + (".TextGrid" if fmt == "textgrid" else f".{fmt}"))
        path.write_text(to_ctm(al, utt) if fmt == "ctm" else ALIGN_WRITERS[fmt](al), encoding="utf-8")
        paths.append(path)
    return paths



def align_utterances(rec, utts, out_dir: str | Path, formats: Sequence[str], opts: AlignOptions | None = None
                     ) -> tuple[dict[str, Alignment], list[Problem]]:
    """Align every manifest utterance to its text; write ``out_dir/<id>.<fmt>``, a ``ctm`` of
    all and ``unaligned.txt`` (one line per unaligned span). An utterance that cannot be read or
    aligned at all is a :class:`Problem`; the others go on."""
    from .audio import AudioError
    from .data import load_utterance_audio

    out_dir = Path(out_dir)
    done, problems, spans = {}, [], []
    for u in utts:
        try:
            al = align_recording(rec, load_utterance_audio(u), u.text, SAMPLE_RATE_HZ, opts)
        except (AudioError, AlignmentError) as e:
            problems.append(Problem(u.id, str(e)))
            continue
        done[u.id] = al
        write_alignment(al, out_dir / kaldi_id(u.id).replace("..", "_"), u.id, formats)   # ids never leave out_dir
        spans += [f"{u.id}\t{s.first_word}-{s.end_word}\t{s.start:.2f}-{s.end:.2f}\t{s.reason}\t{s.text}"
                  for s in al.unaligned]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "all.ctm").write_text("".join(to_ctm(al, i) for i, al in done.items()), encoding="utf-8")
    (out_dir / "unaligned.txt").write_text("".join(f"{line}\n" for line in spans), encoding="utf-8")
    return done, problems

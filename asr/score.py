"""sclite-grade scoring: alignments, S/D/I counts, per-speaker tables, confusions, bootstrap.

Which library does what, and why:
- ``kaldialign.align(..., sclite_mode=True)`` aligns every utterance with sclite's edit costs
  (insertion/deletion 3, substitution 4, match 0), so S, D and I split exactly as NIST sclite
  splits them; the alignment is also what the per-utterance REF/HYP report prints.
- ``jiwer`` aligns with equal costs: its total error count equals sclite's, but it can split the
  same total differently into S/D/I. It is used here only for CER (character level, where no
  sclite split is claimed) via ``jiwer.process_characters``.
No edit distance is written by hand.
"""
from __future__ import annotations

import re
import typing
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import jiwer
import kaldialign
import numpy as np

from .errors import AsrError

EPS = "\x00"            # alignment gap symbol; cannot occur in a decoded text line


class ScoreError(AsrError):
    """Reference/hypothesis input is malformed; the message names file and line."""


# ---------------------------------------------------------------- input formats
_TRN_ID = re.compile(r"^(.*?)\s*\(([^()\s]+)\)\s*$")


def speaker_of(utt_id: str) -> str:
    """sclite's convention: the id up to its first '-' (else its first '_'), else the id."""
    for sep in ("-", "_"):
        if sep in utt_id:
            return utt_id.split(sep, 1)[0]
    return utt_id


def detect_format(path: str | Path, first_line: str) -> str:
    return "trn" if _TRN_ID.match(first_line) else "kaldi"


TranscriptFormat = Literal["auto", "trn", "kaldi"]
TRANSCRIPT_FORMATS: tuple[str, ...] = typing.get_args(TranscriptFormat)


def read_transcripts(path: str | Path, fmt: TranscriptFormat = "auto") -> dict[str, str]:
    """Read sclite ``trn`` (``words (utt-id)``) or Kaldi ``text`` (``utt-id words``).

    Empty lines are ignored; a line without an id, a duplicate id or non-UTF-8 bytes is a
    :class:`ScoreError` naming file and line.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ScoreError(f"{path}: not a regular file (FIFO, device or directory)")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ScoreError(f"{path}: cannot read ({e.strerror})") from None
    out: dict[str, str] = {}
    raw = raw.removeprefix(b"\xef\xbb\xbf")        # a UTF-8 byte-order mark is not part of the first id
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        where = f"{path}:{lineno}"
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise ScoreError(f"{where}: not valid UTF-8 (byte {e.start})") from None
        if not text:
            continue
        if fmt == "auto":
            fmt = detect_format(path, text)
        if fmt == "trn":
            m = _TRN_ID.match(text)
            if not m:
                raise ScoreError(f"{where}: trn line without a trailing '(utterance-id)'")
            words, utt = m.group(1), m.group(2)
        elif fmt == "kaldi":
            utt, _, words = text.partition(" ")
        else:
            raise ScoreError(f"unknown transcript format {fmt!r} (trn, kaldi, auto)")
        if utt in out:
            raise ScoreError(f"{where}: duplicate utterance id {utt!r}")
        out[utt] = " ".join(words.split())
    return out


def read_kaldi_text(path: str | Path) -> dict[str, str]:
    return read_transcripts(path, "kaldi")


def write_kaldi_text(texts: Mapping[str, str], path: str | Path) -> None:
    Path(path).write_text("".join(f"{k} {v}".rstrip() + "\n" for k, v in sorted(texts.items())),
                          encoding="utf-8")


def write_trn(texts: Mapping[str, str], path: str | Path) -> None:
    Path(path).write_text("".join(f"{v} ({k})\n" for k, v in sorted(texts.items())), encoding="utf-8")


# ---------------------------------------------------------------- normalisation
@dataclass(frozen=True)
class Normalizer:
    """Applied identically to references and hypotheses. Everything off = sclite's raw view."""

    lowercase: bool = False
    strip_punctuation: bool = False

    def __call__(self, text: str) -> str:
        if self.lowercase:
            text = text.lower()
        if self.strip_punctuation:
            # keep apostrophes and hyphens inside words ("don't", "x-ray")
            text = "".join(" " if unicodedata.category(c).startswith("P") and c not in "'-" else c
                           for c in text)
            text = re.sub(r"(?<!\w)['-]|['-](?!\w)", " ", text)
        return " ".join(text.split())


# ---------------------------------------------------------------- scoring
@dataclass
class UttScore:
    id: str
    speaker: str
    ref: str
    hyp: str
    alignment: list[tuple[str, str]]      # (ref word or EPS, hyp word or EPS)
    sub: int
    dele: int
    ins: int
    ref_words: int
    char_errors: int
    ref_chars: int

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins


MAX_ALIGN_CELLS = 50_000_000     # edit-distance table size (ref x hyp units) one utterance may need


def score_utterance(utt: str, ref: str, hyp: str, speaker: str | None = None) -> UttScore:
    rw, hw = ref.split(), hyp.split()
    for unit, a, b in (("words", len(rw), len(hw)), ("characters", len(ref), len(hyp))):
        if (a + 1) * (b + 1) > MAX_ALIGN_CELLS and ref != hyp:
            raise ScoreError(f"utterance {utt!r}: {a} reference x {b} hypothesis {unit} is too long to align "
                             f"(limit {MAX_ALIGN_CELLS:,} cells); split it into utterances")
    ali = kaldialign.align(rw, hw, EPS, sclite_mode=True)
    sub = sum(r != EPS and h != EPS and r != h for r, h in ali)
    dele = sum(h == EPS for _, h in ali)
    ins = sum(r == EPS for r, _ in ali)
    if ref == hyp:
        char_err = 0
    else:
        c = jiwer.process_characters(ref, hyp)
        char_err = c.substitutions + c.deletions + c.insertions
    return UttScore(utt, speaker or speaker_of(utt), ref, hyp, ali, sub, dele, ins, len(rw),
                    char_err, len(ref))


@dataclass(frozen=True)
class ErrorRates:
    wer: float          # percent
    cer: float          # percent
    ser: float          # sentence error rate, percent
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    sentence_errors: int
    utterances: int

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in ("wer", "cer", "ser"):
            d[k] = round(d[k], 3)
        return d


def totals(scores: Sequence[UttScore]) -> ErrorRates:
    s = sum(x.sub for x in scores)
    d = sum(x.dele for x in scores)
    i = sum(x.ins for x in scores)
    n = sum(x.ref_words for x in scores)
    ce, nc = sum(x.char_errors for x in scores), sum(x.ref_chars for x in scores)
    se = sum(x.errors > 0 for x in scores)
    return ErrorRates(100.0 * (s + d + i) / max(n, 1), 100.0 * ce / max(nc, 1),
                      100.0 * se / max(len(scores), 1), s, d, i, n, se, len(scores))


def check_ids(refs: Mapping[str, str], hyps: Mapping[str, str], ref_name: str = "reference",
              hyp_name: str = "hypothesis") -> None:
    """Both files must cover the same utterances: ids in only one are listed, never dropped."""
    only_ref = sorted(set(refs) - set(hyps))
    only_hyp = sorted(set(hyps) - set(refs))
    if only_ref or only_hyp:
        raise ScoreError(
            f"utterance ids differ: {len(only_ref)} only in {ref_name} {only_ref[:20]}"
            f"{' ...' if len(only_ref) > 20 else ''}; {len(only_hyp)} only in {hyp_name} "
            f"{only_hyp[:20]}{' ...' if len(only_hyp) > 20 else ''}")


def score_all(refs: Mapping[str, str], hyps: Mapping[str, str],
              normalizer: Normalizer | None = None,
              speakers: Mapping[str, str] | None = None) -> list[UttScore]:
    """Per-utterance scores in sorted id order (ids must match exactly)."""
    check_ids(refs, hyps)
    norm = normalizer or Normalizer()
    return [score_utterance(u, norm(refs[u]), norm(hyps[u]), (speakers or {}).get(u))
            for u in sorted(refs)]


def error_rates(refs: Mapping[str, str], hyps: Mapping[str, str],
                normalizer: Normalizer | None = None) -> ErrorRates:
    """WER/CER/SER (percent) and sclite-split S/D/I over utterances keyed by id."""
    return totals(score_all(refs, hyps, normalizer))


def oracle_wer(refs: Mapping[str, str], nbest: Mapping[str, Sequence[tuple[str, float]]],
               normalizer: Normalizer | None = None) -> float:
    """N-best oracle WER (%): every utterance scored by its alternative with the fewest word
    errors (an upper bound on what rescoring the list could reach)."""
    check_ids(refs, nbest, "reference", "N-best list")
    norm = normalizer or Normalizer()
    best = [min((score_utterance(u, norm(refs[u]), norm(t)) for t, _ in nbest[u] or [("", 0.0)]),
                key=lambda s: s.errors) for u in sorted(refs)]
    return totals(best).wer


# ---------------------------------------------------------------- breakdowns
def by_speaker(scores: Sequence[UttScore]) -> dict[str, ErrorRates]:
    groups: dict[str, list[UttScore]] = {}
    for s in scores:
        groups.setdefault(s.speaker, []).append(s)
    return {spk: totals(g) for spk, g in sorted(groups.items())}


@dataclass
class Confusions:
    substitutions: Counter = field(default_factory=Counter)   # (ref, hyp) -> count
    deletions: Counter = field(default_factory=Counter)       # ref word -> count
    insertions: Counter = field(default_factory=Counter)      # hyp word -> count


def confusions(scores: Sequence[UttScore]) -> Confusions:
    c = Confusions()
    for s in scores:
        for r, h in s.alignment:
            if r == EPS:
                c.insertions[h] += 1
            elif h == EPS:
                c.deletions[r] += 1
            elif r != h:
                c.substitutions[(r, h)] += 1
    return c


def bootstrap_wer(errors: np.ndarray, words: np.ndarray, n: int = 1000, seed: int = 0,
                  errors_b: np.ndarray | None = None) -> dict:
    """Bootstrap over utterances (the unit of independent sampling).

    ``errors``/``words``: per-utterance error and reference-word counts. Returns the 95%
    percentile interval of WER (percent). With ``errors_b`` (a second system on the same
    utterances) it is a paired bootstrap: the interval of WER(a) - WER(b) and a two-sided
    p-value for "no difference".
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(words), size=(n, len(words)))
    w = np.maximum(words[idx].sum(1), 1)
    wer_a = 100.0 * errors[idx].sum(1) / w
    out = {"samples": n, "wer_ci95": [float(np.percentile(wer_a, 2.5)), float(np.percentile(wer_a, 97.5))]}
    if errors_b is not None:
        delta = wer_a - 100.0 * errors_b[idx].sum(1) / w
        # fraction of resamples on each side of zero, doubled: the two-sided bootstrap p-value
        p = 2 * min(np.mean(delta <= 0), np.mean(delta >= 0))
        out.update(delta_ci95=[float(np.percentile(delta, 2.5)), float(np.percentile(delta, 97.5))],
                   p_value=float(min(1.0, p)))
    return out


# ---------------------------------------------------------------- reports
def pra_lines(s: UttScore) -> list[str]:
    """sclite ``pra``-style alignment: errors upper-cased, gaps as asterisks, S/D/I marks."""
    ref_t, hyp_t, marks = [], [], []
    for r, h in s.alignment:
        if r == h:
            cells, mark = (r, h), ""
        elif r == EPS:
            cells, mark = ("*" * len(h), h.upper()), "I"
        elif h == EPS:
            cells, mark = (r.upper(), "*" * len(r)), "D"
        else:
            cells, mark = (r.upper(), h.upper()), "S"
        width = max(len(cells[0]), len(cells[1]))
        ref_t.append(cells[0].ljust(width))
        hyp_t.append(cells[1].ljust(width))
        marks.append(mark.ljust(width))
    correct = s.ref_words - s.sub - s.dele
    return [f"id: ({s.id})", f"Scores: (#C #S #D #I) {correct} {s.sub} {s.dele} {s.ins}",
            "REF:  " + " ".join(ref_t), "HYP:  " + " ".join(hyp_t), "Eval: " + " ".join(marks)]


def build_report(scores: Sequence[UttScore], top: int = 20, stats: dict | None = None) -> dict:
    """Everything the text/markdown/JSON outputs show, as plain data."""
    conf = confusions(scores)
    return {
        "summary": totals(scores).as_dict(),
        "speakers": {k: v.as_dict() for k, v in by_speaker(scores).items()},
        "substitutions": [[r, h, n] for (r, h), n in conf.substitutions.most_common(top)],
        "deletions": [[w, n] for w, n in conf.deletions.most_common(top)],
        "insertions": [[w, n] for w, n in conf.insertions.most_common(top)],
        "statistics": stats or {},
        "utterances": [{"id": s.id, "speaker": s.speaker, "ref": s.ref, "hyp": s.hyp, "sub": s.sub,
                        "del": s.dele, "ins": s.ins, "ref_words": s.ref_words} for s in scores],
    }


def _table(rows: dict[str, dict]) -> list[str]:
    out = ["| speaker | utts | words | WER % | S | D | I | SER % |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        out.append(f"| {name} | {r['utterances']} | {r['ref_words']} | {r['wer']:.2f} | "
                   f"{r['substitutions']} | {r['deletions']} | {r['insertions']} | {r['ser']:.2f} |")
    return out


def report_markdown(report: dict) -> str:
    s = report["summary"]
    lines = ["# Scoring report", "",
             f"WER **{s['wer']:.2f}%** ({s['substitutions']} sub, {s['deletions']} del, "
             f"{s['insertions']} ins / {s['ref_words']} words), CER {s['cer']:.2f}%, "
             f"SER {s['ser']:.2f}% ({s['sentence_errors']}/{s['utterances']} sentences)"]
    if report["statistics"].get("wer_ci95"):
        lo, hi = report["statistics"]["wer_ci95"]
        lines.append(f"\nBootstrap 95% CI for WER: [{lo:.2f}, {hi:.2f}] "
                     f"({report['statistics']['samples']} resamples of utterances)")
    lines += ["", "## Per speaker", "", *_table(report["speakers"]), "", "## Most frequent errors", "",
              "| type | ref | hyp | count |", "|---|---|---|---|"]
    lines += [f"| sub | {r} | {h} | {n} |" for r, h, n in report["substitutions"]]
    lines += [f"| del | {w} | | {n} |" for w, n in report["deletions"]]
    lines += [f"| ins | | {w} | {n} |" for w, n in report["insertions"]]
    return "\n".join(lines) + "\n"


def report_text(report: dict, scores: Sequence[UttScore], alignments: bool = True) -> str:
    lines = [report_markdown(report).replace("**", "")]
    if alignments:
        lines.append("## Alignments\n")
        for s in scores:
            lines += pra_lines(s) + [""]
    return "\n".join(lines)


def score_texts(refs: Mapping[str, str], hyps: Mapping[str, str], normalizer: Normalizer | None = None,
                hyps_b: Mapping[str, str] | None = None, bootstrap: int = 1000,
                out_dir: str | Path | None = None, alignments: bool = True) -> dict:
    """Score, add bootstrap statistics (and a paired test against ``hyps_b``), and write
    ``report.txt`` / ``report.md`` / ``report.json`` into ``out_dir`` when given."""
    import json

    scores = score_all(refs, hyps, normalizer)
    stats: dict = {}
    if bootstrap > 0 and scores:
        errs = np.array([s.errors for s in scores], dtype=np.float64)
        words = np.array([s.ref_words for s in scores], dtype=np.float64)
        errs_b = None
        if hyps_b is not None:
            check_ids(refs, hyps_b, "reference", "second hypothesis")
            scores_b = score_all(refs, hyps_b, normalizer)
            errs_b = np.array([s.errors for s in scores_b], dtype=np.float64)
            stats["wer_b"] = totals(scores_b).wer
        stats.update(bootstrap_wer(errs, words, bootstrap, errors_b=errs_b))
    report = build_report(scores, stats=stats)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
        (out / "report.txt").write_text(report_text(report, scores, alignments), encoding="utf-8")
    return report

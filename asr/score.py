"""Word and character error rates.

jiwer computes the edit-distance alignment (Levenshtein with equal costs), so the total error
count equals sclite's; the split into S/D/I may differ from sclite's weighted alignment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import jiwer


class ScoreError(ValueError):
    """Reference/hypothesis input is malformed; the message names file and line."""


@dataclass(frozen=True)
class ErrorRates:
    wer: float          # percent
    cer: float          # percent
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    utterances: int

    def as_dict(self) -> dict:
        return {"wer": round(self.wer, 3), "cer": round(self.cer, 3), "utterances": self.utterances,
                "substitutions": self.substitutions, "deletions": self.deletions,
                "insertions": self.insertions, "ref_words": self.ref_words}


def error_rates(refs: Mapping[str, str], hyps: Mapping[str, str]) -> ErrorRates:
    """WER/CER over utterances keyed by id. Every reference id must have a hypothesis; a missing
    hypothesis is an error (scoring it as empty would hide a decoding failure)."""
    missing = sorted(set(refs) - set(hyps))
    extra = sorted(set(hyps) - set(refs))
    if missing or extra:
        raise ScoreError(f"id mismatch: {len(missing)} reference ids without hypothesis "
                         f"{missing[:5]}, {len(extra)} hypothesis ids without reference {extra[:5]}")
    ids = sorted(refs)
    ref_list = [refs[i] for i in ids]
    hyp_list = [hyps[i] for i in ids]
    words = jiwer.process_words(ref_list, hyp_list)
    chars = jiwer.process_characters(ref_list, hyp_list)
    n_ref = sum(len(r.split()) for r in ref_list)
    n_chars = sum(len(r) for r in ref_list)
    errs = words.substitutions + words.deletions + words.insertions
    char_errs = chars.substitutions + chars.deletions + chars.insertions
    return ErrorRates(
        wer=100.0 * errs / max(n_ref, 1), cer=100.0 * char_errs / max(n_chars, 1),
        substitutions=words.substitutions, deletions=words.deletions,
        insertions=words.insertions, ref_words=n_ref, utterances=len(ids))


def read_kaldi_text(path: str | Path) -> dict[str, str]:
    """Kaldi ``text``: ``utt-id word word ...`` per line. Duplicate ids are an error."""
    path = Path(path)
    out: dict[str, str] = {}
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ScoreError(f"{path}: cannot read ({e.strerror})") from None
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ScoreError(f"{path}:{lineno}: not valid UTF-8") from None
        if not text:
            continue
        utt, _, words = text.partition(" ")
        if utt in out:
            raise ScoreError(f"{path}:{lineno}: duplicate utterance id {utt!r}")
        out[utt] = " ".join(words.split())
    return out


def write_kaldi_text(texts: Mapping[str, str], path: str | Path) -> None:
    Path(path).write_text("".join(f"{k} {v}\n".replace(" \n", "\n") for k, v in sorted(texts.items())),
                          encoding="utf-8")

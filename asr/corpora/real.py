"""Preparers for real corpora (LibriSpeech, Mini LibriSpeech, AN4, Common Voice) -> JSONL manifests.

Each preparer reads the corpus' own layout and transcript format, normalises text, reads the
duration from the audio header, and returns ``(utterances, problems)``: a file that is missing or
unreadable is a problem line (``"id\\treason"``), never a silent drop. ``prepare_*_split`` writes
``<out>/<split>.jsonl`` and ``<out>/<split>.skipped.txt``.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Literal

from ..audio import AudioError, audio_duration
from ..data import Utterance, write_manifest
from ..errors import AsrError, MissingFileError, Problem, report_problems
from ..config import require
from ..text import normalize_text

LIBRISPEECH_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
                       "test-clean", "test-other")
MINI_LIBRISPEECH_SUBSETS = ("train-clean-5", "dev-clean-2")
LIBRISPEECH_URL = "https://www.openslr.org/resources/12/{subset}.tar.gz"
MINI_LIBRISPEECH_URL = "https://www.openslr.org/resources/31/{subset}.tar.gz"
AN4_URL = "http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz"

CorpusName = Literal["", "librispeech", "mini_librispeech", "an4", "common_voice"]


@dataclass(frozen=True)
class CorpusConfig:
    """A real corpus: where it lives, whether to download it, which subsets make each split."""

    name: CorpusName = ""
    root: str = ""                  # corpus folder; downloaded archives are extracted here
    download: bool = False
    archive_dir: str = ""           # downloaded archives (default: <root>/archives)
    mirror: str = ""                # e.g. https://openslr.elda.org: replaces scheme + host of every URL
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> subsets joined into it
    lm_text: str = ""               # LM text (.txt or .txt.gz); "": the training transcripts only
    lm_text_url: str = ""           # fetched to lm_text when missing (with download: true)
    dev_speakers: int = 0           # >0 and no dev subset: move this many training speakers to dev

    def check(self, where: str) -> None:
        if not self.name:
            return
        require(bool(self.root), f"{where}.root", "needed with a corpus name")
        require(bool(self.splits), f"{where}.splits", "map each split to its corpus subsets")
        require(not (self.download and self.name == "common_voice"), f"{where}.download",
                 "Common Voice needs a local download (its terms require sign-in)")


class CorpusError(AsrError):
    """A corpus folder cannot be prepared (layout, columns, nothing usable)."""


def _utterance(uid: str, audio: Path, text: str, speaker: str, problems: list[Problem]) -> Utterance | None:
    if not audio.is_file():
        problems.append(Problem(uid, f"audio file not found: {audio}"))
        return None
    try:
        duration = audio_duration(audio)
    except AudioError as e:
        problems.append(Problem(uid, str(e)))
        return None
    if duration <= 0:
        problems.append(Problem(uid, f"{audio}: audio is empty"))
        return None
    return Utterance(uid, str(audio), round(duration, 4), normalize_text(text), speaker)


def librispeech(root: str | Path, subset: str) -> tuple[list[Utterance], list[str]]:
    """``root/LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt`` + ``*.flac``
    (``root`` may also be the ``LibriSpeech`` folder itself). Works for Mini LibriSpeech too."""
    root = Path(root)
    base = root / subset if (root / subset).is_dir() else root / "LibriSpeech" / subset
    if not base.is_dir():
        raise MissingFileError(f"{base}: LibriSpeech subset {subset!r} not found")
    utts, problems = [], []
    for trans in sorted(base.glob("*/*/*.trans.txt")):
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            if not re.fullmatch(r"\d+-\d+-\d+", uid):
                problems.append(Problem(f"{trans}:{lineno}", f"malformed utterance id {uid!r}"))
                continue
            u = _utterance(uid, trans.parent / f"{uid}.flac", text, uid.split("-")[0], problems)
            if u:
                utts.append(u)
    return utts, problems


def an4(root: str | Path, split: str) -> tuple[list[Utterance], list[str]]:
    """CMU AN4 (``an4_sphere``): ``an4/etc/an4_{train,test}.transcription`` lines
    ``<s> TEXT </s> (uttid)`` and ``an4/etc/an4_{split}.fileids`` paths under ``an4/wav/``
    (NIST SPHERE ``.sph``, read by libsndfile)."""
    root = Path(root)
    base = root / "an4" if (root / "an4").is_dir() else root
    trans = base / "etc" / f"an4_{split}.transcription"
    fileids = base / "etc" / f"an4_{split}.fileids"
    for p in (trans, fileids):
        if not p.is_file():
            raise MissingFileError(f"{p}: AN4 {split} file not found")
    paths = {Path(line.strip()).name: line.strip() for line in fileids.read_text().splitlines() if line.strip()}
    utts, problems = [], []
    for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
        m = re.fullmatch(r"\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()]+)\)\s*", line)
        if not line.strip():
            continue
        if not m:
            problems.append(Problem(f"{trans}:{lineno}", "malformed transcription line"))
            continue
        text, uid = m.group(1), m.group(2)
        if uid not in paths:
            problems.append(Problem(uid, f"not listed in {fileids}"))
            continue
        speaker = paths[uid].split("/")[-2] if "/" in paths[uid] else uid.split("-")[1]
        u = _utterance(uid, base / "wav" / f"{paths[uid]}.sph", text, speaker, problems)
        if u:
            utts.append(u)
    return utts, problems


def common_voice(root: str | Path, split: str) -> tuple[list[Utterance], list[str]]:
    """A local Common Voice download: ``<root>/<split>.tsv`` (client_id, path, sentence, ...) and
    ``<root>/clips/*.mp3``. ``root`` is the language folder, e.g. ``cv-corpus-17.0/en``."""
    root = Path(root)
    tsv = root / f"{split}.tsv"
    if not tsv.is_file():
        raise MissingFileError(f"{tsv}: Common Voice split {split!r} not found")
    utts, problems = [], []
    with tsv.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"client_id", "path", "sentence"} - set(reader.fieldnames or [])
        if missing:
            raise CorpusError(f"{tsv}: missing column(s) {sorted(missing)}")
        for row in reader:
            uid = Path(row["path"]).stem
            u = _utterance(uid, root / "clips" / row["path"], row["sentence"] or "", row["client_id"][:16], problems)
            if u:
                utts.append(u)
    return utts, problems


PREPARERS: dict[str, Callable[[str | Path, str], tuple[list[Utterance], list[str]]]] = {
    "librispeech": librispeech, "mini_librispeech": librispeech, "an4": an4, "common_voice": common_voice,
}


def prepare_split(corpus: str, root: str | Path, split: str, out_dir: str | Path, name: str | None = None) -> Path:
    """Run a preparer and write ``<out_dir>/<name or split>.jsonl`` plus its skip report."""
    if corpus not in PREPARERS:
        raise CorpusError(f"unknown corpus {corpus!r} (available: {sorted(PREPARERS)})")
    utts, problems = PREPARERS[corpus](root, split)
    out = Path(out_dir) / f"{name or split}.jsonl"
    report_problems(problems, len(utts) + len(problems), f"{corpus} {split}", out.with_suffix(".skipped.txt"))
    if not utts:
        raise CorpusError(f"{corpus} {split} under {root}: no usable utterances")
    write_manifest(utts, out)
    return out

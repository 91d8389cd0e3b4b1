"""Spoken commands from a grammar alone: every phrase a JSGF grammar (or a phrase list) accepts,
spoken by TTS voices. Nothing is recorded; the user's vocabulary is the only input.

The phrases are written once to ``data_dir/phrases.txt`` (the decode stage's grammar). Each split
cycles through its own seeded permutations of the phrases, so every phrase is spoken about equally
often in every split and by many voices; with more phrases than utterances (a large grammar) the
split is a random sample without repeats.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..config import require
from ..grammar import GrammarError, jsgf_phrases, phrase_list
from .real import CorpusError
from .synth import SynthConfig, synthesize_splits


@dataclass(frozen=True)
class CommandsConfig:
    """Where the commands come from: a ``.jsgf`` grammar or a phrase list (one per line)."""

    grammar: str = "recipes/commands/commands.jsgf"
    seed: int = 13

    def check(self, where: str) -> None:
        require(bool(self.grammar), f"{where}.grammar", "a .jsgf grammar or a phrase list")

    def input_files(self) -> tuple[str, ...]:
        return (self.grammar,)


def grammar_phrases(path: str | Path) -> list[str]:
    """Every phrase of a ``.jsgf`` grammar or a phrase list, normalised, de-duplicated, sorted.
    Errors (syntax, undefined rules, a word without letters) name the file and line."""
    path = Path(path)
    phrases = jsgf_phrases(path) if path.suffix.lower() == ".jsgf" else sorted(dict.fromkeys(p for _, p in phrase_list(path)))
    if not phrases:
        raise GrammarError(f"{path}: the grammar accepts no phrase")
    return phrases


def phrase_schedule(phrases: list[str], n: int, seed: str) -> list[str]:
    """``n`` phrases: concatenated seeded permutations of ``phrases`` (each phrase used
    ``n // len(phrases)`` or one more times)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        perm = list(phrases)
        rng.shuffle(perm)
        out += perm
    return out[:n]


def write_phrases(phrases: list[str], data_dir: Path, grammar: str) -> Path:
    """``data_dir/phrases.txt``; a data directory made from another grammar is an error (its
    audio would not match the new phrases)."""
    path = data_dir / "phrases.txt"
    text = "\n".join(phrases) + "\n"
    if path.exists() and path.read_text() != text:
        raise CorpusError(f"{path} holds the phrases of another grammar than {grammar}: "
                          "use a new data_dir (--set data_dir=...) for a new grammar")
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    words = sorted({w for p in phrases for w in p.split()})
    (data_dir / "phrases.stats.json").write_text(json.dumps(
        {"grammar": str(grammar), "phrases": len(phrases), "words": len(words), "vocabulary": words}, indent=1) + "\n")
    return path


def prepare_commands(cmd: CommandsConfig, synth: SynthConfig, data_dir: str | Path, train_split: str = "train",
                     progress: bool = True) -> dict[str, Path]:
    """Expand the grammar, write ``phrases.txt``, then synthesize every split of ``synth.splits``
    (utterance ``i`` of a split speaks entry ``i`` of its :func:`phrase_schedule`)."""
    data_dir = Path(data_dir)
    phrases = grammar_phrases(cmd.grammar)
    write_phrases(phrases, data_dir, cmd.grammar)
    fns = {}
    for split, groups in synth.splits.items():
        texts = phrase_schedule(phrases, sum(g.utterances for g in groups), f"{cmd.seed}-{split}")
        fns[split] = lambda rng, i, texts=texts: texts[i]
    return synthesize_splits(synth, data_dir, fns, train_split, progress)

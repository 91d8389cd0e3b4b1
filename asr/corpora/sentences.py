"""Read-speech sentences from offline public-domain text, synthesized with TTS voices.

Text: the example sentences of WordNet's glosses (Debian ``wordnet-base``; WordNet licence, free
to use and redistribute). Read sentences use only the ``top_words`` most frequent words, so the
vocabulary is a few thousand words; the LM text is every other example sentence. Held-out
splits (dev, tests) read sentences that appear neither in training audio nor in the LM text.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import require
from ..errors import MissingFileError
from .real import CorpusError
from ..text import normalize_text
from .synth import SynthConfig, synthesize_splits

# raw examples with digits (read "1990" as "nineteen ninety") or quoting marks are left out:
# their spoken form is ambiguous, so a reference transcript could not be trusted
_PLAIN = re.compile(r"[A-Za-z ,;:.!?'\-]+")
_EXAMPLE = re.compile(r'"([^"]+)"')



@dataclass(frozen=True)
class TextConfig:
    """Sentence text for read-speech recipes: which sentences are read and held out."""

    source: Literal["wordnet"] = "wordnet"               # WordNet gloss example sentences (Debian wordnet-base)
    wordnet_dir: str = "/usr/share/wordnet"
    top_words: int = 3000                   # read sentences use only the most frequent words
    min_words: int = 4
    max_words: int = 14
    held_out: dict[str, int] = field(default_factory=dict)  # split -> distinct sentences (not train)
    seed: int = 11

    def check(self, where: str) -> None:
        require(self.top_words > 0, f"{where}.top_words", "must be > 0")
        require(1 <= self.min_words <= self.max_words, f"{where}.min_words", "1 <= min <= max_words")
        for k, v in self.held_out.items():
            require(v > 0, f"{where}.held_out.{k}", "must be > 0")

def wordnet_examples(wordnet_dir: str | Path) -> list[str]:
    """Normalized, de-duplicated example sentences of ``wordnet_dir/data.*`` in file order."""
    files = sorted(Path(wordnet_dir).glob("data.*"))
    if not files:
        raise MissingFileError(f"no WordNet data.* files in {wordnet_dir} "
                                "(apt-get install wordnet-base)")
    out: dict[str, None] = {}
    for path in files:
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or "|" not in line:     # licence header, no gloss
                continue
            for raw in _EXAMPLE.findall(line.split("|", 1)[1]):
                if _PLAIN.fullmatch(raw) and "--" not in raw:
                    text = normalize_text(raw)
                    if text:
                        out[text] = None
    return list(out)


def select_sentences(examples: list[str], cfg: TextConfig, train_split: str = "train"
                     ) -> dict[str, list[str]]:
    """Disjoint sentence lists: ``cfg.held_out`` sizes per held-out split, the rest to training.

    Candidates have ``min_words``-``max_words`` words, all among the ``top_words`` most frequent
    words of ``examples``. Raises CorpusError when there are too few candidates.
    """
    counts = Counter(w for s in examples for w in s.split())
    vocab = {w for w, _ in counts.most_common(cfg.top_words)}
    cands = [s for s in examples
             if cfg.min_words <= len(s.split()) <= cfg.max_words and all(w in vocab for w in s.split())]
    random.Random(cfg.seed).shuffle(cands)
    need = sum(cfg.held_out.values())
    if need >= len(cands):
        raise CorpusError(f"text: {len(cands)} candidate sentences, but held_out asks for {need} "
                         "(raise text.top_words or lower text.held_out)")
    out, pos = {}, 0
    for split, n in cfg.held_out.items():
        out[split] = cands[pos: pos + n]
        pos += n
    out[train_split] = cands[pos:]
    return out


def lm_sentences(examples: list[str], held_out: set[str]) -> list[str]:
    """LM training text: every example except held-out sentences."""
    return [s for s in examples if s not in held_out]


def prepare_text(text: TextConfig, data_dir: str | Path, train_split: str = "train") -> dict[str, list[str]]:
    """Write ``data_dir/text/<split>.txt`` and ``data_dir/text/lm_train.txt``; return the splits.

    Kept when already written, so a rerun reuses the same sentences.
    """
    text_dir = Path(data_dir) / "text"
    splits = [train_split, *text.held_out]
    if all((text_dir / f"{s}.txt").exists() for s in splits) and (text_dir / "lm_train.txt").exists():
        return {s: (text_dir / f"{s}.txt").read_text().splitlines() for s in splits}
    examples = wordnet_examples(text.wordnet_dir)
    chosen = select_sentences(examples, text, train_split)
    held = {s for name, ss in chosen.items() if name != train_split for s in ss}
    lm = lm_sentences(examples, held)
    text_dir.mkdir(parents=True, exist_ok=True)
    for name, ss in chosen.items():
        (text_dir / f"{name}.txt").write_text("\n".join(ss) + "\n")
    (text_dir / "lm_train.txt").write_text("\n".join(lm) + "\n")
    stats = {name: {"sentences": len(ss), "words": len({w for s in ss for w in s.split()})}
             for name, ss in chosen.items()}
    stats["lm_train"] = {"sentences": len(lm), "words": len({w for s in lm for w in s.split()})}
    (text_dir / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return chosen


def prepare_sentences(text: TextConfig, synth: SynthConfig, data_dir: str | Path, train_split: str = "train",
                      progress: bool = True) -> dict[str, Path]:
    """Text selection, then synthesis of every split of ``synth.splits``.

    Utterance ``i`` of a split reads sentence ``i mod n`` of that split's sentence list, so a
    split with more utterances than sentences hears each sentence from several voices.
    """
    chosen = prepare_text(text, data_dir, train_split)
    missing = sorted(set(synth.splits) - set(chosen))
    if missing:
        raise CorpusError(f"synth splits {missing} have no sentences: list them in text.held_out")

    def reader(sentences: list[str]):
        return lambda rng, i: sentences[i % len(sentences)]

    fns = {split: reader(chosen[split]) for split in synth.splits}
    return synthesize_splits(synth, data_dir, fns, train_split, progress)

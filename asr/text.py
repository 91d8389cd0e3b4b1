"""Text normalisation and the character tokenizer (index 0 is the CTC blank)."""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Sequence

BLANK = "<blank>"
DEFAULT_CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_NOT_WORD = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lowercase, strip accents, digits spelled one by one, punctuation (except ') removed.

    >>> normalize_text("Call 911, NOW!")
    'call nine one one now'
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("\u2019", "'")
    text = _NOT_WORD.sub(" ", text)
    text = re.sub(r"\d", lambda m: f" {DIGIT_WORDS[int(m.group())]} ", text)
    words = [w.strip("'") for w in _SPACES.split(text)]
    return " ".join(w for w in words if w)


class CharTokenizer:
    """Characters <-> ids. ``vocab[0]`` is the blank; the rest are single characters."""

    def __init__(self, chars: str = DEFAULT_CHARS):
        if len(set(chars)) != len(chars):
            raise ValueError(f"duplicate characters in vocabulary {chars!r}")
        self.vocab: list[str] = [BLANK, *chars]
        self._index = {c: i for i, c in enumerate(self.vocab) if i > 0}

    @classmethod
    def from_vocab(cls, vocab: Sequence[str]) -> "CharTokenizer":
        if not vocab or vocab[0] != BLANK:
            raise ValueError(f"vocabulary must start with {BLANK!r}")
        return cls("".join(vocab[1:]))

    def __len__(self) -> int:
        return len(self.vocab)

    def unknown_chars(self, text: str) -> set[str]:
        return {c for c in text if c not in self._index}

    def encode(self, text: str) -> list[int]:
        """Normalised text -> ids; raises ValueError naming characters outside the vocabulary."""
        bad = self.unknown_chars(text)
        if bad:
            raise ValueError(f"characters outside the vocabulary: {''.join(sorted(bad))!r}")
        return [self._index[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids (blanks allowed, already CTC-collapsed) -> text with normalised spaces."""
        text = "".join(self.vocab[i] for i in ids if i > 0)
        return _SPACES.sub(" ", text).strip()

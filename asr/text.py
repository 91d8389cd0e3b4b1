"""Text normalisation and the character tokenizer (index 0 is the CTC blank)."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from .config import require

BLANK = "<blank>"
DEFAULT_CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_NOT_WORD = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")

TokenizerKind = Literal["char", "bpe"]


@dataclass(frozen=True)
class TokenizerConfig:
    """Output units: characters, or BPE subwords (sentencepiece) trained on the training text."""

    kind: TokenizerKind = "char"
    vocab_size: int = 500       # bpe: pieces (the CTC blank comes on top)

    def check(self, where: str) -> None:
        require(self.vocab_size >= 30, f"{where}.vocab_size", "must be >= 30")


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

    kind = "char"

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

    def spell(self, word: str) -> list[str]:
        """The units of one word (for lexicons)."""
        return list(word)


WORD_START = "\u2581"    # sentencepiece's word-start mark


class BPETokenizer:
    """Sentencepiece subword units. ``vocab[0]`` is the CTC blank; sentencepiece id ``i`` is
    our id ``i + 1`` (its id 0, ``<unk>``, marks characters it never saw)."""

    kind = "bpe"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.vocab: list[str] = [BLANK] + [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        self._chars = {c for p in self.vocab[2:] for c in p.replace(WORD_START, " ")}

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        """Train BPE units on normalized ``texts`` (deterministic for the same texts)."""
        import io

        import sentencepiece as spm

        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(list(texts)), model_writer=buf,
                                       vocab_size=vocab_size, model_type="bpe", character_coverage=1.0,
                                       bos_id=-1, eos_id=-1, unk_id=0, minloglevel=2)
        return cls(buf.getvalue())

    def __len__(self) -> int:
        return len(self.vocab)

    def unknown_chars(self, text: str) -> set[str]:
        return {c for c in text if c not in self._chars}

    def encode(self, text: str) -> list[int]:
        bad = self.unknown_chars(text)
        if bad:
            raise ValueError(f"characters outside the vocabulary: {''.join(sorted(bad))!r}")
        return [i + 1 for i in self._sp.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        text = self._sp.decode([i - 1 for i in ids if i > 0])
        return _SPACES.sub(" ", text).strip()

    def spell(self, word: str) -> list[str]:
        """The pieces of one word (for lexicons)."""
        return self._sp.encode(word, out_type=str)


def tokenizer_payload(tokenizer) -> dict:
    """Plain-type description stored in checkpoints (``weights_only``-loadable)."""
    if isinstance(tokenizer, BPETokenizer):
        return {"kind": "bpe", "model": tokenizer.model_proto}
    return {"kind": "char", "vocab": list(tokenizer.vocab)}


def tokenizer_from_payload(payload: dict):
    if payload.get("kind") == "bpe":
        return BPETokenizer(payload["model"])
    if payload.get("kind") == "char":
        return CharTokenizer.from_vocab(payload["vocab"])
    raise ValueError(f"unknown tokenizer kind {payload.get('kind')!r}")


Tokenizer = CharTokenizer | BPETokenizer

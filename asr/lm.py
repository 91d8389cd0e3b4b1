"""Word n-gram language models (KenLM) and lexicons for lexicon-constrained CTC beam search.

``lmplz`` and ``build_binary`` are KenLM's command-line builders, compiled from the PyPI ``kenlm``
source distribution by ``scripts/build_kenlm.sh``; flashlight-text's KenLM scores text.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from dataclasses import dataclass
from typing import Iterable, Sequence

from .config import require
from .errors import AsrError, MissingFileError


KENLM_BIN_ENV = "ASR_KENLM_BIN"           # folder holding lmplz / build_binary (optional)
BUILD_HINT = "build it with: bash scripts/build_kenlm.sh"
LEXICON_HINT = "build one with: asr lm build --text TEXT --out LM --lexicon LEXICON"


@dataclass(frozen=True)
class LMConfig:
    """Word n-gram LM (KenLM lmplz) trained on text that excludes every held-out sentence."""

    order: int = 3
    prune: tuple[int, ...] = ()      # lmplz --prune thresholds per order (empty: none)
    memory: str = "20%"              # lmplz -S
    binary: bool = True              # also build a KenLM binary (faster load)
    lexicon_min_count: int = 1       # words seen fewer times in the LM text stay out of the lexicon

    def check(self, where: str) -> None:
        require(2 <= self.order <= 6, f"{where}.order", "must be in 2..6 (KenLM built with max order 6)")
        require(len(self.prune) <= self.order, f"{where}.prune", "at most one threshold per order")


class LMError(AsrError):
    """Building a language model failed (the message has the tool's last lines)."""


def default_kenlm_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "asr" / "kenlm" / "bin"


def kenlm_tool(name: str) -> Path:
    """Path of KenLM's ``name`` binary: ``$ASR_KENLM_BIN``, then PATH, then the build cache."""
    candidates = [Path(os.environ[KENLM_BIN_ENV]) / name] if os.environ.get(KENLM_BIN_ENV) else []
    on_path = shutil.which(name)
    candidates += [Path(on_path)] if on_path else []
    candidates.append(default_kenlm_dir() / name)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise MissingFileError(f"KenLM {name} not found (looked in {', '.join(map(str, candidates))}); "
                            f"{BUILD_HINT}")


def require_file(path: str | Path, what: str, hint: str) -> Path:
    """``path`` as a Path, or MissingFileError naming it, what it is and how to build it."""
    path = Path(path)
    if not str(path) or not path.is_file():
        raise MissingFileError(f"{what} not found: {path}; {hint}")
    return path


def _run(cmd: list[str], stdin_path: Path | None = None, stdout_path: Path | None = None) -> None:
    with open(stdin_path, "rb") if stdin_path else open(os.devnull, "rb") as fin, \
         open(stdout_path, "wb") if stdout_path else open(os.devnull, "wb") as fout:
        proc = subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise LMError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): " + " | ".join(tail))


def build_lm(text: str | Path, out: str | Path, order: int = 3, prune: Sequence[int] = (),
             memory: str = "20%", binary: bool = True) -> Path:
    """Train an ``order``-gram modified Kneser-Ney LM on ``text`` (one sentence per line).

    Writes ``out`` (ARPA when it ends in ``.arpa``, else a KenLM binary built from the ARPA kept
    next to it). Files appear atomically. ``--discount_fallback`` keeps tiny corpora working.
    """
    text = require_file(text, "LM training text", "give a text file, one normalized sentence per line")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arpa = out if out.suffix == ".arpa" else out.with_suffix(".arpa")
    cmd = [str(kenlm_tool("lmplz")), "-o", str(order), "-S", memory, "--discount_fallback"]
    if prune:
        cmd += ["--prune", *map(str, prune)]
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        _run(cmd + ["-T", tmp], stdin_path=text, stdout_path=Path(tmp) / "lm.arpa")
        os.replace(Path(tmp) / "lm.arpa", arpa)
        if out != arpa and binary:
            _run([str(kenlm_tool("build_binary")), "-s", str(arpa), str(Path(tmp) / "lm.bin")])
            os.replace(Path(tmp) / "lm.bin", out)
    return out if (out == arpa or binary) else arpa


def word_counts(lines: Iterable[str]) -> Counter:
    return Counter(w for line in lines for w in line.split())


def write_lexicon(words: Iterable[str], tokenizer, path: str | Path) -> tuple[int, list[str]]:
    """Spelling lexicon for ``ctc_decoder``, one ``word u n i t s`` line per word.

    Characters: the spelling ends with ``|`` (the model's space), which must end every word, else
    the decoder could split one spoken word into two; the decoder appends a space frame to each
    utterance so its last word ends too. Subword units: a word's pieces (its first piece carries
    the word-start mark, which separates words). Words with characters the tokenizer lacks
    cannot be spelled and are returned as skipped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    end = " |" if tokenizer.kind == "char" else ""
    kept, skipped = [], []
    for w in sorted(set(words)):
        (kept if w and " " not in w and not tokenizer.unknown_chars(w) else skipped).append(w)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(f"{w} {' '.join(tokenizer.spell(w))}{end}\n" for w in kept), encoding="utf-8")
    os.replace(tmp, path)
    return len(kept), skipped


def read_lexicon(path: str | Path) -> set[str]:
    path = require_file(path, "lexicon", LEXICON_HINT)
    return {line.split(maxsplit=1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def oov_rate(texts: Iterable[str], vocab: set[str]) -> float:
    """Percent of running words of ``texts`` not in ``vocab``."""
    words = [w for t in texts for w in t.split()]
    return 100.0 * sum(w not in vocab for w in words) / max(len(words), 1)


def perplexity(lm_path: str | Path, texts: Sequence[str]) -> float:
    """Corpus perplexity of ``texts`` under a KenLM model, ARPA or binary (sentence boundaries
    included, out-of-vocabulary words scored as ``<unk>``), through flashlight-text's KenLM,
    the one the beam decoder uses."""
    from flashlight.lib.text.decoder import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    words = sorted({w for t in texts for w in t.split()})
    vocab = Dictionary(words or ["<unk>"])
    model = KenLM(str(require_file(lm_path, "language model", BUILD_HINT)), vocab)
    log10 = 0.0
    for text in texts:
        state = model.start(False)                   # after <s>
        for word in text.split():
            state, score = model.score(state, vocab.get_index(word))
            log10 += score
        log10 += model.finish(state)[1]              # </s>
    tokens = sum(len(t.split()) + 1 for t in texts)
    return math.pow(10.0, -log10 / max(tokens, 1))

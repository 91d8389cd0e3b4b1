"""Decoding options (:class:`DecodeConfig`) and results (:class:`Hypothesis`), torch-free: read by the torch decoders
(``asr.decode``), by the command line and by the light ONNX runtime (``asr.lite``)."""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

from .config import require

DecodeMethod = Literal["greedy", "beam", "beam_lm", "grammar"]
DECODE_METHODS: tuple[str, ...] = typing.get_args(DecodeMethod)


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding: greedy best path, CTC beam search without LM, or lexicon + word n-gram LM beam."""

    method: DecodeMethod = "greedy"               # what `asr decode` / `asr transcribe` use by default
    methods: tuple[DecodeMethod, ...] = ()        # what a recipe's decode stage compares (empty: method)
    batch_frames: int = 40000
    beam_size: int = 50
    beam_size_token: int = 0               # tokens considered per frame (0: all)
    beam_threshold: float = 25.0           # prune hypotheses this far below the best (log domain)
    lm_weight: float = 1.0
    word_score: float = 0.0                # added per emitted word (insertion bonus)
    unk_score: float = float("-inf")       # word not in the lexicon (-inf: never)
    sil_score: float = 0.0
    lexicon: str = ""                      # beam_lm: "word c h a r s |" per line
    lm: str = ""                           # beam_lm: KenLM .arpa or binary
    tune_lm_weights: tuple[float, ...] = ()   # grid searched on dev by a recipe's tune stage
    tune_word_scores: tuple[float, ...] = ()
    tune_beam_size: int = 50
    nbest: int = 1                         # beam decoders: alternatives kept per utterance
    grammar: str = ""                      # grammar: a JSGF file (.jsgf) or a phrase list, one per line
    unit_bonus: float = 0.0                # grammar: added per output unit of a phrase (natural log):
                                           # a phrase's CTC likelihood favours the shorter ones
    tune_unit_bonus: tuple[float, ...] = ()   # grammar: grid searched by a recipe's tune stage
    tune_splits: tuple[str, ...] = ()      # what the unit bonus is tuned on, pooled (empty: dev)
    word_boost: dict[str, float] = field(default_factory=dict)   # beam_lm: hotword -> bonus (natural log)
                                           # added to the LM score at every emission of the word

    def check(self, where: str) -> None:
        require(self.beam_size >= 1, f"{where}.beam_size", "must be >= 1")
        require(1 <= self.nbest <= self.beam_size, f"{where}.nbest", "must be in 1..beam_size")
        require(self.tune_beam_size >= 1, f"{where}.tune_beam_size", "must be >= 1")
        require(self.beam_size_token >= 0, f"{where}.beam_size_token", "must be >= 0")
        require(self.beam_threshold > 0, f"{where}.beam_threshold", "must be > 0")
        require(bool(self.tune_lm_weights) == bool(self.tune_word_scores), f"{where}.tune_word_scores",
                 "tune_lm_weights and tune_word_scores are given together")

    @property
    def compared(self) -> tuple[str, ...]:
        return self.methods or (self.method,)


@dataclass
class Hypothesis:
    """One decoded utterance: token ids (CTC-collapsed, no blanks), text, and the decoder's
    score (log domain: best-path log-probability for greedy, the beam's total score else)."""

    ids: list[int]
    text: str
    score: float = 0.0
    words: list[str] = field(default_factory=list)
    alternatives: list[tuple[str, float]] = field(default_factory=list)   # N-best (text, score), best first
    # per word of ``text``: its posterior over every hypothesis the decoder scored (the grammar
    # decoder: all phrases; beam decoders: their 16 best), None where it has no such distribution (greedy)
    word_posteriors: list[float] | None = None

"""CTC decoding behind one interface: greedy, beam search without LM, and lexicon-constrained
beam search with a word n-gram LM (``torchaudio.models.decoder.ctc_decoder``: flashlight-text +
KenLM).

A decoder maps ``(log_probs (B, T, V), out_lens (B,))`` to one :class:`Hypothesis` per utterance:
the decoded token ids (CTC-collapsed, no blanks), the text and a score. Alignment and
confidence use those ids, so they describe exactly what was decoded (for BPE, re-encoding the
text can give other pieces). ``DECODERS`` is the registry of methods.
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .config import ConfigError
from .decode_config import DECODE_METHODS, DecodeConfig, DecodeMethod, Hypothesis  # noqa: F401  (re-exported)
from .batching import pad_batch
from .errors import MissingFileError
from .lm import LEXICON_HINT, require_file
from .text import WORD_START, Tokenizer

PHRASE_CHUNK = 256    # grammar phrases scored at once (bounds ctc_loss's working memory)
SIL_TOKEN = "|"       # flashlight's word boundary; stands for the tokenizer's space
UNK_WORD = "<unk>"
POSTERIOR_NBEST = 16  # beam hypotheses that word posteriors are computed over (alternatives: cfg.nbest)


Decoder = Callable[[torch.Tensor, torch.Tensor], list[Hypothesis]]   # (B, T, V), (B,) -> per utterance


def greedy_decode(log_probs: torch.Tensor, out_lens: torch.Tensor) -> list[list[int]]:
    """Best path: (B, T, V) log-probs -> per utterance token ids, repeats merged, blanks removed."""
    best = log_probs.argmax(-1)                                   # (B, T)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != 0
    keep &= torch.arange(best.shape[1], device=best.device).unsqueeze(0) < out_lens.to(best.device).unsqueeze(1)
    return [row[mask].tolist() for row, mask in zip(best.cpu(), keep.cpu())]


class GreedyDecoder:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, log_probs: torch.Tensor, out_lens: torch.Tensor) -> list[Hypothesis]:
        best = log_probs.max(-1).values                            # (B, T)
        inside = torch.arange(best.shape[1], device=best.device).unsqueeze(0) < out_lens.to(best.device).unsqueeze(1)
        scores = (best.float() * inside).sum(1).tolist()
        return [Hypothesis(ids, self.tokenizer.decode(ids), score)
                for ids, score in zip(greedy_decode(log_probs, out_lens), scores)]

    # incremental interface (streaming): begin, step over (T, V) chunks, partial/end -> Hypothesis
    def begin(self) -> None:
        self._ids, self._prev, self._score = [], 0, 0.0

    def step(self, log_probs: torch.Tensor) -> None:
        best, idx = log_probs.max(-1)
        self._score += float(best.float().sum())
        for i in idx.tolist():                      # repeats merge across chunk borders too
            if i != self._prev and i != 0:
                self._ids.append(i)
            self._prev = i

    def partial(self) -> Hypothesis:
        return Hypothesis(list(self._ids), self.tokenizer.decode(self._ids), self._score)

    def end(self) -> Hypothesis:
        return self.partial()


class BeamDecoder:
    """CTC beam search (flashlight). Without ``lexicon``/``lm``: lexicon-free prefix beam search
    over characters; with both: words restricted to the lexicon, scored by the KenLM n-gram
    (``lm_weight``, ``word_score`` per word, ``unk_score`` for words outside the lexicon)."""

    def __init__(self, tokenizer: Tokenizer, cfg: DecodeConfig, lexicon: str | Path | None = None,
                 lm: str | Path | None = None, beam_size: int | None = None):
        from torchaudio.models.decoder import ctc_decoder

        if (lexicon is None) != (lm is None):
            raise ConfigError("beam search with an LM needs both a lexicon and an LM file")
        if lexicon is not None:
            lexicon = str(require_file(lexicon, "lexicon", LEXICON_HINT))
            lm = str(require_file(lm, "language model", "build it with: asr lm build --text TEXT --out LM"
                                  " (lmplz itself: bash scripts/build_kenlm.sh)"))
        if tokenizer.kind == "char":
            self.sil = SIL_TOKEN
            self.tokens = [t if t != " " else SIL_TOKEN for t in tokenizer.vocab]
        else:                       # subwords: the word-start mark, alone, is the separator
            self.sil = WORD_START
            self.tokens = list(tokenizer.vocab)
            if WORD_START not in self.tokens:
                raise ConfigError(f"subword vocabulary has no bare {WORD_START!r} piece for word boundaries")
        self._decoder = ctc_decoder(
            lexicon=lexicon, tokens=self.tokens, lm=biased_lm(lexicon, lm, cfg.word_boost) if lm else lm,
            nbest=max(cfg.nbest, POSTERIOR_NBEST),
            beam_size=beam_size or cfg.beam_size,
            beam_size_token=cfg.beam_size_token or None, beam_threshold=cfg.beam_threshold,
            lm_weight=cfg.lm_weight if lm else 0.0, word_score=cfg.word_score if lm else 0.0,
            unk_score=cfg.unk_score, sil_score=cfg.sil_score, log_add=True,
            blank_token=tokenizer.vocab[0], sil_token=self.sil, unk_word=UNK_WORD)
        self.tokenizer, self.nbest = tokenizer, cfg.nbest
        self.sil_id = self.tokens.index(self.sil)
        self.with_lm = lm is not None
        self.end_with_space = self.with_lm and tokenizer.kind == "char"   # see asr.lm.write_lexicon

    def __call__(self, log_probs: torch.Tensor, out_lens: torch.Tensor) -> list[Hypothesis]:
        emissions = log_probs.detach().float().cpu()
        lens = out_lens.cpu().to(torch.int32)
        if self.end_with_space:
            emissions, lens = self._end_with_space(emissions, lens)
        return [self._hypothesis(nbest) for nbest in self._decoder(emissions.contiguous(), lens)]

    def _hypothesis(self, nbest: list) -> Hypothesis:
        """The best of flashlight's N-best list, with the distinct texts of the first ``cfg.nbest``
        as alternatives and word posteriors over all of them."""
        if not nbest:
            return Hypothesis([], "", float("-inf"))
        hyps = []
        for h in nbest:
            ids = self._clean_ids(h.tokens.tolist())
            words = [w for w in h.words if w != UNK_WORD] if self.with_lm else []
            hyps.append(Hypothesis(ids, " ".join(words) if self.with_lm else self.tokenizer.decode(ids),
                                   float(h.score), words))
        seen: dict[str, float] = {}
        for h in hyps[: self.nbest]:   # paths differing only in blanks/silence: one text, best score
            seen.setdefault(h.text, h.score)
        best = hyps[0]
        best.alternatives = list(seen.items()) if self.nbest > 1 and len(hyps) > 1 else []
        best.word_posteriors = nbest_word_posteriors([(h.text.split(), h.score) for h in hyps])
        return best

    # incremental interface (streaming): flashlight's own online decoding
    def begin(self) -> None:
        self._decoder.decode_begin()

    def step(self, log_probs: torch.Tensor) -> None:
        """Feed (T, V) log-probs of the next frames."""
        if log_probs.shape[0]:
            self._decoder.decode_step(log_probs.detach().float().cpu().contiguous())

    def partial(self) -> Hypothesis:
        """The best hypothesis so far (words still open at its end may change)."""
        return self._hypothesis(self._decoder._to_hypo(self._decoder.decoder.get_all_final_hypothesis()[:1]))

    def end(self) -> Hypothesis:
        if self.end_with_space:
            space = torch.full((1, len(self.tokens)), -1e4)
            space[0, self.tokens.index(SIL_TOKEN)] = 0.0
            self.step(space)
        self._decoder.decode_end()
        return self._hypothesis(self._decoder.get_final_hypothesis())

    def _clean_ids(self, ids: list[int]) -> list[int]:
        """Beam token ids without separators at either end or repeated (flashlight starts a
        hypothesis in silence, and the appended end-of-utterance frame is a separator)."""
        out: list[int] = []
        for i in ids:
            if i == self.sil_id and (not out or out[-1] == self.sil_id):
                continue
            out.append(i)
        while out and out[-1] == self.sil_id:
            out.pop()
        return out

    def _end_with_space(self, emissions: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one certain-space frame after each utterance: lexicon spellings end in the
        word separator, which the model emits only between words."""
        b, t, v = emissions.shape
        out = torch.cat([emissions, torch.zeros(b, 1, v)], dim=1)
        space = torch.full((v,), -1e4)
        space[self.tokens.index(SIL_TOKEN)] = 0.0
        out[torch.arange(b), lens.long()] = space
        return out, lens + 1


class GrammarDecoder:
    """Decoding restricted to a finite set of phrases (a JSGF grammar or a phrase list,
    ``asr.grammar``): each phrase is scored by its CTC log-likelihood (all alignments summed)
    plus ``unit_bonus`` per output unit, and the best is the hypothesis; ``nbest`` keeps the
    runners-up. Exact for the grammar."""

    def __init__(self, tokenizer: Tokenizer, phrases: Sequence[str], nbest: int = 1, unit_bonus: float = 0.0):
        if not phrases:
            raise ConfigError("a grammar decoder needs at least one phrase")
        self.tokenizer, self.phrases, self.nbest = tokenizer, list(phrases), nbest
        self.targets = [tokenizer.encode(p) for p in self.phrases]
        self._wid = _word_ids([p.split() for p in self.phrases])          # (K, W_max), -1 padded
        self.flat = torch.tensor([i for t in self.targets for i in t], dtype=torch.long)
        self.lens = torch.tensor([len(t) for t in self.targets], dtype=torch.long)
        self.bonus = unit_bonus * self.lens.float()        # (K,) added to each phrase's log-likelihood
        self._ext, self._ends = _extended_targets(self.targets)          # (K, S), (K, 2) for streaming
        self._skip = (self._ext > 0) & (self._ext != F.pad(self._ext, (2, 0), value=-1)[:, :-2])   # s-2 -> s

    def __call__(self, log_probs: torch.Tensor, out_lens: torch.Tensor) -> list[Hypothesis]:
        return [self._best(self.bonus - self.phrase_nll(lp[:n]))
                for lp, n in zip(log_probs.detach().float().cpu(), out_lens.tolist())]

    def phrase_nll(self, lp: torch.Tensor) -> torch.Tensor:
        """(K,) CTC negative log-likelihood of every phrase on (T, V) log-probs (inf: cannot fit)."""
        k = len(self.phrases)
        return torch.cat([self._nll(lp.float(), a, min(a + PHRASE_CHUNK, k)) for a in range(0, k, PHRASE_CHUNK)])

    def _best(self, scores: torch.Tensor) -> Hypothesis:
        """The hypothesis of (K,) phrase scores (and the runners-up as alternatives)."""
        order = torch.argsort(-scores).tolist()
        best = order[0]
        if not torch.isfinite(scores[best]):           # no phrase fits in so few frames
            return Hypothesis([], "", float("-inf"))
        hyp = Hypothesis(list(self.targets[best]), self.phrases[best], float(scores[best]),
                         word_posteriors=self._word_posteriors(scores, best))
        if self.nbest > 1:
            hyp.alternatives = [(self.phrases[i], float(scores[i])) for i in order[: self.nbest] if torch.isfinite(scores[i])]
        return hyp

    def _word_posteriors(self, scores: torch.Tensor, best: int) -> list[float]:
        """Per word of phrase ``best``: the posterior (softmax of the (K,) scores) of the phrases
        whose word at that position is the same word."""
        n = int((self._wid[best] >= 0).sum())
        same = self._wid[:, :n] == self._wid[best, :n]                     # (K, n)
        post = torch.softmax(scores.double(), 0)
        return (post[:, None] * same).sum(0).clamp(max=1.0).tolist()

    def _nll(self, lp: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """CTC negative log-likelihood of phrases a..b-1 on (T, V) ``lp`` (inf: cannot fit)."""
        n, k = lp.shape[0], b - a
        start = int(self.lens[:a].sum())
        flat = self.flat[start: start + int(self.lens[a:b].sum())]
        return F.ctc_loss(lp.unsqueeze(1).expand(n, k, lp.shape[-1]), flat, torch.full((k,), n, dtype=torch.long),
                          self.lens[a:b], blank=0, reduction="none", zero_infinity=False)

    # incremental interface (streaming): the best phrase for the frames so far, by the CTC forward
    # variables of every phrase carried from frame to frame (each frame is read once)
    def begin(self) -> None:
        self._alpha: torch.Tensor | None = None                        # (K, S) log alphas

    def step(self, log_probs: torch.Tensor) -> None:
        neg = torch.tensor(float("-inf"))
        for lp in log_probs.detach().float().cpu():
            emit = lp[self._ext.clamp(min=0)].masked_fill(self._ext < 0, float("-inf"))
            if self._alpha is None:
                alpha = torch.full_like(emit, float("-inf"))
                alpha[:, :2] = emit[:, :2]
            else:
                a = self._alpha
                one = F.pad(a, (1, 0), value=float("-inf"))[:, :-1]
                two = torch.where(self._skip, F.pad(a, (2, 0), value=float("-inf"))[:, :-2], neg)
                alpha = torch.logsumexp(torch.stack([a, one, two]), 0) + emit
            self._alpha = alpha

    def partial(self) -> Hypothesis:
        if self._alpha is None:
            return Hypothesis([], "", 0.0)
        padded = F.pad(self._alpha, (0, 1), value=float("-inf"))     # column S: "no such position"
        return self._best(torch.logsumexp(padded.gather(1, self._ends), 1) + self.bonus)   # log p(phrase | frames)

    def end(self) -> Hypothesis:
        return self.partial()


def nbest_word_posteriors(hyps: Sequence[tuple[Sequence[str], float]]) -> list[float]:
    """Per word of the first (best) of N ``(words, score)`` hypotheses: the posterior mass
    (softmax of the scores, log domain) of the hypotheses that have the same word in that place,
    words matched in order (``difflib``'s longest matching blocks). A word that no runner-up
    questions gets ~1; one that half the mass replaces gets ~0.5."""
    if not hyps:
        return []
    best = list(hyps[0][0])
    scores = torch.tensor([s for _, s in hyps], dtype=torch.float64)
    post = torch.softmax(scores, 0).tolist() if bool(torch.isfinite(scores.max())) else [1.0] + [0.0] * (len(hyps) - 1)
    mass = [post[0]] * len(best)
    for (words, _), p in zip(hyps[1:], post[1:]):
        for a, _, size in difflib.SequenceMatcher(None, best, list(words), autojunk=False).get_matching_blocks():
            for i in range(a, a + size):
                mass[i] += p
    return [min(m, 1.0) for m in mass]


def _word_ids(phrases: Sequence[Sequence[str]]) -> torch.Tensor:
    """(K, W_max) ids of each phrase's words (one id per distinct word), padded with -1."""
    vocab: dict[str, int] = {}
    out = torch.full((len(phrases), max(1, max(len(p) for p in phrases))), -1, dtype=torch.long)
    for k, words in enumerate(phrases):
        for j, w in enumerate(words):
            out[k, j] = vocab.setdefault(w, len(vocab))
    return out


def _extended_targets(targets: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Blank-interleaved CTC label sequences (K, S_max) padded with -1, and each one's last two
    positions (K, 2) (the final blank and the last label; for an empty target the blank and
    S_max, a position that never holds probability)."""
    s_max = 2 * max(len(t) for t in targets) + 1
    ext = torch.full((len(targets), s_max), -1, dtype=torch.long)
    ends = torch.zeros(len(targets), 2, dtype=torch.long)
    for k, t in enumerate(targets):
        ext[k, : 2 * len(t) + 1] = 0
        ext[k, 1: 2 * len(t): 2] = torch.tensor(list(t), dtype=torch.long)
        ends[k] = torch.tensor([2 * len(t), 2 * len(t) - 1 if t else s_max])
    return ext, ends


def _grammar(tokenizer: Tokenizer, cfg: DecodeConfig, beam_size: int | None) -> Decoder:
    from .grammar import load_phrases

    if not cfg.grammar:
        raise ConfigError("grammar decoding needs decode.grammar (a .jsgf file or a phrase list)")
    return GrammarDecoder(tokenizer, load_phrases(cfg.grammar, tokenizer), cfg.nbest, cfg.unit_bonus)


def biased_lm(lexicon: str, lm: str, boost: dict[str, float]):
    """``lm`` (a KenLM path) unchanged without ``boost``; else a KenLM whose score of each boosted
    word carries its bonus (natural log, turned into KenLM's log10) in every context, and so in
    the lexicon trie's look-ahead too: hotwords bias the search without rebuilding the LM."""
    if not boost:
        return lm
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import create_word_dict, load_words
    from torchaudio.models.decoder import CTCDecoderLM

    words = create_word_dict(load_words(lexicon))     # the same call, so the same ids, as ctc_decoder's
    bonus = {words.get_index(w): b / math.log(10) for w, b in boost.items() if words.contains(w)}
    missing = sorted(w for w in boost if not words.contains(w))
    if missing:
        raise ConfigError(f"boosted words {missing} are not in the lexicon {lexicon}")

    class BiasedLM(CTCDecoderLM):
        def __init__(self):
            super().__init__()
            self.lm = KenLM(lm, words)

        def start(self, start_with_nothing: bool):
            return self.lm.start(start_with_nothing)

        def score(self, state, usr_token_idx: int):
            out, score = self.lm.score(state, usr_token_idx)
            return out, score + bonus.get(usr_token_idx, 0.0)

        def finish(self, state):
            return self.lm.finish(state)

    return BiasedLM()


def _greedy(tokenizer: Tokenizer, cfg: DecodeConfig, beam_size: int | None) -> Decoder:
    return GreedyDecoder(tokenizer)


def _beam(tokenizer: Tokenizer, cfg: DecodeConfig, beam_size: int | None) -> Decoder:
    return BeamDecoder(tokenizer, cfg, beam_size=beam_size)


def _beam_lm(tokenizer: Tokenizer, cfg: DecodeConfig, beam_size: int | None) -> Decoder:
    if not cfg.lexicon or not cfg.lm:
        raise MissingFileError("beam_lm decoding needs decode.lexicon and decode.lm "
                               f"(got {cfg.lexicon!r}, {cfg.lm!r}); {LEXICON_HINT}")
    return BeamDecoder(tokenizer, cfg, cfg.lexicon, cfg.lm, beam_size=beam_size)


# method -> factory(tokenizer, cfg, beam_size override); a new decoder is one entry here
DECODERS: dict[str, Callable[[Tokenizer, DecodeConfig, int | None], Decoder]] = {
    "greedy": _greedy, "beam": _beam, "beam_lm": _beam_lm, "grammar": _grammar}


def make_decoder(tokenizer: Tokenizer, cfg: DecodeConfig, method: str | None = None,
                 beam_size: int | None = None) -> Decoder:
    """The decoder for ``method`` (default ``cfg.method``); beam_lm reads ``cfg.lexicon``/``cfg.lm``."""
    method = method or cfg.method
    if method not in DECODERS:
        raise ConfigError(f"unknown decoding method {method!r} (available: {', '.join(DECODERS)})")
    if cfg.nbest > 1 and method == "greedy":
        raise ConfigError(f"nbest={cfg.nbest} needs a beam decoder (method beam or beam_lm); greedy has one path")
    return DECODERS[method](tokenizer, cfg, beam_size)


def decode_emissions(decoder: Decoder, emis: Sequence[torch.Tensor], batch: int = 16) -> list[Hypothesis]:
    """Run ``decoder`` over per-utterance (T_i', V) log-probs, ``batch`` at a time."""
    hyps: list[Hypothesis] = []
    for start in range(0, len(emis), batch):
        x, lens = pad_batch(list(emis[start: start + batch]))
        hyps.extend(decoder(x, lens))
    return hyps

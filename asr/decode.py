"""CTC decoding behind one interface: greedy, beam search without LM, and lexicon-constrained
beam search with a word n-gram LM (``torchaudio.models.decoder.ctc_decoder``: flashlight-text +
KenLM); plus batch decoding of features and manifests."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .audio import AudioError
from .config import DecodeConfig
from .data import Utterance, bucket_batches, load_utterance_audio, pad_batch
from .features import cached_extractor, feature_lengths
from .lm import LEXICON_HINT, require_file
from .model import BiLSTMCTC
from .text import WORD_START, Tokenizer

SIL_TOKEN = "|"       # flashlight's word boundary; stands for the tokenizer's space
UNK_WORD = "<unk>"

Decoder = Callable[[torch.Tensor, torch.Tensor], list[str]]   # (B, T, V) log-probs, (B,) lens


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

    def __call__(self, log_probs: torch.Tensor, out_lens: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(ids) for ids in greedy_decode(log_probs, out_lens)]


class BeamDecoder:
    """CTC beam search (flashlight). Without ``lexicon``/``lm``: lexicon-free prefix beam search
    over characters; with both: words restricted to the lexicon, scored by the KenLM n-gram
    (``lm_weight``, ``word_score`` per word, ``unk_score`` for words outside the lexicon)."""

    def __init__(self, tokenizer: Tokenizer, cfg: DecodeConfig, lexicon: str | Path | None = None,
                 lm: str | Path | None = None, beam_size: int | None = None):
        from torchaudio.models.decoder import ctc_decoder

        if (lexicon is None) != (lm is None):
            raise ValueError("beam search with an LM needs both a lexicon and an LM file")
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
                raise ValueError(f"subword vocabulary has no bare {WORD_START!r} piece for word boundaries")
        self._decoder = ctc_decoder(
            lexicon=lexicon, tokens=self.tokens, lm=lm, nbest=1,
            beam_size=beam_size or cfg.beam_size,
            beam_size_token=cfg.beam_size_token or None, beam_threshold=cfg.beam_threshold,
            lm_weight=cfg.lm_weight if lm else 0.0, word_score=cfg.word_score if lm else 0.0,
            unk_score=cfg.unk_score, sil_score=cfg.sil_score, log_add=True,
            blank_token=tokenizer.vocab[0], sil_token=self.sil, unk_word=UNK_WORD)
        self.with_lm = lm is not None
        self.end_with_space = self.with_lm and tokenizer.kind == "char"   # see asr.lm.write_lexicon

    def __call__(self, log_probs: torch.Tensor, out_lens: torch.Tensor) -> list[str]:
        emissions = log_probs.detach().float().cpu()
        lens = out_lens.cpu().to(torch.int32)
        if self.end_with_space:
            emissions, lens = self._end_with_space(emissions, lens)
        results = self._decoder(emissions.contiguous(), lens)
        texts = []
        for nbest in results:
            if not nbest:
                texts.append("")
            elif self.with_lm:
                texts.append(" ".join(w for w in nbest[0].words if w != UNK_WORD))
            else:
                units = "".join(self.tokens[i] for i in nbest[0].tokens.tolist())
                texts.append(" ".join(units.replace(self.sil, " ").split()))
        return texts


    def _end_with_space(self, emissions: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one certain-space frame after each utterance: lexicon spellings end in the
        word separator, which the model emits only between words."""
        b, t, v = emissions.shape
        out = torch.cat([emissions, torch.zeros(b, 1, v)], dim=1)
        space = torch.full((v,), -1e4)
        space[self.tokens.index(SIL_TOKEN)] = 0.0
        out[torch.arange(b), lens.long()] = space
        return out, lens + 1


def make_decoder(tokenizer: Tokenizer, cfg: DecodeConfig, method: str | None = None,
                 beam_size: int | None = None) -> Decoder:
    """The decoder for ``method`` (default ``cfg.method``); beam_lm reads ``cfg.lexicon``/``cfg.lm``."""
    method = method or cfg.method
    if method == "greedy":
        return GreedyDecoder(tokenizer)
    if method == "beam":
        return BeamDecoder(tokenizer, cfg, beam_size=beam_size)
    if method == "beam_lm":
        if not cfg.lexicon or not cfg.lm:
            raise FileNotFoundError("beam_lm decoding needs decode.lexicon and decode.lm "
                                    f"(got {cfg.lexicon!r}, {cfg.lm!r}); {LEXICON_HINT}")
        return BeamDecoder(tokenizer, cfg, cfg.lexicon, cfg.lm, beam_size=beam_size)
    raise ValueError(f"unknown decoding method {method!r} (available: greedy, beam, beam_lm)")


@torch.inference_mode()
def emissions(model: BiLSTMCTC, feats: Sequence[torch.Tensor], batch_frames: int = 40000
              ) -> list[torch.Tensor]:
    """Per utterance (T_i', V) log-probs on the CPU, in input order."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(feats)
    device = model.cmvn_mean.device
    for batch in bucket_batches(feature_lengths(feats), batch_frames, seed=None):
        x, lens = pad_batch([feats[i].float() for i in batch])
        log_probs, out_lens = model(x.to(device), lens.to(device))
        for k, i in enumerate(batch):
            out[i] = log_probs[k, : int(out_lens[k])].float().cpu()
    return out


def decode_emissions(decoder: Decoder, emis: Sequence[torch.Tensor], batch: int = 16) -> list[str]:
    """Run ``decoder`` over per-utterance (T_i', V) log-probs, ``batch`` at a time."""
    texts: list[str] = []
    for start in range(0, len(emis), batch):
        chunk = emis[start: start + batch]
        x, lens = pad_batch(list(chunk))
        texts.extend(decoder(x, lens))
    return texts


def decode_features(model: BiLSTMCTC, feats: Sequence[torch.Tensor], batch_frames: int = 40000,
                    decoder: Decoder | None = None) -> list[str]:
    """Transcribe a list of (T_i, F) feature tensors (greedy unless ``decoder``); input order."""
    decoder = decoder or GreedyDecoder(model.tokenizer)
    if isinstance(decoder, GreedyDecoder):      # decode whole model batches: no copies
        texts: list[str] = [""] * len(feats)
        device = model.cmvn_mean.device
        with torch.inference_mode():
            for batch in bucket_batches(feature_lengths(feats), batch_frames, seed=None):
                x, lens = pad_batch([feats[i].float() for i in batch])
                for i, text in zip(batch, decoder(*model(x.to(device), lens.to(device)))):
                    texts[i] = text
        return texts
    return decode_emissions(decoder, emissions(model, feats, batch_frames))


def utterance_features(model: BiLSTMCTC, utts: Sequence[Utterance], cache: dict | None = None
                       ) -> tuple[list[torch.Tensor], list[str], list[str]]:
    """Features of ``utts`` (from ``cache`` when it has them, else from audio).

    Returns features, their ids, and ``"id\treason"`` for utterances whose audio is unreadable.
    """
    feats, ids, failed = [], [], []
    by_id = dict(zip(cache["ids"], cache["feats"])) if cache is not None else {}
    extractor = cached_extractor(model.feature_config)
    for u in utts:
        if u.id in by_id:
            feats.append(by_id[u.id])
            ids.append(u.id)
            continue
        try:
            feats.append(extractor(load_utterance_audio(u)))
            ids.append(u.id)
        except AudioError as e:
            failed.append(f"{u.id}\t{e}")
    for line in failed:
        print(f"[decode] unreadable, scored as empty: {line}", file=sys.stderr)
    return feats, ids, failed


def decode_utterances(model: BiLSTMCTC, utts: Sequence[Utterance], cache: dict | None = None,
                      batch_frames: int = 40000, decoder: Decoder | None = None
                      ) -> tuple[dict[str, str], dict]:
    """Decode manifest utterances (features from ``cache`` when given, else from audio).

    Returns ``{id: hypothesis}`` and timing stats ``{"audio_s", "decode_s", "rtf", "skipped"}``.
    Utterances whose audio cannot be read are reported on stderr and get an empty hypothesis,
    so they count as deletions instead of vanishing from the score.
    """
    start = time.perf_counter()
    feats, ids, failed = utterance_features(model, utts, cache)
    hyps = dict(zip(ids, decode_features(model, feats, batch_frames, decoder)))
    hyps.update({line.split("\t")[0]: "" for line in failed})
    elapsed = time.perf_counter() - start
    audio_s = sum(u.duration for u in utts)
    return hyps, {"audio_s": audio_s, "decode_s": elapsed, "rtf": elapsed / max(audio_s, 1e-9),
                  "skipped": len(failed)}

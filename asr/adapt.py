"""Vocabulary without retraining: decoder packs (``asr adapt``) and hotword boosting.

``build_pack(model, domain.txt, PACK/)`` writes, in seconds, a spelling lexicon of the text's
words for the model's units, a KenLM n-gram (ARPA and binary) and ``decoder.json`` (the decoding
settings); with a dev manifest it tunes the LM weight and word score on it (a small grid, the
emissions computed once). ``--decoder PACK/`` then decodes with it anywhere (``asr transcribe``,
``decode``, ``evaluate``, ``serve``).

``with_hotwords(cfg, FILE)`` biases beam_lm toward the words and phrases of ``FILE`` (one per
line, an optional weight after a tab or ``:``, default ``HOTWORD_BOOST``; a negative weight
penalises): each word's LM score gets the weight (natural log, so the decoder applies it times
``lm_weight``) at every emission, in any context; words the lexicon lacks are added (each listed
in a warning). A phrase boosts each of its words on its own (a bag of words, not the sequence):
list content words, not "the".
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from .decode import DecodeConfig, decode_emissions, make_decoder
from .errors import AsrError
from .lm import build_lm, word_counts, write_lexicon
from .score import error_rates
from .text import normalize_text

log = logging.getLogger(__name__)

PACK_FORMAT = "asr-decoder-pack-v1"
PACK_JSON = "decoder.json"
HOTWORD_BOOST = 3.0                 # bonus per emitted hotword (natural log, scaled by lm_weight like the LM)


class PackError(AsrError):
    """A decoder pack or hotword file that cannot be used; the message names it."""


def is_pack(path: str | Path) -> bool:
    return (Path(path) / PACK_JSON).is_file()


def build_pack(rec, text: str | Path, out: str | Path, order: int = 3, dev=None,
               lm_weights: Sequence[float] = (0.5, 1.0, 1.5, 2.0), word_scores: Sequence[float] = (-1.0, 0.0, 1.0),
               beam_size: int = 50) -> Path:
    """Lexicon + n-gram LM (+ tuned weights when ``dev`` utterances are given) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [normalize_text(line) for line in Path(text).read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise PackError(f"{text}: no text to build a language model from")
    (out / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    build_lm(out / "text.txt", out / "lm.bin", order)
    n, skipped = write_lexicon(word_counts(lines), rec.tokenizer, out / "lexicon.txt")
    for w in skipped:
        log.warning("%s: word %r cannot be spelled with the model's units: left out of the lexicon", text, w)
    cfg = DecodeConfig(method="beam_lm", lexicon=str(out / "lexicon.txt"), lm=str(out / "lm.bin"), beam_size=beam_size)
    tuned = tune(rec, cfg, dev, lm_weights, word_scores) if dev else None
    if tuned:
        cfg = replace(cfg, lm_weight=tuned["lm_weight"], word_score=tuned["word_score"])
    desc = {"format": PACK_FORMAT, "text": str(text), "sentences": len(lines), "words": n, "order": order,
            "not_spellable": skipped, "decode": {k: v for k, v in asdict(cfg).items() if k not in ("lexicon", "lm")},
            "tuned": tuned}
    (out / PACK_JSON).write_text(json.dumps(desc, indent=1) + "\n", encoding="utf-8")
    return out


def tune(rec, cfg: DecodeConfig, dev, lm_weights, word_scores) -> dict:
    """Grid search of LM weight x word score on ``dev`` utterances (WER, beam_lm)."""
    from .recognizer import utterance_features

    feats, ids, _ = utterance_features(rec, dev)
    emis = rec.emissions(feats)
    refs = {u.id: u.text for u in dev if u.id in set(ids)}
    grid = []
    for w in lm_weights:
        for s in word_scores:
            dec = make_decoder(rec.tokenizer, replace(cfg, lm_weight=w, word_score=s), "beam_lm")
            hyps = {i: h.text for i, h in zip(ids, decode_emissions(dec, emis))}
            grid.append({"lm_weight": w, "word_score": s, "wer": round(error_rates(refs, hyps).wer, 3)})
    best = min(grid, key=lambda g: g["wer"])
    return {**best, "dev_utterances": len(refs), "grid": grid}


def pack_decode(path: str | Path) -> DecodeConfig:
    """The decoding settings of a pack, with its files' paths."""
    path = Path(path)
    try:
        desc = json.loads((path / PACK_JSON).read_text(encoding="utf-8"))
        assert desc.get("format") == PACK_FORMAT
        d = DecodeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in desc["decode"].items()})
    except (OSError, ValueError, TypeError, KeyError, AssertionError) as e:
        raise PackError(f"{path}: not a decoder pack ({type(e).__name__}: {e}; make one with asr adapt)") from None
    return replace(d, lexicon=str(path / "lexicon.txt"), lm=str(path / "lm.bin"))


def read_hotwords(path: str | Path) -> list[tuple[str, float]]:
    """``(normalised word or phrase, weight)`` per line; errors name the file and line."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"(.*?)(?:[\t:]\s*([-+0-9.eE]+))?\s*", line)
        phrase = normalize_text(m.group(1))
        if not phrase:
            raise PackError(f"{path}:{n}: no word in {line!r}")
        try:
            weight = float(m.group(2)) if m.group(2) else HOTWORD_BOOST
        except ValueError:
            raise PackError(f"{path}:{n}: weight {m.group(2)!r} is not a number") from None
        out.append((phrase, weight))
    return out


def with_hotwords(cfg: DecodeConfig, hotwords: str | Path, tokenizer, cache: str | Path | None = None) -> DecodeConfig:
    """``cfg`` (beam_lm) decoding with the words of ``hotwords`` boosted (``word_boost``: a bonus
    on the LM score at every emission of the word, see :func:`asr.decode.biased_lm`). Words the
    lexicon lacks are spelled with the model's units and added, in a copy cached by content, each
    named in a warning (the LM scores them as unknown words, plus their boost)."""
    if not cfg.lexicon or not cfg.lm:
        raise PackError("hotwords bias beam_lm decoding: give --decoder PACK (asr adapt) or --lexicon and --lm")
    words: dict[str, float] = {}
    for phrase, weight in read_hotwords(hotwords):
        for w in phrase.split():
            if tokenizer.unknown_chars(w):
                raise PackError(f"{hotwords}: hotword {w!r} has characters outside the model's units")
            words[w] = max(words[w], weight) if w in words else weight
    lexicon = Path(cfg.lexicon).read_text(encoding="utf-8")
    known = {line.split(maxsplit=1)[0] for line in lexicon.splitlines() if line.strip()}
    new = sorted(w for w in words if w not in known)
    for w in new:
        log.warning("hotword %r is not in the lexicon %s: added", w, cfg.lexicon)
    boost = {**cfg.word_boost, **words}
    if not new:
        return replace(cfg, word_boost=boost)
    units = json.dumps([tokenizer.kind, list(tokenizer.vocab)])      # the spellings depend on the model's units
    key = hashlib.sha256(lexicon.encode() + json.dumps(new).encode() + units.encode()).hexdigest()[:16]
    folder = Path(cache or Path(cfg.lexicon).parent / ".hotwords") / key
    if not (folder / "lexicon.txt").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_lexicon(new, tokenizer, folder / "new.txt")
        tmp = folder / "lexicon.txt.tmp"
        head = lexicon if lexicon.endswith("\n") or not lexicon else lexicon + "\n"
        tmp.write_text(head + (folder / "new.txt").read_text(encoding="utf-8"), encoding="utf-8")
        tmp.replace(folder / "lexicon.txt")
    return replace(cfg, lexicon=str(folder / "lexicon.txt"), word_boost=boost)

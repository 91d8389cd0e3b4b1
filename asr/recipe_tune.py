"""The recipes' ``tune`` stage: decoding weights chosen on held-in data, never on a test split.

- beam_lm: LM weight x word score, grid-searched for the lowest dev WER;
- grammar: the unit bonus added per output unit of a phrase. A phrase's CTC likelihood is a
  product over its units, so when the audio is unfamiliar (a room, another engine) the decoder
  drifts to shorter phrases and drops trailing words ("call peter on work" -> "call peter");
  the bonus is chosen for the lowest phrase error on ``decode.tune_splits`` pooled (dev and dev
  through named conditions in the commands recipe).

Both land in ``exp/decode/tuned.json``, which :func:`asr.recipe.resolved_decode` applies.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace

import torch

from .decode import DecodeConfig, decode_emissions
from .files import atomic_write_text
from .recipe import Recipe, resolved_decode, split_emissions, stage
from .recognizer import Recognizer, load
from .score import error_rates

log = logging.getLogger(__name__)


@stage(reads=("data", "features", "tokenizer", "lm", "decode"))
def tune_stage(r: Recipe) -> dict:
    """``exp/decode/tuned.json``: the beam_lm weights and/or the grammar unit bonus (with empty
    grids nothing is tuned and an earlier file is removed)."""
    d = resolved_decode(r, tuned=False)
    if not d.tune_lm_weights and not d.tune_unit_bonus:
        if r.paths.tuned.exists():                 # an earlier run's choice must not outlive its grid
            log.info("nothing to tune: %s removed", r.paths.tuned)
            r.paths.tuned.unlink()
        return {}
    rec = load(r.paths.best_model, calibrated=False)
    out = {}
    if d.tune_lm_weights:
        out.update(tune_lm(r, rec, d))
    if d.tune_unit_bonus:
        out.update(tune_unit_bonus(r, rec, d))
    atomic_write_text(r.paths.tuned, json.dumps(out, indent=1) + "\n")
    return out


def tune_lm(r: Recipe, rec: Recognizer, d: DecodeConfig) -> dict:
    """Grid search of LM weight x word score for beam_lm on dev."""
    utts, emis, failed, _ = split_emissions(r, rec, r.cfg.dev_split)
    refs = {u.id: u.text for u in utts}
    ids = list(emis)
    grid = []
    for lm_weight in d.tune_lm_weights:
        for word_score in d.tune_word_scores:
            dec = rec.make_decoder(replace(d, lm_weight=lm_weight, word_score=word_score), "beam_lm",
                                   beam_size=d.tune_beam_size)
            hyps = {i: h.text for i, h in zip(ids, decode_emissions(dec, [emis[i] for i in ids]))}
            hyps.update({i: "" for i in failed})
            wer = error_rates(refs, hyps).wer
            grid.append({"lm_weight": lm_weight, "word_score": word_score, "wer": round(wer, 3)})
            log.info("lm_weight %s word_score %s: dev WER %.2f%%", lm_weight, word_score, wer)
    best = min(grid, key=lambda g: (g["wer"], g["lm_weight"], g["word_score"]))
    return {**best, "dev_split": r.cfg.dev_split, "beam_size": d.tune_beam_size, "grid": grid}


def tune_unit_bonus(r: Recipe, rec: Recognizer, d: DecodeConfig) -> dict:
    """The grammar decoder's unit bonus with the lowest phrase error on ``decode.tune_splits``
    pooled (ties: the smallest bonus). Every phrase's likelihood is computed once per utterance;
    each bonus only re-ranks them."""
    dec = rec.make_decoder(replace(d, unit_bonus=0.0), "grammar")
    splits = d.tune_splits or (r.cfg.dev_split,)
    nll, truth, n_failed = [], [], 0
    for split in splits:
        utts, emis, failed, _ = split_emissions(r, rec, split)
        refs = {u.id: u.text for u in utts}
        nll += [dec.phrase_nll(e) for e in emis.values()]
        truth += [refs[i] for i in emis]
        n_failed += len(failed)                    # wrong whatever the bonus
    scores = -torch.stack(nll)                     # (N, K)
    grid = []
    for bonus in d.tune_unit_bonus:
        picks = (scores + bonus * dec.lens.float()).argmax(1).tolist()
        errors = sum(dec.phrases[k] != t for k, t in zip(picks, truth)) + n_failed
        grid.append({"unit_bonus": bonus, "phrase_error": round(100 * errors / max(len(truth) + n_failed, 1), 3)})
        log.info("unit_bonus %s: phrase error %.2f%% on %s", bonus, grid[-1]["phrase_error"], " + ".join(splits))
    best = min(grid, key=lambda g: (g["phrase_error"], g["unit_bonus"]))
    return {"unit_bonus": best["unit_bonus"], "unit_bonus_splits": list(splits), "unit_bonus_grid": grid}

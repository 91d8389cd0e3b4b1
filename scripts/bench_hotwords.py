#!/usr/bin/env python3
"""Hotword boosting benchmark (`--hotwords`), JSON.

The rare-word case: a decoder pack (`asr adapt`) is built from ``--text`` in which every sentence
holding a hotword is dropped except the first ``--keep`` ones (0: the words are out of the LM and
the lexicon altogether, as a new product name is). Each ``--manifest`` is then decoded with
beam_lm (emissions computed once):

- ``plain``: the pack alone (its lexicon may lack the hotwords);
- ``boost=W``: ``--hotwords`` at weight W (natural log per emitted word); ``boost=0`` is the
  pack with the missing hotwords added to the lexicon but no bias, the baseline of the test.

Per set and row: WER, hotword recall and precision (bag of words per utterance: a hotword in the
hypothesis counts as found up to the times the reference says it), false alarms (hotwords output
for utterances whose reference has none) per 10 minutes of those utterances, and paired bootstrap
p-values (over utterances) of the recall and WER differences against ``boost=0``. A manifest
given with ``--unrelated`` holds only speech without hotwords (false alarms only).

    python scripts/bench_hotwords.py --model exp/commands/best.pt --text TRAIN_TEXT \
        --hotwords recipes/commands/hotwords.txt --manifest data/commands/test_unseen.jsonl \
        --unrelated data/digits/test_unseen.jsonl
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.adapt import build_pack, pack_decode, read_hotwords, with_hotwords  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.decode import decode_emissions, make_decoder  # noqa: E402
from asr.recognizer import load, utterance_features  # noqa: E402
from asr.results import code_version  # noqa: E402
from asr.score import bootstrap_wer, score_all  # noqa: E402
from asr.text import normalize_text  # noqa: E402


def rare_text(lines: list[str], hot: set[str], keep: int) -> list[str]:
    """``lines`` without the sentences holding a hotword, except the first ``keep`` per hotword."""
    seen: Counter = Counter()
    out = []
    for line in lines:
        words = set(line.split()) & hot
        if words and any(seen[w] >= keep for w in words):
            continue
        seen.update(words)
        out.append(line)
    return out


def pick_hotwords(lines: list[str], refs: list[str], n: int, min_letters: int = 5) -> list[str]:
    """The ``n`` words of ``refs`` (>= ``min_letters`` letters) rarest in ``lines`` (seen at
    least once there), ties by name: a test set's rare words, chosen without looking at outputs."""
    counts = Counter(w for line in lines for w in line.split())
    cands = sorted({w for r in refs for w in r.split() if len(w) >= min_letters and counts[w] >= 1},
                   key=lambda w: (counts[w], w))
    return cands[:n]


def hotword_counts(ref: str, hyp: str, hot: set[str]) -> tuple[int, int, int]:
    """(found, missed, false) hotword counts of one utterance, bag of words."""
    r = Counter(w for w in ref.split() if w in hot)
    h = Counter(w for w in hyp.split() if w in hot)
    found = sum(min(r[w], h[w]) for w in r)
    return found, sum(r.values()) - found, sum(h.values()) - found


def metrics(utts, hyps: dict, hot: set[str]) -> dict:
    """WER, recall, precision, false alarms per 10 min of hotword-free speech, and the
    per-utterance arrays the paired tests need."""
    refs = {u.id: u.text for u in utts}
    scores = score_all(refs, hyps)
    counts = np.array([hotword_counts(s.ref, s.hyp, hot) for s in scores], float)
    has_hot = counts[:, 0] + counts[:, 1] > 0
    dur = {u.id: u.duration for u in utts}
    free_min = sum(dur[s.id] for s, h in zip(scores, has_hot) if not h) / 60
    found, missed, false = counts.sum(0)
    fa = counts[~has_hot, 2].sum()
    return {"wer": round(100 * sum(s.errors for s in scores) / max(1, sum(s.ref_words for s in scores)), 2),
            "hotwords": int(found + missed),
            "recall": round(100 * found / (found + missed), 2) if found + missed else None,     # undefined: no hotword
            "precision": round(100 * found / (found + false), 2) if found + false else None,
            "false_alarms": int(fa),
            "hotword_free_minutes": round(free_min, 2), "fa_per_10min": round(10 * fa / max(free_min, 1e-9), 3),
            "_errors": np.array([s.errors for s in scores], float), "_words": np.array([s.ref_words for s in scores], float),
            "_missed": counts[:, 1], "_refhot": counts[:, 0] + counts[:, 1]}


def paired(a: dict, base: dict) -> dict:
    """Two-sided paired bootstrap p-values of a row against the baseline row."""
    out = {}
    if base["hotwords"]:
        out["recall_p"] = bootstrap_wer(a["_missed"], a["_refhot"], errors_b=base["_missed"])["p_value"]
    out["wer_p"] = bootstrap_wer(a["_errors"], a["_words"], errors_b=base["_errors"])["p_value"]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True, help="domain text for the pack (hotword sentences thinned)")
    ap.add_argument("--hotwords", help="hotword file (else --pick)")
    ap.add_argument("--pick", type=int, default=0, help="use the N rarest words (in --text) of the --manifest references")
    ap.add_argument("--manifest", action="append", default=[], help="test sets with and without hotwords")
    ap.add_argument("--unrelated", action="append", default=[], help="speech without hotwords (false alarms)")
    ap.add_argument("--keep", type=int, default=1, help="sentences kept per hotword in the pack's text")
    ap.add_argument("--weights", default="0,2,4,6,8")
    ap.add_argument("--lm-weight", type=float, default=1.0)
    ap.add_argument("--word-score", type=float, default=0.0)
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rec = load(args.model)
    lines = [t for t in (normalize_text(x) for x in Path(args.text).read_text().splitlines()) if t]
    if args.hotwords:
        hot = {w for phrase, _ in read_hotwords(args.hotwords) for w in phrase.split()}
    elif args.pick:
        hot = set(pick_hotwords(lines, [u.text for m in args.manifest for u in read_manifest(m)], args.pick))
    else:
        ap.error("give --hotwords FILE or --pick N")
    result = {"code": code_version(), "model": args.model, "keep": args.keep, "lm_weight": args.lm_weight,
              "word_score": args.word_score, "hotwords": sorted(hot), "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        thinned = rare_text(lines, hot, args.keep)
        (Path(tmp) / "text.txt").write_text("\n".join(thinned) + "\n")
        result["text"] = {"sentences": len(lines), "kept": len(thinned)}
        pack = build_pack(rec, Path(tmp) / "text.txt", Path(tmp) / "pack", order=args.order)
        plain = replace(pack_decode(pack), lm_weight=args.lm_weight, word_score=args.word_score)
        rows = {"plain": plain}
        for w in (float(x) for x in args.weights.split(",")):
            (Path(tmp) / "hot.txt").write_text("".join(f"{h}\t{w}\n" for h in sorted(hot)))
            rows[f"boost={w:g}"] = with_hotwords(plain, Path(tmp) / "hot.txt", rec.tokenizer, Path(tmp) / "cache")
        for path in [*args.manifest, *args.unrelated]:
            utts = read_manifest(path)
            feats, ids, _ = utterance_features(rec, utts)
            utts = [u for u in utts if u.id in set(ids)]
            emis = rec.emissions(feats)
            table = {}
            for name, cfg in rows.items():
                hyps = {i: h.text for i, h in zip(ids, decode_emissions(make_decoder(rec.tokenizer, cfg), emis))}
                table[name] = metrics(utts, hyps, hot)
            base = table.get("boost=0")
            result["sets"][path] = {name: {**{k: v for k, v in m.items() if not k.startswith("_")},
                                           **(paired(m, base) if base is not None and m is not base else {})}
                                    for name, m in table.items()}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()

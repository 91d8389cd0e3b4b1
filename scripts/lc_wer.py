#!/usr/bin/env python3
"""WER of a model run as the latency-controlled BiLSTM that streaming runs (``asr.model.
latency_controlled``: the chunked computation in one batch-1 call per utterance, without the
stream's level gate or endpointing), against the same model offline, on the first N utterances
of a manifest. Where the errors are: how many utterances are wrong in their first word only.

  --lead-frames 0,100   also with that many feature frames of each utterance's own background
                        before it (asr.batching.quiet_lead: a microphone open before the talker)
  --trim-db 25          also with the input starting --trim-pad feature frames before the first
                        frame within this many dB of the utterance's loudest (hindsight: what a
                        perfect onset detector would give)

    python3 scripts/lc_wer.py --model exp/digits/best.pt --manifest data/digits/test_unseen.jsonl \\
        --utts 200 --grid 4+9,2+11 --lead-frames 0,100 --trim-db 25
Prints one JSON line per (input, setting).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asr.batching import quiet_lead  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.model import latency_controlled  # noqa: E402
from asr.recognizer import load, utterance_features  # noqa: E402
from asr.results import code_version  # noqa: E402
from asr.score import error_rates  # noqa: E402
from bench_live import stream_grid  # noqa: E402


def trimmed(f: torch.Tensor, db: float, pad: int) -> torch.Tensor:
    """(T, F) from ``pad`` frames before the first frame within ``db`` dB of the loudest."""
    energy = f.mean(-1)
    onset = int((energy >= energy.max() - db * math.log(10) / 10).nonzero()[0])
    return f[max(onset - pad, 0):]


def decode(rec, feats: list[torch.Tensor], setting: tuple[int, int] | None) -> list[str]:
    out = []
    for f in feats:
        x, lens = f[None], torch.tensor([f.shape[0]])
        with torch.inference_mode():
            lp = rec.model(x, lens) if setting is None else latency_controlled(rec.model, x, lens, *setting)
        out.append(rec.decoder(*lp)[0].text)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--utts", type=int, default=200)
    p.add_argument("--grid", type=stream_grid, default=((4, 9), (2, 11)), metavar="C+R,...")
    p.add_argument("--lead-frames", default="0", help="comma-separated lead lengths (feature frames)")
    p.add_argument("--trim-db", type=float, default=0.0, help="> 0: also the trimmed input")
    p.add_argument("--trim-pad", type=int, default=9, help="feature frames kept before the onset")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rec = load(args.model)
    utts = read_manifest(args.manifest)[: args.utts]
    feats, ids, problems = utterance_features(rec, utts)
    if problems:
        p.error(f"{len(problems)} utterance(s) unreadable, e.g. {problems[0]}")
    refs = {u.id: u.text for u in utts}
    inputs = {f"lead {n}": [quiet_lead(f.float(), n, random.Random(i)) for f, i in zip(feats, ids)]
              for n in (int(v) for v in args.lead_frames.split(","))}
    if args.trim_db > 0:
        inputs[f"trimmed {args.trim_db:g} dB, pad {args.trim_pad}"] = [
            trimmed(f.float(), args.trim_db, args.trim_pad) for f in feats]
    for name, xs in inputs.items():
        for setting in (None, *args.grid):
            hyps = dict(zip(ids, decode(rec, xs, setting)))
            first_only = sum(h.split()[1:] == refs[i].split()[1:] and h != refs[i] for i, h in hyps.items())
            print(json.dumps({"code_version": code_version(), "model": args.model, "input": name,
                              "setting": "offline" if setting is None else f"{setting[0]}+{setting[1]}",
                              "utterances": len(ids), "wer": round(error_rates(refs, hyps).wer, 2),
                              "wrong_utterances": sum(h != refs[i] for i, h in hyps.items()),
                              "wrong_in_first_word_only": first_only}), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Streaming WER with the level gate on and off, on clean and noisy test sets (one core).

The gate decodes frames with no sound near them as blanks and ends utterances on the audio;
in noise it must not take speech for silence. Per split: greedy WER of the finals (two-pass,
default chunking) without endpointing and with the default 0.5-s endpoint, gate on and off.

    python scripts/bench_gate.py --model exp/digits_lc2/best.pt --data data/digits \\
        --splits test_unseen test_noise5 test_babble10 --utts 100
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_live import stream_texts  # noqa: E402

from asr.audio import load_audio  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.recognizer import load  # noqa: E402
from asr.score import error_rates  # noqa: E402
from asr.stream import StreamConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the recipe's data_dir")
    p.add_argument("--splits", nargs="+", required=True)
    p.add_argument("--utts", type=int, default=100)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    rec = load(args.model)
    rows = []
    for split in args.splits:
        utts = read_manifest(Path(args.data) / f"{split}.jsonl")[: args.utts]
        audio, refs = {u.id: load_audio(u.audio) for u in utts}, {u.id: u.text for u in utts}
        for gate_db in (40.0, 0.0):
            row = {"split": split, "gate_db": gate_db}
            for endpoint in (0.0, 0.5):
                hyps, _ = stream_texts(rec, audio, StreamConfig(endpoint_s=endpoint, gate_db=gate_db))
                row[f"wer_endpoint_{endpoint}"] = round(error_rates(refs, hyps).wer, 2)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    out = {"model": args.model, "utterances": args.utts, "rows": rows}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

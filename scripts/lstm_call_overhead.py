#!/usr/bin/env python3
"""Model-only batch-1 RTF of a 4x320 BiLSTM (x3 stacking) on one core, for short and long inputs,
with separate forward/backward LSTMs (as in asr.model's training path) and with one fused
bidirectional call per layer (asr.model's inference path fuses all layers in one call), and the
time of one fused call for 1, 66 and 333 frames: the fixed per-call cost of torch's CPU LSTM
that dominates short files.

    python scripts/lstm_call_overhead.py
"""
import json
import time

import torch
from torch import nn

FRAME_S = 0.03          # one stacked frame: 3 x 10 ms


def main(hidden: int = 320, layers: int = 4, d_in: int = 240) -> None:
    torch.set_num_threads(1)
    dims = [d_in] + [2 * hidden] * (layers - 1)
    sep = [(nn.LSTM(d, hidden, batch_first=True), nn.LSTM(d, hidden, batch_first=True)) for d in dims]
    fused = [nn.LSTM(d, hidden, batch_first=True, bidirectional=True) for d in dims]

    def run_separate(x):
        for f, b in sep:
            x = torch.cat([f(x)[0], b(x.flip(1))[0].flip(1)], -1)
        return x

    def run_fused(x):
        for m in fused:
            x = m(x)[0]
        return x

    out = {}
    with torch.inference_mode():
        for seconds in (2.0, 10.0):
            x = torch.randn(1, int(seconds / FRAME_S), d_in)
            for fn in (run_separate, run_fused):
                for _ in range(3):
                    fn(x)
                t0, n = time.perf_counter(), 30
                for _ in range(n):
                    fn(x)
                out[f"{fn.__name__}_{seconds:g}s_rtf"] = round((time.perf_counter() - t0) / n / seconds, 5)
        # fixed cost per call: milliseconds for 1, 66 (2 s) and 333 (10 s) stacked frames
        for frames in (1, 66, 333):
            x = torch.randn(1, frames, d_in)
            for _ in range(3):
                run_fused(x)
            best = min(_timed(run_fused, x) for _ in range(15))
            out[f"fused_ms_per_call_{frames}_frames"] = round(best * 1000, 2)
    print(json.dumps(out, indent=1))


def _timed(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

"""Live-recognition sections of scripts/benchmark.py: streaming accuracy vs latency, final and
partial latency, streaming RTF, and a load test of ``asr serve`` on loopback.

  stream   per (chunk, look-ahead) setting: greedy WER of streaming vs offline on the same test
           utterances (and beam+LM when the recipe has its LM files); streaming RTF on one core
           (fp32 and int8); latencies on a simulated real-time clock (audio arrives in
           --stream-block blocks, 100 ms by default, after --stream-lead and before 1 s of the
           recording's own background; compute takes the measured time): end of input -> final,
           end of speech -> endpointed final, and a word's end -> its first partial.
  serve    ``asr serve`` in its own process; N concurrent real-time WebSocket streams (each:
           an utterance paced in real time, then EOS, then the next) for a bounded time, p50/p95
           of EOS -> final, errors; then a burst of uploads (answered or 503, none lost); the
           server's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from asr.audio import load_audio
from asr.checkpoint import quantize_int8
from asr.score import error_rates
from asr.stream import StreamConfig, Streamer
from asr.transcribe import frame_energy_db

BLOCK_S = 0.1
GRID = ((4, 0), (4, 2), (8, 2), (8, 4), (6, 7), (4, 9), (2, 11), (16, 4), (24, 8))


def stream_grid(text: str) -> tuple[tuple[int, int], ...]:
    """'4+9,2+11' -> ((4, 9), (2, 11)): chunk >= 1 and look-ahead >= 0 output frames."""
    try:
        grid = tuple((int(c), int(r)) for c, r in (item.split("+") for item in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CHUNK+RIGHT[,CHUNK+RIGHT...], e.g. 4+9,2+11") from None
    if not grid or any(c < 1 or r < 0 for c, r in grid):
        raise argparse.ArgumentTypeError(f"{text!r}: each chunk must be >= 1 and each look-ahead >= 0")
    return grid


BACKGROUND_FRAMES = 5       # the quietest 50 ms of a recording is its background (pads can be that short)
SPEECH_OVER_BACKGROUND_DB = 10.0


def background(x: np.ndarray) -> np.ndarray:
    """The quietest BACKGROUND_FRAMES contiguous 10-ms frames of ``x``: the synthesizer's noise
    pad, if it has one."""
    db = frame_energy_db(x)
    power = np.convolve(10 ** (db / 10), np.ones(BACKGROUND_FRAMES), "valid")
    k = int(np.argmin(power)) if power.size else 0
    return x[k * 160: (k + BACKGROUND_FRAMES) * 160]


def speech_end_s(x: np.ndarray) -> float:
    """Where the talker stops: the last 10-ms frame within 35 dB of the loudest and
    SPEECH_OVER_BACKGROUND_DB over the background (a noise pad after the words is not speech)."""
    db = frame_energy_db(x)
    bg = 10 * np.log10(np.mean(background(x).astype(np.float64) ** 2) + 1e-12)
    return float(np.flatnonzero(db >= max(db.max() - 35.0, bg + SPEECH_OVER_BACKGROUND_DB))[-1] + 1) * 0.010


def like_background(x: np.ndarray, seconds: float, seed: int = 0) -> np.ndarray:
    """``seconds`` of ``x``'s background (at least faint noise, -80 dBFS): what the microphone
    hears while the talker is silent. Copies of the background, at random reversed and negated,
    are overlapped and added with square-root Hann windows (its spectrum and level, no clicks)."""
    rng, n = np.random.default_rng(seed), int(seconds * 16000)
    bg = background(x).astype(np.float64)
    if n <= 0 or bg.size < 2:
        return np.zeros(max(n, 0), np.float32)
    if np.mean(bg ** 2) < 1e-8:
        bg = 1e-4 * rng.standard_normal(bg.size)
    win, hop = np.sqrt(np.hanning(bg.size + 1)[:-1]), bg.size // 2
    out = np.zeros(n + 2 * bg.size)
    for k in range(0, n + bg.size, hop):
        piece = bg[::-1] if rng.integers(2) else bg
        out[k: k + bg.size] += piece * win * rng.choice([-1.0, 1.0])
    return out[hop: hop + n].astype(np.float32)


def simulate(rec, x: np.ndarray, cfg: StreamConfig, decoder=None, tail_s: float = 0.0,
             block_s: float = BLOCK_S, lead_s: float = 0.0) -> dict:
    """Stream ``x`` (after ``lead_s`` and before ``tail_s`` of its background: a microphone open
    before and after the talker) on a simulated clock: block k (``block_s`` seconds of audio, as
    a client sends them) arrives at (k+1) * block_s, is processed when it has arrived and the
    previous block is done, and takes the measured compute time. Returns events with their
    clock times (from the start of ``x``) and the compute total."""
    x = np.concatenate([like_background(x, lead_s, 1), x, like_background(x, tail_s)])
    st = Streamer(rec, cfg, decoder)
    step, clock, compute, events = int(block_s * 16000), 0.0, 0.0, []
    for i in range(0, x.size, step):
        arrive = min(x.size, i + step) / 16000
        t0 = time.perf_counter()
        new = st.accept(x[i: i + step])
        dt = time.perf_counter() - t0
        clock, compute = max(clock, arrive) + dt, compute + dt
        events += [(clock - lead_s, e) for e in new]
    t0 = time.perf_counter()
    new = st.finish()
    dt = time.perf_counter() - t0
    end_clock = max(clock, x.size / 16000) + dt - lead_s
    events += [(end_clock, e) for e in new]
    return {"events": events, "compute_s": compute + dt, "finish_s": dt, "audio_s": x.size / 16000,
            "input_end": x.size / 16000 - lead_s, "end_clock": end_clock}


def stream_texts(rec, audio, cfg: StreamConfig, decoder_fn=None, lead_s: float = 0.0) -> tuple[dict, float]:
    hyps, compute, total = {}, 0.0, 0.0
    decoder = decoder_fn() if decoder_fn else None        # built once (as asr serve's pool does), reset per stream
    for uid, x in audio.items():
        r = simulate(rec, x, cfg, decoder, lead_s=lead_s)
        hyps[uid] = " ".join(e.text for _, e in r["events"] if e.kind == "final")
        compute, total = compute + r["compute_s"], total + r["audio_s"]
    return hyps, compute / total


def latencies(rec, audio, cfg: StreamConfig, block_s: float = BLOCK_S) -> dict:
    """p50/p95 (ms) of end of input -> final (push-to-talk), end of speech -> endpointed final,
    and the end of a word -> the first partial that contains it."""
    eos, endpoint, partial = [], [], []
    for x in audio.values():
        r = simulate(rec, x, cfg, block_s=block_s)
        eos.append(r["end_clock"] - r["input_end"])
        speech_end = speech_end_s(x)
        r = simulate(rec, x, cfg, tail_s=cfg.endpoint_s + 1.0, block_s=block_s)
        finals = [t for t, e in r["events"] if e.kind == "final"]
        if finals:
            endpoint.append(finals[0] - speech_end)
            words = [w for _, e in r["events"] if e.kind == "final" for w in e.words]
            for n, w in enumerate(words):
                seen = [t for t, e in r["events"] if len(e.text.split()) > n]
                if seen:
                    partial.append(seen[0] - w.end)

    def pct(v):
        return {"p50_ms": round(1000 * float(np.percentile(v, 50))), "p95_ms": round(1000 * float(np.percentile(v, 95))),
                "n": len(v)} if v else {}
    return {"end_of_input_to_final": pct(eos), "end_of_speech_to_endpointed_final": pct(endpoint),
            "word_end_to_first_partial": pct(partial), "endpoint_s": cfg.endpoint_s, "block_ms": round(1000 * block_s)}


STREAM_PARTS = ("curve", "latency", "two_pass", "endpoints")


def bench_stream(rec, utts, n: int, lm_decoder_fn=None, parts=STREAM_PARTS, block_s: float = BLOCK_S,
                 lead_s: float = 0.0, grid=GRID) -> dict:
    """WER vs latency (the (chunk, look-ahead) settings of ``grid``), RTF and latencies of
    streaming on ``n`` utterances (one core); the latencies and the endpoint sweep with
    ``block_s`` blocks; the curve and the endpoint sweep after ``lead_s`` of background."""
    torch.set_num_threads(1)
    utts = utts[:n]
    audio = {u.id: load_audio(u.audio) for u in utts}
    refs = {u.id: u.text for u in utts}
    offline = {u.id: rec.decode_features([rec.features(x)])[0].text for u, x in zip(utts, audio.values())}
    out = {"utterances": len(utts), "frame_ms": round(1000 * rec.frame_s), "offline_greedy_wer": error_rates(refs, offline).wer}
    if "endpoints" in parts:
        out["endpoints"] = endpoint_sweep(rec, dict(list(audio.items())[:min(100, len(audio))]), refs, block_s=block_s, lead_s=lead_s)
    if "curve" not in parts:           # the latency and two-pass parts run with the curve
        return out
    curve = []
    for c, r in grid:
        cfg = StreamConfig(chunk_frames=c, right_frames=r, endpoint_s=0.0, final_pass="stream")   # the chunks' own text
        hyps, rtf = stream_texts(rec, audio, cfg, lead_s=lead_s)
        row = {"chunk": c, "right": r, "lead_s": lead_s, "latency_ms": round(1000 * cfg.latency_s(rec.frame_s)),
               "greedy_wer": error_rates(refs, hyps).wer, "rtf_1core_fp32": round(rtf, 4)}
        row["wer_ratio"] = round(row["greedy_wer"] / max(out["offline_greedy_wer"], 1e-9), 2)
        if lm_decoder_fn is not None and r >= 4:          # the settings near and under 400 ms
            lm_hyps, _ = stream_texts(rec, audio, cfg, lm_decoder_fn, lead_s)
            row["beam_lm_wer"] = error_rates(refs, lm_hyps).wer
        curve.append(row)
        print(f"[bench] stream C={c} R={r}: {row}", file=sys.stderr)
    out["curve"] = curve
    if lm_decoder_fn is not None:
        from asr.decode import decode_emissions
        lm = decode_emissions(lm_decoder_fn(), rec.emissions([rec.features(x) for x in audio.values()]))
        out["offline_beam_lm_wer"] = error_rates(refs, {u: h.text for u, h in zip(audio, lm)}).wer
    default = StreamConfig(final_pass="stream")        # one pass; two_pass() below measures the default
    out["default"] = {"chunk": default.chunk_frames, "right": default.right_frames,
                      "latency_ms": round(1000 * default.latency_s(rec.frame_s))}
    int8 = replace(rec, model=quantize_int8(rec.model))
    if "latency" in parts:
        out["latency"] = latencies(rec, dict(list(audio.items())[:min(100, len(audio))]), default, block_s)
        _, out["rtf_1core_int8_default"] = stream_texts(int8, dict(list(audio.items())[:50]), replace(default, endpoint_s=0))
        out["latency_int8"] = latencies(int8, dict(list(audio.items())[:min(100, len(audio))]), default, block_s)
    if "two_pass" in parts:
        out["two_pass"] = two_pass(rec, int8, audio, refs, default, lm_decoder_fn)
    return out


def endpoint_sweep(rec, audio, refs, endpoints=(0.15, 0.2, 0.3, 0.5), context_s: float = 3.0,
                   block_s: float = BLOCK_S, lead_s: float = 0.0) -> list[dict]:
    """Streaming at the default chunking (one pass, two-pass, and two-pass with ``context_s`` of
    left context), each utterance after ``lead_s`` and before 1 s + endpoint of its
    background: per endpoint, the WER of its finals joined, how many utterances were cut into
    several finals, and end of speech (energy) -> the last final, p50/p95."""
    rows = []
    variants = [("full", 0.0), ("full", context_s), ("stream", 0.0)]
    for (final_pass, ctx), endpoint in [(v, e) for v in variants for e in endpoints]:
        cfg = StreamConfig(endpoint_s=endpoint, final_pass=final_pass, final_context_s=ctx)
        hyps, lat, split = {}, [], 0
        for uid, x in audio.items():
            r = simulate(rec, x, cfg, tail_s=endpoint + 1.0, block_s=block_s, lead_s=lead_s)
            finals = [(t, e) for t, e in r["events"] if e.kind == "final"]
            hyps[uid] = " ".join(e.text for _, e in finals)
            split += len(finals) > 1
            if finals:
                lat.append(finals[-1][0] - speech_end_s(x))
        rows.append({"final_pass": final_pass, "final_context_s": ctx, "endpoint_s": endpoint,
                     "block_ms": round(1000 * block_s), "lead_s": lead_s, "final_greedy_wer": error_rates({k: refs[k] for k in hyps}, hyps).wer,
                     "utterances_split": split, "speech_end_to_final_p50_ms": round(1000 * float(np.percentile(lat, 50))),
                     "speech_end_to_final_p95_ms": round(1000 * float(np.percentile(lat, 95)))})
        print(f"[bench] stream endpoint sweep: {rows[-1]}", file=sys.stderr)
    return rows


def two_pass(rec, int8, audio, refs, default: StreamConfig, lm_decoder_fn=None) -> dict:
    """``final_pass: full`` at the default chunking: WER of the finals (partials unchanged), RTF and
    latencies (fp32 and int8) with the second pass at every final."""
    cfg = replace(default, final_pass="full")
    hyps, rtf = stream_texts(rec, audio, replace(cfg, endpoint_s=0))
    first = dict(list(audio.items())[:min(100, len(audio))])
    out = {"chunk": cfg.chunk_frames, "right": cfg.right_frames, "final_greedy_wer": error_rates(refs, hyps).wer,
           "rtf_1core_fp32": round(rtf, 4), "latency": latencies(rec, first, cfg),
           "latency_int8": latencies(int8, first, cfg)}
    if lm_decoder_fn is not None:
        lm_hyps, _ = stream_texts(rec, audio, replace(cfg, endpoint_s=0), lm_decoder_fn)
        out["final_beam_lm_wer"] = error_rates(refs, lm_hyps).wer
    print(f"[bench] stream two-pass: {out}", file=sys.stderr)
    return out


# ---------------------------------------------------------------------- server load
def _server(model: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "asr", "serve", "--model", str(model), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"asr serve did not start: {line} {proc.stderr.read()[-2000:]}")
    return proc, line.split("listening on ")[1].split()[0]


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024


def _client(url: str, pcm: list[bytes], until: float, lat: list, errors: list) -> None:
    from websockets.sync.client import connect

    k = 0
    while time.time() < until:
        data = pcm[k % len(pcm)]
        k += 1
        try:
            with connect(url.replace("http", "ws") + "/v1/stream?rate=16000", open_timeout=30) as ws:
                step = int(BLOCK_S * 16000) * 2
                t0 = time.perf_counter()
                for n, i in enumerate(range(0, len(data), step)):   # paced: block n leaves at n * BLOCK_S
                    ahead = n * BLOCK_S - (time.perf_counter() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                    ws.send(data[i: i + step])
                sent = time.perf_counter()
                ws.send("EOS")
                final = None
                while True:
                    ev = json.loads(ws.recv(timeout=60))
                    if ev["type"] == "final" and final is None:
                        final = time.perf_counter() - sent
                    if ev["type"] == "error":
                        errors.append(ev["error"])
                    if ev["type"] == "done":
                        break
                lat.append(final if final is not None else time.perf_counter() - sent)
        except Exception as e:         # any failure is an error of the load test, counted
            errors.append(repr(e))


def _upload(url: str, body: bytes, codes: list) -> None:
    req = urllib.request.Request(url + "/v1/transcribe", data=body, method="POST", headers={"Content-Type": "audio/wav"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            codes.append(r.status)
    except urllib.error.HTTPError as e:
        codes.append(e.code)
    except Exception as e:
        codes.append(repr(e))


def bench_serve(model: Path, utts, streams: int, seconds: float, uploads: int, extra: list[str]) -> dict:
    import io

    import soundfile as sf

    proc, url = _server(model, extra)
    try:
        audio = [load_audio(u.audio) for u in utts[:50]]
        pcm = [(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes() for x in audio]
        lat, errors = [], []
        until = time.time() + seconds
        threads = [threading.Thread(target=_client, args=(url, pcm[i::streams] or pcm, until, lat, errors))
                   for i in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out = {"server_args": extra, "streams": streams, "seconds": seconds, "utterances_streamed": len(lat),
               "stream_errors": len(errors), "error_examples": errors[:3],
               "eos_to_final_p50_ms": round(1000 * float(np.percentile(lat, 50))) if lat else None,
               "eos_to_final_p95_ms": round(1000 * float(np.percentile(lat, 95))) if lat else None,
               "peak_rss_mb_after_streams": round(_peak_rss_mb(proc.pid))}
        buf = io.BytesIO()
        sf.write(buf, np.concatenate(audio[:3]), 16000, format="WAV", subtype="PCM_16")
        codes: list = []
        threads = [threading.Thread(target=_upload, args=(url, buf.getvalue(), codes)) for _ in range(uploads)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["uploads"] = {"sent": uploads, "answered_200": codes.count(200), "refused_503": codes.count(503),
                          "other": [c for c in codes if c not in (200, 503)], "lost": uploads - len(codes),
                          "seconds": round(time.perf_counter() - t0, 1)}
        out["peak_rss_mb"] = round(_peak_rss_mb(proc.pid))
        with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
            out["healthz_after"] = json.loads(r.read())
        return out
    finally:
        proc.terminate()
        proc.wait(10)

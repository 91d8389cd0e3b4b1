"""Audio sources of a stream: raw 16-bit PCM or a WAV stream from a byte stream (stdin, a
socket), a file in blocks as a microphone delivers them, and real-time pacing."""
from __future__ import annotations

import struct
import time
from typing import BinaryIO, Iterator

import numpy as np

from .audio import SAMPLE_RATE_HZ, AudioError, BlockResampler, check_rate

PCM16_SCALE = 32768.0
BLOCK_S = 0.02                  # input read in 20-ms blocks (a VoIP frame): a final waits for the
                                # block that shows the end of speech, so blocks bound its latency
MAX_WAV_CHUNK = 1 << 20         # bytes of a WAV header chunk before the data (LIST, fmt, ...)


def read_exact(f: BinaryIO, n: int) -> bytes:
    out = b""
    while len(out) < n:
        piece = f.read(n - len(out))
        if not piece:
            break
        out += piece
    return out


def wav_header(f: BinaryIO, name: str) -> tuple[int, int]:
    """Read a PCM16 WAV header from a pipe up to its data chunk: (rate, channels)."""
    head = read_exact(f, 12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioError(f"{name}: not a WAV stream (use --rate for raw 16-bit PCM)")
    rate = channels = 0
    while True:
        chunk = read_exact(f, 8)
        if len(chunk) < 8:
            raise AudioError(f"{name}: WAV stream ends before its data chunk")
        kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if kind == b"data":
            if not rate:
                raise AudioError(f"{name}: WAV data chunk before its fmt chunk")
            return rate, channels
        if size > MAX_WAV_CHUNK:
            raise AudioError(f"{name}: WAV {kind!r} chunk of {size} bytes before the data (at most {MAX_WAV_CHUNK})")
        body = read_exact(f, size + (size & 1))
        if kind == b"fmt ":
            if len(body) < 16:
                raise AudioError(f"{name}: WAV fmt chunk of {len(body)} bytes (needs 16)")
            fmt, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if fmt not in (1, 0xFFFE) or bits != 16 or channels < 1:
                raise AudioError(f"{name}: streamed WAV must be 16-bit PCM with >= 1 channel "
                                 f"(format {fmt}, {bits} bits, {channels} channels)")


def pcm_blocks(f: BinaryIO, name: str, rate: int | None, channels: int = 1,
               block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """16 kHz mono float32 blocks from a byte stream: raw 16-bit PCM at ``rate`` Hz, or a WAV
    stream when ``rate`` is None (its header says the rate and channels)."""
    if rate is None:
        rate, channels = wav_header(f, name)
    check_rate(rate, name)
    resample = BlockResampler(rate)
    frame = 2 * channels
    block = max(1, int(block_s * rate)) * frame
    while True:
        data = read_exact(f, block)
        last = len(data) < block
        data = data[: len(data) - len(data) % frame]          # a cut-off last sample is dropped
        x = resample(np.frombuffer(data, "<i2").astype(np.float32).reshape(-1, channels).mean(1) / PCM16_SCALE, last)
        if x.size:
            yield x
        if last:
            return


def paced(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Yield blocks no faster than real time (a file played as if it were live)."""
    start, sent = time.perf_counter(), 0
    for x in blocks:
        sent += x.size
        ahead = sent / SAMPLE_RATE_HZ - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
        yield x


def file_blocks(path: str, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """A file's 16 kHz mono samples in ``block_s`` pieces (as a microphone would deliver them)."""
    from .transcribe import stream_audio

    step = max(1, int(block_s * SAMPLE_RATE_HZ))
    for x in stream_audio(path):
        for i in range(0, x.size, step):
            yield x[i: i + step]

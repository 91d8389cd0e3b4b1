"""``asr serve``: HTTP + WebSocket recognition server (Starlette/FastAPI on uvicorn).

- ``POST /v1/transcribe``: an audio file as the raw body or a multipart upload -> the JSON of
  ``asr transcribe`` (text, words with times and confidence, segments, duration).
- ``WebSocket /v1/stream?rate=16000``: binary 16-bit little-endian mono PCM in; JSON events
  ``{"type": "partial"|"final", "text", "start", "end", "words"}`` out; send the text ``EOS``
  to end, the server answers with the last final and ``{"type": "done"}``.
- ``GET /healthz``, ``GET /`` (a web page: drop a file or record from the microphone).

The model is loaded once. Inference runs in a thread pool of ``workers`` threads (torch
releases the GIL; one intra-op thread each); uploads beyond ``workers + queue`` waiting are
refused with 503 and ``Retry-After``, streams beyond ``max_streams`` are closed with 1013, so
memory stays bounded. Bad input over the wire gets a 4xx JSON error or an ``error`` event and a
close naming the problem; a client that vanishes only ends its own stream.
"""
from __future__ import annotations

import asyncio
import contextlib
import email.parser
import functools
import io
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import torch
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.websockets import WebSocketDisconnect

from .audio import AudioError, check_rate
from .config import require
from .decode import DecodeConfig, Decoder
from .errors import AsrError
from .recognizer import Recognizer
from .stream import StreamConfig, Streamer
from .transcribe import SegmentOptions, transcribe

log = logging.getLogger(__name__)

EOS = "EOS"


@dataclass(frozen=True)
class ServeConfig:
    """Capacity and limits of one server process."""

    workers: int = 0                 # inference threads (0: the machine's cores)
    queue: int = 4                   # uploads waiting for a worker before 503
    max_streams: int = 32            # concurrent WebSocket streams
    max_upload_mb: float = 50.0
    max_upload_s: float = 3600.0     # audio per upload (checked from the header)
    upload_timeout_s: float = 120.0  # the whole body must arrive within this
    max_stream_s: float = 3600.0     # audio per stream, and wall-clock time per stream
    idle_timeout_s: float = 30.0     # a stream that sends nothing for this long is closed
    retry_after_s: int = 1
    method: str = "greedy"           # decoding of uploads and streams
    decode: DecodeConfig = DecodeConfig()
    stream: StreamConfig = StreamConfig()

    def check(self, where: str = "serve") -> None:
        require(self.workers >= 0 and self.queue >= 0, f"{where}.workers", "workers and queue must be >= 0")
        require(self.max_streams >= 1, f"{where}.max_streams", "must be >= 1")
        require(self.max_upload_mb > 0 and self.max_stream_s > 0 and self.idle_timeout_s > 0,
                f"{where}.limits", "upload size, stream length and idle time must be > 0")
        self.stream.check(f"{where}.stream")

    @property
    def threads(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass
class Capacity:
    """Counters behind the 503s: uploads in flight (running + waiting) and open streams."""

    uploads: int = 0
    streams: int = 0
    served: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, kind: str, limit: int) -> bool:
        with self.lock:
            if getattr(self, kind) >= limit:
                self.refused += 1
                return False
            setattr(self, kind, getattr(self, kind) + 1)
            return True

    def give(self, kind: str) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) - 1)
            self.served += 1


class DecoderPool:
    """Decoders built once and leased out: a beam_lm decoder loads its LM and builds its lexicon
    trie (about a second for a 9-MB LM), too slow to repeat per request. A decoder keeps search
    state, so a lease is one upload or stream at a time; the pool never holds more decoders than
    uploads and streams ever ran at once (bounded by the server's limits)."""

    def __init__(self, factory: Callable[[], Decoder]):
        self.factory, self.free, self.built = factory, [], 0
        self.lock = threading.Lock()

    def acquire(self) -> Decoder:
        with self.lock:
            if self.free:
                return self.free.pop()
            self.built += 1
        try:
            return self.factory()             # built outside the lock: others are not held up
        except BaseException:
            with self.lock:
                self.built -= 1
            raise

    def release(self, decoder: Decoder) -> None:
        with self.lock:
            self.free.append(decoder)

    @contextlib.contextmanager
    def lease(self) -> Iterator[Decoder]:
        decoder = self.acquire()
        try:
            yield decoder
        finally:
            self.release(decoder)


def read_upload(body: bytes, content_type: str) -> bytes:
    """The audio bytes of a request: the body, or the first file part of a multipart form."""
    if not content_type.startswith("multipart/form-data"):
        return body
    msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    for part in msg.walk() if msg.is_multipart() else []:
        if part.get_filename() is not None or part.get_param("name", header="content-disposition") in ("file", "audio"):
            return part.get_payload(decode=True) or b""
    raise AudioError("multipart upload has no file part (send the audio as a field named 'file')")


def decode_upload(data: bytes, max_s: float) -> tuple[np.ndarray, int]:
    """(N, C) float32 samples and their rate from an uploaded file's bytes; the duration is
    checked from the header first (a small compressed file can hold hours of audio)."""
    if not data:
        raise AudioError("upload: empty body (send an audio file)")
    try:
        info = sf.info(io.BytesIO(data))
        if info.duration > max_s:
            raise AudioError(f"upload: {info.duration:.0f} s of audio is longer than the {max_s:g}-s limit")
        x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"upload: not audio that can be read ({e})") from None
    check_rate(rate, "upload")
    return x, rate


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes ``limit`` bytes."""
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            return None
    return bytes(body)


def health(cap: Capacity, cfg: ServeConfig, rec: Recognizer, decoders: DecoderPool) -> dict:
    """What ``GET /healthz`` answers: work in flight, counters, capacity and latency."""
    return {"status": "ok", "uploads": cap.uploads, "streams": cap.streams, "served": cap.served,
            "refused": cap.refused, "workers": cfg.threads, "frame_s": rec.frame_s,
            "latency_s": cfg.stream.latency_s(rec.frame_s), "decoders_built": decoders.built}


def create_app(rec: Recognizer, cfg: ServeConfig = ServeConfig()):
    """The ASGI application around a loaded recognizer."""
    cfg.check()
    torch.set_num_threads(1)                 # parallelism comes from the pool, one core per job
    pool = ThreadPoolExecutor(cfg.threads, thread_name_prefix="asr-infer")
    cap = Capacity()
    app = FastAPI(title="asr", docs_url=None, redoc_url=None)
    app.state.capacity, app.state.pool = cap, pool
    page = resources.files("asr").joinpath("web/index.html").read_text()
    decoders = DecoderPool(functools.partial(rec.make_decoder, cfg.decode, cfg.method))

    def error(status: int, message: str, **headers) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/healthz")
    async def healthz() -> dict:
        return health(cap, cfg, rec, decoders)

    @app.post("/v1/transcribe")
    async def upload(request: Request):
        limit = int(cfg.max_upload_mb * 1e6)
        if int(request.headers.get("content-length") or 0) > limit:
            return error(413, f"upload larger than {cfg.max_upload_mb:g} MB")
        if not cap.take("uploads", cfg.threads + cfg.queue):
            return error(503, "server busy, retry later", **{"Retry-After": str(cfg.retry_after_s)})
        try:
            body = await asyncio.wait_for(read_body(request, limit), cfg.upload_timeout_s)
            if body is None:
                return error(413, f"upload larger than {cfg.max_upload_mb:g} MB")
            ctype = request.headers.get("content-type", "")

            def run():                       # parsing and decoding too: never on the event loop
                x, rate = decode_upload(read_upload(body, ctype), cfg.max_upload_s)
                with decoders.lease() as decoder:
                    return transcribe(rec.with_decoder(decoder), x, rate, SegmentOptions())
            return (await asyncio.get_running_loop().run_in_executor(pool, run)).to_dict()
        except asyncio.TimeoutError:
            return error(408, f"upload not received within {cfg.upload_timeout_s:g} s")
        except AsrError as e:
            return error(400, str(e))
        finally:
            cap.give("uploads")

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        await ws.accept()
        if not cap.take("streams", cfg.max_streams):
            await ws.send_json({"type": "error", "error": f"server busy: {cfg.max_streams} streams open"})
            await ws.close(code=1013)
            return
        try:
            await run_stream(ws, rec, cfg, pool, decoders)
        finally:
            cap.give("streams")

    return app


async def run_stream(ws, rec: Recognizer, cfg: ServeConfig, pool, decoders: DecoderPool) -> None:
    """One WebSocket stream (its decoder leased from ``decoders`` for its lifetime, built or
    fetched off the event loop); every way it can end closes it cleanly."""
    loop = asyncio.get_running_loop()

    async def fail(message: str, code: int) -> None:
        log.info("stream closed: %s", message)
        await ws.send_json({"type": "error", "error": message})
        await ws.close(code=code)

    try:
        rate = int(ws.query_params.get("rate", "16000"))
        if rate != 16000:
            raise AudioError(f"stream: rate must be 16000 (16-bit mono PCM), got {rate}")
    except (ValueError, AsrError) as e:
        return await fail(f"bad stream parameters: {e}", 1003)
    try:
        decoder = await loop.run_in_executor(pool, decoders.acquire)
    except AsrError as e:
        return await fail(f"the decoder cannot be made: {e}", 1011)
    done = False
    try:
        await stream_loop(ws, Streamer(rec, cfg.stream, decoder), cfg, pool, fail)
        done = True
    finally:
        if done:            # else (cancelled, crashed) a worker may still hold it: never lend it again
            decoders.release(decoder)


async def stream_loop(ws, streamer: Streamer, cfg: ServeConfig, pool, fail) -> None:
    """PCM messages in, events out, until EOS, a limit, an error or the client leaving."""
    loop = asyncio.get_running_loop()
    samples, started = 0, loop.time()
    try:
        while True:
            if loop.time() - started > cfg.max_stream_s:     # a client trickling bytes ends too
                return await fail(f"stream open longer than {cfg.max_stream_s:g} s", 1009)
            try:
                msg = await asyncio.wait_for(ws.receive(), cfg.idle_timeout_s)
            except asyncio.TimeoutError:
                return await fail(f"idle for {cfg.idle_timeout_s:g} s", 1008)
            if msg["type"] == "websocket.disconnect":
                return
            data, text = msg.get("bytes"), msg.get("text")
            if text is not None:
                if text.strip() != EOS:
                    return await fail(f"unexpected text message {text[:40]!r} (send binary PCM, then {EOS!r})", 1003)
                for e in await loop.run_in_executor(pool, streamer.finish):
                    await ws.send_json({"type": e.kind, **e.to_dict()})
                await ws.send_json({"type": "done", "audio_s": round(samples / 16000, 3)})
                return await ws.close(code=1000)
            if len(data) % 2:
                return await fail(f"truncated frame: {len(data)} bytes is not a whole number of 16-bit samples", 1007)
            samples += len(data) // 2
            if samples > cfg.max_stream_s * 16000:
                return await fail(f"stream longer than {cfg.max_stream_s:g} s", 1009)
            for e in await loop.run_in_executor(pool, streamer.accept_pcm16, data):
                await ws.send_json({"type": e.kind, **e.to_dict()})
    except (WebSocketDisconnect, RuntimeError) as e:      # the client went away mid-send
        log.info("stream client gone: %s", e)


class Server:
    """uvicorn running ``app`` on ``host:port`` (0: an ephemeral port) in a background thread;
    ``url`` once started. Used by ``asr serve`` (which then waits) and by the tests."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", ws_max_size=1 << 20,
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self, timeout_s: float = 30.0) -> "Server":
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AsrError("the server did not start (is the port in use?)")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(rec: Recognizer, cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted; prints the URL (useful with ``port=0``)."""
    server = Server(create_app(rec, cfg), host, port).start()
    print(f"asr serve: listening on {server.url} ({cfg.threads} inference workers)", flush=True)
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()

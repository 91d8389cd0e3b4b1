"""``asr serve`` on a real loopback port: uploads, streams, limits, refusals and clients that
misbehave. The server must answer every request (or refuse it with 503) and stay up."""
import contextlib
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from asr.features import FeatureConfig
from asr.config import ConfigError
from asr.model import BiLSTMCTC, ModelConfig
from asr.recognizer import Recognizer
from asr.serve import ServeConfig, Server, create_app
from asr.text import CharTokenizer


def _wav(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32),
             rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    model = BiLSTMCTC(ModelConfig(stack=3, hidden=32, layers=2, dropout=0.0), 80, len(CharTokenizer())).eval()
    rec = Recognizer.from_model(model, FeatureConfig(), CharTokenizer())
    cfg = ServeConfig(workers=1, queue=1, max_streams=2, max_upload_mb=1.0, max_upload_s=3.0, upload_timeout_s=1.0,
                      max_stream_s=5.0, idle_timeout_s=1.0)
    srv = Server(create_app(rec, cfg)).start()
    yield srv
    srv.stop()


def _post(url: str, body: bytes, content_type: str = "audio/wav", timeout: float = 60) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url + "/v1/transcribe", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def _health(url: str) -> dict:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
        return json.loads(r.read())


def _ws(server, query: str = "rate=16000"):
    return connect(server.url.replace("http", "ws") + "/v1/stream?" + query, open_timeout=10)


def test_health_page_and_upload(server):
    assert _health(server.url)["status"] == "ok"
    with urllib.request.urlopen(server.url + "/", timeout=10) as r:
        assert b"/v1/stream" in r.read()
    status, body, _ = _post(server.url, _wav(1.5))
    assert status == 200 and set(body) == {"text", "words", "segments", "duration"}
    assert body["duration"] == pytest.approx(1.5, abs=0.01)
    # the same file as a multipart form upload gives the same answer; an 8 kHz file is resampled
    boundary = "xyzBOUNDARY"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + _wav(1.5) + f"\r\n--{boundary}--\r\n".encode()
    status2, body2, _ = _post(server.url, form, f"multipart/form-data; boundary={boundary}")
    assert status2 == 200 and body2 == body
    status3, body3, _ = _post(server.url, _wav(1.5, 8000))
    assert status3 == 200 and body3["duration"] == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize("body,ctype,code,words", [
    (b"definitely not audio" * 10, "audio/wav", 400, "not audio"),
    (b"", "audio/wav", 400, "empty"),
    (b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nhi\r\n--b--\r\n", "multipart/form-data; boundary=b",
     400, "no file part"),
], ids=["not-audio", "empty", "form-without-file"])
def test_bad_uploads_get_a_named_4xx(server, body, ctype, code, words):
    status, res, _ = _post(server.url, body, ctype)
    assert status == code and words in res["error"]


def test_oversized_upload_is_refused_before_its_body_is_read(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                     b"Content-Length: 5000000\r\n\r\n" + b"\0" * 1000)
        head = b""
        while b"larger" not in head and (piece := sock.recv(4096)):      # until the body or a close
            head += piece
        head = head.decode()
    assert head.startswith("HTTP/1.1 413") and "larger than 1 MB" in head


def test_long_audio_and_slow_bodies_are_refused(server):
    # a compressed file holds far more audio than its bytes suggest: the header is checked first
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000 * 60, np.float32), 16000, format="FLAC")
    status, res, _ = _post(server.url, buf.getvalue())
    assert status == 400 and "60 s of audio is longer than the 3-s limit" in res["error"]
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:      # promises 1000 bytes, sends 10
        sock.sendall(b"POST /v1/transcribe HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"\0" * 10)
        head = b""
        while b"within" not in head and (piece := sock.recv(4096)):
            head += piece
    assert head.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in head
    assert _health(server.url)["uploads"] == 0                 # its slot is free again


def test_a_burst_of_uploads_is_answered_or_refused_never_lost(server):
    results: list = []
    body = _wav(2.9)

    def one():
        results.append(_post(server.url, body))
    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = sorted(r[0] for r in results)
    assert len(codes) == 12 and set(codes) <= {200, 503}
    assert 200 in codes and 503 in codes                 # 1 worker + 1 waiting: the rest are refused
    assert all(r[2].get("retry-after") == "1" for r in results if r[0] == 503)
    health = _health(server.url)
    assert health["uploads"] == 0 and health["refused"] >= codes.count(503)


def _events(ws) -> list[dict]:
    out = []
    try:
        while True:
            out.append(json.loads(ws.recv(timeout=30)))
    except ConnectionClosed:
        return out


def test_stream_gives_partials_and_a_final_then_done(server):
    x, _ = sf.read(io.BytesIO(_wav(2.0)), dtype="int16")
    with _ws(server) as ws:
        for i in range(0, x.size, 1600):
            ws.send(x[i: i + 1600].tobytes())
        ws.send("EOS")
        events = _events(ws)
        assert ws.close_code == 1000
    assert events[-1] == {"type": "done", "audio_s": 2.0}
    assert all(e["type"] in ("partial", "final") for e in events[:-1])


def test_decoders_are_built_once_and_reused(server):
    """Uploads and streams lease decoders from a pool (a beam_lm one takes a second to build):
    one after another they reuse one; never more than the limits allow at once."""
    before = _health(server.url)["decoders_built"]
    x, _ = sf.read(io.BytesIO(_wav(1.0)), dtype="int16")
    for _ in range(3):
        with _ws(server) as ws:
            ws.send(x.tobytes())
            ws.send("EOS")
            assert _events(ws)[-1]["type"] == "done"
        assert _post(server.url, _wav(1.0))[0] == 200
    health = _health(server.url)
    assert health["decoders_built"] == max(before, 1) and health["streams"] == health["uploads"] == 0
    assert health["decoders_built"] <= 1 + 1 + 2          # workers + queue + max_streams


@pytest.mark.parametrize("query,messages,code,words", [
    ("rate=8000", [], 1003, "rate must be 16000"),
    ("rate=abc", [], 1003, "bad stream parameters"),
    ("", [b"\0\0" * 100, b"\0\0\0"], 1007, "truncated frame: 3 bytes"),
    ("", [b"\0\0" * 100, "hello"], 1003, "unexpected text message"),
    ("", [b"\0\0" * 16000 * 3] * 2, 1009, "longer than 5 s"),
    ("", [b"\0\0" * 100], 1008, "idle for 1 s"),
])
def test_bad_streams_get_an_error_event_and_a_clean_close(server, query, messages, code, words):
    with _ws(server, query) as ws:
        for m in messages:
            ws.send(m)
        events = _events(ws)
    assert events[-1]["type"] == "error" and words in events[-1]["error"]
    assert ws.close_code == code
    assert _health(server.url)["status"] == "ok"


def test_stream_limit_and_clients_that_vanish(server):
    stack = contextlib.ExitStack()
    a, b = stack.enter_context(_ws(server)), stack.enter_context(_ws(server))
    a.send(b"\0\0" * 1600)
    with _ws(server) as c:                              # a third stream is over max_streams=2
        events = _events(c)
    assert events[-1]["type"] == "error" and "busy" in events[-1]["error"] and c.close_code == 1013
    a.socket.close()                                    # vanish without a close frame
    b.socket.shutdown(socket.SHUT_RDWR)
    b.socket.close()
    stack.pop_all()
    deadline = time.time() + 10
    while _health(server.url)["streams"] and time.time() < deadline:
        time.sleep(0.1)
    assert _health(server.url)["streams"] == 0          # their slots are free again
    with _ws(server) as d:
        d.send(b"\0\0" * 3200)
        d.send("EOS")
        assert _events(d)[-1]["type"] == "done"


def test_decoder_pool_counts_only_decoders_it_made_and_reuses_leases():
    from asr.serve import DecoderPool

    def broken():
        raise ConfigError("lm.bin: not a KenLM file")

    pool = DecoderPool(broken)
    with pytest.raises(ConfigError, match="KenLM"):
        pool.acquire()
    assert pool.built == 0 and pool.free == []
    made = []
    pool = DecoderPool(lambda: made.append(object()) or made[-1])
    with pytest.raises(RuntimeError):
        with pool.lease():
            raise RuntimeError("decoding failed")
    with pool.lease() as again:                       # the lease came back despite the error
        assert again is made[0]
    assert pool.built == 1

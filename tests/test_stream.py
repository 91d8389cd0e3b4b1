"""Streaming: incremental features, the latency-controlled BiLSTM, incremental decoding,
endpointing and the byte-stream readers."""
import io
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.audio import AudioError
from asr.decode import BeamDecoder, DecodeConfig, GreedyDecoder
from asr.features import FeatureConfig, FeatureExtractor, StreamingFeatures
from asr.model import BiLSTMCTC, ModelConfig
from asr.recognizer import Recognizer
from asr.stream import ONSET_PAD_S, PASS_PAD_S, StreamConfig, Streamer, pcm_blocks, stream_file
from asr.text import CharTokenizer


def _noise(seconds: float, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


def _rec(utterance_cmn: bool) -> Recognizer:
    torch.manual_seed(0)
    cfg = ModelConfig(stack=3, hidden=32, layers=2, dropout=0.0, utterance_cmn=utterance_cmn,
                      cmn_floor_db=30.0 if utterance_cmn else 0.0)
    return Recognizer.from_model(BiLSTMCTC(cfg, 80, len(CharTokenizer())).eval(), FeatureConfig(), CharTokenizer())


def _committed(rec: Recognizer, x: np.ndarray, cfg: StreamConfig, block: int) -> torch.Tensor:
    """Every committed frame's log-probs: the chunk machinery on steady noise (which the gate
    judges no sound once it knows the noise floor, so the chunks do not wait for sound here)."""
    st = Streamer(rec, replace(cfg, start_at_sound=False))
    for i in range(0, x.size, block):
        st.accept(x[i: i + block])
    st._push(st.frames.finish(), final=True)
    return torch.cat(st.logp)


@pytest.mark.parametrize("n", [257, 1000, 16003, 23456])
@pytest.mark.parametrize("block", [1, 160, 333, 5000])
def test_streaming_features_equal_offline(n, block):
    ex = FeatureExtractor(FeatureConfig())
    x = _noise(n / 16000)
    st = StreamingFeatures(ex)
    got = torch.cat([st.accept(x[i: i + block]) for i in range(0, n, block)] + [st.finish()])
    ref = ex(x)
    assert got.shape == ref.shape                      # no frame lost or doubled
    assert torch.allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("cmn", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 8])
def test_streaming_equals_offline_when_lookahead_covers_the_utterance(cmn, chunk):
    rec = _rec(cmn)
    x = _noise(2.0)
    ref = rec.emissions([rec.features(x)])[0]
    got = _committed(rec, x, StreamConfig(chunk_frames=chunk, right_frames=10_000, endpoint_s=0, dc_block=False), 1600)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() < 1e-4


@pytest.mark.parametrize("chunk,right,block", [(1, 0, 480), (4, 2, 1000), (8, 4, 1600), (7, 3, 16000)])
def test_short_lookahead_commits_every_frame_once(chunk, right, block):
    rec = _rec(True)
    x = _noise(2.3)
    ref = rec.emissions([rec.features(x)])[0]
    got = _committed(rec, x, StreamConfig(chunk_frames=chunk, right_frames=right, endpoint_s=0, dc_block=False), block)
    assert got.shape == ref.shape                      # chunk borders neither lose nor double a frame
    # the backward direction really sees less than the whole utterance (so it is an approximation)
    assert (got - ref).abs().max() > 1e-3


@pytest.mark.parametrize("cmn", [False, True])
def test_two_pass_final_is_the_offline_result(cmn):
    """final_pass: full -- the chunks (no look-ahead) give different log-probs, the final's second
    pass gives exactly the offline ones and the offline text."""
    rec = _rec(cmn)
    x = _noise(2.0, seed=3)
    ref = rec.emissions([rec.features(x)])[0]
    cfg = StreamConfig(chunk_frames=4, right_frames=0, endpoint_s=0, dc_block=False, final_pass="full", gate_db=0)
    st = Streamer(rec, cfg)
    for i in range(0, x.size, 1600):
        st.accept(x[i: i + 1600])
    st._push(st.frames.finish(), final=True)
    assert (torch.cat(st.logp) - ref).abs().max() > 1e-3
    full = st._full_pass()
    assert full.shape == ref.shape and (full - ref).abs().max() < 1e-4
    offline = rec.decode_features([rec.features(x)])[0].text
    finals = [e for e in stream_file(rec, x, cfg) if e.kind == "final"]
    assert [e.text for e in finals] == ([offline] if offline else [])
    streamed = [e.text for e in stream_file(rec, x, StreamConfig(chunk_frames=4, right_frames=0, endpoint_s=0,
                                                                   dc_block=False, final_pass="stream", gate_db=0))
                if e.kind == "final"]
    assert offline and streamed != [offline]


class _Recording(Streamer):
    """Keeps each final's second-pass log-probs, where its utterance started and its span."""

    def _full_pass(self, first=0, back=0):
        out = super()._full_pass(first, back)
        self.passes = [*getattr(self, "passes", []), (self.utt_start, self.done, out, first, back)]
        return out


@pytest.mark.parametrize("cmn", [False, True])
def test_final_context_decodes_an_utterance_after_the_one_before(cmn):
    """final_context_s: the second pass of an utterance that a pause split off runs over the
    audio before it too: its log-probs are the offline ones of the whole stream up to its end."""
    rec = _rec(cmn)
    x = np.concatenate([_noise(1.0, 4), np.zeros(int(16000 * 0.8), np.float32), _noise(0.7, 5),
                        np.zeros(int(16000 * 0.8), np.float32)])
    feats = rec.features(x)
    got = {}
    for ctx in (0.0, 30.0):
        st = _Recording(rec, StreamConfig(chunk_frames=4, right_frames=2, endpoint_s=0.3, dc_block=False,
                                          final_context_s=ctx))
        for i in range(0, x.size, 1600):
            st.accept(x[i: i + 1600])
        st.finish()
        assert len(st.passes) >= 2                 # (then the quiet tail's, which has no words)
        got[ctx] = st.passes[1]
    start, done, full, first, back = got[30.0]
    assert first == -start // 3                     # the first burst, under 1 s before, is context
    ref = rec.emissions([feats[: start + done * 3]])[0][start // 3 - back:]
    assert full.shape == ref.shape and (full - ref).abs().max() < 1e-4
    start0, done0, full0, first0, back0 = got[0.0]
    assert (start0, done0, back0) == (start, done, 0) and first0 >= 0
    assert (full0[first0:] - ref[back + first0:]).abs().max() > 1e-3


@pytest.mark.parametrize("at_sound", [True, False])
def test_second_pass_starts_a_short_pad_before_the_sound(at_sound):
    """A microphone open 2 s before the talker: the second pass runs from PASS_PAD_S before the
    sound (as in training, where pads are short), not over the whole quiet lead, where this
    kind of model fires a word's first units (and the gate then blanks them). With
    start_at_sound the chunks too start only ONSET_PAD_S before the sound (the lead before it
    goes to the history, where the second pass still finds its pad)."""
    rec = _rec(True)
    x = np.concatenate([1e-4 * _noise(2.0, 6), _noise(0.8, 7), 1e-4 * _noise(1.0, 8)]).astype(np.float32)
    cfg = StreamConfig(chunk_frames=4, right_frames=2, endpoint_s=0.3, dc_block=False, start_at_sound=at_sound)
    st = _Recording(rec, cfg)
    for i in range(0, x.size, 320):
        st.accept(x[i: i + 320])
    st.finish()
    start, done, full, first, back = st.passes[0]
    feats = rec.features(x)
    assert abs((start + first * 3) / 100 - (2.0 - PASS_PAD_S)) <= 0.03 + 1e-9
    if at_sound:
        assert abs(start / 100 - (2.0 - ONSET_PAD_S)) <= 0.03 + 1e-9
        assert first < 0 and back == -first
        ref = rec.emissions([feats[start + first * 3: start + done * 3]])[0]
        assert full.shape[0] == back + done and (full - ref).abs().max() < 1e-4
    else:
        assert start == 0 and back == 0
        ref = rec.emissions([feats[first * 3: done * 3]])[0]
        assert full.shape[0] == done and (full[first:] - ref).abs().max() < 1e-4
        assert bool((full[:first].argmax(-1) == 0).all())        # the lead itself: blanks


def test_a_click_is_not_sound():
    """One loud 10-ms block in faint noise neither ends an utterance nor un-gates words; a 0.2-s
    burst at the same place does both."""
    rec = _rec(True)
    base = (1e-4 * _noise(2.5, 9)).astype(np.float32)
    finals = {}
    for name, n in (("click", 160), ("burst", 3200)):
        x = base.copy()
        x[8000: 8000 + n] = _noise(n / 16000, 10)[:n]
        finals[name] = [e.text for e in stream_file(rec, x, StreamConfig(endpoint_s=0.2, dc_block=False))
                        if e.kind == "final"]
    assert finals["burst"] and finals["click"] == []


def test_incremental_greedy_and_beam_match_batch_decoding():
    tok = CharTokenizer()
    torch.manual_seed(3)
    logp = torch.randn(1, 60, len(tok)).mul(3).log_softmax(-1)
    for dec in (GreedyDecoder(tok), BeamDecoder(tok, DecodeConfig(beam_size=8))):
        batch = dec(logp, torch.tensor([60]))[0]
        dec.begin()
        for a in range(0, 60, 7):                     # chunks that split repeated tokens
            dec.step(logp[0, a: a + 7])
        partial = dec.partial()
        final = dec.end()
        assert final.ids == batch.ids and final.text == batch.text
        assert isinstance(partial.text, str)


class _Scripted(Streamer):
    """A streamer whose acoustic model says: speech ('a') in the given output frames, blank elsewhere."""

    def __init__(self, rec, cfg, speech_frames):
        super().__init__(rec, cfg)
        self.script = speech_frames

    def _forward(self, c, r):
        start = round(self.utt_start / self.stack) + self.done
        logp = torch.full((c + r, len(self.rec.tokenizer)), -20.0)
        for k in range(c + r):
            logp[k, self.rec.tokenizer.vocab.index("a") if (start + k) in self.script else 0] = 0.0
        return logp


class _Firing(_Scripted):
    """Second passes fire ``early`` units (frame -> unit; frame 19 ends the first word), before
    the pause that ended the first utterance, but only once they have heard the word after it
    (frames 40-49), as a BiLSTM fires early."""

    def __init__(self, rec, cfg, speech_frames, early):
        super().__init__(rec, cfg, speech_frames)
        self.early = early

    def _full_pass(self, first=0, back=0):
        us = self.utt_start // self.stack
        logp = torch.full((self.done - first, len(self.rec.tokenizer)), -20.0)
        for k, f in enumerate(range(us + first, us + self.done)):
            unit = "a" if f in self.script else self.early.get(f) if us + self.done > 40 else None
            logp[k, self.rec.tokenizer.vocab.index(unit) if unit else 0] = 0.0
        return logp[max(-first - back, 0):]


@pytest.mark.parametrize("early", [{24: "b"}, {20: " ", 21: "b"}])
def test_a_continuation_keeps_units_fired_before_the_pause(early):
    """Units fired before the pause go to the next final, not lost and not twice: from the word
    boundary this pass decodes (a space), else from LOOKBACK_MARGIN_FRAMES after the last unit."""
    x = np.zeros(int(16000 * 3.0), np.float32)
    x[4800:9600], x[19200:24000] = _noise(0.3), _noise(0.3, seed=2)     # words at 0.3-0.6 and 1.2-1.5 s
    speech = set(range(10, 20)) | set(range(40, 50))
    got = {}
    for ctx in (3.0, 0.0):
        st = _Firing(_rec(False), StreamConfig(chunk_frames=4, right_frames=2, endpoint_s=0.3, dc_block=False,
                                               final_context_s=ctx), speech, early)
        events = [e for i in range(0, x.size, 320) for e in st.accept(x[i: i + 320])] + st.finish()
        got[ctx] = [(e.text, e.start) for e in events if e.kind == "final"]
    assert [t for t, _ in got[3.0]] == ["a", "ba"]
    assert got[3.0][1][1] < got[0.0][1][1] and [t for t, _ in got[0.0]] == ["a", "a"]


def test_endpoint_gives_finals_at_pauses_and_partials_between():
    rec = _rec(False)
    speech = set(range(10, 20)) | set(range(60, 64))          # two words, 1.2 s apart
    st = _Scripted(rec, StreamConfig(chunk_frames=4, right_frames=2, endpoint_s=0.3, dc_block=False, gate_db=0,
                                     final_pass="stream"), speech)
    x = np.zeros(int(16000 * 3.0), np.float32)
    events = [e for i in range(0, x.size, 800) for e in st.accept(x[i: i + 800])] + st.finish()
    finals = [e for e in events if e.kind == "final"]
    letter = "a"
    assert [f.text for f in finals] == [letter, letter]
    assert finals[0].end <= 20 * 0.03 + 0.3 + 4 * 0.03 + 1e-6      # within endpoint + one chunk of the word
    assert finals[1].start >= finals[0].end
    assert finals[0].words and 0.25 <= finals[0].words[0].start <= 0.65
    assert any(e.kind == "partial" and e.text == letter for e in events)


def test_gate_keeps_words_out_of_silence():
    """A model that 'hears' a word in digital silence after real sound (as utterance CMN makes
    models do on a quiet tail): the level gate turns those frames into blanks, so no final shows
    it (a partial may, while too little of what follows was heard); the word over real sound
    stays. With the gate off, both are words."""
    rec = _rec(False)
    speech = set(range(10, 20)) | set(range(60, 64))              # 0.3-0.6 s and 1.8-1.92 s
    x = np.zeros(int(16000 * 3.0), np.float32)
    x[4800:9600] = _noise(0.3)                                     # sound under the first word only
    finals = {}
    for gate in (40.0, 0.0):
        st = _Scripted(rec, StreamConfig(chunk_frames=4, right_frames=2, endpoint_s=0.3, dc_block=False, gate_db=gate,
                                         final_pass="stream"), speech)
        events = [e for i in range(0, x.size, 800) for e in st.accept(x[i: i + 800])] + st.finish()
        finals[gate] = [(e.text, e.start) for e in events if e.kind == "final"]
    assert [t for t, _ in finals[0.0]] == ["a", "a"]
    assert finals[40.0] == finals[0.0][:1]


def _scripted_finals(rec, x: np.ndarray, speech: set, **cfg) -> list[str]:
    st = _Scripted(rec, StreamConfig(chunk_frames=4, right_frames=2, dc_block=False, final_pass="stream", **cfg), speech)
    events = [e for i in range(0, x.size, 800) for e in st.accept(x[i: i + 800])] + st.finish()
    return [e.text for e in events if e.kind == "final"]


def test_gate_ends_utterances_in_steady_noise():
    """A laptop microphone's hiss (-55 dBFS, 35 dB under the words) is under the gate once a
    second of it was heard: the pause between two words ends the first utterance."""
    rec = _rec(False)
    x = _noise(4.0, seed=5) * 0.018                                 # about -55 dBFS
    for a in (4800, 32000):                                         # words at 0.3-0.6 s and 2.0-2.3 s
        x[a: a + 4800] = _noise(0.3, seed=a)
    speech = set(range(10, 20)) | set(range(67, 77))
    assert _scripted_finals(rec, x, speech, endpoint_s=0.3) == ["a", "a"]


def test_the_flushed_end_of_an_utterance_is_gated_too():
    """At an acoustic endpoint the last frames have less than GATE_MIN_AHEAD_S heard after them;
    they are judged on the quiet that ended the utterance, so a unit the model 'hears' there is
    not in the final."""
    rec = _rec(False)
    x = np.zeros(int(16000 * 2.0), np.float32)
    x[4800:9600] = _noise(0.3)
    assert _scripted_finals(rec, x, set(range(10, 20)) | {27}, endpoint_s=0.3) == ["a"]
    assert _scripted_finals(rec, x, set(range(10, 20)) | {27}, endpoint_s=0.3, gate_db=0) == ["aa"]


def test_silence_only_stream_stays_bounded_and_silent():
    rec = _rec(False)
    st = _Scripted(rec, StreamConfig(chunk_frames=8, right_frames=2, dc_block=False), set())
    x = np.zeros(16000, np.float32)
    events = [e for _ in range(12) for e in st.accept(x)] + st.finish()
    assert events == []
    assert st.feats.shape[0] < 16000 * 6 // 160              # dropped after SILENT_RESET_S


def _wav_bytes(x: np.ndarray, rate: int, channels: int = 1) -> bytes:
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"LIST" + struct.pack("<I", 4) + b"INFO" + b"data" + struct.pack("<I", 0xFFFFFFFF) + pcm)


def test_pcm_readers_raw_wav_and_resampling():
    x = np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000).astype(np.float32) * 0.5
    raw = (x * 32767).astype("<i2").tobytes()
    got = np.concatenate(list(pcm_blocks(io.BytesIO(raw + b"\x01"), "raw", 8000)))     # odd byte dropped
    assert abs(got.size - 16000) <= 16
    wav = np.concatenate(list(pcm_blocks(io.BytesIO(_wav_bytes(np.stack([x, 0 * x], 1).reshape(-1), 8000, 2)), "w", None)))
    assert abs(wav.size - 16000) <= 16 and 0.2 < np.abs(wav).max() < 0.3       # dead channel averaged in
    with pytest.raises(AudioError, match="not a WAV stream"):
        list(pcm_blocks(io.BytesIO(b"hello world, not audio"), "<stdin>", None))
    with pytest.raises(AudioError, match="16-bit"):
        list(pcm_blocks(io.BytesIO(_wav_bytes(x, 8000)[:34] + b"\x20\x00" + _wav_bytes(x, 8000)[36:]), "w", None))


def test_odd_pcm_bytes_are_an_error_and_stream_file_runs():
    rec = _rec(False)
    st = Streamer(rec)
    with pytest.raises(AudioError, match="whole number"):
        st.accept_pcm16(b"\x00\x01\x02")
    events = stream_file(rec, _noise(1.0), StreamConfig(chunk_frames=4, right_frames=1))
    assert all(e.kind in ("partial", "final") for e in events)


@pytest.mark.parametrize("cmn", [False, True])
@pytest.mark.parametrize("chunk,right", [(4, 2), (8, 4), (5, 0), (3, 7)])
def test_chunk_aware_training_network_is_what_streaming_computes(chunk, right, cmn):
    """``latency_controlled`` (batched, padded, differentiable) gives the streamer's committed
    log-probs for every utterance of a batch of different lengths, utterance CMN included (each
    window normalised by what streaming has heard when it gets there)."""
    from asr.batching import pad_batch
    from asr.model import latency_controlled

    rec = _rec(cmn)
    # a rising level: where the CMN statistics stop matters
    xs = [_noise(d, seed) * np.linspace(0.1, 3.0, int(16000 * d), dtype=np.float32)
          for seed, d in ((1, 2.0), (2, 1.0), (3, 3.1))]
    x, lens = pad_batch([rec.features(a) for a in xs])
    logp, out_lens = latency_controlled(rec.model, x, lens, chunk, right)
    for k, a in enumerate(xs):
        got = _committed(rec, a, StreamConfig(chunk_frames=chunk, right_frames=right, endpoint_s=0, dc_block=False), 4000)
        assert got.shape[0] == int(out_lens[k])
        assert (got - logp[k, : out_lens[k]]).abs().max() < 1e-4
    logp[0].sum().backward()                              # it trains: gradients reach the first layer
    assert rec.model.layers[0].bwd.weight_ih_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("grid, why", [("4+x", "expected CHUNK+RIGHT"), ("0+3", "each chunk must be >= 1")])
def test_benchmark_stream_grid_is_checked(grid, why, monkeypatch):
    import argparse
    import re
    import sys
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    from bench_live import stream_grid
    assert stream_grid("4+9,2+11") == ((4, 9), (2, 11))
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(why)):
        stream_grid(grid)


def test_streams_default_to_the_chunking_the_model_was_trained_for(tmp_path):
    """A checkpoint fine-tuned chunk-aware (train.stream_chunk in its config) streams at that
    setting unless --chunk/--right say otherwise; a plain model at the StreamConfig defaults."""
    from asr.checkpoint import model_payload
    from asr.cli import build_parser
    from asr.cli_common import _stream_config
    from asr.config import ConfigError
    from asr.recognizer import load

    rec = _rec(True)
    for name, info in (("lc", {"config": {"train": {"stream_chunk": [4, 9]}}}), ("plain", {"config": {"train": {}}}),
                       ("odd", {"config": "not a dict"})):
        torch.save(model_payload(rec.model, FeatureConfig(), CharTokenizer(), info), tmp_path / f"{name}.pt")
    lc, plain, odd = load(tmp_path / "lc.pt"), load(tmp_path / "plain.pt"), load(tmp_path / "odd.pt")

    def chunking(model, *flags):
        args = build_parser().parse_args(["serve", "--model", "M", *flags])
        cfg = _stream_config(args, model)
        return cfg.chunk_frames, cfg.right_frames

    assert chunking(lc) == (4, 9)
    assert chunking(plain) == chunking(odd) == (StreamConfig.chunk_frames, StreamConfig.right_frames) == (8, 4)
    assert chunking(lc, "--chunk", "2", "--right", "11") == (2, 11)
    assert chunking(lc, "--right", "0") == (4, 0)
    with pytest.raises(ConfigError, match="chunk_frames"):
        chunking(plain, "--chunk", "0")

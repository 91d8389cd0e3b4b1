import json

import numpy as np
import pytest
import soundfile as sf

from asr.audio import AudioError, load_audio
from asr.transcribe import (SegmentOptions, Transcription, Word, decode_segments, segment_stream, stream_audio,
                            subtitle_cues, to_srt, to_vtt, transcribe, write_outputs)



def _bursts(tone, n: int, rate: int = 16000) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """n tone bursts of 0.6-1.4 s separated by 0.3-0.8 s of low noise; returns the pause spans."""
    rng = np.random.default_rng(0)
    parts, pauses, t = [], [], 0.0
    for i in range(n):
        burst = tone(rng.uniform(0.6, 1.4), rate, freq=300 + 50 * i)
        gap = rng.uniform(0.3, 0.8)
        parts += [burst, 0.001 * rng.standard_normal(int(gap * rate)).astype(np.float32)]
        t += burst.size / rate
        pauses.append((t, t + gap))
        t += gap
    return np.concatenate(parts), pauses


def test_segments_tile_the_stream_and_cut_in_pauses(tone):
    x, pauses = _bursts(tone, 40)
    opts = SegmentOptions(max_segment_s=5.0)
    blocks = (x[i: i + 7000] for i in range(0, x.size, 7000))        # odd block size on purpose
    segs = list(segment_stream(blocks, opts))
    assert np.array_equal(np.concatenate([s for _, s in segs]), x)  # nothing lost or doubled
    assert all(s.size <= 5.0 * 16000 for _, s in segs)
    starts = [t for t, _ in segs]
    assert starts == sorted(starts) and len(segs) > 5
    for t in starts[1:]:                                             # every cut inside a pause
        assert any(a <= t <= b for a, b in pauses), t


def test_no_pause_still_capped(tone):
    x = tone(12.0)
    segs = list(segment_stream(iter([x]), SegmentOptions(max_segment_s=4.0)))
    assert np.array_equal(np.concatenate([s for _, s in segs]), x)
    assert all(s.size <= 4 * 16000 for _, s in segs)


def test_stream_matches_whole_file_resampling(tmp_path, tone):
    x = tone(25.0, 44100, channels=2)
    sf.write(tmp_path / "long.flac", x, 44100)
    streamed = np.concatenate(list(stream_audio(tmp_path / "long.flac")))
    whole = load_audio(tmp_path / "long.flac")
    assert abs(streamed.size - whole.size) <= 2
    n = min(streamed.size, whole.size)
    assert np.max(np.abs(streamed[1000:n - 1000] - whole[1000:n - 1000])) < 1e-3


def test_bad_sources(tmp_path, tiny_recognizer):
    (tmp_path / "junk.wav").write_bytes(b"junk")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.zeros(400, np.float32), 16000)
    for name, reason in [("junk.wav", "cannot read"), ("empty.wav", "empty"), ("short.wav", "too short")]:
        with pytest.raises(AudioError, match=rf"{name}.*{reason}"):
            transcribe(tiny_recognizer, tmp_path / name)


def test_transcribe_array_and_outputs(tmp_path, tiny_recognizer, tone):
    x = tone(3.0, 8000, channels=2)
    tr = tiny_recognizer.transcribe(x, sample_rate=8000, max_segment_s=1.0)
    assert isinstance(tr, Transcription) and tr.duration == pytest.approx(3.0, abs=0.01)
    assert tr.text == " ".join(s.text for s in tr.segments if s.text)
    # every decoded segment (empty ones included) is at most 1 s and they tile the 3 s
    opts = SegmentOptions(max_segment_s=1.0)
    segs = decode_segments(tiny_recognizer, list(segment_stream(stream_audio(x, 8000), opts)), opts)
    assert len(segs) >= 3 and segs[0].start == 0.0 and segs[-1].end == pytest.approx(3.0, abs=0.01)
    for a, b in zip(segs, segs[1:]):
        assert a.end == b.start and b.end - b.start <= 1.0 + 1e-6
    for seg in segs:
        assert all(seg.start - 1e-6 <= w.start <= w.end <= seg.end + 1e-6 for w in seg.words)
    tr = Transcription("one two three", [Word("one", 0.5, 0.8, 0.9), Word("two", 0.9, 1.2, 0.8),
                                          Word("three", 4.0, 4.4, 0.7)], [], 5.0)
    assert [c[2] for c in subtitle_cues(tr)] == ["one two", "three"]       # split at the long gap
    assert "00:00:00,500 --> 00:00:01,200\none two" in to_srt(tr)
    assert to_vtt(tr).startswith("WEBVTT") and "00:00:04.000 --> 00:00:04.400" in to_vtt(tr)
    paths = write_outputs(tr, tmp_path / "out" / "rec", ["txt", "json", "srt", "vtt"])
    assert [p.name for p in paths] == ["rec.txt", "rec.json", "rec.srt", "rec.vtt"]
    assert json.loads(paths[1].read_text())["words"][2]["start"] == 4.0


def test_word_boundaries_in_silence_snap_onto_speech():
    import numpy as np

    from asr.transcribe import SegmentOptions, Word, snap_to_speech

    rng = np.random.default_rng(0)
    quiet = lambda s: (0.001 * rng.standard_normal(int(s * 16000))).astype(np.float32)  # noqa: E731
    loud = lambda s: (0.3 * np.sin(np.arange(int(s * 16000)) * 0.2)).astype(np.float32)  # noqa: E731
    audio = np.concatenate([quiet(0.5), loud(0.4), quiet(0.6), loud(0.3), quiet(0.3)])   # speech 0.5-0.9, 1.5-1.8
    words = [Word("early", 10.1, 10.95, 0.9), Word("inside", 11.55, 11.75, 0.8)]        # offset 10 s
    early, inside = snap_to_speech(words, audio, 10.0, SegmentOptions())
    assert abs(early.start - 10.5) <= 0.03 and abs(early.end - 10.9) <= 0.03           # both moved onto speech
    assert (inside.start, inside.end) == (11.55, 11.75)                               # already on speech
    # a word with no speech within reach keeps its times
    (alone,) = snap_to_speech([Word("x", 10.0, 10.2, 0.5)], audio, 10.0, SegmentOptions())
    assert (alone.start, alone.end) == (10.0, 10.2)


def test_bpe_word_boundaries_come_from_the_word_start_mark():
    import torch

    from asr.transcribe import align_words

    vocab = ["<blank>", "\u2581the", "\u2581c", "at", "\u2581"]
    lp = torch.full((8, 5), -20.0)
    for t, tok in enumerate([1, 0, 2, 0, 3, 0, 0, 0]):
        lp[t, tok] = 0.0
    words = align_words(lp, [1, 2, 3], vocab, 0.03, 1.0)
    assert [w.word for w in words] == ["the", "cat"]
    assert words[0].start == 1.0 and words[1].start == pytest.approx(1.06) and words[1].end == pytest.approx(1.15)

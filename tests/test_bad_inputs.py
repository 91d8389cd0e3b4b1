"""The bad-input set: every class of bad item is reported by id or path with its reason, the
good items are used, and nothing crashes or disappears silently."""
import subprocess
import wave

import numpy as np
import soundfile as sf

from asr.data import DataConfig

from asr.features import FeatureConfig
from asr.data import Utterance
from asr.features import build_feature_cache
from asr.text import CharTokenizer
from asr.dataset import build_set



def _bad_files(d, tone):
    """name -> expected reason fragment."""
    sf.write(d / "good1.wav", tone(1.0, freq=300), 16000)
    sf.write(d / "good2.flac", tone(1.0, 44100, freq=500, channels=2), 44100)
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    (d / "zero_bytes.wav").write_bytes(b"")
    sf.write(d / "zero_samples.wav", np.zeros(0, np.float32), 16000)
    sf.write(d / "silence.wav", np.zeros(16000, np.float32), 16000)
    nan = tone(1.0)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = tone(1.0)
    inf[5] = np.inf
    sf.write(d / "inf.wav", inf, 16000, subtype="FLOAT")
    (d / "text_as.mp3").write_text("ID3 not really an mp3")
    with wave.open(str(d / "rate_1hz.wav"), "wb") as w:          # absurd rate in the header
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(1)
        w.writeframes(np.zeros(100, np.int16).tobytes())
    sf.write(d / "huge.wav", tone(70.0), 16000)                   # over the 60 s limit
    return {"corrupt": "cannot read", "zero_bytes": "cannot read", "zero_samples": "empty",
            "silence": "all silence", "nan": "NaN or Inf", "inf": "NaN or Inf", "text_as": "cannot read",
            "rate_1hz": "sample rate", "huge": "too long", "missing": "cannot read"}


def test_bad_corpus_is_fully_accounted_for(tmp_path, tone):
    expected = _bad_files(tmp_path, tone)
    utts = [Utterance("good1", str(tmp_path / "good1.wav"), 1.0, "one", "s"),
            Utterance("good2", str(tmp_path / "good2.flac"), 1.0, "Two!", "s")]
    for name in expected:
        path = next(iter(tmp_path.glob(f"{name}.*")), tmp_path / f"{name}.wav")
        utts.append(Utterance(name, str(path), 1.0, "one", "s"))
    utts += [Utterance("empty_text", str(tmp_path / "good1.wav"), 1.0, "", "s"),
             Utterance("too_short", str(tmp_path / "good1.wav"), 1.0, "one two three four five six seven "
                       "eight nine ten eleven twelve thirteen fourteen", "s")]
    report = tmp_path / "bad_audio.txt"
    cache = build_feature_cache(utts, FeatureConfig(), tmp_path / "c.pt", report, max_seconds=60)
    assert sorted(cache["ids"]) == ["empty_text", "good1", "good2", "too_short"]
    lines = dict(line.split("\t", 1) for line in report.read_text().splitlines())
    assert set(lines) == set(expected)
    for name, reason in expected.items():
        assert reason in lines[name], (name, lines[name])
        assert name in lines[name]                                # the message names the file
    data = build_set(utts, cache, CharTokenizer(), 3, "train", tmp_path / "skipped.txt", DataConfig())
    assert data.ids == ["good1", "good2"] and data.texts == ["one", "two"]
    skipped = (tmp_path / "skipped.txt").read_text()
    for uid in [*expected, "empty_text", "too_short"]:
        assert f"{uid}\t" in skipped
    # every input utterance is either used or listed: zero silent drops
    listed = {line.split("\t")[0] for line in skipped.splitlines()}
    assert {u.id for u in utts} == set(data.ids) | (listed - {"good2"})


def test_transcribe_directory_with_bad_files(tmp_path, tiny_model, tone):
    from asr.files import atomic_save
    from asr.checkpoint import model_payload

    (tmp_path / "audio").mkdir()
    _bad_files(tmp_path / "audio", tone)
    atomic_save(model_payload(tiny_model, FeatureConfig(), CharTokenizer()), tmp_path / "m.pt")
    res = subprocess.run(["asr", "transcribe", "--model", str(tmp_path / "m.pt"), str(tmp_path / "audio"),
                          "--output-dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    for name in ("corrupt", "zero_bytes", "zero_samples", "nan", "inf", "rate_1hz"):
        assert f"{name}." in res.stderr, name
    text = (tmp_path / "out" / "text").read_text().splitlines()
    ids = {line.split(" ")[0] for line in text}
    assert {"good1", "good2", "silence", "huge"} <= ids           # long files are streamed, not refused
    assert "4 files" in res.stderr and "7 failed" in res.stderr     # silence and huge files are transcribed

"""Training sets: features joined with token ids; every unusable utterance reported."""
import torch

from asr.data import DataConfig, Utterance
from asr.dataset import build_set, ctc_min_frames
from asr.features import FeatureConfig
from asr.text import CharTokenizer


def test_ctc_min_frames():
    assert ctc_min_frames([1, 2, 3]) == 3
    assert ctc_min_frames([1, 1, 2, 2, 2]) == 8


def test_build_set_skips_and_reports(tmp_path):
    tok = CharTokenizer()
    utts = [Utterance("ok", "a.wav", 1.0, "one", "s"), Utterance("empty", "a.wav", 1.0, "", "s"),
            Utterance("short", "a.wav", 0.1, "one two three", "s"), Utterance("nofeat", "a.wav", 1.0, "one", "s"),
            Utterance("oov", "a.wav", 1.0, "one 1", "s"), Utterance("nan", "a.wav", 1.0, "one", "s")]
    cache = {"ids": ["ok", "empty", "short", "oov", "nan"],
             "feats": [torch.zeros(90, 80), torch.zeros(90, 80), torch.zeros(20, 80), torch.zeros(90, 80),
                       torch.full((90, 80), float("nan"))]}
    data = build_set(utts, cache, tok, 3, "train", tmp_path / "skipped.txt")
    assert data.ids == ["ok", "oov"] and data.texts[1] == "one one"       # default policy maps
    report = (tmp_path / "skipped.txt").read_text()
    for uid in ("empty", "short", "nofeat", "oov", "nan"):
        assert f"{uid}\t" in report
    assert "too short for CTC" in report and "mapped" in report
    dropped = build_set(utts, cache, tok, 3, "train", None, DataConfig(oov_policy="drop"))
    assert dropped.ids == ["ok"]


def test_build_set_on_the_fly_checks_ctc_lengths(tmp_path, wav_dir):
    utts = [Utterance("g", str(wav_dir / "good.wav"), 1.0, "one", "s"),
            Utterance("long", str(wav_dir / "stereo44.wav"), 0.5, "x" * 40, "s")]
    s = build_set(utts, None, CharTokenizer(), 3, "train", tmp_path / "skipped.txt", DataConfig(), FeatureConfig())
    assert s.ids == ["g"] and s.feats.lengths == [101]
    assert "long\ttoo short for CTC" in (tmp_path / "skipped.txt").read_text()

import pytest
import numpy as np
import torch

from asr.features import FeatureConfig
from asr.data import Utterance
from asr.features import FeatureExtractor, build_feature_cache, compute_cmvn, load_feature_cache



def test_shape_and_hop(tone):
    ext = FeatureExtractor(FeatureConfig())
    f = ext(tone(1.0))
    assert f.shape == (101, 80) and f.dtype == torch.float32
    assert torch.isfinite(ext(np.zeros(16000, np.float32))).all()   # digital silence stays finite


def test_tone_energy_in_right_band(tone):
    f = FeatureExtractor(FeatureConfig())(tone(1.0, freq=440.0))
    low = FeatureExtractor(FeatureConfig())(tone(1.0, freq=3000.0))
    assert f.mean(0).argmax() < low.mean(0).argmax()


def test_cmvn_matches_numpy():
    feats = [torch.randn(50, 4) * 3 + 1, torch.randn(70, 4)]
    mean, std = compute_cmvn(feats)
    allf = torch.cat(feats).numpy()
    np.testing.assert_allclose(mean.numpy(), allf.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), allf.std(0), rtol=1e-4)


def test_cache_skips_bad_audio_and_reuses(wav_dir, tmp_path):
    utts = [Utterance("good", str(wav_dir / "good.wav"), 1.0, "x", "s"),
            Utterance("junk", str(wav_dir / "junk.wav"), 1.0, "x", "s"),
            Utterance("st", str(wav_dir / "stereo44.wav"), 0.5, "x", "s")]
    cache = build_feature_cache(utts, FeatureConfig(), tmp_path / "c.pt", report=tmp_path / "bad.txt", max_seconds=600.0)
    assert cache["ids"] == ["good", "st"] and cache["skipped"] == 1
    assert (tmp_path / "bad.txt").read_text().startswith("junk\t")
    assert cache["feats"][0].dtype == torch.float16 and cache["feats"][1].shape[1] == 80
    again = load_feature_cache(tmp_path / "c.pt")
    assert again["key"] == cache["key"]
    # same inputs -> reused as is (no recomputation: the file is not rewritten)
    mtime = (tmp_path / "c.pt").stat().st_mtime_ns
    build_feature_cache(utts, FeatureConfig(), tmp_path / "c.pt", max_seconds=600.0)
    assert (tmp_path / "c.pt").stat().st_mtime_ns == mtime
    # a changed feature config invalidates the cache
    other = build_feature_cache(utts, FeatureConfig(n_mels=40), tmp_path / "c.pt", max_seconds=600.0)
    assert other["feats"][0].shape[1] == 40


def test_a_split_with_no_readable_audio_leaves_no_cache(wav_dir, tmp_path):
    """Audio paths that do not resolve (a moved corpus, another working directory) must not
    leave an empty cache that later runs would reuse as if the split had no utterances."""
    from asr.errors import AsrError

    utts = [Utterance("a", "relative/nowhere.wav", 1.0, "x", "s"), Utterance("b", str(wav_dir / "junk.wav"), 1.0, "x", "s")]
    with pytest.raises(AsrError, match="none of the 2 utterances"):
        build_feature_cache(utts, FeatureConfig(), tmp_path / "c.pt", max_seconds=60.0)
    assert not (tmp_path / "c.pt").exists()

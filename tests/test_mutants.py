"""Tests aimed at small, realistic bugs that the rest of the suite let through (issue 17's
injected bugs): each pins an exact value a plausible slip would change."""
import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio import load_audio, to_mono
from asr.data import bucket_batches
from asr.decode import GreedyDecoder
from asr.features import FeatureConfig
from asr.recognizer import Recognizer
from asr.score import bootstrap_wer
from asr.text import DIGIT_WORDS, CharTokenizer, normalize_text
from asr.transcribe import stream_audio


def test_bootstrap_interval_is_the_2_5_and_97_5_percentiles():
    words = np.full(200, 10.0)
    errors = np.r_[np.zeros(100), np.full(100, 2.0)]      # per-utterance WER 0% or 20%
    res = bootstrap_wer(errors, words, n=4000, seed=1)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 200, size=(4000, 200))
    wer = 100 * errors[idx].sum(1) / words[idx].sum(1)
    assert res["wer_ci95"] == [float(np.percentile(wer, 2.5)), float(np.percentile(wer, 97.5))]
    # the binomial interval: 10% +- 1.96 * sqrt(p (1-p) / n) * 20 percent points
    half = 1.96 * np.sqrt(0.25 / 200) * 20
    assert res["wer_ci95"] == pytest.approx([10 - half, 10 + half], abs=0.3)


def test_every_digit_is_spelled_and_spaced():
    assert normalize_text("0123456789") == " ".join(DIGIT_WORDS)
    assert DIGIT_WORDS == ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert normalize_text("abc1def") == "abc one def" and normalize_text("a7") == "a seven"


def test_bucketing_packs_batches_tightly():
    """Sorted buckets waste little padding: the running maximum starts anew in every batch."""
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(100, 900, 2000)]
    batches = bucket_batches(lengths, 20000, seed=None)
    fill = sum(lengths) / sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert fill > 0.95
    assert sum(lengths) / 20000 <= len(batches) < 1.1 * sum(lengths) / 20000 + 2


class _SpellingModel(torch.nn.Module):
    """A stand-in acoustic model (stack 3) whose output spells ``text`` at known output frames."""

    def __init__(self, text: str, start: int):
        super().__init__()
        self.cfg = type("Cfg", (), {"stack": 3})()
        self.register_buffer("cmvn_mean", torch.zeros(80))
        self.text, self.start = text, start

    def forward(self, feats, lens):
        t = feats.shape[1] // 3
        lp = torch.full((feats.shape[0], t, 29), -20.0)
        lp[:, :, 0] = 0.0
        for k, c in enumerate(self.text):
            lp[:, self.start + 2 * k, :] = -20.0
            lp[:, self.start + 2 * k, CharTokenizer().encode(c)[0]] = 0.0
        return lp, torch.div(lens, 3, rounding_mode="floor")


def test_word_times_account_for_frame_stacking(tone):
    """Output frame k of a stack-3 model starts at 3 * k * 10 ms: 'one' spelled from output
    frame 20 starts at 0.60 s (a hop-only slip would say 0.20 s)."""
    rec = Recognizer.from_model(_SpellingModel("one two", 20), FeatureConfig(), CharTokenizer(),
                                GreedyDecoder(CharTokenizer()))
    tr = rec.transcribe(tone(1.0), snap_words=False, normalize=False)
    assert tr.text == "one two"
    (one, two) = tr.words
    assert one.start == pytest.approx(0.60, abs=0.005) and one.end == pytest.approx(0.60 + 5 * 0.03, abs=0.005)
    assert two.start == pytest.approx(0.60 + 8 * 0.03, abs=0.005)


def test_stereo_downmix_uses_both_channels(tmp_path, tone):
    left, right = tone(1.0, freq=300), tone(1.0, freq=900) * 0.5
    x = np.stack([left, right], 1)
    np.testing.assert_allclose(to_mono(x), (left + right) / 2, atol=1e-7)
    sf.write(tmp_path / "st.wav", x, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "st.wav"), (left + right) / 2, atol=1e-6)
    streamed = np.concatenate(list(stream_audio(tmp_path / "st.wav")))
    np.testing.assert_allclose(streamed, (left + right) / 2, atol=1e-6)


def test_cer_counts_characters_with_spaces():
    from asr.score import error_rates

    r = error_rates({"u": "ab cd"}, {"u": "ab ce"})
    assert r.cer == pytest.approx(20.0)                    # 1 edit over 5 characters (the space counts)
    assert r.wer == pytest.approx(50.0)


def test_spec_augment_masks_time_and_frequency():
    import random

    from asr.batching import spec_augment
    from asr.data import AugmentConfig

    feats = torch.arange(200 * 80, dtype=torch.float32).reshape(200, 80)
    cfg = AugmentConfig(freq_masks=0, time_masks=2, time_mask_ratio=0.2)
    hits = []
    for seed in range(20):
        out = spec_augment(feats, cfg, random.Random(seed))
        masked = (out == feats.mean()).all(1)               # whole frames set to the fill value
        hits.append(int(masked.sum()))
        assert masked.sum() <= 2 * int(0.2 * 200)
    assert max(hits) > 10 and sum(h > 0 for h in hits) >= 15
    out = spec_augment(feats, AugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=0), random.Random(3))
    assert 0 < int((out == feats.mean()).all(0).sum()) <= 20  # whole mel bins masked

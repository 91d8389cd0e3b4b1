"""Waveform augmentation: each kind does what it says (measured on the signal), draws are
reproducible from the batch RNG, failures are counted and never lose the utterance."""
import random

import numpy as np
import pytest
import torch

from asr import augment as A
from asr.audio import SAMPLE_RATE_HZ

SR = SAMPLE_RATE_HZ


def _band_energy_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return 10 * np.log10(spec[(f >= lo) & (f < hi)].sum() + 1e-12)


@pytest.fixture(scope="module")
def rooms():
    cfg = A.WaveAugmentConfig(rt60_range_s=(0.8, 0.8), rir_bank=2)
    bank, failed = A.rir_bank(cfg, seed=3)
    assert len(bank) == 2 and not failed
    return bank


def test_reverberation_adds_a_decaying_tail(rooms):
    burst = np.zeros(SR, np.float32)
    burst[1000:3000] = np.random.default_rng(0).standard_normal(2000)
    wet = A.reverberate(burst, rooms[0])
    tail = slice(4000, 8000)                          # 60-310 ms after the burst ended
    assert np.sqrt(np.mean(burst[tail] ** 2)) == 0
    assert np.sqrt(np.mean(wet[tail] ** 2)) > 0.01 * np.sqrt(np.mean(wet[1000:3000] ** 2))
    # a small dry room decays faster than the 0.8 s room
    dry, _ = A.rir_bank(A.WaveAugmentConfig(rt60_range_s=(0.1, 0.1), room_size_range_m=(3, 3), rir_bank=1), 3)
    assert np.sum(dry[0][4000:] ** 2) / np.sum(dry[0] ** 2) < np.sum(rooms[0][4000:] ** 2) / np.sum(rooms[0] ** 2)


@pytest.mark.parametrize("kind", ["colored", "bursts", "hum", "tones"])
def test_noise_is_added_at_the_requested_snr(tone, kind):
    g = np.random.default_rng(1)
    x = tone(2.0)
    noise = {"colored": A.colored_noise, "bursts": A.burst_noise, "hum": A.hum, "tones": A.tones}[kind](x.size, g)
    assert np.sqrt(np.mean(noise ** 2)) == pytest.approx(1.0, rel=1e-3)
    y = A.add_noise(x, noise, 5.0)
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(5.0, abs=0.2)


def test_babble_mixes_several_talkers(tone):
    g = np.random.default_rng(2)
    talkers = [tone(1.0, freq=f) for f in (300, 700, 1300)]
    b = A.babble_mix(talkers, 3 * SR, g)
    spec = np.abs(np.fft.rfft(b[:SR]))
    peaks = {int(round(f)) for f in np.fft.rfftfreq(SR, 1 / SR)[np.argsort(spec)[-3:]]}
    assert peaks == {300, 700, 1300}                       # all three talkers at once


def test_telephone_keeps_only_the_narrow_band():
    x = np.random.default_rng(3).standard_normal(2 * SR).astype(np.float32) * 0.1
    y = A.telephone(x)
    assert y.shape == x.shape
    inside = _band_energy_db(y, 500, 3000) - _band_energy_db(x, 500, 3000)
    above = _band_energy_db(y, 4500, 7500) - _band_energy_db(x, 4500, 7500)
    below = _band_energy_db(y, 20, 150) - _band_energy_db(x, 20, 150)
    assert inside > -3 and above < -40 and below < -20


@pytest.mark.parametrize("name", list(A.CODECS))
def test_codecs_round_trip_lossy(tone, name):
    x = tone(1.0, freq=500) * 0.5 + tone(1.0, freq=1500) * 0.2
    y = A.codec(x, name)
    assert y.shape == x.shape and not np.array_equal(x, y)
    assert np.corrcoef(x[2000:-2000], y[2000:-2000])[0, 1] > 0.7


def test_tempo_keeps_pitch_and_changes_length(tone):
    x = tone(2.0, freq=440)
    y = A.tempo(x, 1.25)
    assert abs(y.size - x.size / 1.25) < 600
    f = np.fft.rfftfreq(y.size, 1 / SR)[np.argmax(np.abs(np.fft.rfft(y)))]
    assert abs(f - 440) < 5                                # a resampling speed-up would give 550 Hz


def test_clip_and_eq(tone):
    x = tone(1.0)
    y = A.clip(x, 0.3)
    assert np.isclose(np.abs(y).max(), np.abs(x).max(), rtol=1e-3)
    assert np.mean(np.isclose(np.abs(y), np.abs(y).max(), rtol=1e-3)) > 0.3   # flat tops
    noise = np.random.default_rng(4).standard_normal(SR).astype(np.float32)
    z = A.random_eq(noise, np.random.default_rng(5), 10.0)
    lo, hi = _band_energy_db(z, 100, 1000) - _band_energy_db(noise, 100, 1000), \
        _band_energy_db(z, 6000, 7900) - _band_energy_db(noise, 6000, 7900)
    assert abs(lo - hi) > 1.0 and max(abs(lo), abs(hi)) < 10.5      # coloured, within the +-10 dB


def _augmenter(rooms, **over):
    probs = dict(utterance_prob=1.0, tempo_prob=0.5, reverb_prob=0.5, noise_prob=0.9, telephone_prob=0.3,
                 codec_prob=0.3, eq_prob=0.3, clip_prob=0.2)
    cfg = A.WaveAugmentConfig(**{**probs, **over})
    return A.WaveAugmenter(cfg, rooms, [np.random.default_rng(9).standard_normal(4 * SR).astype(np.float32)])


def test_draws_are_reproducible_from_the_batch_rng(rooms, tone):
    aug = _augmenter(rooms)
    x = tone(1.5)
    a = [aug(x, random.Random(f"7-0-{k}")) for k in range(6)]
    b = [aug(x, random.Random(f"7-0-{k}")) for k in range(6)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert len({p.tobytes() for p in a}) == 6              # different batches, different draws
    assert all(np.isfinite(p).all() and np.abs(p).max() <= 1.0 for p in a)
    assert not aug.failures


def test_a_failing_source_is_counted_and_the_utterance_kept(tone, caplog):
    aug = _augmenter([np.array([np.nan], np.float32)], reverb_prob=1.0)     # a broken "room"
    x = tone(1.0)
    rng = random.Random(0)
    outs = [aug(x, rng, f"u{k}") for k in range(5)]
    assert all(o.size > 0 and np.isfinite(o).all() and np.abs(o).max() > 0 for o in outs)
    assert aug.failures["reverb"] == 5
    bad = A.WaveAugmenter(A.WaveAugmentConfig(utterance_prob=1, codec_prob=1.0, codecs=("mp3",)), [], [])
    bad_codec = A.CODECS.copy()
    try:
        A.CODECS["mp3"] = ("NOPE", "NOPE", 16000)
        out = bad(x, random.Random(1), "utt7")
    finally:
        A.CODECS.update(bad_codec)
    assert bad.failures["codec"] == 1 and out.size == x.size and "utt7" in caplog.text


def test_wave_augmented_training_features(tmp_path, wav_dir, rooms):
    """Batches with waveform augmentation are the same from any process given the batch RNG;
    utterance_prob 0 gives exactly the cached features."""
    from asr.batching import BatchIterator
    from asr.data import Utterance
    from asr.dataset import TrainingSet, with_wave_augmentation
    from asr.features import FeatureConfig, build_feature_cache
    from asr.text import CharTokenizer

    utts = [Utterance("g", str(wav_dir / "good.wav"), 1.0, "one", "s"),
            Utterance("st", str(wav_dir / "stereo44.wav"), 0.5, "two", "s")]
    cache = build_feature_cache(utts, FeatureConfig(), tmp_path / "c.pt", max_seconds=60)
    tok = CharTokenizer()
    plain = TrainingSet(cache["ids"], cache["feats"], [tok.encode(u.text) for u in utts], [u.text for u in utts])
    aug = with_wave_augmentation(plain, utts, _augmenter(rooms), FeatureConfig(), 60.0)
    batches = BatchIterator(aug.feats, aug.targets, 10_000, None, 0)
    x1, lens1, *_ = batches.collate([0, 1], batches.batch_rng(0, 3), 0)
    x2, lens2, *_ = batches.collate([0, 1], batches.batch_rng(0, 3), 0)
    assert torch.equal(x1, x2) and torch.equal(lens1, lens2)
    ref, ref_lens = BatchIterator(plain.feats, plain.targets, 10_000, None, 0).collate([0, 1], batches.batch_rng(0, 3), 0)[:2]
    assert not torch.equal(x1[:, : ref.shape[1]], ref)      # augmented features differ
    off = with_wave_augmentation(plain, utts, A.WaveAugmenter(A.WaveAugmentConfig(), rooms), FeatureConfig(), 60.0)
    x3, lens3, *_ = BatchIterator(off.feats, off.targets, 10_000, None, 0).collate([0, 1], batches.batch_rng(0, 3), 0)
    assert torch.equal(x3, ref) and torch.equal(lens3, ref_lens)


def test_ramp_epochs_starts_clean_and_reaches_the_share(tmp_path, wav_dir, rooms):
    """``ramp_epochs``: epoch 1 trains on the plain features, the share then grows linearly;
    the epoch's draws say which utterances collate augments."""
    from dataclasses import replace
    from asr.batching import BatchIterator
    from asr.data import Utterance
    from asr.dataset import TrainingSet, with_wave_augmentation
    from asr.features import FeatureConfig, build_feature_cache
    from asr.text import CharTokenizer

    cfg = replace(_augmenter(rooms).cfg, utterance_prob=0.8, ramp_epochs=2)
    assert [cfg.share(e) for e in range(4)] == [0.0, 0.4, 0.8, 0.8]
    utts = [Utterance("g", str(wav_dir / "good.wav"), 1.0, "one", "s")]
    cache = build_feature_cache(utts, FeatureConfig(), tmp_path / "c.pt", max_seconds=60)
    n = 400
    plain = TrainingSet([f"g{i}" for i in range(n)], cache["feats"] * n, [CharTokenizer().encode("one")] * n, ["one"] * n)
    aug = with_wave_augmentation(plain, [replace(utts[0], id=f"g{i}") for i in range(n)], A.WaveAugmenter(cfg, rooms),
                                 FeatureConfig(), 60.0)
    it = BatchIterator(aug.feats, aug.targets, 10_000, None, 0)
    shares = [sum(it.draws(e).wave) / n for e in range(3)]
    assert shares[0] == 0 and 0.3 < shares[1] < 0.5 and 0.7 < shares[2] < 0.9
    d = it.draws(2)
    on, off = d.wave.index(True), d.wave.index(False)
    ref = plain.feats[0].float()
    for i, expect_changed in ((on, True), (off, False)):
        x = it.collate([i], it.batch_rng(2, 0), 2)[0][0]
        assert (x.shape != ref.shape or not torch.equal(x, ref)) == expect_changed


def test_batches_are_made_on_the_lengths_the_draws_give(tmp_path, wav_dir, rooms):
    """Speed and tempo are drawn with the epoch: a batch's padded length is its longest
    utterance as drawn, and within max_frames."""
    from asr.batching import BatchIterator
    from asr.data import AugmentConfig

    feats = [torch.zeros(50 + 3 * k, 80) for k in range(60)]
    targets = [[1]] * 60
    cfg = AugmentConfig(speed_factors=(0.8, 1.0, 1.25), freq_masks=0, time_masks=0, gain_db=0.0, warp_range=(1.0, 1.0))
    it = BatchIterator(feats, targets, 1000, cfg, 3)
    for e in range(3):
        d = it.draws(e)
        assert len(set(d.speed)) == 3 and d == it.draws(e)
        for b, batch in enumerate(it.epoch(e)):
            x, lens, *_ = it.collate(batch, it.batch_rng(e, b), e)
            assert x.shape[0] * x.shape[1] <= 1000 + x.shape[0]          # rounding: a frame each
            want = [round(feats[i].shape[0] / d.speed[i]) for i in batch]
            assert lens.tolist() == want


@pytest.mark.parametrize("domain", ["features", "waveform"])
def test_tempo_in_either_domain_changes_length_and_keeps_pitch(tmp_path, tone, domain):
    """An augmented utterance's drawn tempo: 1.25x faster is 1/1.25 of the frames, with the
    tone's mel band unchanged (pitch kept), whether the frames or the waveform are stretched."""
    import soundfile as sf
    from asr.data import Utterance
    from asr.dataset import WaveAugmentedFeatures
    from asr.features import FeatureConfig, FeatureExtractor

    sf.write(tmp_path / "t.wav", tone(2.0, freq=1000.0), SR)
    u = Utterance("t", str(tmp_path / "t.wav"), 2.0, "x", "s")
    plain = FeatureExtractor(FeatureConfig())(tone(2.0, freq=1000.0))
    cfg = A.WaveAugmentConfig(utterance_prob=1.0, tempo_prob=1.0, tempo_domain=domain, level_db_range=(0.0, 0.0))
    w = WaveAugmentedFeatures([plain], [u], A.WaveAugmenter(cfg), FeatureConfig(), 60.0)
    out = w.augmented(0, random.Random(0), 1.25).float()
    assert abs(out.shape[0] - plain.shape[0] / 1.25) <= 3
    mid = slice(out.shape[0] // 4, 3 * out.shape[0] // 4)
    assert int(out[mid].mean(0).argmax()) == int(plain[plain.shape[0] // 4: 3 * plain.shape[0] // 4].mean(0).argmax())

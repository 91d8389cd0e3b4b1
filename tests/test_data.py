import json
import random

import pytest
import torch

from asr.data import AugmentConfig
from asr.batching import BatchIterator, pad_batch, spec_augment, speed_perturb
from asr.data import (DataError, ManifestError, apply_oov_policy, Utterance, bucket_batches, oversample,
                      read_manifest, validate_utterances, write_manifest)
from asr.text import CharTokenizer


def _utt(i, text="one two", audio="a.wav"):
    return Utterance(f"u{i}", audio, 1.5, text, "spk")


def test_manifest_roundtrip(tmp_path):
    utts = [_utt(i) for i in range(3)]
    write_manifest(utts, tmp_path / "m.jsonl")
    assert read_manifest(tmp_path / "m.jsonl") == utts


@pytest.mark.parametrize("line,msg", [
    ('{"id": "a"}', r"m\.jsonl:2: missing field"),
    ("not json", r"m\.jsonl:2: invalid JSON"),
    ('{"id": "", "audio": "a", "duration": 1, "text": "x", "speaker": "s"}', r"m\.jsonl:2: empty id"),
    ('{"id": "b", "audio": "a", "duration": -1, "text": "x", "speaker": "s"}', r"m\.jsonl:2: duration"),
    ('{"id": "u0", "audio": "a", "duration": 1, "text": "x", "speaker": "s"}', r"m\.jsonl:2: duplicate id"),
    ('[1, 2]', r"m\.jsonl:2: expected a JSON object"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, msg):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps(_utt(0).__dict__) + "\n" + line + "\n")
    with pytest.raises(ManifestError, match=msg):
        read_manifest(p)


def test_non_utf8(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: not valid UTF-8"):
        read_manifest(p)


def test_validate_reports_each_problem(tmp_path):
    (tmp_path / "ok.wav").write_bytes(b"x")
    ok = str(tmp_path / "ok.wav")
    utts = [_utt(0, audio=ok), _utt(1, "", ok), _utt(2, "caps ARE bad", ok), _utt(3, audio="/nope.wav"),
            Utterance("long", ok, 99.0, "one", "s")]
    good, bad = validate_utterances(utts, CharTokenizer(), oov_policy="drop", max_duration_s=60)
    assert [u.id for u in good] == ["u0"]
    assert [b.id for b in bad] == ["u1", "u2", "u3", "long"] and {b.kind for b in bad} == {"skipped"}
    assert "empty transcript" in bad[0].reason and "'AER'" in bad[1].reason
    assert "not found" in bad[2].reason and "too long" in bad[3].reason


def test_oov_policies():
    tok = CharTokenizer()
    u = _utt(0, "Call 911, now!")
    mapped, note = apply_oov_policy(u, tok, "map")
    assert mapped.text == "call nine one one now" and note.kind == "mapped" and note.id == "u0"
    assert apply_oov_policy(_utt(1, "###"), tok, "map")[0] is None
    assert apply_oov_policy(u, tok, "drop")[0] is None
    with pytest.raises(DataError, match=r"u0: characters outside the vocabulary.*oov_policy=fail"):
        apply_oov_policy(u, tok, "fail")
    assert apply_oov_policy(_utt(2, "fine text"), tok, "fail") == (_utt(2, "fine text"), None)


def test_bucket_batches_cover_all_once_and_respect_cap():
    rng = random.Random(0)
    lengths = [rng.randint(50, 700) for _ in range(500)]
    batches = bucket_batches(lengths, 4000, seed=3, noise=5)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 4000 or len(b) == 1
    # similar lengths inside a batch: padding waste small
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded / sum(lengths) < 1.15
    assert batches != bucket_batches(lengths, 4000, seed=4, noise=5)
    assert batches == bucket_batches(lengths, 4000, seed=3, noise=5)


def test_pad_and_augment_shapes():
    feats = [torch.randn(30, 80), torch.randn(20, 80)]
    x, lens = pad_batch(feats)
    assert x.shape == (2, 30, 80) and lens.tolist() == [30, 20]
    assert torch.equal(x[1, :20], feats[1]) and x[1, 20:].abs().sum() == 0
    assert speed_perturb(feats[0], 1.1).shape == (27, 80)
    assert speed_perturb(feats[0], 0.9).shape == (33, 80)
    cfg = AugmentConfig(freq_masks=1, freq_mask_width=10, time_masks=1, time_mask_ratio=0.2)
    out = spec_augment(feats[0], cfg, random.Random(1))
    assert out.shape == feats[0].shape and not torch.equal(out, feats[0])


def test_batch_iterator_targets():
    feats = [torch.randn(60 + i, 80).half() for i in range(10)]
    targets = [[1, 2, 3][: 1 + i % 3] for i in range(10)]
    it = BatchIterator(feats, targets, 300, None, seed=0)
    plan = it.epoch(0)
    assert sorted(i for b in plan for i in b) == list(range(10))
    x, lens, tgt, tgt_lens = it.collate(plan[0], random.Random(0), 0)
    assert x.shape[0] == len(plan[0]) == tgt_lens.numel()
    assert tgt.numel() == int(tgt_lens.sum())


def test_oversample_repeats_matching_speakers_only():
    utts = [Utterance(f"u{i}", "a.wav", 1.0, "one", spk)
            for i, spk in enumerate(["kokoro:jm_kumo", "espeak:en+m1", "kokoro:jf_alpha", "flite:kal"])]
    out = oversample(utts, {"kokoro:": 3, "flite:": 2})
    assert [u.id for u in out] == ["u0"] * 3 + ["u1"] + ["u2"] * 3 + ["u3"] * 2
    assert oversample(utts, {}) == utts


def test_quiet_lead_is_planned_and_made_of_the_utterances_background():
    # a loud utterance with a quiet stretch: the lead must be copies of the quiet frames, and the
    # batch plan must count the lead (batches are made on the lengths they will have)
    feats = []
    for i in range(12):
        f = torch.full((50 + i, 80), 5.0)
        f[:8] = -7.0 - i                                   # its own background
        feats.append(f)
    targets = [[1, 2]] * 12
    cfg = AugmentConfig(speed_factors=(1.0,), freq_masks=0, time_masks=0, gain_db=0.0,
                        lead_prob=1.0, lead_range_frames=(20, 40))
    it = BatchIterator(feats, targets, 10_000, cfg, seed=0)
    d = it.draws(0)
    assert all(20 <= n <= 40 for n in d.lead) and len(set(d.lead)) > 1
    x, lens, *_ = it.collate(list(range(12)), it.batch_rng(0, 0), 0)
    for i in range(12):
        assert int(lens[i]) == d.length(i, feats[i].shape[0]) == feats[i].shape[0] + d.lead[i]
        lead = x[i, : d.lead[i]]
        assert torch.all(lead == -7.0 - i)                  # background, not speech
        assert torch.equal(x[i, d.lead[i]: int(lens[i])], feats[i])
    # off (the default): the draws other augmentation makes are the same as before
    plain = BatchIterator(feats, targets, 10_000, AugmentConfig(), seed=0).draws(0)
    withlead = BatchIterator(feats, targets, 10_000, AugmentConfig(lead_prob=0.5), seed=0).draws(0)
    assert plain.lead == () and plain.speed == withlead.speed and any(withlead.lead)


def test_lead_config_is_checked():
    with pytest.raises(Exception, match="lead_range_frames"):
        AugmentConfig(lead_range_frames=(50, 10)).check("augment")
    with pytest.raises(Exception, match="lead_prob"):
        AugmentConfig(lead_prob=1.5).check("augment")

"""The Recognizer: model + tokenizer + features + decoder; manifests, features and audio in,
hypotheses out; word times come from the decoded token ids."""
import torch

import asr
from asr.checkpoint import model_payload
from asr.data import Utterance
from asr.decode import DecodeConfig, GreedyDecoder, Hypothesis
from asr.features import FeatureConfig
from asr.files import atomic_save
from asr.recognizer import Recognizer, decode_utterances
from asr.text import CharTokenizer

TOK = CharTokenizer()


def test_decode_utterances_keeps_unreadable_as_empty(tiny_recognizer, wav_dir):
    utts = [Utterance("g", str(wav_dir / "good.wav"), 1.0, "one", "s"),
            Utterance("j", str(wav_dir / "junk.wav"), 1.0, "two", "s")]
    hyps, stats, problems = decode_utterances(tiny_recognizer, utts)
    assert set(hyps) == {"g", "j"} and hyps["j"] == "" and stats["skipped"] == 1
    assert [p.id for p in problems] == ["j"] and "junk.wav" in problems[0].reason


def test_decode_features_batches_like_one_by_one(tiny_recognizer):
    torch.manual_seed(1)
    feats = [torch.randn(n, 80) for n in (90, 45, 60)]
    batched = tiny_recognizer.decode_features(feats, batch_frames=1000)
    alone = [tiny_recognizer.decode_features([f])[0] for f in feats]
    assert [h.ids for h in batched] == [h.ids for h in alone]
    emis = tiny_recognizer.emissions(feats)
    assert [e.shape[0] for e in emis] == [30, 15, 20]          # T // stack frames each


class _Fixed:
    """A decoder that always 'decodes' the given ids with some other text."""

    def __init__(self, ids, text):
        self.ids, self.text = ids, text

    def __call__(self, log_probs, out_lens):
        return [Hypothesis(list(self.ids), self.text, 0.0) for _ in range(log_probs.shape[0])]


def test_word_times_come_from_the_decoded_ids(tiny_recognizer, tone):
    """Alignment uses the decoder's ids, not a re-encoding of its text (for BPE they differ)."""
    ids = TOK.encode("one two")
    tr = tiny_recognizer.transcribe(tone(2.0), decoder=_Fixed(ids, "something else"))
    assert tr.text == "something else"
    assert [w.word for w in tr.words] == ["one", "two"]
    assert 0 <= tr.words[0].start <= tr.words[0].end <= tr.words[1].start <= tr.words[1].end <= 2.0
    assert all(0 < w.confidence <= 1 for w in tr.words)


def test_load_builds_the_pipeline_from_a_checkpoint(tmp_path, tiny_model, tone):
    atomic_save(model_payload(tiny_model, FeatureConfig(n_mels=80, hop_ms=10.0), TOK, {"epoch": 3}), tmp_path / "m.pt")
    rec = asr.load(tmp_path / "m.pt")
    assert isinstance(rec, Recognizer) and isinstance(rec.decoder, GreedyDecoder) and rec.info == {"epoch": 3}
    assert rec.frame_s == 0.03 and rec.min_samples == 480
    beam = asr.load(tmp_path / "m.pt", decode=DecodeConfig(beam_size=4), method="beam")
    x = tone(1.5)
    a, b = rec.transcribe(x), beam.transcribe(x)
    assert a.duration == b.duration == 1.5
    # the same recognizer, another default decoder: with_decoder returns a copy
    assert rec.with_decoder(beam.decoder).decoder is beam.decoder and rec.decoder is not beam.decoder

import torch

from asr.data import Utterance
from asr.decode import decode_utterances, greedy_decode


def _onehot(seq, v=5):
    return torch.nn.functional.one_hot(torch.tensor(seq), v).float().log_softmax(-1)


def test_greedy_collapses_repeats_and_blanks():
    lp = torch.stack([_onehot([1, 1, 0, 1, 2, 2, 0, 0]), _onehot([3, 0, 3, 3, 4, 4, 4, 4])])
    assert greedy_decode(lp, torch.tensor([8, 4])) == [[1, 1, 2], [3, 3]]


def test_decode_utterances_keeps_unreadable_as_empty(tiny_model, wav_dir):
    utts = [Utterance("g", str(wav_dir / "good.wav"), 1.0, "one", "s"),
            Utterance("j", str(wav_dir / "junk.wav"), 1.0, "two", "s")]
    hyps, stats = decode_utterances(tiny_model.eval(), utts)
    assert set(hyps) == {"g", "j"} and hyps["j"] == "" and stats["skipped"] == 1

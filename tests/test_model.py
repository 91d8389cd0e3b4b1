import torch
import torch.nn.functional as F

from asr.model import reverse_padded
from asr.text import CharTokenizer


def test_forward_shapes(tiny_model):
    x = torch.randn(3, 100, 80)
    lens = torch.tensor([100, 90, 31])
    log_probs, out_lens = tiny_model(x, lens)
    assert log_probs.shape == (3, 33, 29)
    assert out_lens.tolist() == [33, 30, 10]
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 33))


def test_reverse_padded():
    x = torch.arange(10.0).view(2, 5, 1)
    out = reverse_padded(x, torch.tensor([5, 3]))
    assert out[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert out[1, :, 0].tolist() == [7, 6, 5, 8, 9]      # padding stays in place


def test_padded_batch_matches_unpadded(tiny_model):
    """The backward direction must not read padding: batch outputs equal one-by-one outputs."""
    tiny_model.eval()
    a, b = torch.randn(90, 80), torch.randn(45, 80)
    x = torch.zeros(2, 90, 80)
    x[0], x[1, :45] = a, b
    batch, out_lens = tiny_model(x, torch.tensor([90, 45]))
    alone, _ = tiny_model(b.unsqueeze(0), torch.tensor([45]))
    torch.testing.assert_close(batch[1, : out_lens[1]], alone[0], atol=1e-5, rtol=1e-4)


def test_fused_inference_matches_per_direction_layers(tiny_model, monkeypatch):
    """Unpadded inference runs all layers in one bidirectional torch.lstm call; it must give
    what the per-direction layers (the training path) give, and padded batches must not use it."""
    tiny_model.eval()
    x, lens = torch.randn(2, 60, 80), torch.tensor([60, 60])
    reference, _ = tiny_model(x, lens)                 # grad enabled: per-direction layers
    calls = []
    real_lstm = torch.lstm
    monkeypatch.setattr(torch, "lstm", lambda *a: calls.append(a) or real_lstm(*a))
    with torch.inference_mode():
        fused, _ = tiny_model(x, lens)
        assert len(calls) == 1 and calls[0][4] == tiny_model.cfg.layers     # one call, all layers
        torch.testing.assert_close(fused, reference, atol=1e-6, rtol=1e-5)
        calls.clear()
        tiny_model(x, torch.tensor([60, 45]))           # padded: the per-direction layers (nn.LSTM)
        assert calls == []


def test_overfits_one_batch(tiny_model):
    torch.manual_seed(0)
    tok = CharTokenizer()
    texts = ["one two", "nine", "oh five six"]
    x = torch.randn(3, 120, 80)
    lens = torch.tensor([120, 80, 110])
    targets = torch.tensor([i for t in texts for i in tok.encode(t)])
    tgt_lens = torch.tensor([len(t) for t in texts])
    opt = torch.optim.Adam(tiny_model.parameters(), lr=1e-2)
    tiny_model.train()
    for _ in range(250):
        log_probs, out_lens = tiny_model(x, lens)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, tgt_lens, reduction="mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_speech_frame_cmn_ignores_surrounding_silence():
    """With cmn_floor_db the per-utterance mean comes from speech frames only, so padding an
    utterance with digital silence does not change its normalised features."""
    from asr.model import BiLSTMCTC, ModelConfig

    torch.manual_seed(0)
    speech = torch.randn(1, 100, 80) + 2
    silence = torch.full((1, 60, 80), -13.8)              # log(1e-6): digital silence
    padded = torch.cat([silence, speech, silence], 1)
    for floor_db, invariant in ((30.0, True), (0.0, False)):
        m = BiLSTMCTC(ModelConfig(hidden=8, layers=1, utterance_cmn=True, cmn_floor_db=floor_db), 80, 29)
        a = m._utterance_cmn(speech, speech, torch.tensor([100]))
        b = m._utterance_cmn(padded, padded, torch.tensor([220]))[:, 60:160]
        assert torch.allclose(a, b, atol=1e-5) == invariant


def test_utterance_cvn_removes_per_channel_gain_and_offset():
    """utterance_cvn: an utterance whose log-mels are scaled and shifted per channel (a different
    channel or engine, to first order) gives the same model input; without it, only the shift goes."""
    from asr.model import BiLSTMCTC, ModelConfig

    torch.manual_seed(0)
    feats = torch.randn(2, 90, 80)
    lens = torch.tensor([90, 60])
    other = feats * (0.5 + torch.rand(80)) + 3 * torch.randn(80)
    for cvn in (True, False):
        m = BiLSTMCTC(ModelConfig(hidden=8, layers=1, utterance_cmn=True, utterance_cvn=cvn), 80, 29)
        a, b = m._utterance_cmn(feats, feats, lens), m._utterance_cmn(other, other, lens)
        assert torch.allclose(a[1, :60], b[1, :60], atol=1e-4) == cvn
        assert float(a[1, 60:].abs().max()) == 0.0                # padding stays zero
        if cvn:
            torch.testing.assert_close(a[0].std(0, unbiased=False), torch.ones(80), atol=1e-4, rtol=1e-4)

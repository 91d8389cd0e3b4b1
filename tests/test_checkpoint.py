"""Self-describing checkpoints: round trip into a Recognizer (fp32 and int8), refusal of pickled
payloads and foreign files, checkpoint averaging."""
import pickle

import pytest
import torch

import asr
from asr.checkpoint import CheckpointError, average_payloads, load_checkpoint, model_payload
from asr.errors import MissingFileError
from asr.features import FeatureConfig
from asr.files import atomic_save
from asr.text import CharTokenizer


def test_checkpoint_roundtrip(tmp_path, tiny_model):
    tiny_model.set_cmvn(torch.full((80,), 2.0), torch.full((80,), 3.0))
    atomic_save(model_payload(tiny_model, FeatureConfig(), CharTokenizer(), {"note": "x"}), tmp_path / "m.pt")
    rec = asr.load(tmp_path / "m.pt")
    assert rec.model.cfg == tiny_model.cfg and rec.info == {"note": "x"}
    assert rec.tokenizer.vocab == CharTokenizer().vocab and rec.feature_config == FeatureConfig()
    x, lens = torch.randn(1, 60, 80), torch.tensor([60])
    tiny_model.eval()
    torch.testing.assert_close(rec.model(x, lens)[0], tiny_model(x, lens)[0])
    assert torch.equal(rec.model.cmvn_mean, torch.full((80,), 2.0))
    q = asr.load(tmp_path / "m.pt", int8=True)                  # int8: same pipeline, quantized LSTMs
    assert q.tokenizer.vocab == rec.tokenizer.vocab and q.info == rec.info
    assert type(q.model.layers[0].fwd) is not torch.nn.LSTM
    assert (q.model(x, lens)[0].argmax(-1) == rec.model(x, lens)[0].argmax(-1)).float().mean() > 0.9


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_payload_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": "asr-bilstm-ctc-v1", "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match="evil.pt.*not a loadable"):
        load_checkpoint(p)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match="raw.pt"):
        load_checkpoint(raw)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(MissingFileError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an asr model"):
        load_checkpoint(tmp_path / "other.pt")


def test_average_payloads_is_the_elementwise_mean(tmp_path, tiny_model):
    paths = []
    for i, scale in enumerate((1.0, 2.0, 6.0)):
        with torch.no_grad():
            for p in tiny_model.parameters():
                p.fill_(scale)
        paths.append(tmp_path / f"epoch{i}.pt")
        atomic_save(model_payload(tiny_model, FeatureConfig(), CharTokenizer(), {"epoch": i}), paths[-1])
    atomic_save(average_payloads(paths, {"note": "avg"}), tmp_path / "avg.pt")
    avg = load_checkpoint(tmp_path / "avg.pt")
    assert all(torch.allclose(p, torch.full_like(p, 3.0)) for p in avg.model.parameters())
    assert avg.info["epoch"] == 2 and avg.info["note"] == "avg" and len(avg.info["averaged"]) == 3
    other = tiny_model.__class__(tiny_model.cfg.__class__(stack=3, hidden=8, layers=1), 80, 30)
    atomic_save(model_payload(other, FeatureConfig(), CharTokenizer()), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: model_config differs"):
        average_payloads([paths[0], tmp_path / "other.pt"])
    from asr.cli import main

    assert main(["average", "--out", str(tmp_path / "cli.pt"), *map(str, paths)]) == 0
    assert torch.equal(next(load_checkpoint(tmp_path / "cli.pt").model.parameters()), next(avg.model.parameters()))
    assert main(["average", "--out", str(tmp_path / "x.pt"), str(paths[0]), str(tmp_path / "nope.pt")]) == 2

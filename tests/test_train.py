"""The training loop on tiny random-feature data: learning, skipping bad items, exact resume."""
import json

import pytest
import torch

from asr.config import AugmentConfig, ModelConfig, RecipeConfig, TrainConfig
from asr.data import Utterance
from asr.model import load_model
from asr.text import CharTokenizer
from asr.train import TrainingSet, build_set, ctc_min_frames, lr_lambda, train


def _data(n: int, seed: int) -> TrainingSet:
    """Each character has its own feature pattern (6 frames), so the mapping is learnable."""
    g = torch.Generator().manual_seed(0)
    tok = CharTokenizer()
    protos = {c: torch.randn(80, generator=g) * 2 for c in " enostwix"}
    g.manual_seed(seed)
    words = ["one", "two", "six"]
    out = TrainingSet([], [], [], [])
    for i in range(n):
        text = " ".join(words[int(torch.randint(3, (1,), generator=g))] for _ in range(1 + i % 2))
        clean = torch.cat([protos[c].repeat(6, 1) for c in text])
        out.ids.append(f"u{i}")
        out.feats.append((clean + 0.3 * torch.randn(clean.shape, generator=g)).half())
        out.texts.append(text)
        out.targets.append(tok.encode(text))
    return out


def _cfg(tmp_path, epochs=4) -> RecipeConfig:
    return RecipeConfig(
        exp_dir=str(tmp_path),
        model=ModelConfig(stack=3, hidden=24, layers=1, dropout=0.0),
        augment=AugmentConfig(speed_factors=(1.0,), freq_masks=0, time_masks=0, gain_db=0.0),
        train=TrainConfig(epochs=epochs, max_batch_frames=800, lr=1e-2, warmup_steps=2,
                          patience=10, threads=1, progress=False))


def test_lr_schedule():
    assert lr_lambda(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_lambda(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_lambda(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert 0.1 < lr_lambda(50, 10, 100, 0.1) < 1.0


def test_ctc_min_frames():
    assert ctc_min_frames([1, 2, 3]) == 3
    assert ctc_min_frames([1, 1, 2, 2, 2]) == 8


def test_build_set_skips_and_reports(tmp_path):
    tok = CharTokenizer()
    utts = [Utterance("ok", "a.wav", 1.0, "one", "s"), Utterance("empty", "a.wav", 1.0, "", "s"),
            Utterance("short", "a.wav", 0.1, "one two three", "s"), Utterance("nofeat", "a.wav", 1.0, "one", "s"),
            Utterance("oov", "a.wav", 1.0, "one 1", "s")]
    cache = {"ids": ["ok", "empty", "short", "oov"], "feats": [torch.zeros(90, 80), torch.zeros(90, 80),
                                                                torch.zeros(20, 80), torch.zeros(90, 80)]}
    data = build_set(utts, cache, tok, 3, "train", tmp_path / "skipped.txt")
    assert data.ids == ["ok"]
    report = (tmp_path / "skipped.txt").read_text()
    for uid in ("empty", "short", "nofeat", "oov"):
        assert f"{uid}\t" in report
    assert "too short for CTC" in report


def test_train_learns_and_keeps_best(tmp_path):
    best = train(_cfg(tmp_path, epochs=6), _data(96, 0), _data(24, 1), tmp_path, CharTokenizer())
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert min(e["wer"] for e in log) < 50.0
    model = load_model(best)
    assert model.info["dev_wer"] == min(e["wer"] for e in log)


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    train_set, dev_set = _data(64, 0), _data(16, 1)
    full = tmp_path / "full"
    train(_cfg(full), train_set, dev_set, full, CharTokenizer())

    import asr.train as T
    real_run_epoch, calls = T.run_epoch, []

    def crash_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run_epoch(*args, **kwargs)

    part = tmp_path / "part"
    monkeypatch.setattr(T, "run_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(part), train_set, dev_set, part, CharTokenizer())
    monkeypatch.setattr(T, "run_epoch", real_run_epoch)
    train(_cfg(part), train_set, dev_set, part, CharTokenizer())
    a = torch.load(full / "last.pt", weights_only=True)["model"]["state_dict"]
    b = torch.load(part / "last.pt", weights_only=True)["model"]["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(torch.load(part / "last.pt", weights_only=True)["history"]) == 4

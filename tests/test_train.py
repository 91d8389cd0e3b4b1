"""The training loop on tiny random-feature data: learning, skipping bad items, exact resume."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import asr.train as T
from asr.checkpoint import load_checkpoint
from asr.data import AugmentConfig, Utterance
from asr.errors import AsrError
from asr.runtime import native_bf16, resolve_amp
from asr.text import CharTokenizer
from asr.schedule import lr_lambda
from asr.train import train


def test_lr_schedule():
    assert lr_lambda(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_lambda(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_lambda(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert 0.1 < lr_lambda(50, 10, 100, 0.1) < 1.0


class _Clock:
    """``time`` for asr.train where every ``perf_counter`` call is one second later: each batch
    takes exactly 1 s of the training budget."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        self.t += 1.0
        return self.t

    def __getattr__(self, name):
        return getattr(time, name)


def test_fit_to_budget_ends_the_schedule_with_the_budget(tmp_path, monkeypatch, data, train_cfg):
    """``train.fit_to_budget``: the cosine schedule is re-planned to end where ``max_minutes``
    runs out, so the learning rate is at its floor when the cap stops the run; a plain cap stops
    it mid-schedule with the learning rate high."""
    from asr.batching import BatchIterator
    train_set, dev_set = data(96, 0), data(24, 1)
    base = train_cfg(tmp_path, epochs=6)
    base = replace(base, train=replace(base.train, max_batch_frames=150))     # enough steps to re-plan
    n = len(BatchIterator(train_set.feats, train_set.targets, base.train.max_batch_frames, base.augment,
                          base.train.seed).epoch(0))
    runs, totals = {}, {}
    for fit in (True, False):
        exp = tmp_path / str(fit)
        cfg = replace(base, train=replace(base.train, max_minutes=2.5 * n / 60, fit_to_budget=fit))
        monkeypatch.setattr(T, "time", _Clock())             # every batch takes 1 s
        train(cfg, train_set, dev_set, exp, CharTokenizer())
        runs[fit] = [json.loads(x) for x in (exp / "train_log.jsonl").read_text().splitlines()]
        state = torch.load(exp / "last.pt", weights_only=True)
        totals[fit] = state["scheduler"]["lr_lambdas"][0]["total"]     # resume continues this plan
    assert n >= 20 and len(runs[True]) == len(runs[False]) == 3      # 2.5 epochs either way
    assert abs(totals[True] - 2.5 * n) <= 2 and totals[False] == 6 * n
    assert runs[True][-1]["lr"] == pytest.approx(1e-2 * 0.05, rel=0.3)
    assert runs[False][-1]["lr"] > 0.5 * 1e-2


def test_train_learns_and_keeps_best(tmp_path, data, train_cfg):
    best = train(train_cfg(tmp_path, epochs=6), data(96, 0), data(24, 1), tmp_path, CharTokenizer())
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert min(e["wer"] for e in log) < 50.0
    assert load_checkpoint(best).info["dev_wer"] == min(e["wer"] for e in log)


def test_average_last_epochs(tmp_path, monkeypatch, data, train_cfg):
    """``train.average_last``: the last N epoch models are kept, averaged into avg.pt and scored
    on dev; best.pt is the average exactly when its dev WER is no worse than every epoch's."""
    cfg = train_cfg(tmp_path, epochs=5)
    cfg = replace(cfg, train=replace(cfg.train, average_last=3))
    best = train(cfg, data(96, 0), data(24, 1), tmp_path, CharTokenizer())
    assert sorted(p.name for p in tmp_path.glob("epoch*.pt")) == ["epoch3.pt", "epoch4.pt", "epoch5.pt"]
    *epochs, record = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(epochs) == 5 and record["averaged_epochs"] == [3, 4, 5]
    avg = load_checkpoint(tmp_path / "avg.pt")
    assert avg.info["dev_wer"] == record["wer"] and avg.info["averaged_epochs"] == [3, 4, 5]
    singles = [load_checkpoint(tmp_path / f"epoch{e}.pt").model for e in (3, 4, 5)]
    for name, p in avg.model.named_parameters():
        torch.testing.assert_close(p, sum(dict(m.named_parameters())[name] for m in singles) / 3)
    best_wer = min(e["wer"] for e in epochs)
    assert record["chosen"] == (record["wer"] <= best_wer)
    # a finished run called again only re-averages: same record
    train(cfg, data(96, 0), data(24, 1), tmp_path, CharTokenizer())
    assert json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[-1]) == record
    # an average better than every epoch becomes best.pt; the single best is kept aside ...
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: {"wer": 0.0, "cer": 0.0})
    train(cfg, data(96, 0), data(24, 1), tmp_path, CharTokenizer())
    assert load_checkpoint(best).info["averaged_epochs"] == [3, 4, 5]
    assert load_checkpoint(tmp_path / "best_single.pt").info["dev_wer"] == best_wer
    # ... and a worse one restores it
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: {"wer": 100.0, "cer": 100.0})
    train(cfg, data(96, 0), data(24, 1), tmp_path, CharTokenizer())
    assert load_checkpoint(best).info["dev_wer"] == best_wer and not (tmp_path / "best_single.pt").exists()


def test_amp_resolution(monkeypatch):
    """``auto`` picks bf16 only where the hardware has it; an explicit bf16 on a CPU without it
    is a clear error (oneDNN has no emulated bf16 LSTM) instead of a oneDNN traceback."""
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == ("bf16" if native_bf16(cpu) else "off")
    assert resolve_amp("fp16", cpu) == "fp16" and resolve_amp("off", cpu) == "off"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert resolve_amp("auto", cpu) == "off"
    with pytest.raises(AsrError, match="no native bf16"):
        resolve_amp("bf16", cpu)


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="this CPU has no native bf16")
def test_bf16_autocast_training_learns(tmp_path, data, train_cfg):
    """bf16 autocast on CPU trains as well as fp32 on the toy task, and what was used is logged
    and kept in the checkpoint."""
    cfg = train_cfg(tmp_path, epochs=6)
    cfg = replace(cfg, train=replace(cfg.train, amp="bf16"))
    best = train(cfg, data(96, 0), data(24, 1), tmp_path, CharTokenizer())
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert {e["amp"] for e in log} == {"bf16"}
    assert log[-1]["loss"] < 0.5 * log[0]["loss"] and min(e["wer"] for e in log) < 50.0
    assert load_checkpoint(best).info["precision"] == "bf16"


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch, data, train_cfg):
    train_set, dev_set = data(64, 0), data(16, 1)
    full = tmp_path / "full"
    train(train_cfg(full), train_set, dev_set, full, CharTokenizer())

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
        train(train_cfg(part), train_set, dev_set, part, CharTokenizer())
    monkeypatch.setattr(T, "run_epoch", real_run_epoch)
    train(train_cfg(part), train_set, dev_set, part, CharTokenizer())
    a = torch.load(full / "last.pt", weights_only=True)["model"]["state_dict"]
    b = torch.load(part / "last.pt", weights_only=True)["model"]["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(torch.load(part / "last.pt", weights_only=True)["progress"]["history"]) == 4


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import asr.train as T
from asr.text import CharTokenizer
from tests.conftest import toy_cfg as _cfg, toy_data as _data
from pathlib import Path
from dataclasses import replace
slow = float(sys.argv[2])
real = T.run_batch
def run_batch(tr, batch, *args):
    time.sleep(slow)            # widen the window for the parent's SIGKILL
    real(tr, batch, *args)
T.run_batch = run_batch
exp = Path(sys.argv[1])
cfg = _cfg(exp)
cfg = replace(cfg, train=replace(cfg.train, checkpoint_every=1))
from asr.cli import setup_logging
setup_logging()
T.train(cfg, _data(64, 0), _data(16, 1), exp, CharTokenizer())
"""


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    """Kill training with SIGKILL mid-epoch, resume, and get the uninterrupted run's weights."""
    root = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=root))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "full"), "0"], check=True, env=env,
                   capture_output=True, cwd=root)
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path / "part"), "0.05"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    last, deadline, killed_at = tmp_path / "part" / "last.pt", time.time() + 120, None
    while time.time() < deadline and child.poll() is None:
        if last.exists():
            prog = torch.load(last, weights_only=True)["progress"]
            if prog["epoch"] == 1 and prog["batch"] >= 2:      # mid-way through the 2nd epoch
                child.send_signal(signal.SIGKILL)
                killed_at = (prog["epoch"], prog["batch"])
                break
        time.sleep(0.02)
    child.wait()
    assert killed_at is not None and child.returncode == -signal.SIGKILL
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "part"), "0"], env=env,
                         capture_output=True, text=True, cwd=root, check=True)
    assert "resumed from" in res.stderr
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    for k, v in a["model"]["state_dict"].items():
        assert torch.equal(v, b["model"]["state_dict"][k]), k
    assert [h["loss"] for h in a["progress"]["history"]] == [h["loss"] for h in b["progress"]["history"]]


def test_non_finite_batches_are_skipped_and_counted(tmp_path, monkeypatch, data, train_cfg):
    from asr.batching import BatchIterator
    real_collate = BatchIterator.collate

    def poisoned(self, batch, rng, epoch):
        x, *rest = real_collate(self, batch, rng, epoch)
        if 5 in batch:
            x[0, 0, 0] = float("inf")
        return (x, *rest)

    monkeypatch.setattr(BatchIterator, "collate", poisoned)
    train(train_cfg(tmp_path, epochs=1), data(32, 0), data(8, 1), tmp_path, CharTokenizer())
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["progress"]["history"][0]["skipped_batches"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"]["state_dict"].values())


def test_out_of_memory_batch_is_split(tmp_path, monkeypatch, data, train_cfg):
    import asr.train as T
    real_step = T.train_step

    def step_failing_on_big_batches(tr, x, *rest):
        if x.shape[0] > 4:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB")
        return real_step(tr, x, *rest)

    monkeypatch.setattr(T, "train_step", step_failing_on_big_batches)
    train(train_cfg(tmp_path, epochs=1), data(32, 0), data(8, 1), tmp_path, CharTokenizer())
    hist = torch.load(tmp_path / "last.pt", weights_only=True)["progress"]["history"][0]
    assert hist["split_batches"] > 0 and hist["skipped_batches"] == 0


def test_loader_workers_train_exactly_like_the_loop(tmp_path, data, train_cfg):
    """Batches built in worker processes (with augmentation) give the same weights."""
    from dataclasses import replace

    base = train_cfg(tmp_path / "a", epochs=2)
    base = replace(base, augment=AugmentConfig(speed_factors=(0.9, 1.0, 1.1), freq_masks=1, freq_mask_width=4,
                                               time_masks=1, gain_db=3.0))
    with_workers = replace(base, exp_dir=str(tmp_path / "b"), train=replace(base.train, workers=2))
    train(base, data(48, 0), data(8, 1), tmp_path / "a", CharTokenizer())
    train(with_workers, data(48, 0), data(8, 1), tmp_path / "b", CharTokenizer())
    a, b = load_checkpoint(tmp_path / "a/last.pt").model, load_checkpoint(tmp_path / "b/last.pt").model
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_features_on_the_fly_match_the_cache_and_skip_bad_audio(tmp_path, wav_dir):
    from asr.features import FeatureConfig
    from asr.batching import BatchIterator
    from asr.features import LazyFeatures, build_feature_cache, feature_lengths

    utts = [Utterance("g", str(wav_dir / "good.wav"), 1.0, "one", "s"),
            Utterance("st", str(wav_dir / "stereo44.wav"), 0.5, "two", "s")]
    cache = build_feature_cache(utts, FeatureConfig(), tmp_path / "c.pt", max_seconds=600.0)
    lazy = LazyFeatures(utts, FeatureConfig())
    assert feature_lengths(lazy) == [f.shape[0] for f in cache["feats"]]
    assert all(torch.equal(a, b) for a, b in zip(lazy, cache["feats"]))
    assert len(lazy[1:]) == 1 and torch.equal(lazy[1:][0], cache["feats"][1])
    bad = LazyFeatures(utts + [Utterance("j", str(wav_dir / "junk.wav"), 1.0, "six", "s")], FeatureConfig())
    tok = CharTokenizer()
    batches = BatchIterator(bad, [tok.encode(t) for t in ("one", "two", "six")], 10_000, None, 0)
    x, lens, targets, tgt_lens = batches.collate([0, 1, 2], batches.batch_rng(0, 0), 0)
    assert x.shape[0] == 2 and tgt_lens.tolist() == [3, 3]             # junk left out, not fatal
    assert batches.collate([2], batches.batch_rng(0, 1), 0) is None




def test_fine_tuning_starts_from_another_model_and_chunk_aware_training_learns(tmp_path, data, train_cfg):
    """``train.init_from`` copies the weights (and CMVN) of a trained model, output rows by unit;
    ``train.stream_chunk`` trains the latency-controlled network streaming runs."""
    base = train(train_cfg(tmp_path / "base", epochs=3), data(96, 0), data(24, 1), tmp_path / "base", CharTokenizer())
    src = load_checkpoint(base).model
    cfg = train_cfg(tmp_path / "ft", epochs=1)
    cfg = replace(cfg, train=replace(cfg.train, init_from=str(base), stream_chunk=(2, 1), lr=1e-3))
    tr = T.make_trainer(cfg, data(96, 0), tmp_path / "ft", CharTokenizer(), T.Runtime.create("cpu", "off", 1))
    for (name, a), b in zip(tr.model.state_dict().items(), src.state_dict().values()):
        assert torch.equal(a, b), name                     # same vocabulary: everything copied
    assert isinstance(tr.net, T.LatencyControlled)
    start = [json.loads(x) for x in (tmp_path / "base/train_log.jsonl").read_text().splitlines()][-1]["wer"]
    best = train(cfg, data(96, 0), data(24, 1), tmp_path / "ft", CharTokenizer())
    log = [json.loads(x) for x in (tmp_path / "ft/train_log.jsonl").read_text().splitlines()]
    assert log[0]["loss"] < 30 and load_checkpoint(best).info["dev_wer"] <= max(start, 50.0)
    # a vocabulary with a unit the source model lacks: shared rows copied, the new one kept fresh
    from asr.checkpoint import init_from_checkpoint
    from asr.model import BiLSTMCTC

    tok = CharTokenizer()
    bigger = BiLSTMCTC(cfg.model, 80, len(tok) + 1)
    fresh = bigger.output.weight[-1].clone()
    tok.vocab = [*tok.vocab, "\u00e9"]
    summary = init_from_checkpoint(bigger, base, tok, cfg.features)
    assert torch.equal(bigger.output.weight[:-1], src.output.weight) and torch.equal(bigger.output.weight[-1], fresh)
    assert any(f"{len(tok.vocab) - 1}/{len(tok.vocab)} units" in c for c in summary["copied"])
    with pytest.raises(AsrError, match="features"):
        init_from_checkpoint(bigger, base, tok, replace(cfg.features, n_mels=40))
    wider = BiLSTMCTC(replace(cfg.model, hidden=cfg.model.hidden + 8), 80, len(tok))   # other shapes: kept
    summary = init_from_checkpoint(wider, base, tok, cfg.features)
    assert "output.weight" in summary["not_copied"] and "cmvn_mean" in summary["copied"]

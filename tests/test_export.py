"""asr.export + asr.lite: the ONNX graphs and the torch-free runtime give the torch model's
log-probs, text and word times; the streaming chunk graph carries its state exactly; an altered
export is refused; `asr transcribe --model DIR` never imports torch."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.checkpoint import model_payload
from asr.data import read_manifest
from asr.export import export_onnx
from asr.features import FeatureConfig
from asr.lite import ChunkRunner, ExportFormatError, load_lite
from asr.model import BiLSTMCTC, ModelConfig, latency_controlled
from asr.recognizer import decode_utterances, load
from asr.text import CharTokenizer
from tests.clirun import run_asr

ROOT = Path(__file__).resolve().parents[1]
# runs the CLI in-process, then reports whether anything imported torch
NO_TORCH = ("import sys; from asr.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH', any(m.split('.')[0] == 'torch' for m in sys.modules), file=sys.stderr); sys.exit(rc)")


def _checkpoint(path: Path, utterance_cmn: bool) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(stack=3, hidden=32, layers=2, dropout=0.0, utterance_cmn=utterance_cmn,
                      cmn_floor_db=30.0 if utterance_cmn else 0.0)
    model = BiLSTMCTC(cfg, 80, len(CharTokenizer()))
    model.set_cmvn(torch.randn(80) - 5, torch.rand(80) + 0.5)
    torch.save(model_payload(model, FeatureConfig(), CharTokenizer(), {"epoch": 1}), path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, export dir) for a random 2x32 model with utterance CMN."""
    tmp = tmp_path_factory.mktemp("export")
    ckpt = _checkpoint(tmp / "m.pt", utterance_cmn=True)
    export_onnx(ckpt, tmp / "onnx")
    return ckpt, tmp / "onnx"


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """Noise bursts over a quiet floor: frames of very different levels (exercises the CMN floor)."""
    rng = np.random.default_rng(seed)
    x = 0.001 * rng.standard_normal(int(16000 * seconds))
    for start in rng.integers(0, x.size - 4000, 5):
        x[start: start + 3000] += 0.3 * rng.standard_normal(3000) * np.hanning(3000)
    return x.astype(np.float32)


@pytest.mark.parametrize("utterance_cmn", [False, True])
def test_lite_log_probs_equal_torch(tmp_path, utterance_cmn):
    ckpt = _checkpoint(tmp_path / "m.pt", utterance_cmn)
    export_onnx(ckpt, tmp_path / "onnx", int8=False, chunk=False)
    rec, lite = load(ckpt), load_lite(tmp_path / "onnx")
    for seed, seconds in enumerate([0.3, 1.0, 2.71]):
        x = _speechlike(seconds, seed)
        feats = rec.features(x)
        lite_feats = lite.features(x)
        assert lite_feats.shape == tuple(feats.shape)
        assert np.abs(lite_feats - feats.numpy()).max() < 1e-2      # float32 vs float64 FFT near the floor
        ref, ref_lens = rec.forward([feats])
        got, got_lens = lite.forward([feats.numpy()])
        assert list(got_lens) == ref_lens.tolist()
        assert np.abs(got - ref.numpy()).max() < 1e-4
        assert lite.decoder(got, got_lens)[0].ids == rec.decoder(ref, ref_lens)[0].ids


@pytest.mark.parametrize("chunk,right,block", [(8, 4, 7), (3, 0, 1), (1, 2, 50), (5, 20, 13)])
def test_chunk_graph_carries_state_like_latency_controlled(exported, chunk, right, block):
    ckpt, out = exported
    rec, lite = load(ckpt), load_lite(out)
    feats = rec.features(_speechlike(1.9, 3))
    with torch.inference_mode():
        ref, _ = latency_controlled(rec.model, feats[None], torch.tensor([feats.shape[0]]), chunk, right)
    runner = ChunkRunner(lite, chunk, right)
    pieces = [runner.accept(feats[i: i + block].numpy()) for i in range(0, feats.shape[0], block)]
    got = np.concatenate([p for p in pieces + [runner.finish()] if p.size])
    assert got.shape == tuple(ref[0].shape)        # every output frame committed once
    assert np.abs(got - ref[0].numpy()).max() < 1e-4


def test_int8_graphs_stay_close(exported):
    ckpt, out = exported
    lite, lite8 = load_lite(out), load_lite(out, int8=True)
    feats = lite.features(_speechlike(2.0, 5))
    a, b = lite.emissions([feats])[0], lite8.emissions([feats])[0]
    assert a.shape == b.shape and np.abs(np.exp(a) - np.exp(b)).max() < 0.1   # posteriors, not bit-exact
    assert lite8.session.get_inputs()[0].name == "feats"
    desc = json.loads((out / "asr-export.json").read_text())
    assert set(desc["sha256"]) >= {"model.onnx", "model.int8.onnx", "chunk.onnx", "chunk.int8.onnx", "frontend.npz"}


def test_altered_export_is_refused(exported, tmp_path):
    import shutil

    _, out = exported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportFormatError, match="model.onnx: SHA-256 differs"):
        load_lite(bad)
    load_lite(bad, int8=True)                      # the int8 graph is intact and loads
    (bad / "asr-export.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ExportFormatError, match="expected format asr-onnx-v1"):
        load_lite(bad)
    res = run_asr("transcribe", "--model", str(bad), str(bad / "x.wav"))
    assert res.returncode == 2 and "asr-export.json: not an asr export" in res.stderr


def test_beam_search_on_an_export_is_a_named_error(exported, tmp_path):
    _, out = exported
    sf.write(tmp_path / "a.wav", _speechlike(1.0, 1), 16000)
    res = run_asr("transcribe", "--model", str(out), "--method", "beam",
                  str(tmp_path / "a.wav"))
    assert res.returncode == 2 and "decodes greedily" in res.stderr
    import asr
    from asr.config import ConfigError
    from asr.decode import DecodeConfig

    for kwargs in ({"method": "beam"}, {"decode": DecodeConfig(method="grammar", grammar="g.txt")}):
        with pytest.raises(ConfigError, match="decodes greedily"):        # the library call too, not silently greedy
            asr.load(out, **kwargs)
    assert asr.load(out, method="greedy").transcribe(_speechlike(1.0, 1)) is not None


@pytest.mark.espeak
@pytest.mark.parametrize("recipe", ["tiny_recipe", "tiny_sentences"])
def test_trained_models_same_text_without_torch(recipe, request, tmp_path):
    """A trained model (digits, sentences): `asr export`, then `asr transcribe --model DIR` in a
    process that never imports torch gives the checkpoint's text and word times; the whole
    test set decodes to the same greedy text through the library."""
    tmp = request.getfixturevalue(recipe)[0]
    ckpt = tmp / "exp/best.pt"
    out = tmp_path / "onnx"
    run_asr("export", "--model", str(ckpt), "--out", str(out), check=True)
    utts = read_manifest(tmp / "data/test_unseen.jsonl")
    rec, lite = load(ckpt), load_lite(out)
    ref, _, _ = decode_utterances(rec, utts)
    audio = [sf.read(u.audio, dtype="float32")[0] for u in utts]
    got = {u.id: h.text for u, h in zip(utts, lite.decoder(*lite.forward([lite.features(x) for x in audio])))}
    assert sum(ref[i] == got[i] for i in ref) >= len(ref) - 1
    assert any(ref.values()) or recipe == "tiny_sentences"   # the tiny sentences model may say nothing
    feats = [rec.features(x) for x in audio]                 # same features: log-probs within 1e-4
    for a, b in zip(rec.emissions(feats), lite.emissions([f.numpy() for f in feats])):
        assert np.abs(a.numpy() - b).max() < 1e-4
    files = [u.audio for u in utts[:4]]
    runs = {}
    for name, model in (("lite", out), ("torch", ckpt)):
        res = subprocess.run([sys.executable, "-c", NO_TORCH, "transcribe", "--model", str(model), *files,
                              "--output-dir", str(tmp_path / name), "--formats", "json"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        runs[name] = res.stderr
        assert ("TORCH False" in res.stderr) == (name == "lite")
    for f in files:
        a = json.loads((tmp_path / "lite" / f"{Path(f).stem}.json").read_text())
        b = json.loads((tmp_path / "torch" / f"{Path(f).stem}.json").read_text())
        assert a["text"] == b["text"]
        assert [(w["word"], w["start"], w["end"]) for w in a["words"]] == [(w["word"], w["start"], w["end"]) for w in b["words"]]
        assert all(abs(x["confidence"] - y["confidence"]) < 0.01 for x, y in zip(a["words"], b["words"]))

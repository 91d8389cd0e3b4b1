"""asr.calibration: the logistic calibration recovers known parameters and lowers the ECE, and its
segment features fix what scaling the word's confidence alone cannot (audio the model knows less
well); the metrics behave at their extremes; v1 files still load; `asr calibrate` writes a file
beside the model that transcription, evaluation and export then use."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asr.calibration import FEATURES, Calibration, CalibrationError, fit, label_words, metrics, word_features
from tests.clirun import run_asr

ROOT = Path(__file__).resolve().parents[1]


def _synthetic(n: int, a: float, b: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.05, 0.995, n)
    p = 1 / (1 + np.exp(-(a * np.log(c / (1 - c)) + b)))
    return c, rng.random(n) < p


def _platt(c):
    return np.stack([np.log(c / (1 - c)), np.zeros_like(c), np.zeros_like(c), np.zeros_like(c)], 1)


def test_fit_recovers_parameters_and_calibrates():
    c, y = _synthetic(20000, 2.0, -1.0)
    cal = fit(_platt(c), y, "synthetic")
    assert cal.weights[0] == pytest.approx(2.0, abs=0.15) and cal.bias == pytest.approx(-1.0, abs=0.15)
    before, after = metrics(c, y), metrics(cal.probability(_platt(c)), y)
    assert after["ece"] < 0.02 < before["ece"] and after["nce"] > before["nce"]
    assert after["auroc_errors"] == pytest.approx(before["auroc_errors"])   # monotone: same ranking
    with pytest.raises(CalibrationError, match="need both"):
        fit(_platt(c[:50]), np.ones(50, bool))


def _two_conditions(seed: int):
    """Segments of 5 words from clean audio (entropy 0.1) and from a room (entropy 0.6): the same
    raw confidences, but in the room a word is right far less often."""
    rng = np.random.default_rng(seed)
    feats, right, cond = [], [], []
    for k in range(3000):
        room = k % 2 == 1
        c = rng.uniform(0.5, 0.995, 5)
        f = word_features(c)
        f[:, 2] = 0.6 if room else 0.1
        p = 1 / (1 + np.exp(-(1.5 * f[:, 0] + (-2.5 if room else 0.5))))
        feats.append(f), right.append(rng.random(5) < p), cond.append(np.full(5, room))
    return np.concatenate(feats), np.concatenate(right), np.concatenate(cond)


def test_segment_features_calibrate_what_the_word_alone_cannot():
    feats, right, room = _two_conditions(0)
    full, platt = fit(feats, right), fit(np.where([True, False, False, False], feats, 0.0), right)
    tf, tr, troom = _two_conditions(1)
    for cond in (room := troom, ~troom):
        ece_full = metrics(full.probability(tf[cond]), tr[cond])["ece"]
        ece_platt = metrics(platt.probability(np.where([True, False, False, False], tf[cond], 0.0)), tr[cond])["ece"]
        assert ece_full < 0.03 < 0.1 < ece_platt
    assert full.weights[2] < -1.0            # higher entropy: less likely right


def test_word_posteriors_tell_what_the_word_confidence_cannot():
    """Words heard equally clearly, but in some the decoder had a close competitor (a low word
    posterior) and those are often wrong: only the posterior feature calibrates both kinds, and
    it ranks the errors better (AUROC)."""
    rng = np.random.default_rng(3)
    c = rng.uniform(0.6, 0.99, 8000)
    post = np.where(rng.random(8000) < 0.3, rng.uniform(0.3, 0.7, 8000), 1 - 1e-5)
    right = rng.random(8000) < 1 / (1 + np.exp(-(0.4 * np.log(post / (1 - post)) - 0.5)))
    feats = np.concatenate([word_features(c[k: k + 4], None, post[k: k + 4]) for k in range(0, 8000, 4)])
    assert feats[:, 3] == pytest.approx(np.log(post / (1 - post)), abs=1e-6)
    full, no_post = fit(feats, right), fit(np.where([True, True, True, False], feats, 0.0), right)
    close = post < 0.9
    for cond in (close, ~close):
        assert metrics(full.probability(feats[cond]), right[cond])["ece"] < 0.03
    assert metrics(no_post.probability(np.where([True, True, True, False], feats, 0.0))[close], right[close])["ece"] > 0.15
    assert metrics(full.probability(feats), right)["auroc_errors"] > metrics(c, right)["auroc_errors"] + 0.1


def test_transcribe_calibrates_grammar_words_with_their_posteriors(tiny_recognizer, tone):
    """Through ``decode_segments`` (what ``asr transcribe`` runs): a calibration that reads only
    the word-posterior feature turns each word's confidence into the grammar decoder's posterior
    of that word; the same calibration on a decoder without posteriors gives 0.5 (feature 0)."""
    from dataclasses import replace

    from asr.audio import normalize_level
    from asr.decode import GrammarDecoder
    from asr.text import CharTokenizer
    from asr.transcribe import SegmentOptions, decode_segments

    x = tone(1.5) + 0.3 * tone(1.5, freq=1320.0)
    dec = GrammarDecoder(CharTokenizer(), ["go", "stop", "go left", "go right", "stop now"])
    rec = replace(tiny_recognizer, decoder=dec, calibration=Calibration((0.0, 0.0, 0.0, 1.0), 0.0))
    seg = decode_segments(rec, [(0.0, x)], SegmentOptions(snap_words=False))[0]
    hyp = dec(*rec.forward([rec.features(normalize_level(x))]))[0]
    assert seg.text == hyp.text and len(seg.words) == len(hyp.word_posteriors) >= 1
    assert [w.confidence for w in seg.words] == pytest.approx(np.clip(hyp.word_posteriors, 1e-6, 1 - 1e-6), abs=1e-4)
    greedy = replace(rec, decoder=tiny_recognizer.decoder)
    words = decode_segments(greedy, [(0.0, x)], SegmentOptions(snap_words=False))[0].words
    assert words and all(w.confidence == 0.5 for w in words)


def test_word_features_and_apply():
    lp = np.log(np.full((4, 4), 0.25))
    f = word_features([0.5, 0.9], lp)
    assert f[:, 0] == pytest.approx([0.0, np.log(9)]) and f[:, 1] == pytest.approx([np.log(9) / 2] * 2)
    assert f[:, 2] == pytest.approx([np.log(4)] * 2)
    from asr.transcribe import Word

    words = [Word("a", 0.0, 0.1, 0.5), Word("b", 0.1, 0.2, 0.9)]
    assert f[:, 3] == pytest.approx([0.0, 0.0])               # a decoder without posteriors
    Calibration((1.0, 0.0, -1.0, 0.0), 0.5).apply(words, lp)
    expect = 1 / (1 + np.exp(-(np.array([0.0, np.log(9)]) - np.log(4) + 0.5)))
    assert [w.confidence for w in words] == pytest.approx(expect, abs=1e-4)


def test_metric_extremes():
    y = np.array([True] * 50 + [False] * 50)
    assert metrics(np.where(y, 0.9, 0.1), y)["auroc_errors"] == 1.0
    assert metrics(np.where(y, 0.1, 0.9), y)["auroc_errors"] == 0.0
    calibrated = metrics(np.full(100, 0.5), y)
    assert calibrated["ece"] == 0.0 and calibrated["nce"] == pytest.approx(0.0, abs=1e-6)


def test_label_words_and_file_round_trip(tmp_path):
    assert label_words("one two three", ["one", "too", "three", "four"]) == [True, False, True, False]
    assert label_words("one two", []) == []
    path = Calibration((1.5, 0.25, -0.5, 0.75), -0.25, "dev", 10).save(tmp_path / "c.json")
    assert Calibration.load(path) == Calibration((1.5, 0.25, -0.5, 0.75), -0.25, "dev", 10)
    (tmp_path / "v1.json").write_text('{"format": "asr-calibration-v1", "a": 2.0, "b": -1.0, "words": 5}')
    assert Calibration.load(tmp_path / "v1.json") == Calibration((2.0, 0.0, 0.0, 0.0), -1.0, "", 5)
    v2 = {"format": "asr-calibration-v2", "features": list(FEATURES[:3]), "weights": [1.5, 0.25, -0.5], "bias": -0.25}
    (tmp_path / "v2.json").write_text(json.dumps(v2))              # the three-feature files of earlier versions
    assert Calibration.load(tmp_path / "v2.json") == Calibration((1.5, 0.25, -0.5, 0.0), -0.25)
    (tmp_path / "v2bad.json").write_text(json.dumps({**v2, "weights": [1.0, 2.0, 3.0, 4.0]}))
    with pytest.raises(CalibrationError, match="4 weights for 3 features"):
        Calibration.load(tmp_path / "v2bad.json")
    (tmp_path / "other.json").write_text(path.read_text().replace("segment_entropy_nats", "snr"))
    with pytest.raises(CalibrationError, match="snr"):
        Calibration.load(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text('{"format": "x"}')
    with pytest.raises(CalibrationError, match="bad.json"):
        Calibration.load(tmp_path / "bad.json")


@pytest.mark.espeak
def test_calibrate_then_transcribe_evaluate_export(tiny_recipe, tmp_path):
    tmp = tiny_recipe[0]
    model, raw = tmp_path / "m" / "best.pt", tmp_path / "raw" / "best.pt"     # the recipe's is calibrated
    for m in (model, raw):
        m.parent.mkdir()
        shutil.copy(tmp / "exp/best.pt", m)
    dev, test = tmp / "data/dev.jsonl", tmp / "data/test_unseen.jsonl"
    res = run_asr("calibrate", "--model", str(model), "--manifest", str(dev),
                  "--manifest", str(test))
    assert res.returncode == 0, res.stderr
    fitted = json.loads(res.stdout)
    assert (model.parent / "calibration.json").is_file() and fitted["after"]["ece"] <= fitted["before"]["ece"]
    assert set(fitted["sets"]) == {str(dev), str(test), "all"}
    cal = Calibration.load(model.parent / "calibration.json")
    wav = json.loads(test.read_text().splitlines()[0])["audio"]
    words = {}
    for name, m in (("raw", raw), ("cal", model)):
        run_asr("transcribe", "--model", str(m), wav, "--output-dir",
                str(tmp_path / name), "--formats", "json", check=True)
        words[name] = json.loads(next((tmp_path / name).glob("*.json")).read_text())["words"]
    assert words["raw"] and [w["word"] for w in words["raw"]] == [w["word"] for w in words["cal"]]
    # within one segment, logit(calibrated) - (w0 x + w1 mean(x) + bias) is w2 * the segment's entropy
    x = np.log([r["confidence"] / (1 - r["confidence"]) for r in words["raw"]])
    c = np.clip([w["confidence"] for w in words["cal"]], 1e-4, 1 - 1e-4)
    rest = np.log(c / (1 - c)) - (cal.weights[0] * x + cal.weights[1] * x.mean() + cal.bias)
    inside = rest[(c > 0.02) & (c < 0.98)]
    assert inside.size and np.ptp(inside) < 0.05
    assert 0.0 <= rest.mean() / cal.weights[2] <= np.log(40) and cal.fitted_on == f"{dev} + {test}"
    res = run_asr("evaluate", "--model", str(model), "--manifest", str(test),
                  "--confidence", "--json", "--out-dir", str(tmp_path / "ev"))
    conf = json.loads(res.stdout)["confidence"]
    assert set(conf) >= {"raw", "calibrated", "words_to_check"} and 0 <= conf["calibrated"]["ece"] <= 1
    rows = (tmp_path / "ev/words_to_check.txt").read_text().splitlines()
    assert len(rows) == conf["words_to_check"]["words"]
    assert [float(r.split("\t")[3]) for r in rows] == sorted(float(r.split("\t")[3]) for r in rows)
    run_asr("export", "--model", str(model), "--out", str(tmp_path / "onnx"),
            "--no-int8", "--no-chunk", check=True)
    from asr.lite import load_lite

    assert load_lite(tmp_path / "onnx").calibration == cal


def test_calibration_applies_only_to_the_model_it_was_fitted_for(tmp_path):
    from asr.calibration import beside, file_sha256

    (tmp_path / "best.pt").write_bytes(b"model one")
    (tmp_path / "epoch1.pt").write_bytes(b"model two")
    Calibration((2.0, 0.0, 0.0, 0.0), -1.0, "dev", 100, file_sha256(tmp_path / "best.pt")).save(tmp_path / "calibration.json")
    assert beside(tmp_path / "best.pt").weights[0] == 2.0
    assert beside(tmp_path / "epoch1.pt") is None


@pytest.mark.espeak
def test_recipe_calibrate_stage(tiny_recipe):
    """The tiny digits recipe's stage 5 fitted on dev + dev through a room: the file beside the
    best model is bound to it, calibrated on the pool in the large, measured per test split, and
    its RESULTS.md table is replaced (not repeated) when the stage runs again."""
    from asr.calibration import beside, file_sha256

    tmp, config, _ = tiny_recipe
    best = tmp / "exp/best.pt"
    cal = beside(best)
    assert cal is not None and cal.model_sha256 == file_sha256(best) and "dev + dev_room (greedy)" == cal.fitted_on
    report = json.loads((tmp / "exp/calibration_report.json").read_text())
    assert set(report["test"]) == {"test_unseen", "test_babble", "test_room_phone"}
    assert set(report["fitted_on"]) == {"dev", "dev_room", "all"}
    pool = report["fitted_on"]["all"]
    assert pool["raw"]["words"] == pool["calibrated"]["words"] > 50
    assert pool["calibrated"]["ece"] < max(pool["raw"]["ece"], 0.05)
    res = subprocess.run([sys.executable, str(ROOT / "recipes/digits/run.py"), "--config", str(config),
                          "--stage", "5", "--force"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    text = (tmp / "exp/RESULTS.md").read_text()
    assert text.count("## Word confidence (greedy)") == 1 and "| test_room_phone (never tuned) |" in text
    assert text.index("## Word confidence") > text.index("test_unseen")

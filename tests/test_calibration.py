"""asr.calibration: Platt scaling of word confidence recovers known parameters and lowers the
ECE; the metrics behave at their extremes; `asr calibrate` writes a file beside the model that
transcription, evaluation and export then use."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from asr.calibration import Calibration, CalibrationError, fit, label_words, metrics


def _synthetic(n: int, a: float, b: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.05, 0.995, n)
    p = 1 / (1 + np.exp(-(a * np.log(c / (1 - c)) + b)))
    return c, rng.random(n) < p


def test_fit_recovers_parameters_and_calibrates():
    c, y = _synthetic(20000, 2.0, -1.0)
    cal = fit(c, y, "synthetic")
    assert cal.a == pytest.approx(2.0, abs=0.15) and cal.b == pytest.approx(-1.0, abs=0.15)
    before, after = metrics(c, y), metrics(cal(c), y)
    assert after["ece"] < 0.02 < before["ece"] and after["nce"] > before["nce"]
    assert after["auroc_errors"] == pytest.approx(before["auroc_errors"])   # monotone: same ranking
    with pytest.raises(CalibrationError, match="need both"):
        fit(c[:50], np.ones(50, bool))


def test_metric_extremes():
    y = np.array([True] * 50 + [False] * 50)
    assert metrics(np.where(y, 0.9, 0.1), y)["auroc_errors"] == 1.0
    assert metrics(np.where(y, 0.1, 0.9), y)["auroc_errors"] == 0.0
    calibrated = metrics(np.full(100, 0.5), y)
    assert calibrated["ece"] == 0.0 and calibrated["nce"] == pytest.approx(0.0, abs=1e-6)


def test_label_words_and_file_round_trip(tmp_path):
    assert label_words("one two three", ["one", "too", "three", "four"]) == [True, False, True, False]
    assert label_words("one two", []) == []
    path = Calibration(1.5, -0.25, "dev", 10).save(tmp_path / "c.json")
    assert Calibration.load(path) == Calibration(1.5, -0.25, "dev", 10)
    (tmp_path / "bad.json").write_text('{"format": "x"}')
    with pytest.raises(CalibrationError, match="bad.json"):
        Calibration.load(tmp_path / "bad.json")


@pytest.mark.espeak
def test_calibrate_then_transcribe_evaluate_export(tiny_recipe, tmp_path):
    tmp = tiny_recipe[0]
    model = tmp_path / "m" / "best.pt"
    model.parent.mkdir()
    shutil.copy(tmp / "exp/best.pt", model)
    dev, test = tmp / "data/dev.jsonl", tmp / "data/test_unseen.jsonl"
    res = subprocess.run([sys.executable, "-m", "asr", "calibrate", "--model", str(model), "--manifest", str(dev)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    fitted = json.loads(res.stdout)
    assert (model.parent / "calibration.json").is_file() and fitted["after"]["ece"] <= fitted["before"]["ece"]
    cal = Calibration.load(model.parent / "calibration.json")
    wav = json.loads(test.read_text().splitlines()[0])["audio"]
    words = {}
    for name, m in (("raw", tmp / "exp/best.pt"), ("cal", model)):
        subprocess.run([sys.executable, "-m", "asr", "transcribe", "--model", str(m), wav, "--output-dir",
                        str(tmp_path / name), "--formats", "json"], check=True, capture_output=True)
        words[name] = json.loads(next((tmp_path / name).glob("*.json")).read_text())["words"]
    assert words["raw"] and [w["word"] for w in words["raw"]] == [w["word"] for w in words["cal"]]
    for r, c in zip(words["raw"], words["cal"]):
        assert c["confidence"] == pytest.approx(float(cal(r["confidence"])), abs=2e-3)
    res = subprocess.run([sys.executable, "-m", "asr", "evaluate", "--model", str(model), "--manifest", str(test),
                          "--confidence", "--json", "--out-dir", str(tmp_path / "ev")], capture_output=True, text=True)
    conf = json.loads(res.stdout)["confidence"]
    assert set(conf) >= {"raw", "calibrated", "words_to_check"} and 0 <= conf["calibrated"]["ece"] <= 1
    rows = (tmp_path / "ev/words_to_check.txt").read_text().splitlines()
    assert len(rows) == conf["words_to_check"]["words"]
    assert [float(r.split("\t")[3]) for r in rows] == sorted(float(r.split("\t")[3]) for r in rows)
    subprocess.run([sys.executable, "-m", "asr", "export", "--model", str(model), "--out", str(tmp_path / "onnx"),
                    "--no-int8", "--no-chunk"], check=True, capture_output=True)
    from asr.lite import load_lite

    assert load_lite(tmp_path / "onnx").calibration == cal


def test_calibration_applies_only_to_the_model_it_was_fitted_for(tmp_path):
    from asr.calibration import beside, file_sha256

    (tmp_path / "best.pt").write_bytes(b"model one")
    (tmp_path / "epoch1.pt").write_bytes(b"model two")
    Calibration(2.0, -1.0, "dev", 100, file_sha256(tmp_path / "best.pt")).save(tmp_path / "calibration.json")
    assert beside(tmp_path / "best.pt").a == 2.0
    assert beside(tmp_path / "epoch1.pt") is None

"""The digits recipe end to end on a few hundred synthesized utterances (tiny model, CPU)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from asr import load as load_model



ROOT = Path(__file__).resolve().parents[1]


def _run(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "recipes/digits/run.py"), "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    config = tmp / "config.yaml"
    config.write_text((ROOT / "tests/tiny_digits.yaml").read_text().replace("PLACEHOLDER", str(tmp)))
    res = _run(config)
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp, config, res


@pytest.mark.espeak
def test_recipe_produces_results(tiny_recipe):
    tmp, _, res = tiny_recipe
    results = json.loads((tmp / "exp/results.json").read_text())
    assert set(results) == {"dev", "test_unseen"}
    for r in results.values():
        assert r["utterances"] == 30 and 0 <= r["cer"] <= 100
    # a tiny model trained for a minute must have learned the digits, well beyond chance
    assert results["test_unseen"]["wer"] < 60.0, results
    assert "| test_unseen |" in res.stdout
    log = [json.loads(line) for line in (tmp / "exp/train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    model = load_model(tmp / "exp/best.pt")
    assert model.info["dev_wer"] == min(e["wer"] for e in log)
    hyp = (tmp / "exp/decode/test_unseen/hyp.txt").read_text().splitlines()
    assert len(hyp) == 30


@pytest.mark.espeak
def test_rerun_skips_finished_stages_and_refuses_changed_config(tiny_recipe):
    tmp, config, _ = tiny_recipe
    res = _run(config)
    assert res.returncode == 0
    assert res.stderr.count("done, skipping") == 4
    changed = tmp / "changed.yaml"
    changed.write_text(config.read_text().replace("epochs: 30", "epochs: 31"))
    res = _run(changed, "--stage", "2")
    assert res.returncode == 2 and "stage 2 (train) finished with a different config" in res.stderr


@pytest.mark.espeak
def test_cli_transcribe_and_score(tiny_recipe):
    tmp, _, _ = tiny_recipe
    wavs = sorted((tmp / "data/wav/test_unseen").glob("*.wav"))[:3]
    bad = tmp / "bad.wav"
    bad.write_bytes(b"not audio")
    res = subprocess.run(["asr", "transcribe", "--model", str(tmp / "exp/best.pt"), *map(str, wavs), str(bad)],
                         capture_output=True, text=True)
    assert res.returncode == 1                     # one file failed
    assert len(res.stdout.splitlines()) == 3 and "bad.wav" in res.stderr and "RTF" in res.stderr
    dec = tmp / "exp/decode/test_unseen"
    expected = json.loads((tmp / "exp/results.json").read_text())["test_unseen"]["wer"]
    res = subprocess.run(["asr", "score", "--ref", str(dec / "ref.txt"), "--hyp", str(dec / "hyp.txt"), "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(res.stdout)["summary"]["wer"] == expected
    res = subprocess.run(["asr", "evaluate", "--model", str(tmp / "exp/best.pt"), "--manifest",
                          str(tmp / "data/test_unseen.jsonl"), "--out-dir", str(tmp / "eval"), "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(res.stdout)["summary"]["wer"] == expected
    assert (tmp / "eval/report.txt").read_text().count("REF:") == 30
    # ids present in only one file are listed by the CLI, which exits with an error
    (tmp / "short_hyp.txt").write_text("".join((dec / "hyp.txt").read_text().splitlines(True)[1:]))
    res = subprocess.run(["asr", "score", "--ref", str(dec / "ref.txt"), "--hyp", str(tmp / "short_hyp.txt")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "1 only in" in res.stderr and "ref.txt" in res.stderr

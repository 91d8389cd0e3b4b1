"""The sentences recipe end to end: text, synthesis, LM, a tiny model, LM tuning, three decoders."""
import json
import subprocess
import sys
from pathlib import Path

import pytest



ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.espeak
def test_recipe_compares_decoders_with_a_tuned_lm(tiny_sentences):
    tmp, res = tiny_sentences
    results = json.loads((tmp / "exp/results.json").read_text())
    tuned = json.loads((tmp / "exp/decode/tuned.json").read_text())
    assert len(tuned["grid"]) == 4 and tuned["wer"] == min(g["wer"] for g in tuned["grid"])
    assert results["_decode"]["lm_weight"] == tuned["lm_weight"]
    for split in ("dev", "test_unseen"):
        r = results[split]
        assert set(r["methods"]) == {"greedy", "beam", "beam_lm"} and r["utterances"] == 20
        assert r["wer"] == r["methods"]["beam_lm"]["wer"]
        # the OOV rate is the share of reference words the lexicon lacks
        lexicon = {line.split()[0] for line in (tmp / "data/lm/lexicon.txt").read_text().splitlines()}
        refs = [w for line in (tmp / f"exp/decode/{split}/ref.txt").read_text().splitlines()
                for w in line.split()[1:]]
        assert r["oov_rate"] == pytest.approx(100 * sum(w not in lexicon for w in refs) / len(refs), abs=1e-3)
        for m in r["methods"].values():
            assert m["decode_rtf"] > 0 and 0 <= m["cer"]
        hyps = (tmp / f"exp/decode/{split}/hyp.beam_lm.txt").read_text().splitlines()
        assert len(hyps) == 20
    # decoding dev with the chosen weights at the tuning beam reproduces the tuned dev WER
    assert results["dev"]["methods"]["beam_lm"]["wer"] == pytest.approx(tuned["wer"], abs=1e-3)
    # held-out sentences are not in the LM text; LM stats are written
    lm_text = set((tmp / "data/text/lm_train.txt").read_text().splitlines())
    assert not lm_text & set((tmp / "data/text/test_unseen.txt").read_text().splitlines())
    stats = json.loads((tmp / "data/lm/stats.json").read_text())
    assert stats["splits"]["test_unseen"]["perplexity"] > 1
    assert "| test_unseen |" in res.stdout and "beam_lm WER %" in res.stdout
    # beam+LM word confidence calibrated on dev, with the beam's N-best word posteriors as a
    # feature (a decoder without them leaves that weight exactly 0)
    report = json.loads((tmp / "exp/calibration_report.json").read_text())
    assert report["method"] == "beam_lm" and set(report["test"]) == {"test_unseen"}
    assert report["weights"][3] != 0.0 and (tmp / "exp/calibration.json").exists()


@pytest.mark.espeak
def test_cli_beam_lm_decode_and_transcribe(tiny_sentences):
    tmp, _ = tiny_sentences
    lm_args = ["--method", "beam_lm", "--lexicon", str(tmp / "data/lm/lexicon.txt"), "--lm",
               str(tmp / "data/lm/lm.bin"), "--tuned", str(tmp / "exp/decode/tuned.json"), "--beam-size", "10"]
    res = subprocess.run(["asr", "decode", "--model", str(tmp / "exp/best.pt"), "--manifest",
                          str(tmp / "data/test_unseen.jsonl"), "--out", str(tmp / "hyp.txt"), *lm_args],
                         capture_output=True, text=True, check=True)
    expected = json.loads((tmp / "exp/results.json").read_text())["test_unseen"]["wer"]
    assert json.loads(res.stdout)["wer"] == pytest.approx(expected, abs=1e-3)
    lexicon = {line.split()[0] for line in (tmp / "data/lm/lexicon.txt").read_text().splitlines()}
    wavs = sorted((tmp / "data/wav/test_unseen").glob("*.wav"))[:2]
    res = subprocess.run(["asr", "transcribe", "--model", str(tmp / "exp/best.pt"), *map(str, wavs), *lm_args],
                         capture_output=True, text=True, check=True)
    words = [w for line in res.stdout.splitlines() for w in line.split("\t")[1].split()]
    assert set(words) <= lexicon                   # lexicon-constrained: only known words
    res = subprocess.run(["asr", "transcribe", "--model", str(tmp / "exp/best.pt"), str(wavs[0]),
                          "--method", "beam_lm", "--lexicon", str(tmp / "nope.txt"), "--lm", "x.bin"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "lexicon not found" in res.stderr and "nope.txt" in res.stderr


@pytest.mark.espeak
def test_torchrun_decoding_is_sharded_and_matches_one_process(tiny_sentences):
    import shutil

    tmp, _ = tiny_sentences
    shutil.copytree(tmp / "exp", tmp / "exp2")
    config = tmp / "config.yaml"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "recipes/sentences/run.py"), "--config", str(config), "--stage", "6",
                          "--force", "--set", f"exp_dir={tmp / 'exp2'}"],
                         capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                           "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    one = json.loads((tmp / "exp/results.json").read_text())
    two = json.loads((tmp / "exp2/results.json").read_text())
    for split in ("dev", "test_unseen"):
        for method in ("greedy", "beam", "beam_lm"):
            a, b = one[split]["methods"][method], two[split]["methods"][method]
            assert (a["wer"], a["cer"], a["utterances"]) == (b["wer"], b["cer"], b["utterances"]), (split, method)
    assert (tmp / "exp2/decode/test_unseen/hyp.beam_lm.txt").read_text() == \
        (tmp / "exp/decode/test_unseen/hyp.beam_lm.txt").read_text()

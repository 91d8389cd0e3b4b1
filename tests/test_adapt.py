"""asr.adapt: decoder packs from text alone (lexicon, KenLM, tuned weights) used through
--decoder PACK, and hotword boosting of a pack's LM."""
import json
import math
import subprocess
import sys

import pytest

from asr.adapt import PackError, boost_arpa, read_hotwords
from asr.lm import build_lm


def _unigrams(path):
    lines = path.read_text().splitlines()
    start = lines.index("\\1-grams:")
    out = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        parts = line.split("\t")
        out[parts[1]] = float(parts[0])
    return out, lines


def test_boost_arpa_raises_and_adds_unigrams(tmp_path):
    (tmp_path / "t.txt").write_text("turn on the light\nturn off the light\nopen the door\n")
    arpa = build_lm(tmp_path / "t.txt", tmp_path / "lm.arpa", order=2)
    before, _ = _unigrams(arpa)
    added = boost_arpa(arpa, tmp_path / "b.arpa", {"door": 2.0, "garage": 3.0})
    after, lines = _unigrams(tmp_path / "b.arpa")
    assert added == ["garage"]
    assert after["door"] == pytest.approx(min(-0.001, before["door"] + 2.0 / math.log(10)), abs=1e-5)
    assert after["garage"] == pytest.approx(min(-0.001, before["<unk>"] + 3.0 / math.log(10)), abs=1e-5)
    assert after["light"] == before["light"] and "garage" in after
    assert f"ngram 1={len(after)}" in lines
    from asr.lm import perplexity        # KenLM (as decoding loads it) reads the edited file

    assert perplexity(tmp_path / "b.arpa", ["open the garage"]) < perplexity(arpa, ["open the garage"])


def test_hotword_files(tmp_path):
    (tmp_path / "h.txt").write_text("# products\nAcme Widget\t5\nzebra: 1.5\nplain\n")
    assert read_hotwords(tmp_path / "h.txt") == [("acme widget", 5.0), ("zebra", 1.5), ("plain", 3.0)]
    (tmp_path / "bad.txt").write_text("ok\n\t2\n")
    with pytest.raises(PackError, match="bad.txt:2"):
        read_hotwords(tmp_path / "bad.txt")


def _evaluate(model, manifest, *extra):
    res = subprocess.run([sys.executable, "-m", "asr", "evaluate", "--model", str(model), "--manifest", str(manifest),
                          "--json", *map(str, extra)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), res.stderr


@pytest.mark.espeak
def test_adapt_pack_and_hotwords(tiny_sentences, tmp_path):
    tmp = tiny_sentences[0]
    model, pack = tmp / "exp/best.pt", tmp_path / "pack"
    res = subprocess.run([sys.executable, "-m", "asr", "adapt", "--model", str(model), "--text",
                          str(tmp / "data/text/lm_train.txt"), "--out", str(pack), "--dev", str(tmp / "data/dev.jsonl"),
                          "--order", "2"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    desc = json.loads((pack / "decoder.json").read_text())
    assert len(desc["tuned"]["grid"]) == 12 and desc["tuned"]["wer"] == min(g["wer"] for g in desc["tuned"]["grid"])
    test = tmp / "data/test_unseen.jsonl"
    with_pack, _ = _evaluate(model, test, "--decoder", pack)
    by_hand, _ = _evaluate(model, test, "--method", "beam_lm", "--lm", pack / "lm.bin", "--lexicon",
                           pack / "lexicon.txt", "--lm-weight", desc["tuned"]["lm_weight"],
                           "--word-score", desc["tuned"]["word_score"])
    assert with_pack["summary"] == by_hand["summary"]
    # boosting a word pulls the decoder toward it; a word the LM lacks is added with a warning
    out = {}
    for name, extra in (("plain", []), ("boosted", ["--hotwords", tmp_path / "hot.txt"])):
        (tmp_path / "hot.txt").write_text("the\t12\nzyzzyva\t1\n")
        _, err = _evaluate(model, test, "--decoder", pack, "--out-dir", tmp_path / name, *extra)
        hyp = (tmp_path / name / "hyp.txt").read_text().split()
        out[name] = hyp.count("the")
        if extra:
            assert "'zyzzyva' is not in the LM or lexicon: added" in err
    assert out["boosted"] > out["plain"]
    bad = subprocess.run([sys.executable, "-m", "asr", "evaluate", "--model", str(model), "--manifest", str(test),
                          "--hotwords", str(tmp_path / "hot.txt")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--decoder PACK" in bad.stderr

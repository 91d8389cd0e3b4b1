"""asr.adapt: decoder packs from text alone (lexicon, KenLM, tuned weights) used through
--decoder PACK, and hotword boosting of beam_lm decoding."""
import json

import pytest

from dataclasses import replace
from pathlib import Path

import torch

from asr.adapt import PackError, read_hotwords, with_hotwords
from asr.config import ConfigError
from asr.decode import DecodeConfig, make_decoder
from asr.lm import build_lm, write_lexicon
from asr.text import CharTokenizer
from tests.clirun import run_asr


def _lm_and_lexicon(tmp_path):
    (tmp_path / "t.txt").write_text("turn on the light\nturn off the light\nopen the door\n" * 5 + "open the garage\n")
    lm = build_lm(tmp_path / "t.txt", tmp_path / "lm.bin", order=2)
    write_lexicon(["turn", "on", "off", "the", "light", "open", "door", "garage"], CharTokenizer(), tmp_path / "lex.txt")
    return str(lm), str(tmp_path / "lex.txt")


def test_word_boost_pulls_the_beam_toward_a_word_in_any_context(tmp_path):
    lm, lexicon = _lm_and_lexicon(tmp_path)
    tok = CharTokenizer()
    torch.manual_seed(0)
    emis = torch.randn(6, 60, len(tok)).log_softmax(-1)
    lens = torch.full((6,), 60)
    plain = DecodeConfig(method="beam_lm", lexicon=lexicon, lm=lm, beam_size=20)

    def decode(cfg):
        return make_decoder(tok, cfg)(emis, lens)

    base = decode(plain)
    zero = decode(replace(plain, word_boost={"garage": 0.0}))      # same word ids as the plain LM
    assert [(h.text, round(h.score, 4)) for h in zero] == [(h.text, round(h.score, 4)) for h in base]
    boosted = decode(replace(plain, word_boost={"garage": 15.0}))
    count = [sum(h.text.split().count("garage") for h in hyps) for hyps in (base, boosted)]
    assert count[1] > count[0]
    with pytest.raises(ConfigError, match="not in the lexicon"):
        decode(replace(plain, word_boost={"zebra": 1.0}))


def test_hotwords_add_missing_words_to_a_cached_lexicon(tmp_path, caplog):
    lm, lexicon = _lm_and_lexicon(tmp_path)
    (tmp_path / "hot.txt").write_text("garage door\t2\nzebra\n")
    cfg = with_hotwords(DecodeConfig(method="beam_lm", lexicon=lexicon, lm=lm), tmp_path / "hot.txt", CharTokenizer())
    assert cfg.word_boost == {"garage": 2.0, "door": 2.0, "zebra": 3.0}
    words = [line.split()[0] for line in Path(cfg.lexicon).read_text().splitlines()]
    assert words.count("zebra") == 1 and "garage" in words and cfg.lexicon != lexicon
    assert "hotword 'zebra' is not in the lexicon" in caplog.text
    (tmp_path / "neg.txt").write_text("door: -2\n")                    # a negative weight penalises
    assert with_hotwords(replace(cfg, word_boost={}), tmp_path / "neg.txt", CharTokenizer()).word_boost == {"door": -2.0}
    (tmp_path / "lex_no_newline.txt").write_text(Path(lexicon).read_text().rstrip("\n"))
    own = with_hotwords(replace(cfg, lexicon=str(tmp_path / "lex_no_newline.txt"), word_boost={}),
                        tmp_path / "hot.txt", CharTokenizer())
    lines = Path(own.lexicon).read_text().splitlines()
    assert lines[-1].startswith("zebra ") and all(line.count("|") == 1 for line in lines)
    (tmp_path / "bad.txt").write_text("door\n\u4e2d\t2\n")             # nothing the model can spell
    with pytest.raises(PackError, match="bad.txt:2"):
        with_hotwords(cfg, tmp_path / "bad.txt", CharTokenizer())
    with pytest.raises(PackError, match="--lexicon and --lm"):
        with_hotwords(DecodeConfig(method="beam_lm"), tmp_path / "hot.txt", CharTokenizer())


def test_hotword_files(tmp_path):
    (tmp_path / "h.txt").write_text("# products\nAcme Widget\t5\nzebra: 1.5\nplain\n")
    assert read_hotwords(tmp_path / "h.txt") == [("acme widget", 5.0), ("zebra", 1.5), ("plain", 3.0)]
    (tmp_path / "bad.txt").write_text("ok\n\t2\n")
    with pytest.raises(PackError, match="bad.txt:2"):
        read_hotwords(tmp_path / "bad.txt")


def _evaluate(model, manifest, *extra):
    res = run_asr("evaluate", "--model", str(model), "--manifest", str(manifest),
                  "--json", *map(str, extra))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), res.stderr


@pytest.mark.espeak
def test_adapt_pack_and_hotwords(tiny_sentences, tmp_path):
    tmp = tiny_sentences[0]
    model, pack = tmp / "exp/best.pt", tmp_path / "pack"
    res = run_asr("adapt", "--model", str(model), "--text",
                  str(tmp / "data/text/lm_train.txt"), "--out", str(pack), "--dev", str(tmp / "data/dev.jsonl"),
                  "--order", "2")
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
            assert "'zyzzyva' is not in the lexicon" in err
    assert out["boosted"] > out["plain"]
    bad = run_asr("evaluate", "--model", str(model), "--manifest", str(test),
                  "--hotwords", str(tmp_path / "hot.txt"))
    assert bad.returncode == 2 and "--decoder PACK" in bad.stderr and "beam_lm" in bad.stderr


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_hotwords", Path(__file__).resolve().parents[1]
                                                  / "scripts/bench_hotwords.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_hotword_benchmark_counts():
    b = _bench()
    hot = {"anna", "peter"}
    assert b.hotword_counts("call anna and anna", "call anna peter", hot) == (1, 1, 1)
    assert b.hotword_counts("stop", "stop", hot) == (0, 0, 0)
    lines = ["call anna", "call anna now", "call peter", "stop", "anna and peter"]
    assert b.rare_text(lines, hot, 1) == ["call anna", "call peter", "stop"]
    assert b.rare_text(lines, hot, 0) == ["stop"]
    # the rarest words (>= 5 letters, seen at least once in the text) of the references
    text = ["alpha beta gamma", "alpha gamma", "alpha", "delta words"]
    assert b.pick_hotwords(text, ["alpha gamma delta epsilon words"], 2) == ["delta", "words"]

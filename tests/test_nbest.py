"""N-best: beam decoders keep K distinct alternatives with scores; `asr evaluate --nbest` reports
the oracle WER; transcription JSON carries each segment's alternatives."""
import json

import pytest
import torch

from asr.config import ConfigError
from asr.decode import DecodeConfig, make_decoder
from asr.score import ScoreError, error_rates, oracle_wer
from asr.text import CharTokenizer
from tests.clirun import run_asr


def _peaky(text: str, tok: CharTokenizer, noise: float, seed: int) -> torch.Tensor:
    """(T, V) log-probs spelling ``text`` with blanks between, blurred by ``noise``."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for c in text:
        for i in (tok.encode(c)[0], 0):
            r = torch.full((len(tok),), -6.0)
            r[i] = 0.0
            rows.append(r)
    return (torch.stack(rows) + noise * torch.randn(len(rows), len(tok), generator=g)).log_softmax(-1)


def test_beam_nbest_distinct_sorted_best_first():
    tok = CharTokenizer()
    lp = torch.stack([_peaky("one two", tok, 3.0, s) for s in range(3)])
    lens = torch.full((3,), lp.shape[1])
    hyps = make_decoder(tok, DecodeConfig(nbest=5, beam_size=20), "beam")(lp, lens)
    one = make_decoder(tok, DecodeConfig(beam_size=20), "beam")(lp, lens)
    for h, h1 in zip(hyps, one):
        texts = [t for t, _ in h.alternatives]
        scores = [s for _, s in h.alternatives]
        assert 2 <= len(texts) <= 5 and len(set(texts)) == len(texts)
        assert texts[0] == h.text == h1.text and scores == sorted(scores, reverse=True)
        assert h1.alternatives == []
    with pytest.raises(ConfigError, match="greedy has one path"):
        make_decoder(tok, DecodeConfig(nbest=3), "greedy")
    with pytest.raises(ConfigError, match="nbest"):
        DecodeConfig(nbest=60, beam_size=50).check("decode")


def test_oracle_wer():
    refs = {"a": "one two three", "b": "four five"}
    nbest = {"a": [("one too three", -1.0), ("one two three", -2.0)], "b": [("four", -1.0), ("for five six", -3.0)]}
    first = error_rates(refs, {k: v[0][0] for k, v in nbest.items()}).wer
    assert oracle_wer(refs, nbest) == pytest.approx(100 * 1 / 5)       # "b": "four" (one deletion)
    assert oracle_wer(refs, nbest) < first
    with pytest.raises(ScoreError, match="only in reference"):
        oracle_wer({**refs, "c": "x"}, nbest)


@pytest.mark.espeak
def test_evaluate_and_transcribe_with_nbest(tiny_recipe, tmp_path):
    tmp = tiny_recipe[0]
    model, manifest = str(tmp / "exp/best.pt"), str(tmp / "data/test_unseen.jsonl")
    res = run_asr("evaluate", "--model", model, "--manifest", manifest,
                  "--method", "beam", "--beam-size", "16", "--nbest", "4", "--json", "--out-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["statistics"]["oracle_wer"] <= out["summary"]["wer"]
    rows = [line.split("\t") for line in (tmp_path / "hyp.nbest.txt").read_text().splitlines()]
    assert {r[1] for r in rows} >= {"1", "2"} and all(len(r) == 4 for r in rows)
    wav = json.loads(open(manifest).readline())["audio"]
    res = run_asr("transcribe", "--model", model, wav, "--method", "beam",
                  "--nbest", "3", "--output-dir", str(tmp_path / "tr"), "--formats", "json")
    assert res.returncode == 0, res.stderr
    seg = json.loads(next((tmp_path / "tr").glob("*.json")).read_text())["segments"][0]
    assert seg["alternatives"][0]["text"] == seg["text"] and len(seg["alternatives"]) >= 2

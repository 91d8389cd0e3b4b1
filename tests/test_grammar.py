"""asr.grammar + decode.GrammarDecoder: real JSGF files expand to the phrases they accept,
every mistake names file and line, and decoding with a grammar only says what it allows."""
import json

import pytest
import torch

from asr.decode import DecodeConfig, GrammarDecoder, make_decoder
from asr.grammar import GrammarError, jsgf_phrases, load_phrases, phrase_list
from asr.text import CharTokenizer
from tests.clirun import run_asr

HOME = """#JSGF V1.0;
grammar home;
/* a home-automation grammar,
   as pocketsphinx users write them */
public <command> = <action> [the] <object> [please];
<action> = turn on | turn off | open | close;   // verbs
<object> = light | door | (living room window) | lamp /0.5/ {obj};
public <count> = (one | two)+ ;
"""


def test_jsgf_expands_to_what_it_accepts(tmp_path):
    (tmp_path / "home.jsgf").write_text(HOME)
    phrases = jsgf_phrases(tmp_path / "home.jsgf")
    assert len(phrases) == 4 * 2 * 4 * 2 + (2 + 4 + 8)          # (one|two)+ up to three times
    assert "turn on the living room window please" in phrases and "close lamp" in phrases
    assert "two one two" in phrases and "one one one one" not in phrases
    assert "the light" not in phrases


@pytest.mark.parametrize("text,message", [
    ("#JSGF V1.0;\ngrammar g;\npublic <a> = hello <b>;\n", "g.jsgf:3: undefined rule <b>"),
    ("#JSGF V1.0;\ngrammar g;\n\npublic <a> = hello (world;\n", "g.jsgf:4: '(' is never closed"),
    ("#JSGF V1.0;\ngrammar g;\npublic <a> = hello <a> | x;\n", "g.jsgf:3: rule <a> is recursive"),
    ("#JSGF V1.0;\ngrammar g;\npublic <a> = hello\n", "g.jsgf:3: missing ';'"),
    ("#JSGF V1.0;\ngrammar g;\n<a> = hello;\n", "no public rule"),
    ("#JSGF V1.0;\ngrammar g;\npublic <a> = hello | | x;\n<b> = [;\n", "g.jsgf:4:"),
    ("#JSGF V1.0;\ngrammar g;\npublic <a> = hello;\n<a> = x;\n", "g.jsgf:4: rule <a> is defined twice"),
    ("#JSGF V1.0;\ngrammar g;\n\npublic <a> = hello привет;\n", "g.jsgf:4: word 'привет'"),
    ("#JSGF V1.0;\ngrammar g;\npublic <a> = " + " ".join(["(a|b|c|d|e|f|g|h|i|j)"] * 5) + ";\n",
     "more than 20000 phrases"),
])
def test_grammar_mistakes_name_file_and_line(tmp_path, text, message):
    (tmp_path / "g.jsgf").write_text(text)
    with pytest.raises(GrammarError) as err:
        load_phrases(tmp_path / "g.jsgf", CharTokenizer())
    assert message in str(err.value)


def test_phrase_files(tmp_path):
    (tmp_path / "p.txt").write_text("# commands\nTurn on the light\n\nopen door 2\n")
    assert phrase_list(tmp_path / "p.txt") == [(2, "turn on the light"), (4, "open door two")]
    (tmp_path / "bad.txt").write_text("hello\nпривет мир\n")
    with pytest.raises(GrammarError, match="bad.txt:2"):
        load_phrases(tmp_path / "bad.txt", CharTokenizer())
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(GrammarError, match="no phrases"):
        phrase_list(tmp_path / "empty.txt")


def _spell(text: str, tok: CharTokenizer, sure: float) -> torch.Tensor:
    """(T, V) log-probs: each character then a blank, ``sure`` on the intended unit."""
    rows = []
    for c in text:
        for i in (tok.encode(c)[0], 0):
            r = torch.full((len(tok),), (1 - sure) / (len(tok) - 1))
            r[i] = sure
            rows.append(r.log())
    return torch.stack(rows)


def test_grammar_decoder_only_says_what_the_grammar_allows():
    tok = CharTokenizer()
    lp = _spell("turn of the lite", tok, 0.6)            # what a weak model might say
    greedy = make_decoder(tok, DecodeConfig(), "greedy")(lp[None], torch.tensor([lp.shape[0]]))[0]
    assert greedy.text == "turn of the lite"
    dec = GrammarDecoder(tok, ["open the door", "turn off the light", "close the window"], nbest=3)
    hyp = dec(lp[None], torch.tensor([lp.shape[0]]))[0]
    assert hyp.text == "turn off the light" and hyp.ids == tok.encode("turn off the light")
    assert [t for t, _ in hyp.alternatives][0] == hyp.text and len(hyp.alternatives) == 3
    assert dec(lp[None, :3], torch.tensor([3]))[0].text == ""                 # nothing fits 3 frames
    dec.begin()
    for k in range(0, lp.shape[0], 5):
        dec.step(lp[k: k + 5])
    assert dec.end().text == "turn off the light"


def test_word_posteriors_are_shared_by_the_phrases_that_agree():
    """Each word's posterior sums the phrase posteriors (softmax of the phrase scores) of the
    phrases with that word at that place: a word every competitor shares is certain, the word the
    audio left open is not; the incremental decoder gives the same."""
    tok = CharTokenizer()
    lp = _spell("call ann on mobile", tok, 0.9)
    phrases = ["call anna on mobile", "call anne on mobile", "call bob on work", "stop"]
    dec = GrammarDecoder(tok, phrases, nbest=4)
    hyp = dec(lp[None], torch.tensor([lp.shape[0]]))[0]
    scores = torch.tensor([dict(hyp.alternatives).get(p, float("-inf")) for p in phrases])
    post = torch.softmax(scores.double(), 0)
    assert hyp.text in phrases[:2] and len(hyp.word_posteriors) == 4
    call, name, on, last = hyp.word_posteriors
    assert call == pytest.approx(float(post[:3].sum()), abs=1e-9) and on == pytest.approx(call, abs=1e-9)
    assert name == pytest.approx(float(post[phrases.index(hyp.text)]), abs=1e-9) and name < 0.9
    assert last == pytest.approx(float(post[:2].sum()), abs=1e-9) and last > name
    dec.begin()
    dec.step(lp)
    assert dec.end().word_posteriors == pytest.approx(hyp.word_posteriors, abs=1e-6)
    greedy = make_decoder(tok, DecodeConfig(), "greedy")(lp[None], torch.tensor([lp.shape[0]]))[0]
    assert greedy.word_posteriors is None


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_incremental_grammar_scores_equal_the_batch_ctc_likelihood(chunk):
    """Streaming partials carry every phrase's CTC forward variables: after each chunk the scores
    are the batch CTC log-likelihoods of the frames so far (phrases of different lengths, an
    empty one, repeated letters), without keeping or rescanning the frames."""
    tok = CharTokenizer()
    phrases = ["a", "ll", "hello", "open the door now", "oh", ""]
    dec = GrammarDecoder(tok, phrases, nbest=6)
    lp = torch.randn(23, len(tok.vocab), generator=torch.Generator().manual_seed(chunk)).log_softmax(-1)
    dec.begin()
    for k in range(0, lp.shape[0], chunk):
        dec.step(lp[k: k + chunk])
        n = min(k + chunk, lp.shape[0])
        got = dict(dec.partial().alternatives or [])
        ref = dec._nll(lp[:n], 0, len(phrases))
        for i, ph in enumerate(phrases):
            if torch.isfinite(ref[i]):
                assert got[ph] == pytest.approx(-float(ref[i]), abs=1e-3)
            else:
                assert ph not in got
    assert not hasattr(dec, "_frames")


def test_unit_bonus_favours_the_longer_phrase_offline_and_streaming():
    """A phrase whose last word the model hardly heard: without a bonus the shorter phrase wins
    (CTC pays for every unit), a bonus per unit brings the longer one back, in the batch decoder
    and in the incremental one alike."""
    tok = CharTokenizer()
    lp = _spell("call peter on work", tok, 0.9)
    for t in range(2 * len("call peter"), lp.shape[0]):               # " on work": mostly blank
        row = torch.full((len(tok),), 0.1 / (len(tok) - 2))
        row[0], row[lp[t].argmax()] = 0.6, 0.3 if lp[t].argmax() else 0.6
        lp[t] = row.log()
    phrases = ["call peter", "call peter on work", "call anna on work"]
    n = torch.tensor([lp.shape[0]])
    plain, boosted = GrammarDecoder(tok, phrases), GrammarDecoder(tok, phrases, unit_bonus=3.0)
    assert plain(lp[None], n)[0].text == "call peter"
    assert boosted(lp[None], n)[0].text == "call peter on work"
    boosted.begin()
    boosted.step(lp)
    assert boosted.end().text == "call peter on work"
    assert boosted.end().score == pytest.approx(boosted(lp[None], n)[0].score, abs=1e-3)


@pytest.mark.espeak
def test_evaluate_and_transcribe_with_a_grammar(tiny_recipe, tmp_path):
    tmp = tiny_recipe[0]
    model, manifest = str(tmp / "exp/best.pt"), tmp / "data/test_unseen.jsonl"
    utts = [json.loads(line) for line in manifest.read_text().splitlines()]
    phrases = sorted({u["text"] for u in utts} | {"nine nine nine nine", "oh oh"})
    (tmp_path / "p.txt").write_text("\n".join(phrases) + "\n")
    runs = {}
    for name, extra in (("greedy", []), ("phrases", ["--phrases", str(tmp_path / "p.txt")])):
        res = run_asr("evaluate", "--model", model, "--manifest", str(manifest),
                      "--json", "--out-dir", str(tmp_path / name), *extra)
        assert res.returncode == 0, res.stderr
        runs[name] = json.loads(res.stdout)["summary"]["wer"]
    assert runs["phrases"] <= runs["greedy"]
    hyps = [line.split(" ", 1)[1] if " " in line else "" for line in (tmp_path / "phrases/hyp.txt").read_text().splitlines()]
    assert all(h in phrases for h in hyps)
    grammar = tmp_path / "digits.jsgf"
    grammar.write_text("#JSGF V1.0;\ngrammar d;\npublic <d> = <x> [<x>] [<x>];\n"
                       "<x> = zero | oh | one | two | three | four | five | six | seven | eight | nine;\n")
    res = run_asr("transcribe", "--model", model, utts[0]["audio"],
                  "--grammar", str(grammar))
    assert res.returncode == 0, res.stderr
    said = res.stdout.split("\t")[1].strip()
    assert said in jsgf_phrases(grammar)
    # a commands recipe's tuned.json (grammar bonus only) through --tuned: a huge bonus picks a longest phrase
    (tmp_path / "tuned.json").write_text('{"unit_bonus": 50.0}')
    res = run_asr("transcribe", "--model", model, utts[0]["audio"],
                  "--grammar", str(grammar), "--tuned", str(tmp_path / "tuned.json"))
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.split("\t")[1].split()) == 3


def test_tags_may_hold_semicolons(tmp_path):
    (tmp_path / "t.jsgf").write_text("#JSGF V1.0;\ngrammar t;\npublic <a> = call {act; x=1} <who>;\n<who> = mom | dad;\n")
    assert jsgf_phrases(tmp_path / "t.jsgf") == ["call dad", "call mom"]

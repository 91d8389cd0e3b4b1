import pytest
import torch

from asr.decode import (BeamDecoder, DecodeConfig, GreedyDecoder, decode_emissions, greedy_decode, make_decoder,
                        nbest_word_posteriors)
from asr.errors import MissingFileError
from asr.lm import build_lm, write_lexicon
from asr.text import CharTokenizer


def _onehot(seq, v=5):
    return torch.nn.functional.one_hot(torch.tensor(seq), v).float().log_softmax(-1)


def test_greedy_collapses_repeats_and_blanks():
    lp = torch.stack([_onehot([1, 1, 0, 1, 2, 2, 0, 0]), _onehot([3, 0, 3, 3, 4, 4, 4, 4])])
    assert greedy_decode(lp, torch.tensor([8, 4])) == [[1, 1, 2], [3, 3]]


def texts(hyps) -> list[str]:
    return [h.text for h in hyps]


def test_greedy_hypothesis_carries_ids_and_best_path_score():
    lp = torch.stack([_onehot([1, 1, 0, 1, 2, 2, 0, 0]), _onehot([3, 0, 3, 3, 4, 4, 4, 4])])
    hyps = GreedyDecoder(TOK)(lp, torch.tensor([8, 4]))
    assert [h.ids for h in hyps] == [[1, 1, 2], [3, 3]]
    assert hyps[0].text == TOK.decode([1, 1, 2])
    # the best path's log-probability, over the first out_len frames only
    assert hyps[1].score == pytest.approx(float(lp[1, :4].max(-1).values.sum()))


# ---------------------------------------------------------------- beam and beam + LM

TOK = CharTokenizer()


def _frames(rows: list[dict[str, float]]) -> torch.Tensor:
    """(1, T, V) log-probs from per-frame {char: prob} dicts (rest of the mass on blank)."""
    lp = torch.full((1, len(rows), len(TOK)), 1e-6)
    for t, row in enumerate(rows):
        for c, p in row.items():
            lp[0, t, TOK.vocab.index(c) if c != "<b>" else 0] = p
        lp[0, t, 0] += max(0.0, 1.0 - sum(row.values()))
    return (lp / lp.sum(-1, keepdim=True)).log()


def _spell(text: str, p: float = 0.9) -> list[dict[str, float]]:
    rows = []
    for c in text:
        rows += [{c: p}, {"<b>": p}]
    return rows


def test_prefix_beam_sums_paths_greedy_misses():
    # per frame: blank 0.6, "a" 0.4. Best path: blank blank -> "" (0.36); but "a" has three
    # paths (a-, -a, aa) totalling 0.64: a prefix beam search must find it
    lp = _frames([{"a": 0.4}, {"a": 0.4}])
    lens = torch.tensor([2])
    assert texts(GreedyDecoder(TOK)(lp, lens)) == [""]
    assert texts(BeamDecoder(TOK, DecodeConfig(beam_size=8))(lp, lens)) == ["a"]


def test_beam_without_lm_reads_clear_speech_like_greedy():
    lp = _frames(_spell("hello there"))
    lens = torch.tensor([lp.shape[1]])
    beam, greedy = BeamDecoder(TOK, DecodeConfig(beam_size=8))(lp, lens), GreedyDecoder(TOK)(lp, lens)
    assert texts(beam) == ["hello there"] == texts(greedy)
    assert beam[0].ids == greedy[0].ids == TOK.encode("hello there")


def test_nbest_word_posteriors_sum_the_hypotheses_that_agree():
    post = torch.softmax(torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64), 0).tolist()
    got = nbest_word_posteriors([("the cat sat".split(), -1.0), ("a cat sat".split(), -2.0), ("the cat".split(), -3.0)])
    # "the": runners-up 3 agrees; "cat": all; "sat": 2 agrees (3 dropped it, an alignment not by position)
    assert got == pytest.approx([post[0] + post[2], 1.0, post[0] + post[1]])
    inserted = nbest_word_posteriors([("go up".split(), 0.0), ("go go up".split(), 0.0)])
    assert inserted == pytest.approx([1.0, 1.0])       # an inserted word takes nothing from the best's words
    assert nbest_word_posteriors([("a b".split(), 0.0)]) == [1.0, 1.0] and nbest_word_posteriors([]) == []
    assert nbest_word_posteriors([("a".split(), float("-inf")), ("b".split(), float("-inf"))]) == [1.0]


def test_beam_word_posteriors_come_from_its_nbest_whatever_nbest_is_asked():
    def decode(p_second: float, nbest: int):
        rows = _spell("go u") + [{"p": p_second, "s": 0.9 - p_second}, {"<b>": 0.9}]
        return BeamDecoder(TOK, DecodeConfig(beam_size=16, nbest=nbest))(_frames(rows), torch.tensor([len(rows)]))[0]

    one, three = decode(0.6, 1), decode(0.6, 3)
    assert one.text == three.text == "go up" and one.alternatives == [] and len(three.alternatives) == 3
    assert one.word_posteriors == three.word_posteriors             # alternatives asked or not
    go, up = one.word_posteriors
    assert up < go and 0.2 < up < 0.8                                # "up" vs "us": contested
    assert decode(0.85, 1).word_posteriors[1] > up + 0.2             # a clearer "p": a surer word


@pytest.fixture(scope="module")
def cat_lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    text = d / "text.txt"
    text.write_text("the cat sat\nthe cat ran\na cat sat on the mat\nthe dog sat\n" * 5)
    lm = build_lm(text, d / "lm.bin", order=3)
    write_lexicon(["the", "cat", "cab", "sat", "ran", "a", "on", "mat", "dog"], TOK, d / "lex.txt")
    return d / "lex.txt", lm


def test_lm_resolves_acoustic_ambiguity(cat_lm):
    lexicon, lm = cat_lm
    # "the ca?" with the last letter t / b equally likely: the LM knows "the cat", not "the cab"
    rows = _spell("the ca") + [{"t": 0.45, "b": 0.45}, {"<b>": 0.9}]
    lp, lens = _frames(rows), torch.tensor([len(rows)])
    cfg = DecodeConfig(lexicon=str(lexicon), lm=str(lm), lm_weight=1.0, beam_size=20)
    hyp = make_decoder(TOK, cfg, "beam_lm")(lp, lens)[0]
    assert hyp.text == "the cat" and hyp.words == ["the", "cat"]
    # the ids are the decoded units (no separator at either end), so they align to the frames
    assert hyp.ids == TOK.encode("the cat")
    # and the lexicon forbids non-words even when the acoustics spell one
    rows = _spell("the cax")
    assert make_decoder(TOK, cfg, "beam_lm")(_frames(rows), torch.tensor([len(rows)]))[0].text != "the cax"


def test_missing_lm_files_are_named(cat_lm, tmp_path):
    lexicon, lm = cat_lm
    with pytest.raises(MissingFileError, match=r"language model not found: .*nope\.bin.*asr lm build"):
        make_decoder(TOK, DecodeConfig(lexicon=str(lexicon), lm=str(tmp_path / "nope.bin")), "beam_lm")
    with pytest.raises(MissingFileError, match=r"lexicon not found: .*nolex\.txt.*asr lm build"):
        make_decoder(TOK, DecodeConfig(lexicon=str(tmp_path / "nolex.txt"), lm=str(lm)), "beam_lm")
    with pytest.raises(MissingFileError, match="needs decode.lexicon and decode.lm"):
        make_decoder(TOK, DecodeConfig(), "beam_lm")


def test_decode_emissions_batches_match_single(cat_lm):
    lexicon, lm = cat_lm
    dec = make_decoder(TOK, DecodeConfig(lexicon=str(lexicon), lm=str(lm), beam_size=10), "beam_lm")
    emis = [_frames(_spell(t))[0] for t in ["the cat sat", "a dog", "on the mat ran"]]
    batched = decode_emissions(dec, emis, batch=3)
    assert texts(batched) == [decode_emissions(dec, [e], batch=1)[0].text for e in emis]
    assert texts(batched) == ["the cat sat", "a dog", "on the mat ran"]


def test_bpe_beam_and_lexicon(cat_lm, tmp_path):
    from asr.text import BPETokenizer

    lexicon, lm = cat_lm
    bpe = BPETokenizer.train(["the cat sat on the mat", "a dog ran", "the dog sat on a log"] * 10, vocab_size=32)
    ids = bpe.encode("the cat sat")
    lp = torch.full((1, 2 * len(ids), len(bpe)), -9.0)
    for k, i in enumerate(ids):
        lp[0, 2 * k, i] = 0.0
        lp[0, 2 * k + 1, 0] = 0.0
    lens = torch.tensor([lp.shape[1]])
    hyp = BeamDecoder(bpe, DecodeConfig(beam_size=8))(lp, lens)[0]
    assert hyp.text == "the cat sat" and hyp.ids == ids       # the decoded pieces, not a re-encoding
    n, _ = write_lexicon(["the", "cat", "sat", "mat", "dog"], bpe, tmp_path / "bpe_lex.txt")
    assert n == 5 and "cat " in (tmp_path / "bpe_lex.txt").read_text()
    cfg = DecodeConfig(lexicon=str(tmp_path / "bpe_lex.txt"), lm=str(lm), beam_size=10)
    hyp = make_decoder(bpe, cfg, "beam_lm")(lp, lens)[0]
    assert hyp.text == "the cat sat" and bpe.decode(hyp.ids) == "the cat sat"

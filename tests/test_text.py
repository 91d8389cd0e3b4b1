import pytest

from asr.text import BLANK, CharTokenizer, normalize_text


@pytest.mark.parametrize("raw,norm", [
    ("Hello,  World!", "hello world"),
    ("Call 911 now", "call nine one one now"),
    ("It’s  Café-time", "it's cafe time"),
    ("  'quoted'  ", "quoted"),
    ("", ""),
])
def test_normalize(raw, norm):
    assert normalize_text(raw) == norm


def test_tokenizer_roundtrip_and_blank():
    tok = CharTokenizer()
    assert tok.vocab[0] == BLANK and len(tok) == 29
    ids = tok.encode("one oh seven")
    assert 0 not in ids
    assert tok.decode(ids) == "one oh seven"
    assert CharTokenizer.from_vocab(tok.vocab).vocab == tok.vocab


def test_tokenizer_rejects_unknown_chars():
    with pytest.raises(ValueError, match="'7'"):
        CharTokenizer().encode("seven 7")
    with pytest.raises(ValueError):
        CharTokenizer.from_vocab(["a", "b"])


# ---------------------------------------------------------------- BPE units

from asr.text import WORD_START, BPETokenizer, tokenizer_from_payload, tokenizer_payload  # noqa: E402

BPE_TEXT = ["the cat sat on the mat", "a dog ran to the cat", "the mat is flat", "dogs and cats"] * 20


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(BPE_TEXT, vocab_size=40)


def test_bpe_round_trip_and_blank(bpe):
    assert bpe.vocab[0] == "<blank>" and len(bpe) == 41 and WORD_START in bpe.vocab
    ids = bpe.encode("the cat sat")
    assert 0 not in ids and bpe.decode(ids) == "the cat sat"
    assert bpe.decode([0, *ids, 0]) == "the cat sat"
    assert "".join(bpe.spell("cats")).replace(WORD_START, "") == "cats"
    with pytest.raises(ValueError, match="outside the vocabulary: 'quz'"):
        bpe.encode("quiz")
    assert BPETokenizer.train(BPE_TEXT, vocab_size=40).vocab == bpe.vocab     # deterministic


def test_tokenizer_payload_round_trip(bpe, tmp_path):
    import torch

    torch.save({"t": tokenizer_payload(bpe), "c": tokenizer_payload(CharTokenizer())}, tmp_path / "p.pt")
    loaded = torch.load(tmp_path / "p.pt", weights_only=True)
    assert tokenizer_from_payload(loaded["t"]).vocab == bpe.vocab
    assert tokenizer_from_payload(loaded["c"]).vocab == CharTokenizer().vocab

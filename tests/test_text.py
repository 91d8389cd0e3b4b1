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

import pytest

from asr.score import ScoreError, error_rates, read_kaldi_text, write_kaldi_text


def test_counts_on_known_example():
    refs = {"a": "one two three four", "b": "five six", "c": "seven"}
    hyps = {"a": "one too three", "b": "five six six", "c": "seven"}
    r = error_rates(refs, hyps)
    # a: 1 substitution (two->too) + 1 deletion (four); b: 1 insertion
    assert (r.substitutions, r.deletions, r.insertions, r.ref_words) == (1, 1, 1, 7)
    assert r.wer == pytest.approx(300 / 7)
    assert r.utterances == 3


def test_perfect_and_empty_hyp():
    assert error_rates({"a": "one two"}, {"a": "one two"}).wer == 0.0
    r = error_rates({"a": "one two"}, {"a": ""})
    assert r.deletions == 2 and r.wer == 100.0 and r.cer == 100.0


def test_id_mismatch_is_an_error():
    with pytest.raises(ScoreError, match=r"1 reference ids without hypothesis \['b'\]"):
        error_rates({"a": "x", "b": "y"}, {"a": "x"})


def test_kaldi_text_io(tmp_path):
    write_kaldi_text({"u2": "two", "u1": "", "u3": "a b"}, tmp_path / "t")
    assert read_kaldi_text(tmp_path / "t") == {"u1": "", "u2": "two", "u3": "a b"}
    (tmp_path / "dup").write_text("u1 a\nu1 b\n")
    with pytest.raises(ScoreError, match=r"dup:2: duplicate"):
        read_kaldi_text(tmp_path / "dup")
    (tmp_path / "bin").write_bytes(b"u1 ok\nu2 \xff\n")
    with pytest.raises(ScoreError, match=r"bin:2: not valid UTF-8"):
        read_kaldi_text(tmp_path / "bin")

"""KenLM building and scoring, lexicons, OOV rates, and the errors for missing tools/files."""
import os

import pytest

from asr.lm import (LMError, build_lm, kenlm_tool, oov_rate, perplexity, read_lexicon, require_file, word_counts,
                    write_lexicon)
from asr.text import CharTokenizer

TEXT = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the cat ran"] * 3


def _ngram_counts(arpa_text: str) -> dict[int, int]:
    counts = {}
    for line in arpa_text.splitlines():
        if line.startswith("ngram "):
            order, n = line[6:].split("=")
            counts[int(order)] = int(n)
    return counts


def test_build_lm_arpa_and_binary(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT) + "\n")
    out = build_lm(text, tmp_path / "lm" / "lm.bin", order=3)
    arpa = (tmp_path / "lm" / "lm.arpa").read_text()
    counts = _ngram_counts(arpa)
    # unigrams: the 10 word types + <s>, </s>, <unk>
    assert counts[1] == len(word_counts(TEXT)) + 3 and set(counts) == {1, 2, 3}
    assert out.stat().st_size > 0 and not list((tmp_path / "lm").glob("tmp*"))
    seen, unseen = perplexity(out, ["the cat sat on the mat"]), perplexity(out, ["mat the on sat cat the"])
    assert seen < unseen / 3
    assert perplexity(tmp_path / "lm" / "lm.arpa", TEXT[:1]) == pytest.approx(seen, rel=1e-3)


def test_perplexity_of_a_hand_written_bigram_lm(tmp_path):
    """log10 P: unigrams a -0.5 (backoff -0.1), b -1.0, </s> -0.3, <unk> -2.0; bigram "a b" -0.2."""
    arpa = tmp_path / "bi.arpa"
    arpa.write_text("\\data\\\nngram 1=5\nngram 2=1\n\n\\1-grams:\n-0.3\t</s>\n-99\t<s>\t0\n"
                    "-2.0\t<unk>\n-0.5\ta\t-0.1\n-1.0\tb\n\n\\2-grams:\n-0.2\ta b\n\n\\end\\\n")
    # a|<s> -0.5, b|a -0.2, </s>|b -0.3
    assert perplexity(arpa, ["a b"]) == pytest.approx(10 ** ((0.5 + 0.2 + 0.3) / 3), rel=1e-5)
    # a|<s> -0.5, </s>|a -0.1 - 0.3; <unk>|<s> -2.0, b|<unk> -1.0, </s>|b -0.3
    assert perplexity(arpa, ["a", "zebra b"]) == pytest.approx(10 ** ((0.5 + 0.4 + 2.0 + 1.0 + 0.3) / 5), rel=1e-5)


def test_build_lm_arpa_only_and_pruned(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT) + "\n")
    out = build_lm(text, tmp_path / "lm.arpa", order=2, prune=(0, 1))
    assert out == tmp_path / "lm.arpa" and set(_ngram_counts(out.read_text())) == {1, 2}
    assert not (tmp_path / "lm.bin").exists()


def test_missing_text_and_tools_are_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"LM training text not found: .*nope\.txt"):
        build_lm(tmp_path / "nope.txt", tmp_path / "lm.bin")
    monkeypatch.setenv("ASR_KENLM_BIN", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"KenLM lmplz not found .*scripts/build_kenlm\.sh"):
        kenlm_tool("lmplz")
    fake = tmp_path / "lmplz"
    fake.write_text("#!/bin/sh\nexit 3\n")
    os.chmod(fake, 0o755)
    assert kenlm_tool("lmplz") == fake
    with pytest.raises(FileNotFoundError, match="lexicon not found"):
        require_file(tmp_path / "lex.txt", "lexicon", "build it")


def test_failing_lmplz_reports_its_exit(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "lmplz"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bad corpus' >&2\nexit 3\n")
    os.chmod(fake, 0o755)
    monkeypatch.setenv("ASR_KENLM_BIN", str(fake.parent))
    (tmp_path / "t.txt").write_text("a b\n")
    with pytest.raises(LMError, match=r"lmplz failed \(exit 3\): bad corpus"):
        build_lm(tmp_path / "t.txt", tmp_path / "lm.bin")
    assert not (tmp_path / "lm.bin").exists() and not (tmp_path / "lm.arpa").exists()


def test_lexicon_spells_words_and_skips_unspellable(tmp_path):
    n, skipped = write_lexicon(["cat", "don't", "naïve", "x2", "cat"], CharTokenizer(), tmp_path / "lex.txt")
    assert n == 2 and skipped == ["naïve", "x2"]
    assert (tmp_path / "lex.txt").read_text() == "cat c a t |\ndon't d o n ' t |\n"
    assert read_lexicon(tmp_path / "lex.txt") == {"cat", "don't"}


def test_oov_rate_counts_running_words():
    assert oov_rate(["a b c d", "a a"], {"a", "b"}) == pytest.approx(100 * 2 / 6)
    assert oov_rate([], {"a"}) == 0.0

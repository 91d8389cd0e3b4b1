import random
import re
import shutil
import subprocess

import numpy as np
import pytest

from asr.score import (Normalizer, ScoreError, bootstrap_wer, error_rates, read_kaldi_text,
                       read_transcripts, score_all, score_texts, speaker_of, write_kaldi_text, write_trn)

needs_sclite = pytest.mark.skipif(shutil.which("sctk") is None, reason="sctk (NIST sclite) not installed")


def test_counts_on_known_example():
    refs = {"a": "one two three four", "b": "five six", "c": "seven"}
    hyps = {"a": "one too three", "b": "five six six", "c": "seven"}
    r = error_rates(refs, hyps)
    assert (r.substitutions, r.deletions, r.insertions, r.ref_words) == (1, 1, 1, 7)
    assert r.wer == pytest.approx(300 / 7) and r.sentence_errors == 2 and r.utterances == 3


def test_sclite_costs_split_errors_like_sclite():
    # equal-cost alignment may call this 2 substitutions; sclite's (sub 4, ins/del 3) gives the same
    # total either way, and kaldialign in sclite mode must give exactly sclite's split
    r = error_rates({"u": "a b c"}, {"u": "b c d"})
    assert (r.substitutions, r.deletions, r.insertions) == (0, 1, 1)


def test_empty_reference_and_hypothesis():
    r = error_rates({"a": "", "b": "x y"}, {"a": "z", "b": ""})
    assert (r.insertions, r.deletions, r.ref_words, r.sentence_errors) == (1, 2, 2, 2)
    assert error_rates({"a": ""}, {"a": ""}).wer == 0.0


def test_id_mismatch_lists_ids():
    with pytest.raises(ScoreError, match=r"1 only in reference \['b'\]; 1 only in hypothesis \['c'\]"):
        error_rates({"a": "x", "b": "y"}, {"a": "x", "c": "y"})


def test_readers(tmp_path):
    write_kaldi_text({"u2": "two", "u1": "", "u3": "a b"}, tmp_path / "t")
    assert read_kaldi_text(tmp_path / "t") == {"u1": "", "u2": "two", "u3": "a b"}
    write_trn({"s-1": "a  b", "s-2": ""}, tmp_path / "x.trn")
    assert read_transcripts(tmp_path / "x.trn") == {"s-1": "a b", "s-2": ""}
    bad = {"dup": (b"u1 a\nu1 b\n", r"dup:2: duplicate"),
           "bin": (b"u1 ok\nu2 \xff\n", r"bin:2: not valid UTF-8"),
           "noid.trn": (b"a b (s-1)\nc d\n", r"noid.trn:2: trn line without")}
    for name, (data, msg) in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ScoreError, match=msg):
            read_transcripts(tmp_path / name)


def test_normalizer():
    n = Normalizer(lowercase=True, strip_punctuation=True)
    assert n("Hello,  World! Don't 'quote' x-ray -- ok.") == "hello world don't quote x-ray ok"
    assert Normalizer()("  A  b ") == "A b"
    r = error_rates({"a": "Hello world."}, {"a": "hello world"}, Normalizer(True, True))
    assert r.wer == 0.0


def test_speaker_of():
    assert speaker_of("spk1-u1") == "spk1" and speaker_of("x_y_z") == "x" and speaker_of("abc") == "abc"


def test_bootstrap_and_paired_test():
    rng = np.random.default_rng(0)
    words = rng.integers(5, 15, 400).astype(float)
    err_a = rng.binomial(words.astype(int), 0.10).astype(float)
    err_b = rng.binomial(words.astype(int), 0.20).astype(float)
    res = bootstrap_wer(err_a, words, 500, errors_b=err_b)
    point = 100 * err_a.sum() / words.sum()
    assert res["wer_ci95"][0] < point < res["wer_ci95"][1]
    assert res["p_value"] < 0.01 and res["delta_ci95"][1] < 0
    same = bootstrap_wer(err_a, words, 500, errors_b=err_a)
    assert same["p_value"] == 1.0


def test_reports_written(tmp_path):
    report = score_texts({"s-1": "a b c", "s-2": "d"}, {"s-1": "a x c", "s-2": "d"}, out_dir=tmp_path)
    assert report["substitutions"] == [["b", "x", 1]]
    assert "REF:  a B c" in (tmp_path / "report.txt").read_text()
    assert "| s | 2 | 4 | 25.00 |" in (tmp_path / "report.md").read_text()
    assert '"wer": 25.0' in (tmp_path / "report.json").read_text()


# ---------------------------------------------------------------- NIST sclite agreement
VOCAB = ["the", "a", "cat", "sat", "on", "mat", "dog", "café", "naïve", "日本", "über", "x", "y", "z"]


def _varied_set(n=400, seed=0):
    rng = random.Random(seed)
    refs, hyps = {}, {}
    for i in range(n):
        uid = f"spk{rng.randrange(25):02d}-utt{i:04d}"
        ref = [rng.choice(VOCAB) for _ in range(rng.choice([0, 1, 2, 5, 8, 12]))]
        if rng.random() < 0.2 and ref:
            ref = ref + ref[: rng.randint(1, len(ref))]          # repeated words
        hyp = []
        for w in ref:
            r = rng.random()
            if r < 0.1:
                continue                                         # deletion
            hyp.append(rng.choice(VOCAB) if r < 0.25 else w)     # substitution
            if rng.random() < 0.08:
                hyp.append(rng.choice(VOCAB))                    # insertion
        if rng.random() < 0.05:
            hyp = []
        refs[uid], hyps[uid] = " ".join(ref), " ".join(hyp)
    return refs, hyps


def _sclite(tmp_path, refs, hyps, extra=()):
    write_trn(refs, tmp_path / "ref.trn")
    write_trn(hyps, tmp_path / "hyp.trn")
    out = subprocess.run(["sctk", "sclite", "-r", str(tmp_path / "ref.trn"), "trn", "-h", str(tmp_path / "hyp.trn"),
                          "trn", "-i", "rm", "-e", "utf-8", *extra, "-o", "rsum", "pra", "stdout"],
                         capture_output=True, text=True, check=True).stdout
    rows = {}
    for m in re.finditer(r"^\s*\|\s*(\S+)\s*\|\s*(\d+)\s+(\d+)\s*\|\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\|",
                         out, re.M):
        rows[m.group(1)] = tuple(int(m.group(k)) for k in range(2, 10))
    utts = dict(re.findall(r"id: \((\S+)\)\nScores: \(#C #S #D #I\) (\d+ \d+ \d+ \d+)", out))
    return rows, utts


@needs_sclite
def test_identical_to_sclite(tmp_path):
    refs, hyps = _varied_set()
    rows, utts = _sclite(tmp_path, refs, hyps, ["-s"])       # -s: case-sensitive, i.e. raw text
    scores = score_all(refs, hyps)
    ours = {s.id: f"{s.ref_words - s.sub - s.dele} {s.sub} {s.dele} {s.ins}" for s in scores}
    assert ours == utts
    t = error_rates(refs, hyps)
    sub, dele, ins = t.substitutions, t.deletions, t.insertions
    assert rows["Sum"] == (t.utterances, t.ref_words, t.ref_words - sub - dele, sub, dele, ins,
                           sub + dele + ins, t.sentence_errors)
    from asr.score import by_speaker
    for spk, r in by_speaker(scores).items():
        assert rows[spk][1] == r.ref_words and rows[spk][3:6] == (r.substitutions, r.deletions, r.insertions)


@needs_sclite
def test_lowercase_matches_sclite_default(tmp_path):
    refs = {f"s{i % 3}-{i}": t for i, t in enumerate(["The Cat", "a DOG sat", "On the Mat", "x"])}
    hyps = {f"s{i % 3}-{i}": t for i, t in enumerate(["the cat", "A dog", "on THE mat mat", "Y"])}
    rows, _ = _sclite(tmp_path, refs, hyps)                  # sclite folds case by default
    t = error_rates(refs, hyps, Normalizer(lowercase=True))
    assert rows["Sum"][3:6] == (t.substitutions, t.deletions, t.insertions)

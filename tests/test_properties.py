"""Property-based tests (hypothesis) for manifest parsing, text normalisation and scoring."""
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from asr.data import ManifestError, Utterance, read_manifest, write_manifest
from asr.score import error_rates, read_transcripts, score_utterance, write_kaldi_text, write_trn
from asr.text import DEFAULT_CHARS, CharTokenizer, normalize_text

ids = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc", "Zl", "Zp")), min_size=1, max_size=12)
texts = st.text(max_size=40)
words = st.lists(st.sampled_from(["a", "b", "c", "dd", "é", "日本"]), max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(ids, st.text(min_size=1, max_size=20), st.floats(0.01, 1e4), texts, texts),
                max_size=8, unique_by=lambda t: t[0]))
def test_manifest_roundtrip(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("m") / "m.jsonl"
    utts = [Utterance(i, a, d, t, s) for i, a, d, t, s in rows]
    write_manifest(utts, path)
    assert read_manifest(path) == utts


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_manifest_garbage_raises_only_manifest_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("g") / "g.jsonl"
    path.write_bytes(blob)
    try:
        utts = read_manifest(path)
    except ManifestError as e:
        assert str(path) in str(e)
    else:
        assert all(isinstance(u, Utterance) and u.duration > 0 and math.isfinite(u.duration) for u in utts)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalize_is_idempotent_and_in_vocabulary(text):
    norm = normalize_text(text)
    assert normalize_text(norm) == norm
    assert set(norm) <= set(DEFAULT_CHARS)
    assert norm == norm.strip() and "  " not in norm
    CharTokenizer().encode(norm)          # never raises


@settings(max_examples=200, deadline=None)
@given(words, words)
def test_alignment_counts_are_consistent(ref, hyp):
    s = score_utterance("u", " ".join(ref), " ".join(hyp))
    correct = s.ref_words - s.sub - s.dele
    assert correct >= 0 and correct + s.sub + s.ins == len(hyp)
    assert abs(len(ref) - len(hyp)) <= s.errors <= max(len(ref), len(hyp)) + min(len(ref), len(hyp))
    assert (s.errors == 0) == (ref == hyp)
    assert [r for r, _ in s.alignment if r != "\x00"] == ref and [h for _, h in s.alignment if h != "\x00"] == hyp


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z]{1,4}-[0-9]{1,3}", fullmatch=True), words.map(" ".join), max_size=10))
def test_identity_scores_zero_and_formats_roundtrip(tmp_path_factory, refs):
    tmp = tmp_path_factory.mktemp("s")
    r = error_rates(refs, refs)
    assert r.wer == 0 and r.sentence_errors == 0 and r.utterances == len(refs)
    write_trn(refs, tmp / "r.trn")
    write_kaldi_text(refs, tmp / "r.txt")
    if refs:
        assert read_transcripts(tmp / "r.trn") == refs == read_transcripts(tmp / "r.txt", "kaldi")
    json.dumps(r.as_dict())


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_transcript_garbage_raises_only_score_error(tmp_path_factory, blob):
    from asr.score import ScoreError

    path = tmp_path_factory.mktemp("t") / "hyp.txt"
    path.write_bytes(blob)
    for fmt in ("auto", "trn", "kaldi"):
        try:
            out = read_transcripts(path, fmt)
        except ScoreError as e:
            assert str(path) in str(e)
        else:
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in out.items())


@settings(max_examples=80, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_config_garbage_raises_only_config_error(tmp_path_factory, data):
    import yaml

    from asr.config import ConfigError
    from asr.recipe import load_config

    path = tmp_path_factory.mktemp("c") / "c.yaml"
    path.write_text(yaml.safe_dump({"train": data, "model": {"hidden": data}}))
    try:
        load_config(path)
    except ConfigError as e:
        assert str(path) in str(e) and len(str(e)) < 2000      # one bounded line naming the file


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_audio_header_garbage_raises_only_audio_error(tmp_path_factory, blob):
    from asr.audio import AudioError, load_audio

    path = tmp_path_factory.mktemp("a") / "x.wav"
    path.write_bytes(b"RIFF" + blob)
    try:
        x = load_audio(path)
    except AudioError as e:
        assert str(path) in str(e)
    else:
        assert x.dtype.name == "float32" and x.ndim == 1

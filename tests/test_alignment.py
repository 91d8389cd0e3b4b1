"""asr.align + asr.alignment: the numpy CTC aligner equals torchaudio's; `asr align` times a
given transcript on real (synthesized) speech, piecewise for long audio, reports text it cannot
align with its span, and writes JSON, CTM, TextGrid and SRT."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.align import AlignmentError, forced_align, merge_tokens, min_frames
from asr.alignment import AlignOptions, align_recording, to_textgrid, transcript_words
from asr.data import read_manifest
from asr.recognizer import load
from asr.text import CharTokenizer
from tests.clirun import run_asr


def test_numpy_viterbi_equals_torchaudio():
    import torchaudio.functional as AF

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        t, v = int(rng.integers(5, 90)), int(rng.integers(3, 30))
        ids = rng.integers(1, v, int(rng.integers(1, max(2, t // 2)))).tolist()
        if min_frames(ids) > t:
            continue
        lp = torch.randn(t, v).log_softmax(-1)
        ref, ref_scores = AF.forced_align(lp[None], torch.tensor([ids], dtype=torch.int32), blank=0)
        labels, scores = forced_align(lp.numpy(), ids)
        assert np.array_equal(labels, ref[0].numpy()) and np.allclose(scores, ref_scores[0].numpy())
        spans = merge_tokens(labels, scores)
        assert [s.token for s in spans] == ids                # every token once, in order
        checked += 1
    assert checked > 100
    with pytest.raises(AlignmentError, match="need 3 frames"):
        forced_align(np.zeros((2, 4), np.float32), [1, 1])


def test_unspellable_and_empty_transcripts_are_named():
    tok = CharTokenizer()
    assert transcript_words("Hello, 7 cafés!", tok) == ["hello", "seven", "cafes"]
    with pytest.raises(AlignmentError, match="привет"):
        transcript_words("hello привет", tok)
    with pytest.raises(AlignmentError, match="empty"):
        transcript_words(" ,.! ", tok)


def _joined(speak, tmp: Path, words: list[str], seed: int = 0) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Words synthesized one by one and joined with known gaps of quiet noise: (audio, truth)."""
    rng = np.random.default_rng(seed)
    parts, truth, t = [], [], 0.3
    parts.append(0.001 * rng.standard_normal(int(0.3 * 16000)))
    for i, w in enumerate(words):
        x, rate = sf.read(speak(w, tmp / f"w{i}.wav"), dtype="float32")
        assert rate == 22050 or rate == 16000
        if rate != 16000:
            import soxr
            x = soxr.resample(x, rate, 16000)
        db = 10 * np.log10(np.convolve(x ** 2, np.ones(400) / 400, "same") + 1e-10)
        on = np.flatnonzero(db > db.max() - 30)
        x = x[on[0]: on[-1]]
        gap = 0.001 * rng.standard_normal(int(rng.uniform(0.2, 0.5) * 16000))
        truth.append((w, t, t + x.size / 16000))
        parts += [x, gap]
        t += (x.size + gap.size) / 16000
    return np.concatenate(parts).astype(np.float32), truth


@pytest.mark.espeak
def test_alignment_finds_known_word_times(tiny_recipe, speak, tmp_path):
    tmp = tiny_recipe[0]
    rec = load(tmp / "exp/best.pt")
    words = "three one four one five nine two six five three".split()
    audio, truth = _joined(speak, tmp_path, words)
    al = align_recording(rec, audio, " ".join(words), 16000)
    assert [w.word for w in al.words] == words and not al.unaligned
    starts = np.array([abs(w.start - t[1]) for w, t in zip(al.words, truth)])
    ends = np.array([abs(w.end - t[2]) for w, t in zip(al.words, truth)])
    assert np.median(starts) < 0.1 and np.median(ends) < 0.15          # a tiny model: loose bounds
    assert all(a.end <= b.start + 1e-6 for a, b in zip(al.words, al.words[1:]))
    assert "".join(u.unit for u in al.units) == "".join(words)        # every letter, in order
    grid = to_textgrid(al)
    assert grid.count('name = "words"') == 1 and grid.count('text = "five"') == 2


@pytest.mark.espeak
def test_long_recording_piecewise_and_text_that_does_not_fit(tiny_recipe, speak, tmp_path):
    tmp = tiny_recipe[0]
    rec = load(tmp / "exp/best.pt")
    utts = read_manifest(tmp / "data/test_unseen.jsonl")[:12]
    pieces = [sf.read(u.audio, dtype="float32")[0] for u in utts]
    gap = np.zeros(8000, np.float32)
    audio = np.concatenate([p for x in pieces for p in (x, gap)])
    text = " ".join(u.text for u in utts)
    al = align_recording(rec, audio, text, 16000, AlignOptions(piece_s=4.0))
    n = len(text.split())
    assert len(al.words) + sum(s.end_word - s.first_word for s in al.unaligned if "fit" in s.reason) == n
    assert [w.word for w in al.words][:3] == text.split()[:3]
    assert all(a.start <= b.start for a, b in zip(al.words, al.words[1:]))
    assert al.duration == pytest.approx(audio.size / 16000, abs=0.01)
    # far more text than the audio can hold: reported with its span, nothing silently dropped
    short = audio[: 16000]
    al = align_recording(rec, short, text, 16000)
    assert al.unaligned and sum(s.end_word - s.first_word for s in al.unaligned) + len(al.words) == n
    assert "do not fit" in al.unaligned[0].reason and al.unaligned[0].text.startswith(text.split()[0])


@pytest.mark.espeak
def test_cli_align_file_manifest_and_lite(tiny_recipe, tmp_path):
    tmp = tiny_recipe[0]
    utts = read_manifest(tmp / "data/test_unseen.jsonl")[:5]
    manifest = tmp_path / "m.jsonl"
    lines = [json.dumps({"id": u.id, "audio": u.audio, "duration": u.duration, "text": u.text, "speaker": u.speaker})
             for u in utts]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    lines.append(json.dumps({"id": "broken", "audio": str(broken), "duration": 1.0, "text": "one", "speaker": "x"}))
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ali"
    res = run_asr("align", "--model", str(tmp / "exp/best.pt"), "--manifest",
                  str(manifest), "--output-dir", str(out))
    assert res.returncode == 1 and "broken" in res.stderr                  # reported, the others aligned
    ctm = (out / "all.ctm").read_text().splitlines()
    assert len(ctm) == sum(len(u.text.split()) for u in utts)
    for u in utts:
        for ext in ("json", "ctm", "TextGrid", "srt"):
            assert (out / f"{u.id}.{ext}").stat().st_size > 0
    first = json.loads((out / f"{utts[0].id}.json").read_text())
    # the same alignment from the torch-free runtime, one file, CTM on stdout
    run_asr("export", "--model", str(tmp / "exp/best.pt"), "--out",
            str(tmp_path / "onnx"), "--no-int8", "--no-chunk", check=True)
    res = run_asr("align", "--model", str(tmp_path / "onnx"), utts[0].audio,
                  "--text", utts[0].text)
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines()]
    assert [r[4] for r in rows] == [w["word"] for w in first["words"]]
    assert [float(r[2]) for r in rows] == pytest.approx([w["start"] for w in first["words"]], abs=0.031)


def test_blocks_join_pieces_at_unsure_cuts_and_bound_the_trellis():
    from asr.alignment import blocks

    owner = [0, 0, 1, 1, 2, 3]
    anchored = [True, True, False, True, True, True]
    # the cut after piece 0 has an unanchored word after it: pieces 0 and 1 align together
    assert blocks(owner, anchored, [50, 50, 50, 50], [4] * 6) == [(0, 2, 0, 4), (2, 3, 4, 5), (3, 4, 5, 6)]
    # ... unless joining them would exceed the trellis budget
    assert blocks(owner, anchored, [50, 50, 50, 50], [4] * 6, max_cells=100)[0] == (0, 1, 0, 2)
    # words before the first anchored one, and pieces without words
    assert blocks([1, 1], [False, True], [10, 10, 10], [3, 3]) == [(0, 2, 0, 2), (2, 3, 2, 2)]


def test_manifest_ids_never_write_outside_the_output_dir(tiny_recognizer, tmp_path):
    from asr.alignment import align_utterances
    from asr.data import Utterance

    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 16000)
    out = tmp_path / "deep" / "out"
    utt = Utterance("../../escape", str(tmp_path / "a.wav"), 1.0, "one", "s")
    done, problems = align_utterances(tiny_recognizer, [utt], out, ["json"])
    assert not problems and "../../escape" in done
    assert not list(tmp_path.glob("escape*")) and not list((tmp_path / "deep").glob("escape*"))
    assert len(list(out.glob("*.json"))) == 1

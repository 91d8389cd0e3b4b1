import random

import numpy as np
import pytest
import soundfile as sf

from asr.corpora.digits import DIGIT_VOCAB, digit_string, make_jobs, split_voices
from asr.corpora.real import CorpusError
from asr.corpora.synth import SynthConfig, VoiceGroup
from asr.tts import ENGINES, Engine, Job, SynthError, check_voices, expand_voices, synthesize




def test_expand_voices():
    assert expand_voices(["espeak:{en,en-us}+{m1,f2}", "flite:kal"]) == [
        "espeak:en+m1", "espeak:en+f2", "espeak:en-us+m1", "espeak:en-us+f2", "flite:kal"]
    with pytest.raises(SynthError, match="engine"):
        expand_voices(["sam:voice"])


def test_digit_strings():
    rng = random.Random(0)
    for _ in range(50):
        words = digit_string(rng, 1, 7).split()
        assert 1 <= len(words) <= 7 and set(words) <= set(DIGIT_VOCAB)


def _cfg(**splits):
    return SynthConfig(splits={k: tuple(VoiceGroup(tuple(v), 4) for v in vs) for k, vs in splits.items()})


def test_split_disjointness_is_enforced():
    ok = _cfg(train=[["espeak:en+m1"]], test_unseen=[["espeak:en+m2"]], test_engine=[["piper:joe"]])
    assert split_voices(ok)["test_engine"] == [["piper:joe"]]
    with pytest.raises(CorpusError, match="shares voices"):
        split_voices(_cfg(train=[["espeak:en+m1"]], dev=[["espeak:{en,en-us}+m1"]]))
    with pytest.raises(CorpusError, match="engines unseen"):
        split_voices(_cfg(train=[["espeak:en+m1"]], test_engine=[["espeak:en+m2"]]))


@pytest.mark.espeak
def test_unknown_voices_are_refused():
    check_voices(["espeak:en-us+m1", "espeak:en-gb-x-rp+klatt3"])
    with pytest.raises(SynthError, match=r"unknown TTS voices: \['espeak:en\+nosuch', 'espeak:xx-yy'\]"):
        check_voices(["espeak:en+m1", "espeak:en+nosuch", "espeak:xx-yy"])


def test_jobs_are_deterministic():
    cfg = _cfg(train=[["espeak:en+m1", "espeak:en+f2"]])
    voices = split_voices(cfg)["train"]

    def text_fn(rng, i):
        return digit_string(rng, 1, 7)

    assert make_jobs(cfg, "train", voices, text_fn) == make_jobs(cfg, "train", voices, text_fn)
    jobs = make_jobs(cfg, "train", voices, text_fn)
    assert [j.voice for j in jobs] == ["espeak:en+m1", "espeak:en+f2"] * 2
    assert len({j.text for j in jobs}) > 1


@pytest.mark.espeak
def test_synthesize_espeak_voices_differ(tmp_path):
    jobs = [Job(f"u{i}", "one two three", v, 1.0, 1.0, None, (0.1, 0.1), i)
            for i, v in enumerate(["espeak:en-us+m1", "espeak:en-us+f2", "espeak:en+m3"])]
    jobs.append(Job("bad", "", "espeak:en+m1", 1.0, 1.0, None, (0.1, 0.1), 9))   # no speech
    utts, errors = synthesize(jobs, tmp_path, n_procs=1, progress=False)
    assert [u.id for u in utts] == ["u0", "u1", "u2"]
    assert len(errors) == 1 and errors[0].id == "bad"
    audio = [sf.read(u.audio)[0] for u in utts]
    for a, u in zip(audio, utts):
        assert sf.info(u.audio).samplerate == 16000 and abs(a.size / 16000 - u.duration) < 1e-3
    spectra = [np.abs(np.fft.rfft(a[:16000], 16000)) for a in audio]
    assert not np.allclose(spectra[0], spectra[1], rtol=0.1)   # the f2 variant really differs


@pytest.mark.espeak
def test_kokoro_phonemes_are_in_the_model_vocabulary():
    from asr.tts.kokoro import kokoro_phonemes, load_kokoro
    ph = kokoro_phonemes("oh zero one two three four five six seven eight nine, judge")
    words = ph.split()
    assert words[0] == "ˈO" and words[9] == "ˈAt" and words[10] == "nˈIn"   # diphthongs: one symbol
    assert "ʤ" in words[-1] and "ː" not in ph
    vocab = load_kokoro().vocab
    assert set(ph) - {" "} <= set(vocab)


@pytest.mark.espeak
def test_synthesize_kokoro_voices_speed_and_errors(tmp_path):
    jobs = [Job("a", "three four five", "kokoro:jm_kumo", 1.0, 1.0, None, (0.0, 0.0), 1),
            Job("b", "three four five", "kokoro:jm_kumo", 1.6, 1.0, None, (0.0, 0.0), 1),
            Job("c", "three four five", "kokoro:jf_alpha", 1.0, 1.0, None, (0.0, 0.0), 1),
            Job("long", "seven " * 120, "kokoro:jf_alpha", 1.0, 1.0, None, (0.0, 0.0), 1)]
    utts, errors = synthesize(jobs, tmp_path, n_procs=1, progress=False)
    assert [u.id for u in utts] == ["a", "b", "c"]
    assert len(errors) == 1 and errors[0].id == "long" and "at most" in errors[0].reason
    a, b, c = (u.duration for u in utts)
    assert 0.8 < a < 3.0 and b < 0.8 * a        # speed 1.6 is really faster
    x = sf.read(utts[0].audio)[0]
    y = sf.read(utts[2].audio)[0]
    # male and female voice: the spectral centroid of the female one is higher
    def centroid(z):
        s = np.abs(np.fft.rfft(z))
        return (s * np.arange(s.size)).sum() / s.sum() / z.size * 16000
    assert centroid(y) > centroid(x)


def test_piper_synthesis_is_reproducible(tmp_path):
    """piper samples noise inside its ONNX graph; sessions seeded per chunk make the held-out
    engine's test audio the same on every run, whichever process takes which chunk."""
    pytest.importorskip("piper")
    jobs = [Job(f"p{i}", "four eight two", "piper:joe", 1.0, 1.0, None, (0.05, 0.05), i) for i in range(3)]
    runs = []
    for n, procs in ((0, 2), (1, 1)):
        utts, errors = synthesize(jobs, tmp_path / str(n), n_procs=procs, chunk=2, progress=False)
        assert not errors and [u.id for u in utts] == ["p0", "p1", "p2"]
        runs.append([sf.read(u.audio)[0] for u in utts])
    for a, b in zip(*runs):
        assert a.shape == b.shape and np.array_equal(a, b)
    assert not (runs[0][0].shape == runs[0][2].shape and np.allclose(runs[0][0], runs[0][2]))


class _Sine(Engine):
    """A toy engine: one tone per word, pitch from the voice name; fails on empty text."""

    name = "sine"

    def installed(self) -> bool:
        return True

    def voices(self) -> set[str]:
        return {"low", "high"}

    def render(self, job, name, path, batch_state):
        if not job.text:
            raise SynthError(f"{job.utt_id}: nothing to say")
        f0 = {"low": 200.0, "high": 800.0}[name] * self.native_params(job)[1]
        t = np.arange(int(0.2 * 16000 * len(job.text.split()) / self.native_params(job)[0])) / 16000
        sf.write(str(path), 0.5 * np.sin(2 * np.pi * f0 * t), 16000)


def test_a_registered_engine_is_all_it_takes(tmp_path, monkeypatch):
    """An engine is one Engine subclass plus one registry entry: voices are checked, jobs are
    rendered in worker processes, post-processed to 16 kHz, and failures reported by id."""
    monkeypatch.setitem(ENGINES, "sine", _Sine())
    assert expand_voices(["sine:{low,high}"]) == ["sine:low", "sine:high"]
    check_voices(["sine:low"])
    with pytest.raises(SynthError, match="sine:mid"):
        check_voices(["sine:mid"])
    jobs = [Job("a", "one two", "sine:low", 1.0, 1.0, None, (0.1, 0.1), 1),
            Job("b", "one two", "sine:high", 2.0, 1.0, None, (0.1, 0.1), 2),
            Job("c", "", "sine:high", 1.0, 1.0, None, (0.1, 0.1), 3)]
    utts, errors = synthesize(jobs, tmp_path, n_procs=2, chunk=1, progress=False)
    assert [u.id for u in utts] == ["a", "b"] and [e.id for e in errors] == ["c"]
    assert "nothing to say" in errors[0].reason
    a, b = (sf.read(u.audio)[0] for u in utts)
    assert b.size < a.size                      # speed 2: half the speech, same padding
    spec = [np.abs(np.fft.rfft(z)).argmax() / z.size * 16000 for z in (a, b)]
    assert spec[0] < 400 < 600 < spec[1]        # the voices' pitches

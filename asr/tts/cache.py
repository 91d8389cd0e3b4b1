"""A content-addressed cache of synthesized utterances: reruns and edited configs never
synthesize the same utterance twice.

An utterance's key is the SHA-256 of everything its audio depends on: the job (text, voice,
speed, pitch, formant, noise, padding, seed; not its id), the installed versions of the engine's
packages (:meth:`Engine.version`: engine, voices, runtime), the source of the synthesis code
(``asr/tts/*.py``: post-processing and the engine wrappers) and, for engines whose randomness is
seeded per batch (piper), the whole batch it was rendered in. Adding a voice group to a split
therefore synthesizes only the new utterances; a changed engine, voice package, seed or wrapper
synthesizes again. An engine whose versions cannot be read is never cached.

Files live in ``$ASR_SYNTH_CACHE`` (default ``~/.cache/asr/synth``, or under ``$ASR_CACHE``;
``ASR_SYNTH_CACHE=off`` turns the cache off) as ``ab/abcdef....wav``, written atomically and
copied out (never linked: a tool that rewrites a corpus file in place cannot reach the cache).
``rm -r`` the folder to clear it. Failed syntheses are never cached; an unreadable entry is
dropped and synthesized again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import soundfile as sf

from .base import Job

log = logging.getLogger(__name__)

CACHE_FORMAT = 1            # bump when the cache layout changes


def default_cache_dir() -> Path | None:
    """The cache folder, or None when ``ASR_SYNTH_CACHE=off``."""
    env = os.environ.get("ASR_SYNTH_CACHE", "")
    if env.lower() in ("off", "0", "none"):
        return None
    if env:
        return Path(env)
    return Path(os.environ.get("ASR_CACHE", Path.home() / ".cache" / "asr")) / "synth"


@lru_cache(maxsize=1)
def code_digest() -> str:
    """Digest of the synthesis code (this package's sources)."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _job_fields(job: Job) -> dict:
    d = dataclasses.asdict(job)
    d.pop("utt_id")
    return d


def job_keys(chunk: Sequence[Job], version: str, batch_seeded: bool) -> list[str]:
    """Cache key per job of one batch (one voice) rendered together."""
    batch = [_job_fields(j) for j in chunk] if batch_seeded else None
    keys = []
    for job in chunk:
        blob = json.dumps({"format": CACHE_FORMAT, "code": code_digest(), "version": version,
                           "job": _job_fields(job), "batch": batch}, sort_keys=True)
        keys.append(hashlib.sha256(blob.encode()).hexdigest())
    return keys


class SynthCache:
    """Cached 16-kHz utterance WAVs by key (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.wav"

    def frames(self, key: str) -> int | None:
        """Samples of the cached audio of ``key``; None when it is not cached (an unreadable
        entry is removed: it will be synthesized again)."""
        src = self.path(key)
        if not src.is_file():
            return None
        try:
            return sf.info(str(src)).frames
        except (RuntimeError, OSError) as e:
            log.warning("synthesis cache: dropping unreadable %s (%s)", src, e)
            src.unlink(missing_ok=True)
            return None

    def restore(self, key: str, dest: Path) -> int | None:
        """Copy the cached audio of ``key`` to ``dest``; its samples, or None when not cached."""
        n = self.frames(key)
        if n is None:
            return None
        tmp = dest.with_name(f".{dest.name}.restore.tmp")
        try:
            shutil.copyfile(self.path(key), tmp)
        except FileNotFoundError:           # removed meanwhile (another process cleared it)
            return None
        tmp.replace(dest)
        return n

    def store(self, key: str, wav: Path) -> None:
        """Cache ``wav`` under ``key`` (copied, then renamed into place: readers never see half a file)."""
        dest = self.path(key)
        if dest.is_file():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".", suffix=".tmp")
        os.close(fd)
        shutil.copyfile(wav, tmp)
        os.replace(tmp, dest)

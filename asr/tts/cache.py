"""A content-addressed cache of synthesized utterances: reruns and edited configs never
synthesize the same utterance twice.

An utterance's key is the SHA-256 of everything its audio depends on: the job (text, voice,
speed, pitch, formant, noise, padding, seed; not its id), the engine's installed version and,
for engines whose randomness is seeded per batch (piper), the whole batch it was rendered in.
Adding a voice group to a split therefore synthesizes only the new utterances, and a changed
engine version or seed synthesizes again. Files live in ``$ASR_SYNTH_CACHE`` (default
``~/.cache/asr/synth``, or under ``$ASR_CACHE``) as ``ab/abcdef....wav``, written atomically;
``rm -r`` the folder to clear it. Failed syntheses are never cached.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from .base import Job

CACHE_FORMAT = 1            # bump when post-processing changes what a job's audio is


def default_cache_dir() -> Path:
    if os.environ.get("ASR_SYNTH_CACHE"):
        return Path(os.environ["ASR_SYNTH_CACHE"])
    return Path(os.environ.get("ASR_CACHE", Path.home() / ".cache" / "asr")) / "synth"


def _job_fields(job: Job) -> dict:
    d = dataclasses.asdict(job)
    d.pop("utt_id")
    return d


def job_keys(chunk: Sequence[Job], version: str, batch_seeded: bool) -> list[str]:
    """Cache key per job of one batch (one voice) rendered together."""
    batch = [_job_fields(j) for j in chunk] if batch_seeded else None
    keys = []
    for job in chunk:
        blob = json.dumps({"format": CACHE_FORMAT, "version": version, "job": _job_fields(job),
                           "batch": batch}, sort_keys=True)
        keys.append(hashlib.sha256(blob.encode()).hexdigest())
    return keys


class SynthCache:
    """Cached 16-kHz utterance WAVs by key (see the module docstring)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.wav"

    def restore(self, key: str, dest: Path) -> bool:
        """Put the cached audio of ``key`` at ``dest`` (a hard link where the file system allows);
        False when it is not cached."""
        src = self.path(key)
        if not src.is_file():
            return False
        dest.unlink(missing_ok=True)
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
        return True

    def store(self, key: str, wav: Path) -> None:
        """Cache ``wav`` under ``key`` (copied, then renamed into place: readers never see half a file)."""
        dest = self.path(key)
        if dest.is_file():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(wav, tmp)
        tmp.replace(dest)

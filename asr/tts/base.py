"""The TTS engine interface and the per-utterance job description.

An engine turns a batch of :class:`Job` of one voice into raw audio files (any rate); the
corpus code (``asr.tts.synthesize``) post-processes them to 16 kHz with padding, noise and level.
Engines hold no module-level state: whatever a batch needs (a loaded ONNX session, a seeded
voice) is created by :meth:`Engine.synthesize` for that batch.
"""
from __future__ import annotations

import importlib.metadata
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import AsrError

SYNTH_TIMEOUT_S = 600


class SynthError(AsrError):
    """A TTS engine failed on an utterance (the message names it and has the engine's output)."""


@dataclass(frozen=True)
class Job:
    """One utterance to synthesize; ``speed`` > 1 is faster, ``pitch`` > 1 is higher, ``formant``
    > 1 shifts the spectral envelope up (a shorter vocal tract)."""

    utt_id: str
    text: str
    voice: str                  # "engine:name"
    speed: float
    pitch: float
    snr_db: float | None        # None: no added noise
    pad_s: tuple[float, float]  # silence before / after
    seed: int
    formant: float = 1.0


class Engine:
    """One TTS engine. Subclasses set ``name`` and implement :meth:`voices` and :meth:`render`
    (or :meth:`synthesize` for engines that render a whole batch in one call)."""

    name = ""
    licence = ""                # of the engine and its voices: model cards list it for the data made
    pitch_control = True        # the engine takes a pitch target (else pitch comes from resampling)
    batch_seeded = False        # its randomness is seeded per batch: a job's audio depends on its batch
    python_packages: tuple[str, ...] = ()    # what its audio depends on: their versions are part
    debian_packages: tuple[str, ...] = ()    # of the synthesis cache key (asr/tts/cache.py)

    def installed(self) -> bool:
        raise NotImplementedError

    def version(self) -> str:
        """The installed versions of ``python_packages`` and ``debian_packages`` (engine, voices,
        runtime), part of the synthesis cache key; "" when one cannot be read (then nothing of
        this engine is cached)."""
        parts = []
        for pkg in self.python_packages:
            try:
                parts.append(f"{pkg}={importlib.metadata.version(pkg)}")
            except importlib.metadata.PackageNotFoundError:
                return ""
        for pkg in self.debian_packages:
            try:
                res = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
            except OSError:                 # not a Debian system
                return ""
            if res.returncode != 0 or not res.stdout.strip():
                return ""
            parts.append(f"{pkg}={res.stdout.strip()}")
        return " ".join(parts)

    def voices(self) -> set[str]:
        """Voice names this engine really has (engines fall back silently on unknown names)."""
        raise NotImplementedError

    def native_params(self, job: Job) -> tuple[float, float, float]:
        """(engine speed, engine pitch, resample factor r) that realise the job's targets.

        Playing audio ``r`` times faster (by resampling) scales pitch, formants and speed by ``r``,
        so the engine is asked for speed / r and pitch / r. Engines without a pitch control get
        their pitch from ``r`` alone (pitch and formants move together there)."""
        if not self.pitch_control:
            r = job.pitch
            return job.speed / r, 1.0, r
        r = job.formant
        return job.speed / r, job.pitch / r, r

    def render(self, job: Job, name: str, path: Path, batch_state: object) -> None:
        """Write the raw audio of one job to ``path`` (a WAV file at the engine's rate)."""
        raise NotImplementedError

    def open_batch(self, name: str, jobs: Sequence[Job]) -> object:
        """Per-batch state shared by :meth:`render` calls (a loaded model); None by default."""
        return None

    def synthesize(self, jobs: Sequence[Job], name: str, paths: Sequence[Path]) -> list[Exception | None]:
        """Render every job of voice ``name`` to its path; per job the error, or None."""
        state = self.open_batch(name, jobs)
        errors: list[Exception | None] = []
        for job, path in zip(jobs, paths):
            try:
                self.render(job, name, path, state)
                errors.append(None)
            except (SynthError, OSError, RuntimeError, subprocess.TimeoutExpired) as e:
                errors.append(e)
        return errors


def run_tool(cmd: list[str], what: str) -> None:
    """Run an engine's command line; :class:`SynthError` with its stderr tail on failure."""
    res = subprocess.run(cmd, capture_output=True, timeout=SYNTH_TIMEOUT_S)
    if res.returncode != 0:
        raise SynthError(f"{what}: {' '.join(cmd[:3])} failed: {res.stderr.decode(errors='replace')[-300:]}")

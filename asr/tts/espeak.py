"""espeak-ng: formant synthesis, ~100 English voice x variant combinations, very fast."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from .base import Engine, Job, run_tool

ESPEAK_BASE_WPM = 165
ESPEAK_BASE_PITCH = 50          # espeak's 0-99 pitch scale


class Espeak(Engine):
    name = "espeak"
    licence = "espeak-ng: GPL-3.0-or-later (engine and voice data)"
    debian_packages = ("espeak-ng", "espeak-ng-data")

    def installed(self) -> bool:
        return shutil.which("espeak-ng") is not None

    def voices(self) -> set[str]:
        langs = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True).stdout
        variants = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout
        names = {row.split()[1] for row in langs.splitlines()[1:] if len(row.split()) > 1}
        var = {row.split()[4].split("/")[-1] for row in variants.splitlines()[1:] if len(row.split()) > 4}
        return names | {f"{n}+{v}" for n in names for v in var}

    def render(self, job: Job, name: str, path: Path, batch_state: object) -> None:
        speed, pitch_factor, _ = self.native_params(job)
        wpm = int(round(ESPEAK_BASE_WPM * speed))
        pitch = int(np.clip(round(ESPEAK_BASE_PITCH * pitch_factor), 0, 99))
        run_tool(["espeak-ng", "-v", name, "-s", str(wpm), "-p", str(pitch), "-w", str(path), job.text], job.utt_id)

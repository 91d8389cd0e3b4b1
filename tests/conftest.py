"""Shared fixtures: small generated audio and a tiny trained-from-scratch model."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.config import FeatureConfig, ModelConfig
from asr.model import BiLSTMCTC
from asr.text import CharTokenizer

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def speak(text: str, path: Path, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    return path


@pytest.fixture
def wav_dir(tmp_path: Path) -> Path:
    """A folder with a good 16 kHz file, a 44.1 kHz stereo file, an empty file and junk bytes."""
    sf.write(tmp_path / "good.wav", tone(1.0), 16000)
    sf.write(tmp_path / "stereo44.wav", tone(0.5, 44100, channels=2), 44100)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00garbage-not-audio" * 10)
    return tmp_path


@pytest.fixture
def tiny_model() -> BiLSTMCTC:
    torch.manual_seed(0)
    model = BiLSTMCTC(ModelConfig(stack=3, hidden=32, layers=2, dropout=0.0), 80, len(CharTokenizer()))
    model.tokenizer = CharTokenizer()
    model.feature_config = FeatureConfig()
    return model

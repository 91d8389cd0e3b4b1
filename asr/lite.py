"""Torch-free inference on an ONNX export (``asr export``): onnxruntime + numpy + soundfile.

``load_lite(DIR)`` returns a :class:`LiteRecognizer` that ``asr.transcribe.transcribe`` drives
exactly as it drives the torch :class:`asr.recognizer.Recognizer` (same segmentation, word
alignment and output formats); ``asr transcribe --model DIR`` uses it without importing torch.
Decoding is greedy. Streaming uses the exported chunk graph through :class:`ChunkRunner`.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .audio import SAMPLE_RATE_HZ
from .decode_config import Hypothesis
from .errors import AsrError, MissingFileError
from .text import tokenizer_from_payload

EXPORT_FORMAT = "asr-onnx-v1"
EXPORT_JSON = "asr-export.json"
LOG_FLOOR = 1e-6          # as asr.features: power floor before the log


class ExportFormatError(AsrError):
    """A directory is not a usable ONNX export (missing, altered or foreign files)."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_export(path: str | Path) -> bool:
    return (Path(path) / EXPORT_JSON).is_file()


class LogMel:
    """(N,) samples at 16 kHz -> (T, n_mels) log-mels, T = 1 + N // hop: the torch front end
    (centred STFT with reflect padding, power spectrum, mel filterbank, log) in numpy."""

    def __init__(self, cfg: dict, window: np.ndarray, mel: np.ndarray):
        self.n_fft, self.n_mels = int(cfg["n_fft"]), int(cfg["n_mels"])
        self.hop = int(round(cfg["hop_ms"] * SAMPLE_RATE_HZ / 1000))
        self.dither = float(cfg.get("dither", 0.0))
        self.window, self.mel = window.astype(np.float32), mel.astype(np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32)
        if self.dither > 0:
            x = x + self.dither * np.random.default_rng().standard_normal(x.size).astype(np.float32)
        half = self.n_fft // 2
        x = np.pad(x, half, mode="reflect") if x.size > half else np.pad(x, half)
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop]
        power = np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2
        return np.log(np.maximum(power.astype(np.float32) @ self.mel, LOG_FLOOR))


class LiteGreedy:
    """Greedy CTC decoding of (B, T, V) numpy log-probs -> one :class:`Hypothesis` each."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, log_probs: np.ndarray, out_lens: Sequence[int]) -> list[Hypothesis]:
        hyps = []
        for lp, n in zip(log_probs, out_lens):
            best = lp[: int(n)].argmax(-1)
            keep = (best != 0) & (best != np.concatenate([[-1], best[:-1]]))
            ids = best[keep].tolist()
            score = float(lp[np.arange(int(n)), best].sum())
            hyps.append(Hypothesis(ids, self.tokenizer.decode(ids), score))
        return hyps


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class LiteRecognizer:
    """An ONNX export ready to recognise: ``features`` (numpy log-mels), the onnxruntime
    ``session`` of the whole-utterance graph, ``tokenizer``, greedy ``decoder`` and the export's
    description ``desc`` (configs, CMVN, checkpoint info)."""

    path: Path
    desc: dict
    features: LogMel
    tokenizer: object
    session: object
    decoder: LiteGreedy
    int8: bool = False
    threads: int = 1
    info: dict = field(default_factory=dict)
    calibration: object = None                  # asr.calibration.Calibration from the export

    @property
    def stack(self) -> int:
        return int(self.desc["model_config"]["stack"])

    @property
    def frame_s(self) -> float:
        return self.features.hop / SAMPLE_RATE_HZ * self.stack

    @property
    def min_samples(self) -> int:
        return self.stack * self.features.hop

    def forward(self, feats: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """[(T_i, F)] -> (log_probs (B, T', V) zero-padded, out_lens (B,)); each utterance
        runs alone (batch 1: the graph is exact for unpadded input)."""
        outs = [self.session.run(None, {"feats": np.asarray(f, np.float32)[None]})[0][0] for f in feats]
        lens = np.array([o.shape[0] for o in outs])
        out = np.zeros((len(outs), int(lens.max()), outs[0].shape[1]), np.float32)
        for i, o in enumerate(outs):
            out[i, : o.shape[0]] = o
        return out, lens

    def emissions(self, feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per utterance (T_i', V) log-probs."""
        return [self.session.run(None, {"feats": np.asarray(f, np.float32)[None]})[0][0] for f in feats]

    def transcribe(self, audio, sample_rate: int | None = None, **options):
        """As :meth:`asr.recognizer.Recognizer.transcribe` (greedy decoding)."""
        from .transcribe import SegmentOptions, transcribe

        return transcribe(self, audio, sample_rate, SegmentOptions(**options))

    def chunk_runner(self) -> "ChunkRunner":
        return ChunkRunner(self)


def read_export(path: str | Path, verify: Sequence[str] = ()) -> dict:
    """The export description of directory ``path``, after checking its format and the
    SHA-256 of the files named in ``verify``; errors name the directory and the file."""
    path = Path(path)
    desc_path = path / EXPORT_JSON
    if not desc_path.is_file():
        raise MissingFileError(f"{path}: not an ONNX export (no {EXPORT_JSON}; make one with asr export)")
    try:
        desc = json.loads(desc_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ExportFormatError(f"{desc_path}: not valid JSON ({e})") from None
    if not isinstance(desc, dict) or desc.get("format") != EXPORT_FORMAT:
        raise ExportFormatError(f"{desc_path}: not an asr export (expected format {EXPORT_FORMAT})")
    for name in verify:
        want = desc.get("sha256", {}).get(name)
        if want is None or not (path / name).is_file():
            raise ExportFormatError(f"{path}: {name} is missing from the export")
        if sha256(path / name) != want:
            raise ExportFormatError(f"{path / name}: SHA-256 differs from {EXPORT_JSON} (altered or corrupt)")
    return desc


def _tokenizer(payload: dict):
    if payload.get("encoding") == "base64":
        payload = {**payload, "model": base64.b64decode(payload["model"])}
    try:
        return tokenizer_from_payload(payload)
    except (ValueError, KeyError, TypeError) as e:
        raise ExportFormatError(f"export tokenizer: {e}") from None


def load_lite(path: str | Path, int8: bool = False, threads: int = 1, verify: bool = True) -> LiteRecognizer:
    """Load an export directory (``int8``: the quantized graph; ``threads``: onnxruntime
    intra-op threads). ``verify`` checks the SHA-256 of the graph and front end it loads."""
    path = Path(path)
    graph = "model.int8.onnx" if int8 else "model.onnx"
    desc = read_export(path, (graph, "frontend.npz") if verify else ())
    with np.load(path / "frontend.npz", allow_pickle=False) as arrays:
        features = LogMel(desc["feature_config"], arrays["window"], arrays["mel"])
    tokenizer = _tokenizer(desc["tokenizer"])
    from .calibration import CALIBRATION_FILE, Calibration

    calibration = None
    if (path / CALIBRATION_FILE).is_file():             # checked against the model when exported
        if verify:
            read_export(path, (CALIBRATION_FILE,))
        calibration = Calibration.load(path / CALIBRATION_FILE)
    return LiteRecognizer(path, desc, features, tokenizer, _session(path / graph, threads), LiteGreedy(tokenizer),
                          int8, threads, desc.get("info", {}), calibration)


class ChunkRunner:
    """Streaming log-probs of one utterance through the exported chunk graph, state in and out:
    ``accept`` log-mel frames as they come and get the log-probs of every window that became
    complete; ``finish`` the rest. Window j commits output frames [j*C, j*C + C) after seeing
    up to j*C + C + R; the forward LSTM state is carried between windows, the backward
    direction sees the window alone, and utterance CMN (when the model uses it) is taken over
    the frames heard up to the window's end. Equals :func:`asr.model.latency_controlled`."""

    def __init__(self, rec: LiteRecognizer, chunk: int = 8, right: int = 4):
        self.cfg = rec.desc["model_config"]
        graph = "chunk.int8.onnx" if rec.int8 else "chunk.onnx"
        read_export(rec.path, (graph,))                 # present (not a --no-chunk export) and unaltered
        self.session = _session(rec.path / graph, rec.threads)
        self.vocab = len(rec.tokenizer.vocab)
        self.chunk, self.right, self.stack = chunk, right, rec.stack
        self.h = np.zeros((self.cfg["layers"], 1, self.cfg["hidden"]), np.float32)
        self.c = np.zeros_like(self.h)
        self.mean = np.asarray(rec.desc["cmvn"]["mean"], np.float32)
        self.std = np.asarray(rec.desc["cmvn"]["std"], np.float32)
        self.feats = np.zeros((0, self.mean.size), np.float32)   # every log-mel frame heard
        self.done = 0                                              # output frames committed

    def accept(self, feats: np.ndarray) -> np.ndarray:
        """(T, F) new log-mel frames -> (k * C, V) log-probs of the windows now complete."""
        self.feats = np.concatenate([self.feats, np.asarray(feats, np.float32)])
        out = []
        while self.feats.shape[0] // self.stack - self.done >= self.chunk + self.right:
            out.append(self._window(self.done + self.chunk + self.right))
        return np.concatenate(out) if out else np.zeros((0, self.vocab), np.float32)

    def finish(self) -> np.ndarray:
        """Log-probs of the output frames still uncommitted (the last, shorter windows)."""
        n_out, out = self.feats.shape[0] // self.stack, []
        while self.done < n_out:
            out.append(self._window(min(self.done + self.chunk + self.right, n_out)))
        return np.concatenate(out) if out else np.zeros((0, self.vocab), np.float32)

    def _window(self, end: int) -> np.ndarray:
        """Run output frames [done, end); commit the first C of them."""
        s, start = self.stack, self.done
        n_commit = min(self.chunk, end - start)
        x = (self.feats[start * s: end * s] - self.mean) / self.std
        if self.cfg["utterance_cmn"]:
            x = self._cmn(x, end * s)
        x = x.reshape(1, end - start, -1)
        lp, self.h, self.c = self.session.run(None, {"chunk": x[:, :n_commit], "right": x[:, n_commit:],
                                                     "h": self.h, "c": self.c})
        self.done += n_commit
        return lp[0, :n_commit]

    def _cmn(self, x: np.ndarray, heard: int) -> np.ndarray:
        """``x`` minus the mean of the speech frames among the first ``heard`` (the model's
        utterance-CMN rule: frames within ``cmn_floor_db`` of the loudest so far)."""
        past = (self.feats[:heard] - self.mean) / self.std
        valid = np.ones(heard, bool)
        if self.cfg["cmn_floor_db"] > 0:
            energy = self.feats[:heard].mean(-1)
            valid = energy >= energy.max() - self.cfg["cmn_floor_db"] * np.log(10) / 10
        mean = past[valid].mean(0)
        x = x - mean
        if self.cfg["utterance_cvn"]:
            var = (past[valid] ** 2).mean(0) - mean ** 2
            x = x / np.maximum(np.sqrt(np.maximum(var, 0)), 0.1)
        return x

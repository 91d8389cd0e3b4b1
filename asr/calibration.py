"""Word confidence that means something: calibration fitted on dev, and how to measure it.

A word's raw confidence is the geometric-mean posterior of its aligned frames
(``transcribe.words_from_spans``); a BiLSTM CTC model is over-confident, so on a dev set the
probability that a word is right is fitted as ``sigmoid(a * logit(c) + b)`` (Platt scaling, two
parameters, Newton's method). ``calibration.json`` next to a model (or in its package) is
applied by ``asr transcribe`` and ``asr serve``; ``asr evaluate --confidence`` reports ECE, NCE and
the AUROC of detecting word errors, before and after, with a list of the words to check.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import AsrError

log = logging.getLogger(__name__)

CALIBRATION_FORMAT = "asr-calibration-v1"
CALIBRATION_FILE = "calibration.json"
EPS = "<eps>"
_CLIP = 1e-4


class CalibrationError(AsrError):
    """A calibration file cannot be read, or there is nothing to fit."""


def _logit(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), _CLIP, 1 - _CLIP)
    return np.log(c / (1 - c))


@dataclass(frozen=True)
class Calibration:
    """``p(correct) = sigmoid(a * logit(confidence) + b)``; ``fitted_on``: what it saw."""

    a: float = 1.0
    b: float = 0.0
    fitted_on: str = ""
    words: int = 0
    model_sha256: str = ""       # the model file it was fitted for ("": any)

    def __call__(self, confidence):
        return 1.0 / (1.0 + np.exp(-(self.a * _logit(confidence) + self.b)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({"format": CALIBRATION_FORMAT, **asdict(self)}, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        try:
            d = json.loads(Path(path).read_text())
            if not isinstance(d, dict) or d.pop("format", None) != CALIBRATION_FORMAT:
                raise ValueError(f"expected a JSON object of format {CALIBRATION_FORMAT}")
            return cls(float(d["a"]), float(d["b"]), str(d.get("fitted_on", "")), int(d.get("words", 0)),
                       str(d.get("model_sha256", "")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CalibrationError(f"{path}: not a calibration file ({e})") from None


def beside(model_path: str | Path) -> Calibration | None:
    """The calibration stored next to a model file, if any and if it was fitted for this very
    file (another checkpoint in the folder, e.g. an earlier epoch, gets none, with a warning)."""
    path = Path(model_path).parent / CALIBRATION_FILE
    if not path.is_file():
        return None
    cal = Calibration.load(path)
    if cal.model_sha256 and Path(model_path).is_file() and cal.model_sha256 != file_sha256(model_path):
        log.warning("%s was fitted for another model file than %s: not used", path, model_path)
        return None
    return cal


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def label_words(ref: str, hyp: Sequence[str]) -> list[bool]:
    """Whether each hypothesis word is right: paired with the same reference word by the
    sclite alignment."""
    import kaldialign

    out = []
    for r, h in kaldialign.align(ref.split(), list(hyp), EPS, sclite_mode=True):
        if h != EPS:
            out.append(r == h)
    return out


def fit(confidence: Sequence[float], correct: Sequence[bool], fitted_on: str = "", iters: int = 50) -> Calibration:
    """Platt scaling by Newton's method on the log-loss (a tiny ridge keeps it finite when the
    classes separate)."""
    x, y = _logit(confidence), np.asarray(correct, np.float64)
    if x.size < 10 or y.min() == y.max():
        raise CalibrationError(f"cannot fit a calibration on {x.size} words with "
                               f"{int(y.sum())} right and {int(x.size - y.sum())} wrong (need both, >= 10)")
    w = np.array([1.0, 0.0])
    feats = np.stack([x, np.ones_like(x)], 1)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(feats @ w)))
        grad = feats.T @ (p - y) + 1e-3 * w
        hess = (feats * (p * (1 - p))[:, None]).T @ feats + 1e-3 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Calibration(float(w[0]), float(w[1]), fitted_on, int(x.size))


def metrics(confidence: Sequence[float], correct: Sequence[bool], bins: int = 15) -> dict:
    """ECE (equal-width bins), NCE (NIST normalised cross entropy) and the AUROC of detecting
    word errors from 1 - confidence."""
    c = np.clip(np.asarray(confidence, np.float64), _CLIP, 1 - _CLIP)
    y = np.asarray(correct, bool)
    idx = np.minimum((c * bins).astype(int), bins - 1)
    ece = sum(abs(c[idx == k].mean() - y[idx == k].mean()) * (idx == k).mean() for k in range(bins) if (idx == k).any())
    p = y.mean()
    h_max = -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) if 0 < p < 1 else float("nan")
    h = -np.mean(np.where(y, np.log2(c), np.log2(1 - c)))
    err = ~y
    if err.any() and y.any():
        ranks = np.argsort(np.argsort(-c, kind="stable"), kind="stable") + 1.0   # low confidence = high rank
        auroc = (ranks[err].sum() - err.sum() * (err.sum() + 1) / 2) / (err.sum() * y.sum())
    else:
        auroc = float("nan")
    return {"words": int(y.size), "word_accuracy": round(float(p), 4), "ece": round(float(ece), 4),
            "nce": round(float((h_max - h) / h_max), 4), "auroc_errors": round(float(auroc), 4)}

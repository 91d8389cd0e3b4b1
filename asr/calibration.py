"""Word confidence that means something: calibration fitted on dev, and how to measure it.

A word's raw confidence is the geometric-mean posterior of its aligned frames
(``transcribe.words_from_spans``). A BiLSTM CTC model is over-confident, and more so on audio
unlike its training data (a room, babble), where it is wrong on many words it is sure of. So the
probability that a word is right is a logistic regression on four features of the word and the
segment it was heard in (:data:`FEATURES`): the word's logit confidence, the mean logit
confidence of the segment's words, the mean frame entropy of the segment's posteriors (nats)
(these two say how well the model knows this audio), and the logit of the word's posterior over
every hypothesis the decoder scored (the grammar decoder: all phrases; beam decoders: their 16
best; 0 for greedy), which says whether another hypothesis was nearly as likely. Fitted on dev and
on dev through named conditions (``asr calibrate --manifest dev.jsonl --manifest dev_reverb.jsonl``, the recipes'
``calibrate`` stage), it is stored as ``calibration.json`` next to a model (or in its package) and
applied by ``asr transcribe``, ``asr serve`` and streaming finals; ``asr evaluate --confidence``
reports ECE, NCE and the AUROC of detecting word errors, before and after, with a list of the
words to check. Files of format v2 (the first three features) and v1 (Platt scaling of the word's
confidence alone) still load.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .config import require
from .errors import AsrError

log = logging.getLogger(__name__)

CALIBRATION_FORMAT = "asr-calibration-v3"
SEGMENT_FORMAT = "asr-calibration-v2"    # the first three features
PLATT_FORMAT = "asr-calibration-v1"      # (a, b) on the word's confidence alone
FEATURES = ("logit_confidence", "segment_mean_logit_confidence", "segment_entropy_nats", "word_posterior_logit")
CALIBRATION_FILE = "calibration.json"
EPS = "<eps>"
_CLIP = 1e-4
_POSTERIOR_CLIP = 1e-6          # phrase posteriors are often within 1e-5 of 1: keep that range


class CalibrationError(AsrError):
    """A calibration file cannot be read, or there is nothing to fit."""


@dataclass(frozen=True)
class CalibrateConfig:
    """A recipe's ``calibrate`` stage: fitted on ``splits`` pooled (dev, and dev through named
    rooms and noise from ``robust``), for the output of decoder ``method``; none when empty."""

    splits: tuple[str, ...] = ()
    method: Literal["greedy", "beam", "beam_lm", "grammar"] = "greedy"

    def check(self, where: str) -> None:
        require(len(set(self.splits)) == len(self.splits), f"{where}.splits", "names a split twice")


def _logit(c: np.ndarray, clip: float = _CLIP) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), clip, 1 - clip)
    return np.log(c / (1 - c))


def word_features(confidences: Sequence[float], log_probs=None, posteriors: Sequence[float] | None = None) -> np.ndarray:
    """(N, 4) :data:`FEATURES` of one segment's N words from their raw confidences, the
    segment's (T, V) log-probs (a tensor or an array; None: entropy 0) and the words' posteriors
    over the decoder's hypotheses (``Hypothesis.word_posteriors``; None or a count that does not
    match the words: feature 0, so a calibration fitted on such a decoder gives it no weight)."""
    x = _logit(np.asarray(confidences, np.float64).reshape(-1))
    known = posteriors is not None and len(posteriors) == x.size
    post = _logit(np.asarray(posteriors, np.float64), _POSTERIOR_CLIP) if known else np.zeros_like(x)
    entropy = 0.0
    if log_probs is not None and len(log_probs):
        lp = np.asarray(log_probs.detach().cpu().numpy() if hasattr(log_probs, "detach") else log_probs, np.float64)
        entropy = float(-np.where(lp > -np.inf, np.exp(lp) * lp, 0.0).sum(1).mean())   # 0 log 0 = 0
    return np.stack([x, np.full_like(x, x.mean() if x.size else 0.0), np.full_like(x, entropy),
                     post], 1)


@dataclass(frozen=True)
class Calibration:
    """``p(correct) = sigmoid(weights . features + bias)`` over :data:`FEATURES`; ``fitted_on``:
    what it saw."""

    weights: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)
    bias: float = 0.0
    fitted_on: str = ""
    words: int = 0
    model_sha256: str = ""       # the model file it was fitted for ("": any)

    def probability(self, feats: np.ndarray) -> np.ndarray:
        """(N, 4) features -> (N,) p(correct)."""
        z = np.asarray(feats, np.float64) @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))        # no overflow for separable fits

    def apply(self, words: Sequence, log_probs=None, posteriors: Sequence[float] | None = None) -> None:
        """Replace the raw confidences of one segment's words (in place) by calibrated ones
        (``posteriors``: the hypothesis' ``word_posteriors``)."""
        if words:
            p = self.probability(word_features([w.confidence for w in words], log_probs, posteriors))
            for w, c in zip(words, p):
                w.confidence = round(float(c), 4)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        d = {"format": CALIBRATION_FORMAT, "features": list(FEATURES), **asdict(self)}
        path.write_text(json.dumps({**d, "weights": list(self.weights)}, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        try:
            d = json.loads(Path(path).read_text())
            if not isinstance(d, dict) or d.get("format") not in (CALIBRATION_FORMAT, SEGMENT_FORMAT, PLATT_FORMAT):
                raise ValueError(f"expected a JSON object of format {CALIBRATION_FORMAT}")
            if d["format"] == PLATT_FORMAT:
                weights, bias = (float(d["a"]), 0.0, 0.0, 0.0), float(d["b"])
            else:
                known = list(FEATURES[:3] if d["format"] == SEGMENT_FORMAT else FEATURES)
                if d.get("features") != known:
                    raise ValueError(f"features {d.get('features')}, its format has {known}")
                weights, bias = tuple(float(v) for v in d["weights"]), float(d["bias"])
                if len(weights) != len(known):
                    raise ValueError(f"{len(weights)} weights for {len(known)} features")
                weights += (0.0,) * (len(FEATURES) - len(weights))
            return cls(weights, bias, str(d.get("fitted_on", "")), int(d.get("words", 0)),
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


def fit(feats: np.ndarray, correct: Sequence[bool], fitted_on: str = "", iters: int = 100) -> Calibration:
    """Logistic regression of correctness on (N, 4) :func:`word_features` by Newton's method on
    the log-loss (a small ridge keeps it finite when the classes separate)."""
    x, y = np.asarray(feats, np.float64).reshape(-1, len(FEATURES)), np.asarray(correct, np.float64)
    if x.shape[0] < 10 or y.min() == y.max():
        raise CalibrationError(f"cannot fit a calibration on {x.shape[0]} words with "
                               f"{int(y.sum())} right and {int(x.shape[0] - y.sum())} wrong (need both, >= 10)")
    X = np.concatenate([x, np.ones((x.shape[0], 1))], 1)
    w = np.zeros(X.shape[1])
    w[0] = 1.0
    ridge = 1e-3 * x.shape[0] ** 0.5 * np.eye(X.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ w)))
        step = np.linalg.solve((X * (p * (1 - p))[:, None]).T @ X + ridge, X.T @ (p - y) + ridge @ w)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return Calibration(tuple(float(v) for v in w[:-1]), float(w[-1]), fitted_on, int(x.shape[0]))


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

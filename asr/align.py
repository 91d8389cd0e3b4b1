"""CTC forced alignment in numpy: the best path of a token sequence through (T, V) log-probs.

Torch-free, so the light ONNX runtime (``asr.lite``) times words exactly as the torch path does;
it replaces ``torchaudio.functional.forced_align`` (torchaudio is in maintenance mode) with the
same Viterbi recursion and the same output: one label per frame (a token id or the blank) and
its log-probability.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import AsrError


class AlignmentError(AsrError):
    """A token sequence cannot be aligned to the frames (too few frames for its tokens)."""


@dataclass(frozen=True)
class TokenSpan:
    """One aligned token: frames [start, end) and its mean log-posterior over them."""

    token: int
    start: int
    end: int
    score: float


def min_frames(ids: Sequence[int]) -> int:
    """Frames a CTC path of ``ids`` needs: one per token, plus a blank between repeats."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))


def forced_align(log_probs, ids: Sequence[int], blank: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Viterbi CTC alignment of ``ids`` (no blanks) on ``log_probs`` (T, V).

    Returns ``(labels (T,), scores (T,))``: the token id (or ``blank``) each frame is aligned
    to and that frame's log-probability of it. Raises :class:`AlignmentError` when ``T`` is
    shorter than :func:`min_frames`.
    """
    lp = np.asarray(log_probs, dtype=np.float32)
    n_frames = lp.shape[0]
    if min_frames(ids) > n_frames:
        raise AlignmentError(f"{len(ids)} tokens need {min_frames(ids)} frames, only {n_frames} given")
    ext = np.full(2 * len(ids) + 1, blank, dtype=np.int64)     # blank y1 blank y2 ... blank
    ext[1::2] = ids
    skip = np.zeros(ext.size, bool)                            # may jump over the blank before s
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    emit = lp[:, ext]                                          # (T, S)
    neg = np.float32(-np.inf)
    alpha = np.full(ext.size, neg, np.float32)
    alpha[:2] = emit[0, :2]
    back = np.zeros((n_frames, ext.size), np.int8)             # 0 stay, 1 from s-1, 2 from s-2
    cand = np.full((3, ext.size), neg, np.float32)
    for t in range(1, n_frames):
        cand[0] = alpha
        cand[1, 1:] = alpha[:-1]
        cand[2, 2:] = np.where(skip[2:], alpha[:-2], neg)
        choice = cand.argmax(0)
        back[t] = choice
        alpha = cand[choice, np.arange(ext.size)] + emit[t]
    s = ext.size - 1 if ext.size == 1 or alpha[-1] >= alpha[-2] else ext.size - 2
    path = np.empty(n_frames, np.int64)
    for t in range(n_frames - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    return ext[path], emit[np.arange(n_frames), path]


def merge_tokens(labels: np.ndarray, scores: np.ndarray, blank: int = 0) -> list[TokenSpan]:
    """Runs of one non-blank label in a frame alignment, as :class:`TokenSpan`."""
    labels = np.asarray(labels)
    edges = np.flatnonzero(np.diff(labels, prepend=-1, append=-1) != 0)
    return [TokenSpan(int(labels[a]), int(a), int(b), float(np.mean(scores[a:b])))
            for a, b in zip(edges[:-1], edges[1:]) if labels[a] != blank]

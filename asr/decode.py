"""CTC decoding (greedy) and batch decoding of features and manifests."""
from __future__ import annotations

import sys
import time
from typing import Sequence

import torch

from .audio import AudioError
from .data import Utterance, bucket_batches, load_utterance_audio, pad_batch
from .features import FeatureExtractor
from .model import BiLSTMCTC


def greedy_decode(log_probs: torch.Tensor, out_lens: torch.Tensor) -> list[list[int]]:
    """Best path: (B, T, V) log-probs -> per utterance token ids, repeats merged, blanks removed."""
    best = log_probs.argmax(-1)                                   # (B, T)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != 0
    keep &= torch.arange(best.shape[1], device=best.device).unsqueeze(0) < out_lens.to(best.device).unsqueeze(1)
    return [row[mask].tolist() for row, mask in zip(best.cpu(), keep.cpu())]


@torch.inference_mode()
def decode_features(model: BiLSTMCTC, feats: Sequence[torch.Tensor], batch_frames: int = 40000,
                    method: str = "greedy") -> list[str]:
    """Transcribe a list of (T_i, F) feature tensors; returns texts in input order."""
    if method != "greedy":
        raise ValueError(f"unknown decoding method {method!r} (available: greedy)")
    texts: list[str] = [""] * len(feats)
    for batch in bucket_batches([f.shape[0] for f in feats], batch_frames, seed=None):
        x, lens = pad_batch([feats[i].float() for i in batch])
        device = model.cmvn_mean.device
        log_probs, out_lens = model(x.to(device), lens.to(device))
        for i, ids in zip(batch, greedy_decode(log_probs, out_lens)):
            texts[i] = model.tokenizer.decode(ids)
    return texts


def decode_utterances(model: BiLSTMCTC, utts: Sequence[Utterance], cache: dict | None = None,
                      batch_frames: int = 40000) -> tuple[dict[str, str], dict]:
    """Decode manifest utterances (features from ``cache`` when given, else from audio).

    Returns ``{id: hypothesis}`` and timing stats ``{"audio_s", "decode_s", "rtf", "skipped"}``.
    Utterances whose audio cannot be read are reported on stderr and get an empty hypothesis,
    so they count as deletions instead of vanishing from the score.
    """
    start = time.perf_counter()
    feats, ids, failed = [], [], []
    if cache is not None:
        by_id = dict(zip(cache["ids"], cache["feats"]))
    extractor = FeatureExtractor(model.feature_config)
    for u in utts:
        if cache is not None and u.id in by_id:
            feats.append(by_id[u.id])
            ids.append(u.id)
            continue
        try:
            feats.append(extractor(load_utterance_audio(u)))
            ids.append(u.id)
        except AudioError as e:
            failed.append(f"{u.id}\t{e}")
    hyps = dict(zip(ids, decode_features(model, feats, batch_frames)))
    for line in failed:
        print(f"[decode] unreadable, scored as empty: {line}", file=sys.stderr)
        hyps[line.split("\t")[0]] = ""
    elapsed = time.perf_counter() - start
    audio_s = sum(u.duration for u in utts)
    return hyps, {"audio_s": audio_s, "decode_s": elapsed, "rtf": elapsed / max(audio_s, 1e-9),
                  "skipped": len(failed)}

"""A model ready to recognise: acoustic model + tokenizer + feature extractor + decoder + info.

``asr.load(path)`` returns a :class:`Recognizer`; everything that turns audio or features into
text (transcription, manifest decoding, a recipe's decode stage, dev evaluation in training)
goes through one. The acoustic model inside stays pure: ``forward(feats, lens) -> (log_probs,
out_lens)``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE_HZ, AudioError
from .checkpoint import load_checkpoint, quantize_int8
from .batching import pad_batch
from .calibration import FEATURES, Calibration, beside, label_words, word_features
from .data import Utterance, bucket_batches, load_utterance_audio
from .decode import DecodeConfig, Decoder, GreedyDecoder, Hypothesis, decode_emissions, make_decoder
from .errors import Problem
from .features import FeatureConfig, FeatureExtractor, cached_extractor, feature_lengths
from .model import BiLSTMCTC
from .text import Tokenizer
from .transcribe import SegmentOptions, Transcription, transcribe

log = logging.getLogger(__name__)


@dataclass
class Recognizer:
    """``model`` (eval mode; int8-quantized or not), its ``tokenizer`` and ``features`` front
    end, the default ``decoder`` and the checkpoint's ``info`` (epoch, dev WER, config...)."""

    model: torch.nn.Module
    tokenizer: Tokenizer
    features: FeatureExtractor
    decoder: Decoder
    info: dict = field(default_factory=dict)
    calibration: Calibration | None = None     # word confidence -> p(correct), fitted on dev

    @classmethod
    def from_model(cls, model: BiLSTMCTC, features: FeatureConfig, tokenizer: Tokenizer,
                   decoder: Decoder | None = None, info: dict | None = None) -> "Recognizer":
        return cls(model, tokenizer, cached_extractor(features), decoder or GreedyDecoder(tokenizer), info or {})

    @property
    def feature_config(self) -> FeatureConfig:
        return self.features.cfg

    @property
    def device(self) -> torch.device:
        return self.model.cmvn_mean.device

    @property
    def frame_s(self) -> float:
        """Seconds per output frame (feature hop x frame stacking)."""
        return self.features.hop / SAMPLE_RATE_HZ * self.model.cfg.stack

    @property
    def min_samples(self) -> int:
        """Shortest input that gives one output frame."""
        return self.model.cfg.stack * self.features.hop

    def with_decoder(self, decoder: Decoder | None) -> "Recognizer":
        """The same recognizer with another default decoder (None: keep this one)."""
        return self if decoder is None else replace(self, decoder=decoder)

    def make_decoder(self, cfg: DecodeConfig, method: str | None = None, beam_size: int | None = None) -> Decoder:
        return make_decoder(self.tokenizer, cfg, method, beam_size)

    @torch.inference_mode()
    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """[(T_i, F)] -> (log_probs (B, T', V), out_lens (B,)) on the model's device."""
        x, lens = pad_batch([f.float() for f in feats])
        return self.model(x.to(self.device), lens.to(self.device))

    @torch.inference_mode()
    def emissions(self, feats: Sequence[torch.Tensor], batch_frames: int = 40000) -> list[torch.Tensor]:
        """Per utterance (T_i', V) log-probs on the CPU, in input order."""
        out: list[torch.Tensor] = [torch.empty(0)] * len(feats)
        for batch in bucket_batches(feature_lengths(feats), batch_frames, seed=None):
            log_probs, out_lens = self.forward([feats[i] for i in batch])
            for k, i in enumerate(batch):
                out[i] = log_probs[k, : int(out_lens[k])].float().cpu()
        return out

    def decode_features(self, feats: Sequence[torch.Tensor], batch_frames: int = 40000,
                        decoder: Decoder | None = None) -> list[Hypothesis]:
        """Hypotheses of (T_i, F) feature tensors, in input order (``decoder`` or the default)."""
        decoder = decoder or self.decoder
        if isinstance(decoder, GreedyDecoder):      # decode whole model batches: no copies
            hyps: list[Hypothesis | None] = [None] * len(feats)
            with torch.inference_mode():
                for batch in bucket_batches(feature_lengths(feats), batch_frames, seed=None):
                    for i, hyp in zip(batch, decoder(*self.forward([feats[i] for i in batch]))):
                        hyps[i] = hyp
            return hyps                              # type: ignore[return-value]
        return decode_emissions(decoder, self.emissions(feats, batch_frames))

    def transcribe(self, audio: str | Path | np.ndarray, sample_rate: int | None = None,
                   decoder: Decoder | None = None, **options) -> Transcription:
        """Transcribe a path or a (N,) / (N, C) sample array: text, words with times and
        confidence, segments. ``options`` are :class:`asr.transcribe.SegmentOptions` fields."""
        return transcribe(self.with_decoder(decoder), audio, sample_rate, SegmentOptions(**options))


def load(path: str | Path, device: str = "cpu", int8: bool = False, decode: DecodeConfig | None = None,
         method: str | None = None, calibrated: bool = True) -> Recognizer:
    """Load a self-describing checkpoint as a :class:`Recognizer` (``weights_only=True``: a
    checkpoint can never execute code). ``int8``: dynamically quantized copy for fast CPU
    inference; ``decode``/``method``: the default decoder (greedy when not given); a
    ``calibration.json`` beside the file calibrates word confidences (unless not ``calibrated``)."""
    loaded = load_checkpoint(path)
    model = loaded.model.to(device).eval()
    if int8:
        model = quantize_int8(model)
    decoder = make_decoder(loaded.tokenizer, decode or DecodeConfig(), method)
    return Recognizer(model, loaded.tokenizer, cached_extractor(loaded.features), decoder, loaded.info,
                      beside(path) if calibrated else None)


def utterance_features(rec: Recognizer, utts: Sequence[Utterance], cache: dict | None = None
                       ) -> tuple[list[torch.Tensor], list[str], list[Problem]]:
    """Features of ``utts`` (from ``cache`` when it has them, else from audio): the features,
    their ids, and a :class:`Problem` for each utterance whose audio cannot be used."""
    feats, ids, problems = [], [], []
    by_id = dict(zip(cache["ids"], cache["feats"])) if cache is not None else {}
    for u in utts:
        if u.id in by_id:
            feats.append(by_id[u.id])
            ids.append(u.id)
            continue
        try:
            feats.append(rec.features(load_utterance_audio(u)))
            ids.append(u.id)
        except AudioError as e:
            problems.append(Problem(u.id, str(e)))
    for p in problems:
        log.warning("unreadable, scored as empty: %s", p)
    return feats, ids, problems


def decode_utterances(rec: Recognizer, utts: Sequence[Utterance], cache: dict | None = None,
                      batch_frames: int = 40000, decoder: Decoder | None = None, nbest: dict | None = None
                      ) -> tuple[dict[str, str], dict, list[Problem]]:
    """Decode manifest utterances (features from ``cache`` when given, else from audio).

    Returns ``{id: hypothesis text}``, timing stats ``{"audio_s", "decode_s", "rtf", "skipped"}``
    and the problems. An utterance whose audio cannot be read gets an empty hypothesis, so it
    counts as deletions instead of vanishing from the score. ``nbest``, when given, receives
    ``{id: [(text, score), ...]}`` (the decoder's alternatives, or the one best).
    """
    start = time.perf_counter()
    feats, ids, problems = utterance_features(rec, utts, cache)
    decoded = rec.decode_features(feats, batch_frames, decoder)
    hyps = {i: h.text for i, h in zip(ids, decoded)}
    if nbest is not None:
        nbest.update({i: h.alternatives or [(h.text, h.score)] for i, h in zip(ids, decoded)})
        nbest.update({p.id: [("", 0.0)] for p in problems})
    hyps.update({p.id: "" for p in problems})
    elapsed = time.perf_counter() - start
    audio_s = sum(u.duration for u in utts)
    return hyps, {"audio_s": audio_s, "decode_s": elapsed, "rtf": elapsed / max(audio_s, 1e-9),
                  "skipped": len(problems)}, problems


class ScoredWords(NamedTuple):
    """One utterance's hypothesis words (raw confidences), whether each is right, and their (N, 4)
    calibration features (:func:`asr.calibration.word_features`)."""

    id: str
    words: list
    right: list[bool]
    features: np.ndarray


def word_confidences(rec: Recognizer, utts: Sequence[Utterance], decoder: Decoder | None = None,
                     cache: dict | None = None) -> list[ScoredWords]:
    """Per utterance: decoded, aligned on the decoded ids and labelled against the reference
    (sclite alignment); features from ``cache`` where it has them. Unreadable utterances are
    left out (and logged)."""
    from .transcribe import align_words

    feats, ids, _ = utterance_features(rec, utts, cache)
    emis = rec.emissions(feats)
    hyps = decode_emissions(decoder or rec.decoder, emis)
    refs = {u.id: u.text for u in utts}
    out = []
    for i, e, h in zip(ids, emis, hyps):
        words = align_words(e, h.ids, rec.tokenizer.vocab, rec.frame_s, 0.0)
        out.append(ScoredWords(i, words, label_words(refs[i], [w.word for w in words]),
                               word_features([w.confidence for w in words], e, h.word_posteriors)))
    return out


def confidence_metrics(scored: Sequence[ScoredWords], calibration: Calibration | None = None) -> dict:
    """ECE, NCE and error-detection AUROC (:func:`asr.calibration.metrics`) of raw confidences, and
    of calibrated ones when ``calibration`` is given."""
    from .calibration import metrics

    right = [c for s in scored for c in s.right]
    out = {"raw": metrics([w.confidence for s in scored for w in s.words], right)}
    if calibration is not None:
        out["calibrated"] = {**metrics(calibrated_confidences(scored, calibration), right),
                             "fitted_on": calibration.fitted_on}
    return out


def calibrated_confidences(scored: Sequence[ScoredWords], calibration: Calibration) -> list[float]:
    """Every scored word's calibrated confidence, in order."""
    return [float(p) for s in scored if s.words for p in calibration.probability(s.features)]


def fit_calibration(rec: Recognizer, utt_sets: dict[str, Sequence[Utterance]], decoder: Decoder | None = None,
                    model_sha256: str = "", caches: dict[str, dict] | None = None) -> tuple[Calibration, dict]:
    """A calibration fitted on every set of ``utt_sets`` (name -> utterances) pooled, and the
    metrics of each set and of all of them, before and after (``caches``: name -> features)."""
    from .calibration import fit

    caches = caches or {}
    scored = {name: word_confidences(rec, utts, decoder, caches.get(name)) for name, utts in utt_sets.items()}
    pooled = [s for ss in scored.values() for s in ss]
    feats = np.concatenate([s.features for s in pooled if s.words] or [np.zeros((0, len(FEATURES)))])
    cal = fit(feats, [c for s in pooled for c in s.right], fitted_on=" + ".join(utt_sets))
    cal = replace(cal, model_sha256=model_sha256)
    report = {name: confidence_metrics(ss, cal) for name, ss in scored.items()}
    return cal, {**report, "all": confidence_metrics(pooled, cal)}

"""Stacked bidirectional LSTM acoustic model with CTC output, and self-describing checkpoints."""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .config import FeatureConfig, ModelConfig, from_dict
from .text import CharTokenizer, tokenizer_from_payload, tokenizer_payload

CHECKPOINT_FORMAT = "asr-bilstm-ctc-v1"


def reverse_padded(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of (B, T, D) ``x`` within its own length; padding stays in place.

    This lets the backward LSTM start at each utterance's last real frame instead of reading
    padding first, without ``pack_padded_sequence`` (which is ~10x slower to train on CPU).
    """
    t = torch.arange(x.shape[1], device=x.device).unsqueeze(0)          # (1, T)
    idx = torch.where(t < lens.unsqueeze(1), lens.unsqueeze(1) - 1 - t, t)  # (B, T)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


class BiLSTMLayer(nn.Module):
    """One bidirectional layer: (B, T, D_in) -> (B, T, 2H), exact for padded batches."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.fwd = nn.LSTM(d_in, hidden, batch_first=True)
        self.bwd = nn.LSTM(d_in, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        out_f, _ = self.fwd(x)
        out_b, _ = self.bwd(reverse_padded(x, lens))
        return torch.cat([out_f, reverse_padded(out_b, lens)], dim=-1)


class BiLSTMCTC(nn.Module):
    """log-mels -> CMVN -> frame stacking (x ``stack``) -> N BiLSTM layers -> linear -> log-softmax.

    ``forward(feats (B, T, F), lens (B,)) -> (log_probs (B, T', V), out_lens (B,))`` with
    ``T' = T // stack``. Global CMVN statistics are buffers, so a checkpoint carries them.
    """

    def __init__(self, cfg: ModelConfig, n_mels: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("cmvn_mean", torch.zeros(n_mels))
        self.register_buffer("cmvn_std", torch.ones(n_mels))
        d_in = n_mels * cfg.stack
        self.layers = nn.ModuleList()
        for _ in range(cfg.layers):
            self.layers.append(BiLSTMLayer(d_in, cfg.hidden))
            d_in = 2 * cfg.hidden
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(d_in, vocab_size)

    def set_cmvn(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std.clamp_min(1e-5))

    def _utterance_cmn(self, feats: torch.Tensor, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Subtract each utterance's mean over its *speech* frames: frames whose mean log-mel is
        within ``cmn_floor_db`` of the utterance's loudest frame (and divide by their std with
        ``utterance_cvn``). Silence is excluded so that how much of it surrounds the speech does
        not shift the normalisation."""
        inside = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lens.unsqueeze(1)   # (B, T)
        valid = inside
        if self.cfg.cmn_floor_db > 0:
            energy = feats.mean(-1).masked_fill(~valid, float("-inf"))                      # (B, T)
            floor = energy.max(1, keepdim=True).values - self.cfg.cmn_floor_db * math.log(10) / 10
            valid = valid & (energy >= floor)
        w = valid.unsqueeze(-1).to(x.dtype)
        n = w.sum(1, keepdim=True).clamp_min(1)
        mean = (x * w).sum(1, keepdim=True) / n
        x = x - mean
        if self.cfg.utterance_cvn:
            # floor at a tenth of the global (unit) std: a near-constant channel is not blown up
            x = x / ((x * x * w).sum(1, keepdim=True) / n).sqrt().clamp_min(0.1)
        return x * inside.unsqueeze(-1)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (feats - self.cmvn_mean) / self.cmvn_std
        if self.cfg.utterance_cmn:
            x = self._utterance_cmn(feats, x, lens)
        s = self.cfg.stack
        b, t, f = x.shape
        t_out = t // s
        x = x[:, : t_out * s].reshape(b, t_out, f * s)
        out_lens = torch.div(lens, s, rounding_mode="floor").clamp_min(1)
        if t_out == 0:
            raise ValueError(f"input of {t} frames is shorter than the stacking factor {s}")
        if self._can_fuse(x, out_lens):
            x = self._fused_stack(x)
        else:
            for i, layer in enumerate(self.layers):
                if i > 0:
                    x = self.dropout(x)
                x = layer(x, out_lens)
        return self.output(self.dropout(x)).log_softmax(-1), out_lens

    def _can_fuse(self, x: torch.Tensor, out_lens: torch.Tensor) -> bool:
        """Inference on unpadded input (batch 1, or all lengths equal) with float LSTMs: the
        per-sequence reversal is a plain flip, so one bidirectional multi-layer call is exact."""
        return (not self.training and not torch.is_grad_enabled() and x.dtype == torch.float32
                and all(type(m) is nn.LSTM for layer in self.layers for m in (layer.fwd, layer.bwd))
                and bool((out_lens == x.shape[1]).all()))

    def _fused_stack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T', D) -> (B, T', 2H): all layers in one ``torch.lstm`` call on the separate
        forward/backward weights (no copies). torch's CPU LSTM pays a fixed cost per call
        (oneDNN weight reorder, primitive setup), so one call instead of 2 x layers is faster
        at batch 1; training keeps the per-direction path, which is exact for padded batches."""
        weights = [w for layer in self.layers for m in (layer.fwd, layer.bwd) for w in m.all_weights[0]]
        h0 = x.new_zeros(2 * len(self.layers), x.shape[0], self.cfg.hidden)
        out, _, _ = torch.lstm(x, (h0, h0), weights, True, len(self.layers), 0.0, False, True, True)
        return out


    def transcribe(self, audio, sample_rate: int | None = None, decoder=None, **options):
        """Transcribe a path or a sample array; see :func:`asr.transcribe.transcribe`.
        ``decoder``: from :func:`asr.decode.make_decoder` (default greedy); ``options`` are
        :class:`asr.transcribe.SegmentOptions` fields."""
        from .transcribe import SegmentOptions, transcribe

        return transcribe(self, audio, sample_rate, SegmentOptions(**options), decoder)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_payload(model: BiLSTMCTC, features: FeatureConfig, tokenizer: CharTokenizer,
                  extra: dict | None = None) -> dict:
    """Everything ``load_model`` needs: configs, vocabulary, CMVN and weights (plain types only)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model_config": asdict(model.cfg),
        "feature_config": asdict(features),
        "vocab": list(tokenizer.vocab),
        "tokenizer": tokenizer_payload(tokenizer),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": extra or {},
    }


def read_payload(path: str | Path) -> dict:
    """The model payload of a checkpoint file (a model file, or a training state's model),
    loaded with ``weights_only=True``; a clear error names the file if it is neither."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refusals come as several exception types
        raise ValueError(f"{path}: not a loadable model checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]          # a training-state checkpoint (last.pt) wraps the model payload
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an asr model checkpoint (expected format {CHECKPOINT_FORMAT})")
    return ckpt


def average_payloads(paths: Sequence[str | Path], info: dict | None = None) -> dict:
    """Checkpoint averaging: the element-wise mean of the weights of ``paths`` (models of one
    architecture and vocabulary, e.g. the last epochs of a run), as a model payload whose
    configs and vocabulary are the last file's. Averaging the end of a decaying-LR run
    smooths the epoch-to-epoch wobble of the weights (as ESPnet and icefall do)."""
    if not paths:
        raise ValueError("average_payloads: no checkpoints given")
    payloads = [read_payload(p) for p in paths]
    last = payloads[-1]
    for path, p in zip(paths[1:], payloads[1:]):
        for key in ("model_config", "vocab"):
            if p[key] != payloads[0][key]:
                raise ValueError(f"{path}: {key} differs from {paths[0]}'s; only one model's checkpoints average")
    state = {}
    for name, value in last["state_dict"].items():
        if value.is_floating_point():
            total = sum(p["state_dict"][name].double() for p in payloads)
            state[name] = (total / len(payloads)).to(value.dtype)
        else:
            state[name] = value.clone()       # counters and the like: the last file's
    return {**last, "state_dict": state,
            "info": {**last.get("info", {}), **(info or {}), "averaged": [str(p) for p in paths]}}


def quantize_int8(model: BiLSTMCTC) -> BiLSTMCTC:
    """Dynamic int8 quantization of the LSTM and linear weights for CPU inference (about 2x
    faster at batch 1). Activations stay float; the original model is not modified."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # torch.ao.quantization's deprecation notice
        q = torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    for attr in ("tokenizer", "feature_config", "info"):
        if hasattr(model, attr):
            setattr(q, attr, getattr(model, attr))
    return q


def load_model(path: str | Path, device: str = "cpu", int8: bool = False) -> BiLSTMCTC:
    """Load a self-describing checkpoint (``weights_only=True``: it can never execute code).

    The returned model is in eval mode and carries ``.tokenizer``, ``.feature_config`` and
    ``.info``; ``int8=True`` returns a dynamically quantized copy for fast CPU inference.
    """
    ckpt = read_payload(path)
    model_cfg = from_dict(ModelConfig, ckpt["model_config"], "model_config")
    feat_cfg = from_dict(FeatureConfig, ckpt["feature_config"], "feature_config")
    tokenizer = (tokenizer_from_payload(ckpt["tokenizer"]) if "tokenizer" in ckpt
                 else CharTokenizer.from_vocab(ckpt["vocab"]))
    model = BiLSTMCTC(model_cfg, feat_cfg.n_mels, len(tokenizer))
    model.load_state_dict(ckpt["state_dict"])
    model.tokenizer = tokenizer
    model.feature_config = feat_cfg
    model.info = ckpt.get("info", {})
    model = model.to(device).eval()
    return quantize_int8(model) if int8 else model

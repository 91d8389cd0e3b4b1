"""Stacked bidirectional LSTM acoustic model with CTC output.

A leaf of the package: it imports torch and its own config, nothing of the pipeline (tokenizer,
features, decoding and checkpoints live in the ``Recognizer`` and ``checkpoint`` modules)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import require



@dataclass(frozen=True)
class ModelConfig:
    """Stacked BiLSTM-CTC acoustic model."""

    stack: int = 3            # frames stacked (and subsampling factor)
    hidden: int = 320         # LSTM cells per direction
    layers: int = 4
    dropout: float = 0.2      # between LSTM layers
    utterance_cmn: bool = False  # also subtract each utterance's own mean (channel robustness)
    cmn_floor_db: float = 0.0    # >0: that mean over frames within this many dB of the loudest only
    utterance_cvn: bool = False  # with utterance_cmn: also divide by the utterance's own std (same frames)

    def check(self, where: str) -> None:
        require(1 <= self.stack <= 16, f"{where}.stack", "must be in 1..16")
        require(1 <= self.hidden <= 8192, f"{where}.hidden", "must be in 1..8192")
        require(1 <= self.layers <= 32, f"{where}.layers", "must be in 1..32")
        require(0.0 <= self.dropout < 1.0, f"{where}.dropout", "must be in [0, 1)")
        require(self.utterance_cmn or not self.utterance_cvn, f"{where}.utterance_cvn", "needs utterance_cmn")


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def latency_controlled(model: BiLSTMCTC, feats: torch.Tensor, lens: torch.Tensor, chunk: int, right: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``model`` as a latency-controlled BiLSTM: what streaming with ``chunk`` committed and
    ``right`` look-ahead output frames computes, for a padded batch, with gradients (chunk-aware
    training). Same signature and shapes as ``model.forward``: (B, T, F), (B,) -> (B, T', V), (B,).

    Window j covers output frames [j*chunk, j*chunk + chunk + right). Every layer keeps one input
    per window (look-ahead frames differ between windows, as in streaming); its forward
    direction runs over the committed frames carrying its state and continues, without keeping
    that state, over the look-ahead; its backward direction starts from zero at each window's
    last (real) frame. Utterance CMN of window j uses the frames up to its end, as streaming
    does when it reaches that window."""
    s = model.cfg.stack
    b, t, f = feats.shape
    t_out = t // s
    out_lens = torch.div(lens, s, rounding_mode="floor").clamp_min(1)
    n_win, span = -(-t_out // chunk), chunk + right
    ends = torch.minimum((torch.arange(n_win, device=feats.device) * chunk + span).unsqueeze(0),
                         out_lens.unsqueeze(1))                                   # (B, W) output frames
    x = (feats - model.cmvn_mean) / model.cmvn_std
    x = torch.nn.functional.pad(x[:, : t_out * s], (0, 0, 0, (n_win * chunk + right - t_out) * s))
    win = x.unfold(1, span * s, chunk * s).transpose(2, 3)                        # (B, W, span*s, F)
    if model.cfg.utterance_cmn:
        win = _window_cmn(model, feats, x, win, ends * s, chunk * s)
    win = win.reshape(b, n_win, span, s * f)                                      # (B, W, span, F*s)
    win_lens = (ends - torch.arange(n_win, device=feats.device) * chunk).clamp_min(0).reshape(-1)
    for i, layer in enumerate(model.layers):
        if i > 0:
            win = model.dropout(win)
        out_f = _forward_windows(layer.fwd, win, chunk)                           # (B, W, span, H)
        flat = win.reshape(b * n_win, span, -1)
        out_b = reverse_padded(layer.bwd(reverse_padded(flat, win_lens))[0], win_lens)
        win = torch.cat([out_f, out_b.reshape(b, n_win, span, -1)], -1)
    y = win[:, :, :chunk].reshape(b, n_win * chunk, -1)[:, :t_out]
    return model.output(model.dropout(y)).log_softmax(-1), out_lens


def _forward_windows(lstm: nn.LSTM, win: torch.Tensor, chunk: int) -> torch.Tensor:
    """Forward direction over windows (B, W, span, D) -> (B, W, span, H): the committed frames
    carry the state from window to window; the look-ahead of every window continues from its
    chunk's end state, all windows in one batched call (exact, and cheaper than a call each)."""
    b, n_win, span, d = win.shape
    state, outs, hs, cs = None, [], [], []
    for j in range(n_win):
        out_c, state = lstm(win[:, j, :chunk], state)
        outs.append(out_c)
        hs.append(state[0])
        cs.append(state[1])
    out = torch.stack(outs, 1)                                                    # (B, W, chunk, H)
    if span == chunk:
        return out
    h0, c0 = (torch.stack(v, 2).reshape(1, b * n_win, -1) for v in (hs, cs))      # (1, B*W, H)
    ahead, _ = lstm(win[:, :, chunk:].reshape(b * n_win, span - chunk, d), (h0, c0))
    return torch.cat([out, ahead.reshape(b, n_win, span - chunk, -1)], 2)


def _window_cmn(model: BiLSTMCTC, feats: torch.Tensor, x: torch.Tensor, win: torch.Tensor,
                ends: torch.Tensor, step: int) -> torch.Tensor:
    """Utterance CMN per window: window j's frames (B, W, L, F) minus the mean of the speech frames
    among the first ``ends[:, j]`` feature frames (the model's ``_utterance_cmn`` rule, on what
    has been heard by then); frames past the utterance's end are zeroed."""
    n = x.shape[1]
    t = torch.arange(n, device=x.device)
    inside = t.view(1, 1, -1) < ends.unsqueeze(-1)                                # (B, W, T)
    valid = inside
    if model.cfg.cmn_floor_db > 0:
        energy = torch.nn.functional.pad(feats.mean(-1), (0, max(0, n - feats.shape[1])))[:, :n]
        e = energy.unsqueeze(1).masked_fill(~inside, float("-inf"))
        floor = e.max(-1, keepdim=True).values - model.cfg.cmn_floor_db * math.log(10) / 10
        valid = inside & (e >= floor)
    w = valid.to(x.dtype)
    count = w.sum(-1, keepdim=True).clamp_min(1)                                  # (B, W, 1)
    mean = torch.einsum("bwt,btf->bwf", w, x) / count
    out = win - mean.unsqueeze(2)
    if model.cfg.utterance_cvn:
        var = torch.einsum("bwt,btf->bwf", w, x * x) / count - mean * mean
        out = out / var.clamp_min(0).sqrt().clamp_min(0.1).unsqueeze(2)
    pos = (torch.arange(ends.shape[1], device=x.device) * step).view(1, -1, 1) + \
        torch.arange(win.shape[2], device=x.device).view(1, 1, -1)               # (1, W, L)
    return out * (pos < ends.unsqueeze(-1)).unsqueeze(-1)


class LatencyControlled(nn.Module):
    """Wraps a model so that ``forward`` is :func:`latency_controlled` (for training loops and
    DDP, which call ``net(feats, lens)``); the weights are the wrapped model's."""

    def __init__(self, model: BiLSTMCTC, chunk: int, right: int):
        super().__init__()
        self.model, self.chunk, self.right = model, chunk, right

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return latency_controlled(self.model, feats, lens, self.chunk, self.right)

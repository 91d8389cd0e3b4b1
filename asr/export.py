"""Export a model to ONNX for the torch-free runtime (``asr.lite``).

An export directory holds:

- ``model.onnx``: feats (1, T, F) log-mels -> log_probs (1, T // stack, V): global CMVN,
  utterance CMN (when the model uses it), frame stacking, the BiLSTM stack and the output layer;
- ``chunk.onnx``: one latency-controlled streaming step: normalised, stacked frames of a window
  ``chunk`` (1, C, D) and ``right`` (1, R, D) with the forward LSTM state ``h``, ``c``
  (L, 1, H) in -> log_probs (1, C + R, V) and the state after the chunk out;
- ``*.int8.onnx``: the same graphs with dynamically quantized int8 weights (onnxruntime);
- ``frontend.npz``: the STFT window and mel filterbank, so the runtime's numpy log-mels are
  the ones the model was trained on;
- ``asr-export.json``: format, model/feature/decoder configs, tokenizer, CMVN statistics, the
  checkpoint's info and the SHA-256 of every file.
"""
from __future__ import annotations

import base64
import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .calibration import CALIBRATION_FILE
from .decode_config import DecodeConfig
from .errors import AsrError
from .lite import EXPORT_FORMAT, EXPORT_JSON, sha256
from .model import BiLSTMCTC
from .recognizer import Recognizer, load
from .text import tokenizer_payload

log = logging.getLogger(__name__)

OPSET = 17


class ExportError(AsrError):
    """The model cannot be exported (or the export tools are missing)."""


def fused_lstm(model: BiLSTMCTC) -> nn.LSTM:
    """The model's per-direction layers as one bidirectional multi-layer ``nn.LSTM`` (the same
    weights; exact for unpadded input), which exports as one ONNX LSTM node per layer."""
    lstm = nn.LSTM(model.layers[0].fwd.input_size, model.cfg.hidden, len(model.layers),
                   bidirectional=True, batch_first=True)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            for suffix, m in (("", layer.fwd), ("_reverse", layer.bwd)):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(lstm, f"{name}_l{i}{suffix}").copy_(getattr(m, f"{name}_l0"))
    return lstm.eval()


class OfflineGraph(nn.Module):
    """(1, T, F) log-mels -> (1, T // stack, V) log-probs: ``BiLSTMCTC.forward`` at batch 1."""

    def __init__(self, model: BiLSTMCTC):
        super().__init__()
        self.model, self.lstm = model, fused_lstm(model)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        m, s = self.model, self.model.cfg.stack
        x = (feats - m.cmvn_mean) / m.cmvn_std
        if m.cfg.utterance_cmn:
            x = m._utterance_cmn(feats, x, torch.ones(1, dtype=torch.long) * feats.shape[1])
        n = torch.div(x.shape[1], s, rounding_mode="floor") * s
        x = x[:, :n].reshape(1, -1, x.shape[2] * s)
        return m.output(self.lstm(x)[0]).log_softmax(-1)


class ChunkGraph(nn.Module):
    """One streaming window (see :func:`asr.model.latency_controlled`): per layer the forward
    direction runs over ``chunk`` from the carried state (kept) and on over ``right`` (not
    kept), the backward direction over chunk + right from zero."""

    def __init__(self, model: BiLSTMCTC):
        super().__init__()
        self.model = model

    def forward(self, chunk, right, h, c):
        """(1, C, D), (1, R, D), (L, 1, H), (L, 1, H) -> (1, C+R, V), (L, 1, H), (L, 1, H)."""
        n_c = chunk.shape[1]
        x = torch.cat([chunk, right], 1)
        hs, cs = [], []
        for i, layer in enumerate(self.model.layers):
            out_c, (h_i, c_i) = layer.fwd(x[:, :n_c], (h[i: i + 1], c[i: i + 1]))
            out_r, _ = layer.fwd(x[:, n_c:], (h_i, c_i))
            out_b, _ = layer.bwd(x.flip(1))
            x = torch.cat([torch.cat([out_c, out_r], 1), out_b.flip(1)], -1)
            hs.append(h_i)
            cs.append(c_i)
        return self.model.output(x).log_softmax(-1), torch.cat(hs), torch.cat(cs)


def _onnx_export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                 dynamic: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript exporter maps nn.LSTM to ONNX LSTM nodes (the dynamo exporter unrolls it)
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=dynamic)


def quantize(src: Path, dst: Path) -> None:
    """Dynamic int8 weights (LSTM and MatMul) with onnxruntime's quantizer."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().disabled, was = True, logging.getLogger().disabled   # its pre-processing hint
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().disabled = was


def frontend_arrays(rec: Recognizer) -> dict[str, np.ndarray]:
    """The STFT window (n_fft,) centred as ``torch.stft`` pads it, and the (n_fft//2+1, n_mels)
    mel filterbank."""
    spec = rec.features.mel.spectrogram
    win = spec.window.numpy()
    left = (spec.n_fft - win.size) // 2
    window = np.pad(win, (left, spec.n_fft - win.size - left)).astype(np.float32)
    return {"window": window, "mel": rec.features.mel.mel_scale.fb.numpy().astype(np.float32)}


def export_onnx(model_path: str | Path, out_dir: str | Path, decode: DecodeConfig | None = None,
                int8: bool = True, chunk: bool = True) -> Path:
    """Export ``model_path`` (a checkpoint) into ``out_dir``; returns the description file."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise ExportError("ONNX export needs the onnx package (pip install onnx)") from None
    rec = load(model_path)
    model: BiLSTMCTC = rec.model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_mels, d = rec.feature_config.n_mels, model.layers[0].fwd.input_size
    feats = torch.randn(1, 10 * model.cfg.stack + 1, n_mels)
    _onnx_export(OfflineGraph(model), (feats,), out / "model.onnx", ["feats"], ["log_probs"],
                 {"feats": {1: "frames"}, "log_probs": {1: "out_frames"}})
    files = ["model.onnx"]
    if chunk:
        state = torch.zeros(model.cfg.layers, 1, model.cfg.hidden)
        _onnx_export(ChunkGraph(model), (torch.randn(1, 8, d), torch.randn(1, 4, d), state, state),
                     out / "chunk.onnx", ["chunk", "right", "h", "c"], ["log_probs", "h_out", "c_out"],
                     {"chunk": {1: "chunk_frames"}, "right": {1: "right_frames"}, "log_probs": {1: "frames"}})
        files.append("chunk.onnx")
    if int8:
        for name in list(files):
            quantize(out / name, out / name.replace(".onnx", ".int8.onnx"))
            files.append(name.replace(".onnx", ".int8.onnx"))
    np.savez(out / "frontend.npz", **frontend_arrays(rec))
    files.append("frontend.npz")
    if rec.calibration is not None:                 # word-confidence calibration travels along
        rec.calibration.save(out / CALIBRATION_FILE)
        files.append(CALIBRATION_FILE)
    desc = {
        "format": EXPORT_FORMAT,
        "model_config": asdict(model.cfg),
        "feature_config": asdict(rec.feature_config),
        "decode": asdict(decode or DecodeConfig()),
        "tokenizer": _json_tokenizer(tokenizer_payload(rec.tokenizer)),
        "cmvn": {"mean": model.cmvn_mean.tolist(), "std": model.cmvn_std.tolist()},
        "info": json.loads(json.dumps(rec.info, default=str)),
        "source": str(model_path),
        "sha256": {name: sha256(out / name) for name in files},
    }
    path = out / EXPORT_JSON
    path.write_text(json.dumps(desc, indent=1) + "\n", encoding="utf-8")
    log.info("exported %s -> %s (%s)", model_path, out, ", ".join(files))
    return path


def _json_tokenizer(payload: dict) -> dict:
    """A tokenizer payload in JSON: sentencepiece model bytes as base64."""
    if isinstance(payload.get("model"), (bytes, bytearray)):
        return {**payload, "model": base64.b64encode(payload["model"]).decode("ascii"), "encoding": "base64"}
    return payload


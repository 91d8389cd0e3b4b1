"""Self-describing model checkpoints: the payload format, loading with ``weights_only=True``,
checkpoint averaging and dynamic int8 quantization.

A payload holds plain types only (configs as dicts, the tokenizer as its vocabulary or
sentencepiece model bytes, CMVN and weights as tensors), so ``torch.load(weights_only=True)``
reads it and it can never execute code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .config import ConfigError, from_dict
from .errors import AsrError, MissingFileError
from .features import FeatureConfig
from .model import BiLSTMCTC, ModelConfig
from .text import CharTokenizer, Tokenizer, tokenizer_from_payload, tokenizer_payload

CHECKPOINT_FORMAT = "asr-bilstm-ctc-v1"


class CheckpointError(AsrError):
    """A file is not a usable model checkpoint; the message names the file."""


@dataclass
class LoadedModel:
    """What a checkpoint describes: the acoustic model (eval mode) and the pipeline around it."""

    model: BiLSTMCTC
    features: FeatureConfig
    tokenizer: Tokenizer
    info: dict = field(default_factory=dict)


def model_payload(model: BiLSTMCTC, features: FeatureConfig, tokenizer: Tokenizer,
                  extra: dict | None = None) -> dict:
    """Everything :func:`load_checkpoint` needs: configs, vocabulary, CMVN and weights."""
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
        raise MissingFileError(f"{path}: model file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refusals come as several exception types
        raise CheckpointError(f"{path}: not a loadable model checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]          # a training-state checkpoint (last.pt) wraps the model payload
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an asr model checkpoint (expected format {CHECKPOINT_FORMAT})")
    return ckpt


def model_from_payload(ckpt: dict, where: str = "checkpoint") -> LoadedModel:
    """Build the model (eval mode, CPU) and its pipeline description from a payload."""
    try:
        model_cfg = from_dict(ModelConfig, ckpt["model_config"], "model_config")
        feat_cfg = from_dict(FeatureConfig, ckpt["feature_config"], "feature_config")
        tokenizer = (tokenizer_from_payload(ckpt["tokenizer"]) if "tokenizer" in ckpt
                     else CharTokenizer.from_vocab(ckpt["vocab"]))
        check_shapes(ckpt["state_dict"], model_cfg, feat_cfg.n_mels, len(tokenizer), where)
        model = BiLSTMCTC(model_cfg, feat_cfg.n_mels, len(tokenizer))
        model.load_state_dict(ckpt["state_dict"])
    except (ConfigError, KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: inconsistent checkpoint ({type(e).__name__}: {e})") from None
    return LoadedModel(model.eval(), feat_cfg, tokenizer, ckpt.get("info", {}))


def check_shapes(state: dict, cfg: ModelConfig, n_mels: int, vocab: int, where: str) -> None:
    """The file's tensors against the shapes its config implies, checked on the meta device
    (no memory): a config that claims a huge model over small tensors is refused before any
    allocation, naming the first tensor that disagrees."""
    if not 1 <= n_mels <= 1024 or not 2 <= vocab <= 100_000:
        raise CheckpointError(f"{where}: implausible n_mels {n_mels} or vocabulary size {vocab}")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in BiLSTMCTC(cfg, n_mels, vocab).state_dict().items()}
    if not isinstance(state, dict) or set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state or {})), sorted(set(state or {}) - set(expected))
        raise CheckpointError(f"{where}: tensors do not match the model config (missing {missing[:3]}, "
                              f"unexpected {extra[:3]})")
    for k, shape in expected.items():
        if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != shape:
            got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
            raise CheckpointError(f"{where}: tensor {k} has shape {got}, the model config says {shape}")


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Read and build a checkpoint file (``weights_only=True``: it can never execute code)."""
    return model_from_payload(read_payload(path), str(path))


def init_from_checkpoint(model: BiLSTMCTC, path: str | Path, tokenizer: Tokenizer,
                         features: FeatureConfig) -> dict:
    """Start ``model`` from another model's weights (fine-tuning): every tensor whose name and
    shape match is copied, CMVN included; output rows are copied for the units both
    vocabularies share (new units keep their fresh initialisation). Returns what was copied.
    Feature configs must match: the weights only mean something on the features they saw."""
    src = load_checkpoint(path)
    if src.features != features:
        raise CheckpointError(f"{path}: trained on features {src.features}, this recipe uses {features}")
    theirs, mine = src.model.state_dict(), model.state_dict()
    copied, kept = [], []
    for name, value in mine.items():
        if name.startswith("output.") and name in theirs and theirs[name].shape[1:] == value.shape[1:]:
            rows = [(i, src.tokenizer.vocab.index(u)) for i, u in enumerate(tokenizer.vocab) if u in src.tokenizer.vocab]
            for i, j in rows:
                value[i] = theirs[name][j]
            copied.append(f"{name} ({len(rows)}/{len(tokenizer.vocab)} units)")
        elif name in theirs and theirs[name].shape == value.shape:
            value.copy_(theirs[name])
            copied.append(name)
        else:
            kept.append(name)
    return {"from": str(path), "copied": copied, "not_copied": kept}


def average_payloads(paths: Sequence[str | Path], info: dict | None = None) -> dict:
    """Checkpoint averaging: the element-wise mean of the weights of ``paths`` (models of one
    architecture and vocabulary, e.g. the last epochs of a run), as a model payload whose
    configs and vocabulary are the last file's. Averaging the end of a decaying-LR run
    smooths the epoch-to-epoch wobble of the weights (as ESPnet and icefall do)."""
    if not paths:
        raise CheckpointError("average_payloads: no checkpoints given")
    payloads = [read_payload(p) for p in paths]
    last = payloads[-1]
    for path, p in zip(paths[1:], payloads[1:]):
        for key in ("model_config", "vocab"):
            if p[key] != payloads[0][key]:
                raise CheckpointError(f"{path}: {key} differs from {paths[0]}'s; only one model's checkpoints average")
    state = {}
    for name, value in last["state_dict"].items():
        if value.is_floating_point():
            total = sum(p["state_dict"][name].double() for p in payloads)
            state[name] = (total / len(payloads)).to(value.dtype)
        else:
            state[name] = value.clone()       # counters and the like: the last file's
    return {**last, "state_dict": state,
            "info": {**last.get("info", {}), **(info or {}), "averaged": [str(p) for p in paths]}}


def quantize_int8(model: BiLSTMCTC) -> torch.nn.Module:
    """Dynamic int8 quantization of the LSTM and linear weights for CPU inference (about 2x
    faster at batch 1). Activations stay float; the original model is not modified."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)

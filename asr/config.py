"""Typed, frozen configuration loaded from one YAML file per recipe.

Every tunable of the pipeline lives in one of these dataclasses. Unknown keys, wrong types and
impossible values raise :class:`ConfigError` naming the key, so a typo never silently falls back
to a default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. (YAML 1.1 also reads on/off/yes/no as booleans, which
    turns ``--set train.amp=off`` into False.)"""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel filterbank front end (fixed 16 kHz input)."""

    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    dither: float = 0.0

    def check(self, where: str) -> None:
        _require(self.n_mels > 0, f"{where}.n_mels", "must be > 0")
        _require(0 < self.hop_ms <= self.win_ms, f"{where}.hop_ms", "must be in (0, win_ms]")
        _require(self.n_fft >= self.win_ms * 16, f"{where}.n_fft", "must cover one window")


@dataclass(frozen=True)
class DataConfig:
    """What counts as usable training data."""

    oov_policy: str = "map"        # characters outside the vocabulary: map | drop | fail
    min_duration_s: float = 0.1
    max_duration_s: float = 60.0   # longer utterances would blow up batch memory
    features: str = "cache"        # cache: computed once, kept in RAM | on_the_fly: from audio per batch
    cmvn_utterances: int = 0       # >0: global CMVN from this many random training utterances
    # speaker prefix -> times each matching training utterance is seen per epoch (a scarce,
    # costly-to-make part of the data, e.g. {"kokoro:": 3}); augmentation differs per copy
    oversample: dict[str, int] = field(default_factory=dict)

    def check(self, where: str) -> None:
        _require(self.features in ("cache", "on_the_fly"), f"{where}.features", "allowed: cache, on_the_fly")
        for prefix, times in self.oversample.items():
            _require(times >= 1, f"{where}.oversample.{prefix}", "must be >= 1")
        _require(self.cmvn_utterances >= 0, f"{where}.cmvn_utterances", "must be >= 0")
        _require(self.oov_policy in ("map", "drop", "fail"), f"{where}.oov_policy",
                 "allowed: map (normalise, then remove what is left), drop (skip utterance), fail")
        _require(0 <= self.min_duration_s < self.max_duration_s, f"{where}.max_duration_s",
                 "must be > min_duration_s >= 0")


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
        _require(self.stack >= 1, f"{where}.stack", "must be >= 1")
        _require(self.hidden >= 1, f"{where}.hidden", "must be >= 1")
        _require(self.layers >= 1, f"{where}.layers", "must be >= 1")
        _require(0.0 <= self.dropout < 1.0, f"{where}.dropout", "must be in [0, 1)")
        _require(self.utterance_cmn or not self.utterance_cvn, f"{where}.utterance_cvn", "needs utterance_cmn")


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of cached features during training."""

    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)   # time-stretch of the feature sequence
    freq_masks: int = 2
    freq_mask_width: int = 15      # mel bins
    time_masks: int = 2
    time_mask_ratio: float = 0.05  # max width of one time mask, fraction of the utterance
    gain_db: float = 6.0           # random +- level shift (log-mel offset)
    warp_range: tuple[float, float] = (1.0, 1.0)  # VTLP-style mel-axis warp factor range

    def check(self, where: str) -> None:
        _require(all(0.5 <= f <= 2.0 for f in self.speed_factors), f"{where}.speed_factors",
                 "each factor must be in [0.5, 2.0]")
        _require(self.freq_masks >= 0 and self.time_masks >= 0, f"{where}.*_masks", "must be >= 0")
        _require(0.0 <= self.time_mask_ratio < 0.5, f"{where}.time_mask_ratio", "must be in [0, 0.5)")
        _require(0.7 <= self.warp_range[0] <= self.warp_range[1] <= 1.3, f"{where}.warp_range",
                 "must satisfy 0.7 <= low <= high <= 1.3")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, batching, schedule and stopping."""

    epochs: int = 20
    max_minutes: float = 0.0       # wall-clock cap on training; 0 = none
    max_batch_frames: int = 20000  # padded input frames per batch
    lr: float = 1.5e-3
    warmup_steps: int = 300
    final_lr_ratio: float = 0.05   # cosine decay to lr * ratio at the last epoch
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    patience: int = 5              # epochs without dev improvement before stopping
    average_last: int = 0          # average the weights of the last N epochs (0, 1: off); the
                                   # average becomes best.pt when its dev WER is no worse
    seed: int = 1234
    threads: int = 2
    workers: int = 0               # batch-loading processes (0: in the training loop)
    sortagrad: bool = False        # first epoch in order of increasing length (DeepSpeech 2)
    checkpoint_every: int = 200    # steps between mid-epoch state checkpoints (0: epoch ends only)
    device: str = "cpu"            # cpu | cuda | auto
    amp: str = "off"               # off | bf16 | fp16 | auto (autocast; fp16 adds loss scaling;
                                   # auto: bf16 where the device computes it natively, else off)
    progress: bool = True          # a progress bar per epoch (on a terminal only)

    def check(self, where: str) -> None:
        _require(self.epochs >= 1, f"{where}.epochs", "must be >= 1")
        _require(self.max_batch_frames >= 100, f"{where}.max_batch_frames", "must be >= 100")
        _require(self.lr > 0, f"{where}.lr", "must be > 0")
        _require(0 < self.final_lr_ratio <= 1, f"{where}.final_lr_ratio", "must be in (0, 1]")
        _require(self.grad_clip > 0, f"{where}.grad_clip", "must be > 0")
        _require(self.patience >= 1, f"{where}.patience", "must be >= 1")
        _require(self.average_last >= 0, f"{where}.average_last", "must be >= 0")
        _require(self.threads >= 1, f"{where}.threads", "must be >= 1")
        _require(self.workers >= 0, f"{where}.workers", "must be >= 0")
        _require(self.checkpoint_every >= 0, f"{where}.checkpoint_every", "must be >= 0")
        _require(self.device in ("cpu", "cuda", "auto"), f"{where}.device", "allowed: cpu, cuda, auto")
        _require(self.amp in ("off", "bf16", "fp16", "auto"), f"{where}.amp", "allowed: off, bf16, fp16, auto")


DECODE_METHODS = ("greedy", "beam", "beam_lm")


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding: greedy best path, CTC beam search without LM, or lexicon + word n-gram LM beam."""

    method: str = "greedy"                 # what `asr decode` / `asr transcribe` use by default
    methods: tuple[str, ...] = ()          # what a recipe's decode stage compares (empty: method)
    batch_frames: int = 40000
    beam_size: int = 50
    beam_size_token: int = 0               # tokens considered per frame (0: all)
    beam_threshold: float = 25.0           # prune hypotheses this far below the best (log domain)
    lm_weight: float = 1.0
    word_score: float = 0.0                # added per emitted word (insertion bonus)
    unk_score: float = float("-inf")       # word not in the lexicon (-inf: never)
    sil_score: float = 0.0
    lexicon: str = ""                      # beam_lm: "word c h a r s |" per line
    lm: str = ""                           # beam_lm: KenLM .arpa or binary
    tune_lm_weights: tuple[float, ...] = ()   # grid searched on dev by a recipe's tune stage
    tune_word_scores: tuple[float, ...] = ()
    tune_beam_size: int = 50

    def check(self, where: str) -> None:
        allowed = ", ".join(DECODE_METHODS)
        _require(self.method in DECODE_METHODS, f"{where}.method", f"allowed: {allowed}")
        for m in self.methods:
            _require(m in DECODE_METHODS, f"{where}.methods", f"{m!r} unknown; allowed: {allowed}")
        _require(self.beam_size >= 1, f"{where}.beam_size", "must be >= 1")
        _require(self.tune_beam_size >= 1, f"{where}.tune_beam_size", "must be >= 1")
        _require(self.beam_size_token >= 0, f"{where}.beam_size_token", "must be >= 0")
        _require(self.beam_threshold > 0, f"{where}.beam_threshold", "must be > 0")
        _require(bool(self.tune_lm_weights) == bool(self.tune_word_scores), f"{where}.tune_word_scores",
                 "tune_lm_weights and tune_word_scores are given together")

    @property
    def compared(self) -> tuple[str, ...]:
        return self.methods or (self.method,)


@dataclass(frozen=True)
class TokenizerConfig:
    """Output units: characters, or BPE subwords (sentencepiece) trained on the training text."""

    kind: str = "char"          # char | bpe
    vocab_size: int = 500       # bpe: pieces (the CTC blank comes on top)

    def check(self, where: str) -> None:
        _require(self.kind in ("char", "bpe"), f"{where}.kind", "allowed: char, bpe")
        _require(self.vocab_size >= 30, f"{where}.vocab_size", "must be >= 30")


@dataclass(frozen=True)
class TextConfig:
    """Sentence text for read-speech recipes: which sentences are read and held out."""

    source: str = "wordnet"                 # WordNet gloss example sentences (Debian wordnet-base)
    wordnet_dir: str = "/usr/share/wordnet"
    top_words: int = 3000                   # read sentences use only the most frequent words
    min_words: int = 4
    max_words: int = 14
    held_out: dict[str, int] = field(default_factory=dict)  # split -> distinct sentences (not train)
    seed: int = 11

    def check(self, where: str) -> None:
        _require(self.source == "wordnet", f"{where}.source", "allowed: wordnet")
        _require(self.top_words > 0, f"{where}.top_words", "must be > 0")
        _require(1 <= self.min_words <= self.max_words, f"{where}.min_words", "1 <= min <= max_words")
        for k, v in self.held_out.items():
            _require(v > 0, f"{where}.held_out.{k}", "must be > 0")


@dataclass(frozen=True)
class CorpusConfig:
    """A real corpus: where it lives, whether to download it, which subsets make each split."""

    name: str = ""                  # librispeech | mini_librispeech | an4 | common_voice
    root: str = ""                  # corpus folder; downloaded archives are extracted here
    download: bool = False
    archive_dir: str = ""           # downloaded archives (default: <root>/archives)
    mirror: str = ""                # e.g. https://openslr.elda.org: replaces scheme + host of every URL
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> subsets joined into it
    lm_text: str = ""               # LM text (.txt or .txt.gz); "": the training transcripts only
    lm_text_url: str = ""           # fetched to lm_text when missing (with download: true)
    dev_speakers: int = 0           # >0 and no dev subset: move this many training speakers to dev

    def check(self, where: str) -> None:
        if not self.name:
            return
        _require(self.name in ("librispeech", "mini_librispeech", "an4", "common_voice"), f"{where}.name",
                 "allowed: librispeech, mini_librispeech, an4, common_voice")
        _require(bool(self.root), f"{where}.root", "needed with a corpus name")
        _require(bool(self.splits), f"{where}.splits", "map each split to its corpus subsets")
        _require(not (self.download and self.name == "common_voice"), f"{where}.download",
                 "Common Voice needs a local download (its terms require sign-in)")


@dataclass(frozen=True)
class LMConfig:
    """Word n-gram LM (KenLM lmplz) trained on text that excludes every held-out sentence."""

    order: int = 3
    prune: tuple[int, ...] = ()      # lmplz --prune thresholds per order (empty: none)
    memory: str = "20%"              # lmplz -S
    binary: bool = True              # also build a KenLM binary (faster load)
    lexicon_min_count: int = 1       # words seen fewer times in the LM text stay out of the lexicon

    def check(self, where: str) -> None:
        _require(2 <= self.order <= 6, f"{where}.order", "must be in 2..6 (KenLM built with max order 6)")
        _require(len(self.prune) <= self.order, f"{where}.prune", "at most one threshold per order")


@dataclass(frozen=True)
class VoiceGroup:
    """Part of a synthesized split: ``utterances`` spread evenly over ``voices``."""

    voices: tuple[str, ...] = ()   # "engine:voice" specs, brace expansion allowed
    utterances: int = 100


@dataclass(frozen=True)
class SynthConfig:
    """Text-to-speech corpus synthesis with per-utterance variation."""

    splits: dict[str, tuple[VoiceGroup, ...]] = field(default_factory=dict)
    min_digits: int = 1
    max_digits: int = 7
    speed_range: tuple[float, float] = (0.8, 1.25)   # relative speaking rate
    pitch_range: tuple[float, float] = (0.8, 1.25)   # relative pitch
    formant_range: tuple[float, float] = (1.0, 1.0)  # spectral envelope shift (espeak, flite)
    snr_db_range: tuple[float, float] = (10.0, 40.0)
    noise_prob: float = 0.7
    pad_range_s: tuple[float, float] = (0.05, 0.4)  # silence added before/after
    seed: int = 7
    jobs: int = 2

    def check(self, where: str) -> None:
        _require(1 <= self.min_digits <= self.max_digits, f"{where}.min_digits", "1 <= min <= max_digits")
        for name, groups in self.splits.items():
            _require(len(groups) > 0, f"{where}.splits.{name}", "needs at least one voice group")
            for i, g in enumerate(groups):
                _require(len(g.voices) > 0, f"{where}.splits.{name}[{i}].voices", "must not be empty")
                _require(g.utterances > 0, f"{where}.splits.{name}[{i}].utterances", "must be > 0")


@dataclass(frozen=True)
class RecipeConfig:
    """Everything one recipe run needs."""

    name: str = "digits"
    data_dir: str = "data/digits"
    exp_dir: str = "exp/digits"
    train_split: str = "train"
    dev_split: str = "dev"
    test_splits: tuple[str, ...] = ()
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    text: TextConfig = field(default_factory=TextConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    lm: LMConfig = field(default_factory=LMConfig)

    def check(self, where: str = "config") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "check"):
                value.check(f"{where}.{f.name}")

    def digest(self) -> str:
        """Short stable hash of the whole config, for stage bookkeeping."""
        blob = json.dumps(to_dict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _require(ok: bool, key: str, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {rule}")


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain JSON/YAML-able values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """Read a recipe YAML; ``overrides`` maps dotted keys (``train.epochs``) to values."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from e
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return from_dict(RecipeConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` with the value parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.load(raw, Loader=_Loader)

"""Recipes: one config (:class:`RecipeConfig`), one object that owns every path
(:class:`RecipePaths`), one resolved :class:`~asr.runtime.Runtime`, and a list of stages.

A stage is a library function decorated with :func:`stage`, which declares the config sections
it reads. The runner gives each stage a view of the config in which every other section raises
:class:`StageError` when touched, so a stage's fingerprint (its sections plus the fingerprint of
the stage before it) cannot drift from what it really reads. A finished stage leaves a mark
holding its fingerprint; it is skipped on rerun when that matches, and a changed config for a
finished stage is an error (a new ``exp_dir`` or ``--force``), so results never mix two configs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import ConfigError, file_digests, load_yaml, to_dict
from .corpora.commands import CommandsConfig
from .corpora.real import CorpusConfig
from .corpora.robust import RobustConfig
from .corpora.sentences import TextConfig
from .corpora.synth import SynthConfig
from .data import AugmentConfig, DataConfig, oversample, read_manifest
from .calibration import CalibrateConfig
from .augment import WaveAugmenter, babble_bank, cached_bank, rir_bank
from .dataset import build_set, with_wave_augmentation
from .decode import DecodeConfig, decode_emissions
from .errors import AsrError
from .features import FeatureConfig, build_feature_cache
from .files import atomic_write_text
from .lm import LMConfig, build_lm, oov_rate, perplexity, read_lexicon, word_counts, write_lexicon
from .model import ModelConfig
from .plots import evaluation_figures
from .recognizer import Recognizer, load, utterance_features
from .results import results_markdown, results_table, score_split
from .runtime import Dist, Runtime
from .text import BPETokenizer, CharTokenizer, TokenizerConfig, Tokenizer
from .train import TrainConfig, train

log = logging.getLogger(__name__)


class StageError(AsrError):
    """A stage touched a config section it does not declare, or finished with another config."""


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
    robust: RobustConfig = field(default_factory=RobustConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)

    def check(self, where: str = "config") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "check"):
                value.check(f"{where}.{f.name}")

    def digest(self) -> str:
        """Short stable hash of the whole config, for stage bookkeeping."""
        blob = json.dumps(to_dict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """Read a recipe YAML; ``overrides`` maps dotted keys (``train.epochs``) to values."""
    return load_yaml(RecipeConfig, path, overrides)


# the config's sections (dataclass fields); the other fields (name, paths, split names) are
# run-wide scalars every stage may read
SECTIONS = tuple(name for name, tp in typing.get_type_hints(RecipeConfig).items() if dataclasses.is_dataclass(tp))


@dataclass(frozen=True)
class RecipePaths:
    """Every file a recipe reads or writes, in one place."""

    data_dir: Path
    exp_dir: Path

    @classmethod
    def of(cls, cfg: RecipeConfig) -> "RecipePaths":
        return cls(Path(cfg.data_dir), Path(cfg.exp_dir))

    def manifest(self, split: str) -> Path:
        return self.data_dir / f"{split}.jsonl"

    def feature_cache(self, split: str) -> Path:
        return self.data_dir / "feats" / f"{split}.pt"

    def bad_audio(self, split: str) -> Path:
        return self.data_dir / f"{split}.bad_audio.txt"

    def tokenizer_model(self, vocab_size: int) -> Path:
        return self.data_dir / "tokenizer" / f"bpe{vocab_size}.model"

    @property
    def augment_dir(self) -> Path:
        """Banks of simulated rooms and babble for waveform augmentation."""
        return self.data_dir / "augment"

    @property
    def lm_dir(self) -> Path:
        return self.data_dir / "lm"

    @property
    def lm_text(self) -> Path:
        return self.data_dir / "text" / "lm_train.txt"

    def lm_file(self, binary: bool) -> Path:
        return self.lm_dir / ("lm.bin" if binary else "lm.arpa")

    @property
    def lexicon(self) -> Path:
        return self.lm_dir / "lexicon.txt"

    def skipped(self, split: str) -> Path:
        """Utterances of ``split`` that training could not use."""
        return self.exp_dir / f"{split}.skipped.txt"

    @property
    def best_model(self) -> Path:
        return self.exp_dir / "best.pt"

    def decode_dir(self, split: str) -> Path:
        return self.exp_dir / "decode" / split

    @property
    def tuned(self) -> Path:
        return self.exp_dir / "decode" / "tuned.json"

    @property
    def stage_dir(self) -> Path:
        return self.exp_dir / "stages"


@dataclass(frozen=True)
class Recipe:
    """What a stage gets: the config (restricted to the sections it declares), paths, runtime."""

    cfg: RecipeConfig
    paths: RecipePaths
    runtime: Runtime

    def splits(self) -> list[str]:
        return list(dict.fromkeys([self.cfg.train_split, self.cfg.dev_split, *self.cfg.test_splits]))


@dataclass(frozen=True)
class Stage:
    """A recipe step: ``fn(recipe)``, the config sections it reads, and whether every torchrun
    rank runs it (training and decoding shard their work; the others run on rank 0 only)."""

    name: str
    fn: Callable[[Recipe], Any]
    reads: tuple[str, ...]
    distributed: bool = False

    def __call__(self, r: Recipe) -> Any:
        return self.fn(r)


def stage(reads: Sequence[str], name: str | None = None, distributed: bool = False):
    """Declare a function as a recipe stage that reads the config sections ``reads``."""
    unknown = sorted(set(reads) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"stage reads unknown config section(s) {unknown}; sections: {list(SECTIONS)}")

    def wrap(fn: Callable[[Recipe], Any]) -> Stage:
        return Stage(name or fn.__name__.removesuffix("_stage"), fn, tuple(reads), distributed)
    return wrap


@dataclass(frozen=True)
class Undeclared:
    """Stands in for a config section a stage did not declare; touching it is an error."""

    section: str
    stage: str

    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        raise StageError(f"stage {self.stage!r} read {self.section}.{key} but does not declare the "
                         f"{self.section!r} section (add it to its @stage(reads=...))")


def stage_view(cfg: RecipeConfig, st: Stage) -> RecipeConfig:
    """``cfg`` with every section ``st`` does not declare replaced by :class:`Undeclared`."""
    return replace(cfg, **{s: Undeclared(s, st.name) for s in SECTIONS if s not in st.reads})


def fingerprints(cfg: RecipeConfig, stages: Sequence[Stage]) -> list[str]:
    """Per stage: hash of its declared sections, the run-wide scalars (paths, split names) and
    the previous stage's fingerprint (a stage depends on everything upstream of it)."""
    scalars = {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in SECTIONS}
    out, prev = [], ""
    for st in stages:
        blob = {"stage": st.name, "scalars": scalars, "upstream": prev,
                "sections": {s: to_dict(getattr(cfg, s)) for s in st.reads}}
        files = {s: d for s in st.reads if (d := file_digests(getattr(cfg, s)))}
        if files:                       # only then: older runs' marks stay valid
            blob["files"] = files
        prev = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]
        out.append(prev)
    return out


def run_stages(cfg: RecipeConfig, stages: Sequence[Stage], start: int = 0, stop: int = 100,
               force: bool = False, runtime: Runtime | None = None) -> None:
    """Run ``stages[start..stop]`` (see the module docstring for skipping and fingerprints).
    Under torchrun every rank runs the distributed stages (each a shard); rank 0 alone runs the
    others and keeps the bookkeeping, the other ranks wait for it."""
    rt = runtime or Runtime.create(cfg.train.device, cfg.train.amp, cfg.train.threads)
    paths = RecipePaths.of(cfg)
    paths.stage_dir.mkdir(parents=True, exist_ok=True)
    for i, (st, fp) in enumerate(zip(stages, fingerprints(cfg, stages))):
        if not start <= i <= stop:
            continue
        mark = paths.stage_dir / f"{i}-{st.name}.done"
        rt.dist.barrier()
        if mark.exists() and not force:
            if mark.read_text().strip() == fp:
                log.info("== stage %d (%s): done, skipping", i, st.name)
                continue
            missing = [f for s in st.reads for f, d in file_digests(getattr(cfg, s)).items() if d == "missing"]
            raise StageError(f"stage {i} ({st.name}) finished with a different config "
                             f"({mark}); use a new exp_dir or --force"
                             + (f" (input file(s) {missing} are missing)" if missing else ""))
        if not rt.dist.main and not st.distributed:
            continue
        log.info("== stage %d (%s)", i, st.name)
        t0 = time.perf_counter()
        st(Recipe(stage_view(cfg, st), paths, rt))
        if rt.dist.main:
            _record_stage(paths, mark, fp, st.name, time.perf_counter() - t0)
            log.info("== stage %d (%s) done in %.0fs", i, st.name, time.perf_counter() - t0)
    rt.dist.barrier()


def run_stage(cfg: RecipeConfig, st: Stage, runtime: Runtime | None = None) -> Any:
    """Run one stage now, without the finished-stage bookkeeping (``asr train`` does this)."""
    rt = runtime or Runtime.create(cfg.train.device, cfg.train.amp, cfg.train.threads)
    return st(Recipe(stage_view(cfg, st), RecipePaths.of(cfg), rt))


def _record_stage(paths: RecipePaths, mark: Path, fp: str, name: str, elapsed: float) -> None:
    mark.write_text(fp + "\n")
    times_path = paths.stage_dir / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    times[name] = round(elapsed, 1)
    atomic_write_text(times_path, json.dumps(times, indent=1) + "\n")


# ---------------------------------------------------------------- shared stages
def cached_splits(r: Recipe) -> list[str]:
    """Splits whose features are cached: all, or all but training with ``data.features=on_the_fly``."""
    on_the_fly = r.cfg.data.features == "on_the_fly"
    return [s for s in r.splits() if not (on_the_fly and s == r.cfg.train_split)]


def split_features(r: Recipe, split: str) -> dict:
    """The feature cache of ``split``: the one entry point (features, train, tune and decode all
    come here, so they share one cache key and never rebuild each other's caches). Reads the
    ``data`` and ``features`` sections."""
    utts = read_manifest(r.paths.manifest(split))
    return build_feature_cache(utts, r.cfg.features, r.paths.feature_cache(split),
                               report=r.paths.bad_audio(split), max_seconds=r.cfg.data.max_duration_s)


@stage(reads=("data", "features"))
def features_stage(r: Recipe) -> None:
    """Compute log-mels once per utterance of every cached split (reused when unchanged)."""
    for split in cached_splits(r):
        t0 = time.perf_counter()
        cache = split_features(r, split)
        log.info("%s: %d utterances (%d skipped) in %.1fs", split, len(cache["ids"]), cache["skipped"],
                 time.perf_counter() - t0)


def recipe_tokenizer(r: Recipe) -> Tokenizer:
    """Characters, or BPE units trained on the training transcripts (cached in
    ``data_dir/tokenizer/``, so the LM stage's lexicon and training use the same units)."""
    tc = r.cfg.tokenizer
    if tc.kind == "char":
        return CharTokenizer()
    path = r.paths.tokenizer_model(tc.vocab_size)
    texts = [u.text for u in read_manifest(r.paths.manifest(r.cfg.train_split))]
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    if path.exists() and path.with_suffix(".key").read_text().strip() == key:
        return BPETokenizer(path.read_bytes())
    tok = BPETokenizer.train(texts, tc.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tok.model_proto)
    path.with_suffix(".key").write_text(key + "\n")
    return tok


@stage(reads=("tokenizer", "data", "features", "model", "augment", "train"), distributed=True)
def train_stage(r: Recipe) -> None:
    """Train on the training split, choosing the best epoch on dev (``exp_dir/best.pt``)."""
    cfg = r.cfg
    tokenizer = recipe_tokenizer(r)
    sets = {}
    for split in (cfg.train_split, cfg.dev_split):
        utts = read_manifest(r.paths.manifest(split))
        cache = split_features(r, split) if split in cached_splits(r) else None
        if split == cfg.train_split and cfg.data.oversample:
            utts = oversample(utts, cfg.data.oversample)
        sets[split] = build_set(utts, cache, tokenizer, cfg.model.stack, split, r.paths.skipped(split),
                                cfg.data, cfg.features)
        if split == cfg.train_split and cfg.augment.wave.enabled:
            sets[split] = with_wave_augmentation(sets[split], utts, wave_augmenter(r, utts), cfg.features,
                                                 cfg.data.max_duration_s)
    t0 = time.perf_counter()
    train(cfg, sets[cfg.train_split], sets[cfg.dev_split], r.paths.exp_dir, tokenizer, r.runtime)
    if r.runtime.dist.main:
        atomic_write_text(r.paths.exp_dir / "train_time.json", json.dumps({"train_s": time.perf_counter() - t0}) + "\n")


def wave_augmenter(r: Recipe, utts: Sequence) -> WaveAugmenter:
    """The training waveform augmenter with its room and babble banks (made once, cached in
    ``data_dir/augment/``; a room or babble source that fails is reported and left out)."""
    w, seed = r.cfg.augment.wave, r.cfg.train.seed
    t0 = time.perf_counter()
    failed: list[str] = []

    def rooms() -> list:
        bank, bad = rir_bank(w, seed)
        failed.extend(bad)
        return bank

    def babble() -> list:
        from .data import load_utterance_audio

        bank, bad = babble_bank(lambda i: load_utterance_audio(utts[i]), len(utts), w, seed)
        failed.extend(bad)
        return bank
    rkey = json.dumps([w.rir_bank, w.rt60_range_s, w.room_size_range_m, seed])
    bkey = json.dumps([w.babble_bank, w.babble_speakers, seed, hashlib.sha256(
        "\n".join(u.audio for u in utts).encode()).hexdigest()])
    rirs = cached_bank(r.paths.augment_dir / "rirs.npz", rkey, rooms) if w.reverb_prob > 0 else []
    babbles = (cached_bank(r.paths.augment_dir / "babble.npz", bkey, babble)
               if w.noise_prob > 0 and w.noise_kinds.get("babble", 0) > 0 else [])
    for line in failed:
        log.warning("augmentation source left out: %s", line)
    log.info("waveform augmentation: %d rooms, %d babble segments (%d sources failed) in %.1fs",
             len(rirs), len(babbles), len(failed), time.perf_counter() - t0)
    return WaveAugmenter(w, rirs, babbles)


@stage(reads=("tokenizer", "lm"))
def lm_stage(r: Recipe) -> None:
    """Word n-gram LM on ``data_dir/text/lm_train.txt`` and a spelling lexicon of its words
    (seen ``lm.lexicon_min_count`` times) and the training transcripts' words; OOV rate and
    perplexity of each held-out split in ``lm/stats.json``. The text is streamed, never held."""
    cfg, p = r.cfg, r.paths
    lm_file = p.lm_file(cfg.lm.binary)
    build_lm(p.lm_text, lm_file, cfg.lm.order, cfg.lm.prune, cfg.lm.memory, cfg.lm.binary)
    with p.lm_text.open(encoding="utf-8") as f:
        counts = word_counts(f)
    with p.lm_text.open(encoding="utf-8") as f:
        n_sentences = sum(1 for _ in f)
    words = {w for w, c in counts.items() if c >= cfg.lm.lexicon_min_count}
    words |= set(word_counts(u.text for u in read_manifest(p.manifest(cfg.train_split))))
    n, skipped = write_lexicon(words, recipe_tokenizer(r), p.lexicon)
    vocab = read_lexicon(p.lexicon)
    stats = {"lm": str(lm_file), "order": cfg.lm.order, "lm_sentences": n_sentences,
             "lexicon_words": n, "lexicon_skipped": sorted(skipped)[:50], "splits": {}}
    for split in [cfg.dev_split, *cfg.test_splits]:
        texts = [u.text for u in read_manifest(p.manifest(split))]
        stats["splits"][split] = {"oov_rate": round(oov_rate(texts, vocab), 3),
                                  "perplexity": round(perplexity(lm_file, texts), 2)}
    atomic_write_text(p.lm_dir / "stats.json", json.dumps(stats, indent=1) + "\n")
    log.info("%s: %d-gram on %d sentences, lexicon %d words; %s", lm_file, cfg.lm.order, n_sentences, n,
             ", ".join(f"{k} OOV {v['oov_rate']}% ppl {v['perplexity']}" for k, v in stats["splits"].items()))


def resolved_decode(r: Recipe, tuned: bool = True) -> DecodeConfig:
    """``decode`` with the recipe's LM files and grammar filled in and, when ``tuned`` and the tune stage
    (``asr.recipe_tune``) has run, its dev-tuned LM weight and word score or grammar unit bonus."""
    d = r.cfg.decode
    phrases = r.paths.data_dir / "phrases.txt"           # a commands recipe's expanded grammar
    d = replace(d, lexicon=d.lexicon or str(r.paths.lexicon), lm=d.lm or str(r.paths.lm_file(r.cfg.lm.binary)),
                grammar=d.grammar or (str(phrases) if phrases.is_file() else ""))
    if tuned and r.paths.tuned.exists():
        best = json.loads(r.paths.tuned.read_text())
        d = replace(d, **{k: best[k] for k in ("lm_weight", "word_score", "unit_bonus") if k in best})
    return d


def split_emissions(r: Recipe, rec: Recognizer, split: str, dist: Dist = Dist()):
    """(utterances, {id: (T', V) log-probs}, failed ids, seconds spent in the model) for this
    rank's shard of the split's utterances (all of them in a single process)."""
    utts = read_manifest(r.paths.manifest(split))
    cache = split_features(r, split)
    t0 = time.perf_counter()
    feats, ids, problems = utterance_features(rec, dist.shard(utts), cache)
    emis = dict(zip(ids, rec.emissions(feats, r.cfg.decode.batch_frames)))
    return utts, emis, [p.id for p in problems], time.perf_counter() - t0


def decode_split(r: Recipe, rec: Recognizer, decoders: dict, split: str):
    """Every decoder's hypotheses of one split: under torchrun each rank decodes a shard and rank
    0 gets all. Returns (utterances, {method: {id: hyp}}, {method: compute seconds, all ranks})."""
    dist = r.runtime.dist
    utts, emis, failed, model_s = split_emissions(r, rec, split, dist)
    ids = list(emis)
    hyps, seconds = {}, {}
    for method, dec in decoders.items():
        t0 = time.perf_counter()
        hyps[method] = {i: h.text for i, h in zip(ids, decode_emissions(dec, [emis[i] for i in ids]))}
        hyps[method].update({i: "" for i in failed})
        seconds[method] = model_s + time.perf_counter() - t0
    parts = dist.gather((hyps, seconds))
    merged = {m: {k: v for h, _ in parts for k, v in h[m].items()} for m in decoders}
    return utts, merged, {m: sum(sec[m] for _, sec in parts) for m in decoders}


@stage(reads=("data", "features", "tokenizer", "lm", "decode"), distributed=True)
def decode_stage(r: Recipe) -> dict:
    """Decode dev and test splits with the best model and every compared method (sharded across
    ranks under torchrun); rank 0 writes hyps, ``results.json`` (top level: the last method) and
    a table. The decoding RTF counts the compute time of all ranks."""
    cfg, p, dist = r.cfg, r.paths, r.runtime.dist
    rec = load(p.best_model, str(r.runtime.device))
    d = resolved_decode(r)
    decoders = {m: rec.make_decoder(d, m) for m in d.compared}
    vocab = read_lexicon(d.lexicon) if "beam_lm" in d.compared else None
    results = {}
    for split in [cfg.dev_split, *cfg.test_splits]:
        utts, hyps, seconds = decode_split(r, rec, decoders, split)
        if dist.main:
            results[split] = score_split(p.decode_dir(split), utts, hyps, seconds, d.compared[-1], vocab)
    if not dist.main:
        return {}
    if "beam_lm" in d.compared:
        results["_decode"] = {"lm_weight": d.lm_weight, "word_score": d.word_score, "beam_size": d.beam_size,
                              "lm": d.lm, "lexicon": d.lexicon}
    atomic_write_text(p.exp_dir / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(p.exp_dir / "RESULTS.md", results_markdown(r.cfg.name, p.best_model, p.stage_dir / "times.json",
                                                                  results))
    log.info("results:\n%s", results_table(results))
    evaluation_figures(p.exp_dir, {s: p.manifest(s) for s in [*cfg.test_splits, cfg.dev_split]}, rec)
    return results

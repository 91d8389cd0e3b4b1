"""Recipe stages shared by every recipe: features, training, decoding + scoring, and the stage
runner that skips finished stages. A recipe folder only picks its corpus preparation and config."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from .config import DecodeConfig, RecipeConfig, to_dict
from .data import oversample, read_manifest
from .decode import decode_emissions, emissions, make_decoder, utterance_features
from .lm import build_lm, oov_rate, perplexity, read_lexicon, word_counts, write_lexicon
from .distributed import Dist, init_from_env
from .features import build_feature_cache
from .model import load_model
from .score import error_rates, write_kaldi_text
from .text import BPETokenizer, CharTokenizer, Tokenizer
from .train import build_set, train



DISTRIBUTED_STAGES = {"train", "decode"}    # stages every torchrun rank runs (the others: rank 0)


def manifest_path(cfg: RecipeConfig, split: str) -> Path:
    return Path(cfg.data_dir) / f"{split}.jsonl"


def cache_path(cfg: RecipeConfig, split: str) -> Path:
    return Path(cfg.data_dir) / "feats" / f"{split}.pt"


def all_splits(cfg: RecipeConfig) -> list[str]:
    return list(dict.fromkeys([cfg.train_split, cfg.dev_split, *cfg.test_splits]))


def cached_splits(cfg: RecipeConfig) -> list[str]:
    """Splits whose features are cached: all, or all but training with ``data.features=on_the_fly``."""
    on_the_fly = cfg.data.features == "on_the_fly"
    return [s for s in all_splits(cfg) if not (on_the_fly and s == cfg.train_split)]


def features_stage(cfg: RecipeConfig) -> None:
    """Compute log-mels once per utterance of every cached split (reused when unchanged)."""
    for split in cached_splits(cfg):
        t0 = time.perf_counter()
        utts = read_manifest(manifest_path(cfg, split))
        cache = build_feature_cache(utts, cfg.features, cache_path(cfg, split),
                                    report=Path(cfg.data_dir) / f"{split}.bad_audio.txt",
                                    max_seconds=cfg.data.max_duration_s)
        print(f"[features] {split}: {len(cache['ids'])} utterances "
              f"({cache['skipped']} skipped) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


def recipe_tokenizer(cfg: RecipeConfig) -> Tokenizer:
    """Characters, or BPE units trained on the training transcripts (cached in
    ``data_dir/tokenizer/``, so the LM stage's lexicon and training use the same units)."""
    if cfg.tokenizer.kind == "char":
        return CharTokenizer()
    path = Path(cfg.data_dir) / "tokenizer" / f"bpe{cfg.tokenizer.vocab_size}.model"
    texts = [u.text for u in read_manifest(manifest_path(cfg, cfg.train_split))]
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    if path.exists() and path.with_suffix(".key").read_text().strip() == key:
        return BPETokenizer(path.read_bytes())
    tok = BPETokenizer.train(texts, cfg.tokenizer.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tok.model_proto)
    path.with_suffix(".key").write_text(key + "\n")
    return tok


def train_stage(cfg: RecipeConfig) -> None:
    tokenizer = recipe_tokenizer(cfg)
    exp = Path(cfg.exp_dir)
    sets = {}
    for split in (cfg.train_split, cfg.dev_split):
        utts = read_manifest(manifest_path(cfg, split))
        cache = (build_feature_cache(utts, cfg.features, cache_path(cfg, split), max_seconds=cfg.data.max_duration_s)
                 if split in cached_splits(cfg) else None)
        if split == cfg.train_split and cfg.data.oversample:
            utts = oversample(utts, cfg.data.oversample)
        sets[split] = build_set(utts, cache, tokenizer, cfg.model.stack, split, exp / f"{split}.skipped.txt",
                                cfg.data, cfg.features)
    t0 = time.perf_counter()
    train(cfg, sets[cfg.train_split], sets[cfg.dev_split], exp, tokenizer)
    (exp / "train_time.json").write_text(json.dumps({"train_s": time.perf_counter() - t0}) + "\n")


def lm_dir(cfg: RecipeConfig) -> Path:
    return Path(cfg.data_dir) / "lm"


def lm_stage(cfg: RecipeConfig) -> None:
    """Word n-gram LM on ``data_dir/text/lm_train.txt`` and a spelling lexicon of its words
    (seen ``lm.lexicon_min_count`` times) and the training transcripts' words; OOV rate and
    perplexity of each held-out split in ``lm/stats.json``. The text is streamed, never held."""
    out = lm_dir(cfg)
    text = Path(cfg.data_dir) / "text" / "lm_train.txt"
    lm_file = out / ("lm.bin" if cfg.lm.binary else "lm.arpa")
    build_lm(text, lm_file, cfg.lm.order, cfg.lm.prune, cfg.lm.memory, cfg.lm.binary)
    with text.open(encoding="utf-8") as f:
        counts = word_counts(f)
    n_sentences = sum(1 for _ in text.open(encoding="utf-8"))
    words = {w for w, c in counts.items() if c >= cfg.lm.lexicon_min_count}
    words |= set(word_counts(u.text for u in read_manifest(manifest_path(cfg, cfg.train_split))))
    n, skipped = write_lexicon(words, recipe_tokenizer(cfg), out / "lexicon.txt")
    vocab = read_lexicon(out / "lexicon.txt")
    stats = {"lm": str(lm_file), "order": cfg.lm.order, "lm_sentences": n_sentences,
             "lexicon_words": n, "lexicon_skipped": sorted(skipped)[:50], "splits": {}}
    for split in [cfg.dev_split, *cfg.test_splits]:
        texts = [u.text for u in read_manifest(manifest_path(cfg, split))]
        stats["splits"][split] = {"oov_rate": round(oov_rate(texts, vocab), 3),
                                  "perplexity": round(perplexity(lm_file, texts), 2)}
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(f"[lm] {lm_file}: {cfg.lm.order}-gram on {n_sentences} sentences, lexicon {n} words; "
          + ", ".join(f"{k} OOV {v['oov_rate']}% ppl {v['perplexity']}" for k, v in stats["splits"].items()),
          file=sys.stderr)


def resolved_decode(cfg: RecipeConfig) -> DecodeConfig:
    """``cfg.decode`` with the recipe's LM files filled in and the dev-tuned weights, if tuned."""
    d = cfg.decode
    lm_file = lm_dir(cfg) / ("lm.bin" if cfg.lm.binary else "lm.arpa")
    d = replace(d, lexicon=d.lexicon or str(lm_dir(cfg) / "lexicon.txt"), lm=d.lm or str(lm_file))
    tuned = Path(cfg.exp_dir) / "decode" / "tuned.json"
    if tuned.exists():
        best = json.loads(tuned.read_text())
        d = replace(d, lm_weight=best["lm_weight"], word_score=best["word_score"])
    return d


def split_emissions(cfg: RecipeConfig, model, split: str, dist: Dist = Dist()):
    """(utterances, {id: (T', V) log-probs}, failed ids, seconds spent in the model) for this
    rank's shard of the split's utterances (all of them in a single process)."""
    utts = read_manifest(manifest_path(cfg, split))
    cache = build_feature_cache(utts, cfg.features, cache_path(cfg, split))
    t0 = time.perf_counter()
    feats, ids, failed = utterance_features(model, dist.shard(utts), cache)
    emis = dict(zip(ids, emissions(model, feats, cfg.decode.batch_frames)))
    return utts, emis, [f.split("\t")[0] for f in failed], time.perf_counter() - t0


def tune_stage(cfg: RecipeConfig) -> dict:
    """Grid search of LM weight x word score for beam_lm on dev; ``exp/decode/tuned.json``."""
    d = resolved_decode(replace(cfg, exp_dir=str(Path(cfg.exp_dir) / "untuned")))
    if not d.tune_lm_weights:
        return {}
    model = load_model(Path(cfg.exp_dir) / "best.pt")
    utts, emis, failed, _ = split_emissions(cfg, model, cfg.dev_split)
    refs = {u.id: u.text for u in utts}
    ids = list(emis)
    grid = []
    for lm_weight in d.tune_lm_weights:
        for word_score in d.tune_word_scores:
            dec = make_decoder(model.tokenizer, replace(d, lm_weight=lm_weight, word_score=word_score),
                               "beam_lm", beam_size=d.tune_beam_size)
            hyps = dict(zip(ids, decode_emissions(dec, [emis[i] for i in ids])))
            hyps.update({i: "" for i in failed})
            wer = error_rates(refs, hyps).wer
            grid.append({"lm_weight": lm_weight, "word_score": word_score, "wer": round(wer, 3)})
            print(f"[tune] lm_weight {lm_weight} word_score {word_score}: dev WER {wer:.2f}%", file=sys.stderr)
    best = min(grid, key=lambda g: (g["wer"], g["lm_weight"], g["word_score"]))
    out = {**best, "dev_split": cfg.dev_split, "beam_size": d.tune_beam_size, "grid": grid}
    path = Path(cfg.exp_dir) / "decode" / "tuned.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def decode_split(cfg: RecipeConfig, model, decoders: dict, split: str, dist: Dist = Dist()):
    """Every decoder's hypotheses of one split: under torchrun each rank decodes a shard and rank
    0 gets all. Returns (utterances, {method: {id: hyp}}, {method: compute seconds, all ranks})."""
    utts, emis, failed, model_s = split_emissions(cfg, model, split, dist)
    ids = list(emis)
    hyps, seconds = {}, {}
    for method, dec in decoders.items():
        t0 = time.perf_counter()
        hyps[method] = dict(zip(ids, decode_emissions(dec, [emis[i] for i in ids])))
        hyps[method].update({i: "" for i in failed})
        seconds[method] = model_s + time.perf_counter() - t0
    parts = dist.gather((hyps, seconds))
    merged = {m: {k: v for h, _ in parts for k, v in h[m].items()} for m in decoders}
    return utts, merged, {m: sum(sec[m] for _, sec in parts) for m in decoders}


def decode_stage(cfg: RecipeConfig) -> dict:
    """Decode dev and test splits with the best model and every compared method (sharded across
    ranks under torchrun); rank 0 writes hyps, ``results.json`` (top level: the last method) and
    a table. The decoding RTF counts the compute time of all ranks."""
    exp = Path(cfg.exp_dir)
    dist = init_from_env("cuda" if cfg.train.device == "cuda" else "cpu")
    device = "cpu" if cfg.train.device == "cpu" or not torch.cuda.is_available() else f"cuda:{dist.local_rank}"
    model = load_model(exp / "best.pt", device)
    d = resolved_decode(cfg)
    decoders = {m: make_decoder(model.tokenizer, d, m) for m in d.compared}
    vocab = read_lexicon(d.lexicon) if "beam_lm" in d.compared else None
    results = {}
    for split in [cfg.dev_split, *cfg.test_splits]:
        utts, hyps, seconds = decode_split(cfg, model, decoders, split, dist)
        if not dist.main:
            continue
        refs = {u.id: u.text for u in utts}
        audio_s = sum(u.duration for u in utts)
        out = exp / "decode" / split
        out.mkdir(parents=True, exist_ok=True)
        write_kaldi_text(refs, out / "ref.txt")
        per_method = {}
        for method in decoders:
            write_kaldi_text(hyps[method], out / f"hyp.{method}.txt")
            per_method[method] = {**error_rates(refs, hyps[method]).as_dict(),
                                  "decode_rtf": round(seconds[method] / max(audio_s, 1e-9), 5)}
        last = d.compared[-1]
        write_kaldi_text(hyps[last], out / "hyp.txt")
        results[split] = dict(per_method[last])
        if len(per_method) > 1:
            results[split]["methods"] = per_method
        if vocab is not None:
            results[split]["oov_rate"] = round(oov_rate(refs.values(), vocab), 3)
    if not dist.main:
        return {}
    if "beam_lm" in d.compared:
        results["_decode"] = {"lm_weight": d.lm_weight, "word_score": d.word_score, "beam_size": d.beam_size,
                              "lm": d.lm, "lexicon": d.lexicon}
    (exp / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (exp / "RESULTS.md").write_text(results_markdown(cfg, results))
    print(results_table(results))
    return results


def results_markdown(cfg: RecipeConfig, results: dict) -> str:
    """The RESULTS.md block of one run: table, code version, config digest, stage times."""
    exp = Path(cfg.exp_dir)
    times_path = exp / "stages" / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    best = load_model(exp / "best.pt").info
    lines = [f"## {cfg.name}: code {code_version()}, config {cfg.digest()}", "",
             results_table(results), "",
             f"- model: {model_origin(best)} (dev WER {best.get('dev_wer', float('nan')):.2f}%), "
             f"model {cfg.model.layers}x{cfg.model.hidden} BiLSTM, stack {cfg.model.stack}",
             "- stage times (s): " + ", ".join(f"{k} {v}" for k, v in times.items())]
    return "\n".join(lines) + "\n"


def model_origin(info: dict) -> str:
    """Which weights a checkpoint holds: one epoch's, or an average of several."""
    epochs = info.get("averaged_epochs")
    return f"average of epochs {epochs[0]}-{epochs[-1]}" if epochs else f"best epoch {info.get('epoch')}"


def results_table(results: dict) -> str:
    """Markdown: one row per set; with several methods, their WERs side by side."""
    sets = {k: v for k, v in results.items() if not k.startswith("_")}
    if any("methods" in r for r in sets.values()):
        methods = list(next(r["methods"] for r in sets.values() if "methods" in r))
        lines = ["| set | " + " | ".join(f"{m} WER %" for m in methods) + f" | {methods[-1]} CER % | "
                 "OOV % | " + " | ".join(f"{m} RTF" for m in methods) + " | utterances |",
                 "|---" * (2 * len(methods) + 4) + "|"]
        for name, r in sets.items():
            ms = r.get("methods", {})
            lines.append(f"| {name} | " + " | ".join(f"{ms[m]['wer']:.2f}" for m in methods)
                         + f" | {r['cer']:.2f} | {r.get('oov_rate', float('nan')):.2f} | "
                         + " | ".join(f"{ms[m]['decode_rtf']:.4f}" for m in methods) + f" | {r['utterances']} |")
        return "\n".join(lines)
    lines = ["| set | WER % | CER % | utterances | S | D | I |", "|---|---|---|---|---|---|---|"]
    for name, r in sets.items():
        lines.append(f"| {name} | {r['wer']:.2f} | {r['cer']:.2f} | {r['utterances']} | "
                     f"{r['substitutions']} | {r['deletions']} | {r['insertions']} |")
    return "\n".join(lines)


def stage_digest(cfg: RecipeConfig, keys: Sequence[str]) -> str:
    blob = json.dumps({k: to_dict(getattr(cfg, k)) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def code_version() -> str:
    """``git describe`` of the package checkout, or 'unknown' outside git."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_stages(cfg: RecipeConfig, stages: Sequence[tuple[str, Callable, Sequence[str]]],
               start: int = 0, stop: int = 100, force: bool = False) -> None:
    """Run ``stages[start..stop]``. Each stage is ``(name, fn(cfg), config keys it depends on)``.

    A finished stage leaves ``exp_dir/stages/<i>-<name>.done`` holding the digest of its config
    keys; it is skipped on rerun when the digest matches. A changed config for a finished stage is
    an error (use a new exp_dir or ``--force``) so results never mix two configs silently.
    """
    torch.set_num_threads(cfg.train.threads)      # every stage, not only training
    # under torchrun every rank runs training and decoding (each a shard); rank 0 alone runs the
    # others and keeps the bookkeeping, the other ranks wait for it
    dist = init_from_env("cuda" if cfg.train.device == "cuda" else "cpu")
    marks = Path(cfg.exp_dir) / "stages"
    marks.mkdir(parents=True, exist_ok=True)
    for i, (name, fn, keys) in enumerate(stages):
        if not start <= i <= stop:
            continue
        mark = marks / f"{i}-{name}.done"
        digest = stage_digest(cfg, keys)
        dist.barrier()
        if mark.exists() and not force:
            if mark.read_text().strip() == digest:
                print(f"== stage {i} ({name}): done, skipping", file=sys.stderr)
                continue
            raise RuntimeError(f"stage {i} ({name}) finished with a different config "
                               f"({mark}); use a new exp_dir or --force")
        if not dist.main and name not in DISTRIBUTED_STAGES:
            continue
        print(f"== stage {i} ({name})", file=sys.stderr)
        t0 = time.perf_counter()
        fn(cfg)
        elapsed = time.perf_counter() - t0
        if dist.main:
            mark.write_text(digest + "\n")
            times_path = marks / "times.json"
            times = json.loads(times_path.read_text()) if times_path.exists() else {}
            times[name] = round(elapsed, 1)
            times_path.write_text(json.dumps(times, indent=1) + "\n")
            print(f"== stage {i} ({name}) done in {elapsed:.0f}s", file=sys.stderr)
    dist.barrier()


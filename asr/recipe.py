"""Recipe stages shared by every recipe: features, training, decoding + scoring, and the stage
runner that skips finished stages. A recipe folder only picks its corpus preparation and config."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .config import RecipeConfig, to_dict
from .data import read_manifest
from .decode import decode_utterances
from .distributed import init_from_env
from .features import build_feature_cache
from .model import load_model
from .score import error_rates, write_kaldi_text
from .text import CharTokenizer
from .train import build_set, train



def manifest_path(cfg: RecipeConfig, split: str) -> Path:
    return Path(cfg.data_dir) / f"{split}.jsonl"


def cache_path(cfg: RecipeConfig, split: str) -> Path:
    return Path(cfg.data_dir) / "feats" / f"{split}.pt"


def all_splits(cfg: RecipeConfig) -> list[str]:
    return list(dict.fromkeys([cfg.train_split, cfg.dev_split, *cfg.test_splits]))


def features_stage(cfg: RecipeConfig) -> None:
    """Compute log-mels once per utterance of every split (cached, reused when unchanged)."""
    for split in all_splits(cfg):
        t0 = time.perf_counter()
        utts = read_manifest(manifest_path(cfg, split))
        cache = build_feature_cache(utts, cfg.features, cache_path(cfg, split),
                                    report=Path(cfg.data_dir) / f"{split}.bad_audio.txt",
                                    max_seconds=cfg.data.max_duration_s)
        print(f"[features] {split}: {len(cache['ids'])} utterances "
              f"({cache['skipped']} skipped) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


def train_stage(cfg: RecipeConfig) -> None:
    tokenizer = CharTokenizer()
    exp = Path(cfg.exp_dir)
    sets = {}
    for split in (cfg.train_split, cfg.dev_split):
        utts = read_manifest(manifest_path(cfg, split))
        cache = build_feature_cache(utts, cfg.features, cache_path(cfg, split), max_seconds=cfg.data.max_duration_s)
        sets[split] = build_set(utts, cache,
                                tokenizer, cfg.model.stack, split, exp / f"{split}.skipped.txt", cfg.data)
    t0 = time.perf_counter()
    train(cfg, sets[cfg.train_split], sets[cfg.dev_split], exp, tokenizer)
    (exp / "train_time.json").write_text(json.dumps({"train_s": time.perf_counter() - t0}) + "\n")


def decode_stage(cfg: RecipeConfig) -> dict:
    """Decode dev and test splits with the best model; write hyps, ``results.json`` and a table."""
    exp = Path(cfg.exp_dir)
    model = load_model(exp / "best.pt")
    results = {}
    for split in [cfg.dev_split, *cfg.test_splits]:
        utts = read_manifest(manifest_path(cfg, split))
        cache = build_feature_cache(utts, cfg.features, cache_path(cfg, split))
        hyps, timing = decode_utterances(model, utts, cache, cfg.decode.batch_frames)
        refs = {u.id: u.text for u in utts}
        out = exp / "decode" / split
        out.mkdir(parents=True, exist_ok=True)
        write_kaldi_text(refs, out / "ref.txt")
        write_kaldi_text(hyps, out / "hyp.txt")
        rates = error_rates(refs, hyps).as_dict()
        rates["decode_rtf"] = round(timing["rtf"], 5)
        results[split] = rates
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
             f"- best epoch {best.get('epoch')} (dev WER {best.get('dev_wer', float('nan')):.2f}%), "
             f"model {cfg.model.layers}x{cfg.model.hidden} BiLSTM, stack {cfg.model.stack}",
             "- stage times (s): " + ", ".join(f"{k} {v}" for k, v in times.items())]
    return "\n".join(lines) + "\n"


def results_table(results: dict) -> str:
    lines = ["| set | WER % | CER % | utterances | S | D | I |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
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
    # under torchrun every rank runs the training stage; rank 0 alone runs the others and keeps
    # the bookkeeping, the other ranks wait for it
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
        if not dist.main and name != "train":
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

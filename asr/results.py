"""What a recipe run reports: per-split scores and files, the results table, the RESULTS.md
block of a run and the code version it ran at."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from .checkpoint import read_payload
from .lm import oov_rate
from .score import bootstrap_wer, error_rates, score_all, write_kaldi_text


def score_split(out: Path, utts, hyps: dict, seconds: dict, last: str, vocab: set | None) -> dict:
    """Write ref/hyp files of one split and return its scores (every method's when several)."""
    refs = {u.id: u.text for u in utts}
    audio_s = sum(u.duration for u in utts)
    out.mkdir(parents=True, exist_ok=True)
    write_kaldi_text(refs, out / "ref.txt")
    per_method = {}
    for method in hyps:
        write_kaldi_text(hyps[method], out / f"hyp.{method}.txt")
        per_method[method] = {**error_rates(refs, hyps[method]).as_dict(),
                              "decode_rtf": round(seconds[method] / max(audio_s, 1e-9), 5)}
    write_kaldi_text(hyps[last], out / "hyp.txt")
    result = dict(per_method[last])
    scores = score_all(refs, hyps[last])
    if scores:                          # bootstrap 95% CI over utterances (figures, reports)
        ci = bootstrap_wer(np.array([x.errors for x in scores], float), np.array([x.ref_words for x in scores], float))
        result["wer_ci95"] = [round(v, 3) for v in ci["wer_ci95"]]
    if len(per_method) > 1:
        result["methods"] = per_method
    if vocab is not None:
        result["oov_rate"] = round(oov_rate(refs.values(), vocab), 3)
    return result


def results_markdown(name: str, best_model: Path, times_path: Path, results: dict) -> str:
    """The RESULTS.md block of one run: table, code version, model origin, stage times."""
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    payload = read_payload(best_model)
    best, m = payload.get("info", {}), payload["model_config"]
    lines = [f"## {name}: code {code_version()}", "",
             results_table(results), "",
             f"- model: {model_origin(best)} (dev WER {best.get('dev_wer', float('nan')):.2f}%), "
             f"model {m['layers']}x{m['hidden']} BiLSTM, stack {m['stack']}",
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
        lines = ["| set | " + " | ".join(f"{m} WER %" for m in methods) + f" | {methods[-1]} CER % | {methods[-1]} SER % | "
                 "OOV % | " + " | ".join(f"{m} RTF" for m in methods) + " | utterances |",
                 "|---" * (2 * len(methods) + 5) + "|"]
        for name, r in sets.items():
            ms = r.get("methods", {})
            lines.append(f"| {name} | " + " | ".join(f"{ms[m]['wer']:.2f}" for m in methods)
                         + f" | {r['cer']:.2f} | {r.get('ser', float('nan')):.2f} | {r.get('oov_rate', float('nan')):.2f} | "
                         + " | ".join(f"{ms[m]['decode_rtf']:.4f}" for m in methods) + f" | {r['utterances']} |")
        return "\n".join(lines)
    lines = ["| set | WER % | CER % | utterances | S | D | I |", "|---|---|---|---|---|---|---|"]
    for name, r in sets.items():
        lines.append(f"| {name} | {r['wer']:.2f} | {r['cer']:.2f} | {r['utterances']} | "
                     f"{r['substitutions']} | {r['deletions']} | {r['insertions']} |")
    return "\n".join(lines)


def code_version() -> str:
    """``git describe`` of the package checkout, or 'unknown' outside git."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"

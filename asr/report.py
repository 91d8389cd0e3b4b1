"""``asr report EXP_DIR``: one HTML page per experiment (its figures are PNG files beside it): the model, the results
table (with bootstrap CIs), the figures (made here when missing), the training log, the stage
times and the commands that reproduce, inspect and ship the run."""
from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path

from .checkpoint import read_payload
from .plots import FIG_DIR, _records, evaluation_figures, training_figure
from .results import code_version

log = logging.getLogger(__name__)

FIGURES = [("training.png", "Training curves"), ("conditions.png", "WER by condition"),
           ("speakers.png", "WER by speaker"), ("confusions.png", "Top confusions"),
           ("utterance.png", "One utterance: log-mel, CTC posteriors and aligned words")]
STYLE = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
pre{background:#f6f6f6;padding:.6em;overflow:auto}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"""


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _results(results: dict) -> str:
    rows = []
    for name, r in results.items():
        if name.startswith("_"):
            continue
        ci = r.get("wer_ci95")
        rows.append([name, f"{r['wer']:.2f}", f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "", f"{r['cer']:.2f}",
                     r["utterances"], r["substitutions"], r["deletions"], r["insertions"]])
    return _table(["set", "WER %", "95% CI", "CER %", "utterances", "S", "D", "I"], rows)


def _training(exp_dir: Path) -> str:
    path = exp_dir / "train_log.jsonl"
    if not path.is_file():
        return "<p>(no training log)</p>"
    recs = [r for r in _records(path) if "loss" in r]
    return _table(["epoch", "loss", "dev WER %", "dev CER %", "lr", "s", "audio s/s", "skipped", "split"],
                  [[r.get("epoch"), f"{r['loss']:.3f}", f"{r.get('wer', float('nan')):.2f}",
                    f"{r.get('cer', float('nan')):.2f}", f"{r.get('lr', 0):.2e}", f"{r.get('time_s', 0):.0f}",
                    f"{r.get('audio_s_per_s', 0):.0f}", r.get("skipped_batches", 0), r.get("split_batches", 0)]
                   for r in recs])


def commands(exp_dir: Path, config: dict) -> list[str]:
    """The commands that reproduce, inspect and ship this experiment."""
    name = str(config.get("name", "RECIPE")).split("-")[0]
    test = (config.get("test_splits") or ["test"])[0]
    data_dir = config.get("data_dir", "DATA_DIR")
    return [f"python recipes/{name}/run.py            # the whole recipe (stages resume; --stage N --force to redo)",
            f"asr evaluate --model {exp_dir}/best.pt --manifest {data_dir}/{test}.jsonl --output-dir {exp_dir}/eval",
            f"asr transcribe --model {exp_dir}/best.pt recording.wav --output-dir out/",
            f"tensorboard --logdir {exp_dir}/tensorboard",
            f"asr export --model {exp_dir}/best.pt --out {exp_dir}/onnx && asr transcribe --model {exp_dir}/onnx recording.wav",
            f"asr package {exp_dir} --out {name}.tar.gz && asr transcribe --model {name}.tar.gz recording.wav",
            f"asr report {exp_dir}"]


def make_figures(exp_dir: Path, config: dict, rec=None) -> None:
    """Draw the figures the experiment has data for but no PNG yet."""
    figs = exp_dir / FIG_DIR
    if not (figs / "training.png").is_file():
        training_figure(exp_dir)
    if not all((figs / n).is_file() for n in ("conditions.png", "speakers.png", "confusions.png", "utterance.png")):
        if not config.get("data_dir"):
            return                          # no data to draw evaluation figures from (never the cwd)
        data = Path(config["data_dir"])
        splits = [*config.get("test_splits", []), config.get("dev_split", "dev")]
        if rec is None and (exp_dir / "best.pt").is_file():
            from .recognizer import load

            rec = load(exp_dir / "best.pt")
        evaluation_figures(exp_dir, {s: data / f"{s}.jsonl" for s in splits}, rec)


def build_report(exp_dir: str | Path, config: dict | None = None, out: str | Path | None = None) -> Path:
    """Write ``out`` (default ``EXP_DIR/report.html``); ``config``: the recipe config as a dict
    (default: the one stored in the checkpoint)."""
    exp_dir = Path(exp_dir)
    info = read_payload(exp_dir / "best.pt").get("info", {}) if (exp_dir / "best.pt").is_file() else {}
    model = read_payload(exp_dir / "best.pt")["model_config"] if info else {}
    config = config or info.get("config", {})
    make_figures(exp_dir, config)
    out = Path(out) if out else exp_dir / "report.html"
    results = json.loads((exp_dir / "results.json").read_text()) if (exp_dir / "results.json").is_file() else {}
    times = json.loads((exp_dir / "stages/times.json").read_text()) if (exp_dir / "stages/times.json").is_file() else {}
    figs = "".join(f"<h3>{html.escape(title)}</h3><img src=\"{html.escape(_rel(exp_dir / FIG_DIR / name, out))}\" "
                   f"alt=\"{html.escape(title)}\">" for name, title in FIGURES if (exp_dir / FIG_DIR / name).is_file())
    parts = [f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(str(config.get('name', exp_dir)))}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(str(config.get('name', exp_dir.name)))}: {html.escape(str(exp_dir))}</h1>",
             f"<p>code {html.escape(code_version())}, report made {time.strftime('%Y-%m-%d %H:%M')}; model "
             f"{model.get('layers', '?')} x {model.get('hidden', '?')} BiLSTM, best epoch {info.get('epoch', '?')} "
             f"(dev WER {info.get('dev_wer', float('nan')):.2f}%), precision {html.escape(str(info.get('precision', '?')))}</p>",
             "<h2>Results</h2>", _results(results) if results else "<p>(not evaluated yet)</p>",
             "<h2>Figures</h2>", figs or "<p>(none)</p>",
             "<h2>Training</h2>", _training(exp_dir),
             "<h2>Stage times (s)</h2>", _table(list(times), [list(times.values())]) if times else "<p>(none)</p>",
             "<h2>Commands</h2><pre>" + html.escape("\n".join(commands(exp_dir, config))) + "</pre>",
             "</body></html>"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    log.info("report: %s", out)
    return out


def _rel(target: Path, page: Path) -> str:
    import os

    return os.path.relpath(target.resolve(), page.resolve().parent)

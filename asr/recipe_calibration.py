"""The recipes' ``calibrate`` stage: word confidence fitted on dev and on dev through named rooms
and noise (``calibrate.splits``), stored beside the best model, and measured on every test split.

Fitting on clean dev alone calibrates clean audio and little else: the raw confidences of a room
or of babble look like clean ones while the model is wrong on half the words. Dev through a few
conditions (with parameters of their own, not the test conditions') lets the segment features of
:mod:`asr.calibration` learn what unfamiliar audio looks like.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace

from .calibration import CALIBRATION_FILE, file_sha256
from .data import read_manifest
from .files import atomic_write_text
from .recipe import Recipe, resolved_decode, split_features, stage
from .recognizer import confidence_metrics, fit_calibration, load, word_confidences

log = logging.getLogger(__name__)

SECTION = "## Word confidence"


@stage(reads=("data", "features", "lm", "decode", "robust", "calibrate"))
def calibrate_stage(r: Recipe) -> dict:
    """``calibration.json`` beside the best model; ``exp/calibration_report.json`` and a table in
    ``exp/RESULTS.md``: ECE, NCE and error-detection AUROC before and after, per split."""
    c, p = r.cfg.calibrate, r.paths
    if not c.splits:
        stale = p.best_model.parent / CALIBRATION_FILE
        if stale.exists():                          # an earlier run's fit must not outlive its config
            log.info("calibrate.splits is empty: %s removed", stale)
            stale.unlink()
        return {}
    rec = load(p.best_model, calibrated=False)          # fitted on raw confidences; a broken old file is replaced
    decoder = rec.make_decoder(resolved_decode(r), c.method)
    sets = {s: read_manifest(p.manifest(s)) for s in c.splits}
    caches = {s: split_features(r, s) for s in c.splits}
    cal, fitted = fit_calibration(rec, sets, decoder, file_sha256(p.best_model), caches)
    cal = replace(cal, fitted_on=f"{cal.fitted_on} ({c.method})")
    tmp = p.best_model.parent / f".{CALIBRATION_FILE}.tmp"
    cal.save(tmp).replace(p.best_model.parent / CALIBRATION_FILE)
    report = {"method": c.method, "weights": list(cal.weights), "bias": cal.bias, "fitted_on": fitted,
              "test": {s: confidence_metrics(word_confidences(rec, read_manifest(p.manifest(s)), decoder,
                                                              split_features(r, s)), cal)
                       for s in r.cfg.test_splits}}
    atomic_write_text(p.exp_dir / "calibration_report.json", json.dumps(report, indent=1) + "\n")
    results = p.exp_dir / "RESULTS.md"
    if results.exists():                               # replace this stage's table of an earlier run
        text = results.read_text().split(f"\n{SECTION}")[0].rstrip("\n")
        atomic_write_text(results, text + "\n\n" + calibration_markdown(report, r.cfg.robust.conditions))
    log.info("calibration fitted on %s: weights %s bias %.3f", " + ".join(c.splits),
             [round(w, 3) for w in cal.weights], cal.bias)
    return report


def calibration_markdown(report: dict, conditions: dict) -> str:
    """The stage's table: one row per split it was fitted on and per test split."""
    lines = [f"{SECTION} ({report['method']}): calibration fitted on {' + '.join(k for k in report['fitted_on'] if k != 'all')}",
             "", "| split | words | word accuracy | ECE raw -> calibrated | NCE raw -> calibrated | AUROC of error detection |",
             "|---|---|---|---|---|---|"]
    rows = [(f"{k} (fitted on)", v) for k, v in report["fitted_on"].items() if k != "all"]
    rows += [(k + (" (never tuned)" if k in conditions and not conditions[k].tuned else ""), v)
             for k, v in report["test"].items()]
    for name, m in rows:
        raw, cal = m["raw"], m["calibrated"]
        lines.append(f"| {name} | {raw['words']} | {raw['word_accuracy']:.3f} | {raw['ece']:.3f} -> {cal['ece']:.3f} | "
                     f"{raw['nce']:.3f} -> {cal['nce']:.3f} | {cal['auroc_errors']:.3f} |")
    return "\n".join(lines) + "\n"

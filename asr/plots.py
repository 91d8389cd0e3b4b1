"""PNG figures of a run, in ``EXP_DIR/figures``: training curves (end of training), and after
evaluation WER by condition (with bootstrap CIs when scored), WER by speaker (voice), the top
confusions, and one utterance's log-mel spectrogram (``librosa.display``) with its CTC
posteriors and aligned words.

Figures are drawn on matplotlib ``Figure`` objects with the Agg canvas (no pyplot state, safe
in any thread or server process).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import read_manifest
from .score import UttScore, by_speaker, confusions, read_kaldi_text, score_all

log = logging.getLogger(__name__)

FIG_DIR = "figures"
DPI = 110


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _records(path: Path) -> list[dict]:
    """The JSON objects of a JSONL log; a truncated or blank line (an interrupted run) is skipped."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def training_figure(exp_dir: str | Path) -> Path | None:
    """Loss, dev WER/CER and learning rate / throughput by epoch from ``train_log.jsonl``."""
    exp_dir = Path(exp_dir)
    log_path = exp_dir / "train_log.jsonl"
    if not log_path.is_file():
        return None
    recs = [r for r in _records(log_path) if "epoch" in r and "loss" in r]
    if not recs:
        return None
    ep = [r["epoch"] for r in recs]
    fig, ax = _figure(11, 3.2, 1, 3)
    ax[0, 0].plot(ep, [r["loss"] for r in recs], "o-")
    ax[0, 0].set(title="training loss (CTC / utterance)", xlabel="epoch", yscale="log")
    ax[0, 1].plot(ep, [r["wer"] for r in recs], "o-", label="dev WER")
    ax[0, 1].plot(ep, [r["cer"] for r in recs], "s--", label="dev CER")
    ax[0, 1].set(title="dev error rate (%)", xlabel="epoch")
    ax[0, 1].legend()
    ax[0, 2].plot(ep, [r["lr"] for r in recs], "o-", color="tab:green")
    ax[0, 2].set(title="learning rate (end of epoch) / throughput", xlabel="epoch", ylabel="lr")
    twin = ax[0, 2].twinx()
    twin.plot(ep, [r["audio_s_per_s"] for r in recs], "x:", color="tab:red")
    twin.set_ylabel("audio s per s", color="tab:red")
    return _save(fig, exp_dir / FIG_DIR / "training.png")


def conditions_figure(results: dict, path: Path) -> Path:
    """WER per evaluated set (bars), with the bootstrap 95% CI where the results have one."""
    sets = [k for k in results if not k.startswith("_")]
    wer = [results[k]["wer"] for k in sets]
    err = None
    if all("wer_ci95" in results[k] for k in sets):
        lo = [max(0.0, w - results[k]["wer_ci95"][0]) for k, w in zip(sets, wer)]
        hi = [max(0.0, results[k]["wer_ci95"][1] - w) for k, w in zip(sets, wer)]
        err = [lo, hi]
    fig, ax = _figure(max(5, 0.8 * len(sets) + 2), 3.5)
    bars = ax[0, 0].bar(sets, wer, yerr=err, capsize=3, color="tab:blue")
    ax[0, 0].bar_label(bars, fmt="%.1f", fontsize=8)
    ax[0, 0].set(title="WER by condition", ylabel="WER %")
    ax[0, 0].tick_params(axis="x", rotation=35)
    return _save(fig, path)


def speaker_figure(scores: Sequence[UttScore], split: str, path: Path, top: int = 30) -> Path:
    """WER of the ``top`` worst speakers (voices) of one split, horizontal bars."""
    rates = sorted(by_speaker(scores).items(), key=lambda kv: kv[1].wer, reverse=True)[:top]
    fig, ax = _figure(7, 0.22 * len(rates) + 1.2)
    ax[0, 0].barh([k for k, _ in rates][::-1], [v.wer for _, v in rates][::-1], color="tab:orange")
    ax[0, 0].set(title=f"WER by speaker: {split} (worst {len(rates)})", xlabel="WER %")
    ax[0, 0].tick_params(axis="y", labelsize=7)
    return _save(fig, path)


def confusions_figure(scores: Sequence[UttScore], split: str, path: Path, top: int = 15) -> Path:
    """The most frequent substitutions (ref -> hyp), deletions (ref -> -) and insertions."""
    c = confusions(scores)
    items = [(f"{r} -> {h}", n) for (r, h), n in c.substitutions.items()]
    items += [(f"{r} -> (del)", n) for r, n in c.deletions.items()]
    items += [(f"(ins) -> {h}", n) for h, n in c.insertions.items()]
    items = sorted(items, key=lambda kv: kv[1], reverse=True)[:top] or [("(no errors)", 0)]
    fig, ax = _figure(7, 0.25 * len(items) + 1.2)
    ax[0, 0].barh([k for k, _ in items][::-1], [n for _, n in items][::-1], color="tab:red")
    ax[0, 0].set(title=f"top confusions: {split}", xlabel="count")
    return _save(fig, path)


def utterance_figure(rec, audio: np.ndarray, path: Path, title: str = "") -> Path:
    """Log-mel spectrogram (librosa.display) over the CTC posteriors of each unit, with the
    decoded words' aligned spans; ``rec`` is a Recognizer (or the light runtime)."""
    import librosa.display

    raw = rec.features(audio)                          # a tensor (torch) or an array (light runtime)
    feats = np.asarray(raw.numpy() if hasattr(raw, "numpy") else raw, dtype=np.float32)
    post = np.exp(np.asarray(rec.emissions([raw])[0], dtype=np.float32))            # (T', V)
    tr = rec.transcribe(audio)
    fig, ax = _figure(11, 5.5, 2, 1, sharex=True)
    librosa.display.specshow(feats.T, sr=16000, hop_length=rec.features.hop, x_axis="time", ax=ax[0, 0],
                             cmap="magma")
    ax[0, 0].set(title=title or "log-mel spectrogram", ylabel="mel band")
    t = (np.arange(post.shape[0]) + 0.5) * rec.frame_s
    ax[1, 0].plot(t, post[:, 0], color="0.75", lw=1, label="blank")
    vocab = rec.tokenizer.vocab
    for u in np.argsort(-post[:, 1:].max(0))[:12] + 1:                 # the units that fire
        ax[1, 0].plot(t, post[:, u], lw=1.2, label=repr(vocab[u]).strip("'"))
    for w in tr.words:
        for a in ax[:, 0]:
            a.axvspan(w.start, w.end, color="tab:green", alpha=0.12)
        ax[1, 0].text((w.start + w.end) / 2, 1.02, w.word, ha="center", va="bottom", fontsize=8)
    ax[1, 0].set(ylim=(0, 1.12), xlabel="time (s)", ylabel="posterior", title="CTC posteriors and aligned words")
    ax[1, 0].legend(loc="upper right", fontsize=6, ncol=7)
    return _save(fig, path)


def _split_scores(exp_dir: Path, split: str, manifest: Path | None) -> list[UttScore] | None:
    folder = exp_dir / "decode" / split
    if not (folder / "ref.txt").is_file() or not (folder / "hyp.txt").is_file():
        return None
    speakers = {u.id: u.speaker for u in read_manifest(manifest)} if manifest and manifest.is_file() else None
    return score_all(read_kaldi_text(folder / "ref.txt"), read_kaldi_text(folder / "hyp.txt"), speakers=speakers)


def evaluation_figures(exp_dir: str | Path, manifests: dict[str, Path], rec=None) -> list[Path]:
    """Figures of an evaluated experiment: WER by condition from ``results.json``; WER by
    speaker and top confusions of the first split in ``manifests`` that was decoded; one of its
    utterances (at least three words) through ``rec``."""
    exp_dir = Path(exp_dir)
    out_dir, made = exp_dir / FIG_DIR, []
    if (exp_dir / "results.json").is_file():
        made.append(conditions_figure(json.loads((exp_dir / "results.json").read_text()), out_dir / "conditions.png"))
    for split, manifest in manifests.items():
        scores = _split_scores(exp_dir, split, manifest)
        if scores is None:
            continue
        made.append(speaker_figure(scores, split, out_dir / "speakers.png"))
        made.append(confusions_figure(scores, split, out_dir / "confusions.png"))
        if rec is not None and manifest.is_file():
            from .data import load_utterance_audio

            utt = next((u for u in read_manifest(manifest) if len(u.text.split()) >= 3), None)
            if utt is not None:
                made.append(utterance_figure(rec, load_utterance_audio(utt), out_dir / "utterance.png",
                                             f"{utt.id}: \"{utt.text}\""))
        break
    log.info("figures: %s", ", ".join(p.name for p in made) or "none (nothing evaluated yet)")
    return made

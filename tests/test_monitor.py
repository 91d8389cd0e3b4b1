"""asr.monitor, asr.plots, asr.report and fine-tuning with frozen layers: TensorBoard scalars
of a real training run, figures that decode, one HTML page that links them."""
import json
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from asr import train as T
from asr.checkpoint import load_checkpoint
from asr.monitor import read_scalars
from asr.plots import conditions_figure, confusions_figure, speaker_figure
from asr.score import score_all
from asr.text import CharTokenizer


def _decodes(path: Path) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01, path
    return img


def test_training_writes_tensorboard_scalars_and_curves(tmp_path, data, train_cfg):
    cfg = train_cfg(tmp_path, epochs=3)
    cfg = replace(cfg, train=replace(cfg.train, log_every=2))
    T.train(cfg, data(64, 0), data(16, 1), tmp_path, CharTokenizer())
    scalars = read_scalars(tmp_path / "tensorboard")
    epochs = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    for tag in ("dev/wer", "dev/cer", "train/epoch_loss", "train/audio_s_per_s", "train/skipped_batches",
                "train/split_batches"):
        assert [s for s, _ in scalars[tag]] == [e["epoch"] for e in epochs], tag
    assert [v for _, v in scalars["dev/wer"]] == pytest.approx([e["wer"] for e in epochs])
    steps = [s for s, _ in scalars["train/loss"]]
    assert steps and all(s % 2 == 0 for s in steps) and steps == sorted(steps)
    assert len(scalars["train/lr"]) == len(steps) == len(scalars["train/grad_norm"])
    assert all(v > 0 for _, v in scalars["train/grad_norm"])
    _decodes(tmp_path / "figures/training.png")


def test_tensorboard_off_writes_nothing(tmp_path, data, train_cfg):
    cfg = train_cfg(tmp_path, epochs=1)
    T.train(replace(cfg, train=replace(cfg.train, tensorboard=False)), data(16, 0), data(8, 1), tmp_path, CharTokenizer())
    assert not (tmp_path / "tensorboard").exists()


def test_fine_tuning_with_frozen_lower_layers(tmp_path, data, train_cfg):
    cfg = train_cfg(tmp_path / "base", epochs=2)
    cfg = replace(cfg, model=replace(cfg.model, layers=2))
    base = T.train(cfg, data(48, 0), data(8, 1), tmp_path / "base", CharTokenizer())
    ft = replace(cfg, exp_dir=str(tmp_path / "ft"),
                 train=replace(cfg.train, epochs=1, init_from=str(base), freeze_layers=1, lr=5e-3))
    best = T.train(ft, data(48, 2), data(8, 1), tmp_path / "ft", CharTokenizer())
    last = torch.load(tmp_path / "ft/last.pt", weights_only=True)["model"]["state_dict"]
    src = load_checkpoint(base).model.state_dict()
    for name, value in src.items():
        same = torch.equal(last[name], value)
        assert same == (name.startswith("layers.0.") or name.startswith("cmvn")), name
    assert load_checkpoint(best).info["epoch"] == 1
    with pytest.raises(T.AsrError, match="freeze_layers=3"):
        T.freeze_lower_layers(load_checkpoint(base).model, 3)


def test_evaluation_figures_decode():
    refs = {f"spk{i % 3}-u{i}": "one two three" for i in range(12)}
    hyps = {k: ("one too three" if i % 4 == 0 else "one two" if i % 5 == 0 else "one two three") for i, k in enumerate(refs)}
    scores = score_all(refs, hyps, speakers={k: k.split("-")[0] for k in refs})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _decodes(speaker_figure(scores, "test", out / "s.png"))
        _decodes(confusions_figure(scores, "test", out / "c.png"))
        results = {"dev": {"wer": 5.0, "wer_ci95": [3.0, 7.5]}, "test": {"wer": 12.0, "wer_ci95": [9.0, 15.0]}}
        _decodes(conditions_figure(results, out / "w.png"))


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.headings = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.headings.append(data)


@pytest.mark.espeak
def test_recipe_figures_and_report(tiny_recipe, tmp_path):
    tmp, config, _ = tiny_recipe
    exp = tmp / "exp"
    for name in ("training", "conditions", "speakers", "confusions", "utterance"):
        _decodes(exp / "figures" / f"{name}.png")
    results = json.loads((exp / "results.json").read_text())
    lo, hi = results["test_unseen"]["wer_ci95"]
    assert lo <= results["test_unseen"]["wer"] <= hi
    out = tmp_path / "report" / "index.html"
    res = subprocess.run([sys.executable, "-m", "asr", "report", str(exp), "--config", str(config), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    page = _Images()
    page.feed(out.read_text())
    assert len(page.srcs) == 5
    for src in page.srcs:
        _decodes((out.parent / src).resolve())
    text = " ".join(page.headings)
    assert "test_unseen" in text and "asr transcribe --model" in text and "tensorboard --logdir" in text

#!/usr/bin/env python3
"""Digits recipe: synth (0) -> features (1) -> train (2) -> decode + score (3).

    python recipes/digits/run.py [--config recipes/digits/config.yaml] [--stage N] [--stop-stage M]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asr.cli import recipe_main  # noqa: E402
from asr.corpora.digits import prepare_digits  # noqa: E402
from asr.recipe import decode_stage, features_stage, train_stage  # noqa: E402

STAGES = [
    ("synth", lambda cfg: prepare_digits(cfg.synth, cfg.data_dir, cfg.train_split), ["synth", "data_dir"]),
    ("features", features_stage, ["synth", "data_dir", "features"]),
    ("train", train_stage, ["synth", "data_dir", "data", "features", "model", "augment", "train"]),
    ("decode", decode_stage, ["synth", "data_dir", "data", "features", "model", "augment", "train", "decode"]),
]

if __name__ == "__main__":
    sys.exit(recipe_main(STAGES, Path(__file__).with_name("config.yaml")))

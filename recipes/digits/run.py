#!/usr/bin/env python3
"""Digits recipe: synth (0) -> robustness test splits (1) -> features (2) -> train (3) -> decode + score (4)
-> word-confidence calibration (5).

    python recipes/digits/run.py [--config recipes/digits/config.yaml] [--stage N] [--stop-stage M]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asr.cli import recipe_main  # noqa: E402
from asr.corpora.stages import digits_synth_stage, robust_stage  # noqa: E402
from asr.recipe import decode_stage, features_stage, train_stage  # noqa: E402
from asr.recipe_calibration import calibrate_stage  # noqa: E402

STAGES = [digits_synth_stage, robust_stage, features_stage, train_stage, decode_stage, calibrate_stage]

if __name__ == "__main__":
    sys.exit(recipe_main(STAGES, Path(__file__).with_name("config.yaml")))

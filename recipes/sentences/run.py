#!/usr/bin/env python3
"""Sentences recipe: text + synth (0) -> robustness test splits (1) -> features (2) -> LM (3) ->
train (4) -> tune LM weight and word score on dev (5) -> decode greedy / beam / beam+LM + score (6)
-> word-confidence calibration of the beam+LM output (7).

    python recipes/sentences/run.py [--config recipes/sentences/config.yaml] [--stage N] [--stop-stage M]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asr.cli import recipe_main  # noqa: E402
from asr.corpora.stages import robust_stage, sentences_synth_stage  # noqa: E402
from asr.recipe import decode_stage, features_stage, lm_stage, train_stage  # noqa: E402
from asr.recipe_calibration import calibrate_stage  # noqa: E402
from asr.recipe_tune import tune_stage  # noqa: E402

STAGES = [sentences_synth_stage, robust_stage, features_stage, lm_stage, train_stage, tune_stage, decode_stage, calibrate_stage]

if __name__ == "__main__":
    sys.exit(recipe_main(STAGES, Path(__file__).with_name("config.yaml")))

#!/usr/bin/env python3
"""Commands recipe: grammar -> phrases + synth (0) -> robustness test splits (1) -> features (2) ->
train (3) -> the grammar's unit bonus tuned on dev (4) -> decode greedy and with the grammar + score (5)
-> word-confidence calibration (6).

    python recipes/commands/run.py [--config recipes/commands/config.yaml] [--stage N] [--stop-stage M]
    python recipes/commands/run.py --set commands.grammar=my.jsgf --set data_dir=data/my --set exp_dir=exp/my
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asr.cli import recipe_main  # noqa: E402
from asr.corpora.stages import commands_synth_stage, robust_stage  # noqa: E402
from asr.recipe import decode_stage, features_stage, train_stage  # noqa: E402
from asr.recipe_calibration import calibrate_stage  # noqa: E402
from asr.recipe_tune import tune_stage  # noqa: E402

STAGES = [commands_synth_stage, robust_stage, features_stage, train_stage, tune_stage, decode_stage, calibrate_stage]

if __name__ == "__main__":
    sys.exit(recipe_main(STAGES, Path(__file__).with_name("config.yaml")))

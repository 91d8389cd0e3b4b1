#!/usr/bin/env python3
"""AN4 recipe: download (0) -> prepare (1) -> LM text (2) -> features (3) -> LM (4) ->
train (5) -> tune LM weight / word score on dev (6) -> decode + score (7).

    python recipes/an4/run.py [--config recipes/an4/config.yaml] [--stage N] [--stop-stage M]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asr.cli import recipe_main  # noqa: E402
from asr.corpora.stages import REAL_CORPUS_STAGES  # noqa: E402

if __name__ == "__main__":
    sys.exit(recipe_main(REAL_CORPUS_STAGES, Path(__file__).with_name("config.yaml")))

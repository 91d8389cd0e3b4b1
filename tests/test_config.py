from pathlib import Path

import pytest

from asr.config import ConfigError, from_dict, parse_override

from asr.model import ModelConfig

from asr.recipe import RecipeConfig, load_config

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "digits" / "config.yaml"


def test_recipe_config_loads_and_is_frozen():
    cfg = load_config(RECIPE)
    assert isinstance(cfg, RecipeConfig)
    assert cfg.features.n_mels == 80 and cfg.model.stack == 3
    assert set(cfg.synth.splits) == {"train", "dev", "test_unseen", "test_engine"}
    with pytest.raises(AttributeError):
        cfg.model.hidden = 3  # frozen


def test_unknown_key_names_key_and_allowed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  hiden: 10\n")
    with pytest.raises(ConfigError, match=r"config\.model.*'hiden'.*allowed.*hidden"):
        load_config(p)


def test_wrong_type_and_impossible_value():
    with pytest.raises(ConfigError, match=r"model\.layers: expected int"):
        from_dict(ModelConfig, {"layers": "four"}, "model")
    with pytest.raises(ConfigError, match=r"model\.dropout"):
        from_dict(ModelConfig, {"dropout": 1.5}, "model")
    with pytest.raises(ConfigError, match=r"model\.layers: expected int"):
        from_dict(ModelConfig, {"layers": True}, "model")   # bool is not an int here


def test_overrides_and_digest_change():
    base = load_config(RECIPE)
    key, value = parse_override("train.epochs=3")
    cfg = load_config(RECIPE, {key: value})
    assert cfg.train.epochs == 3 and base.train.epochs != 3
    assert cfg.digest() != base.digest()
    with pytest.raises(ConfigError):
        parse_override("no-equals-sign")


def test_stages_with_nothing_to_do_remove_an_earlier_runs_files(tmp_path):
    """With empty grids / no calibration splits, tuned.json and calibration.json of an earlier
    config are removed, not silently applied to the next decoding."""
    from asr.recipe import RecipePaths, run_stage
    from asr.recipe_calibration import calibrate_stage
    from asr.recipe_tune import tune_stage

    cfg = RecipeConfig(data_dir=str(tmp_path / "data"), exp_dir=str(tmp_path / "exp"))
    paths = RecipePaths.of(cfg)
    paths.tuned.parent.mkdir(parents=True)
    paths.tuned.write_text('{"unit_bonus": 2.0}')
    (paths.best_model.parent / "calibration.json").write_text("{}")
    assert run_stage(cfg, tune_stage) == {} and not paths.tuned.exists()
    assert run_stage(cfg, calibrate_stage) == {} and not (paths.best_model.parent / "calibration.json").exists()

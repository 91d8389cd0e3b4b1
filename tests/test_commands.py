"""The commands recipe: phrases from a JSGF grammar or a phrase list, balanced per split, the
data directory tied to its grammar, and the recipe end to end (tiny grammar, tiny model)."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from asr.corpora.commands import CommandsConfig, grammar_phrases, phrase_schedule, write_phrases
from asr.corpora.real import CorpusError
from asr.grammar import GrammarError
from asr.recipe import fingerprints, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = """#JSGF V1.0;
grammar tiny;
public <cmd> = (open | close) the (door | window) | call (anna | peter) [now] | stop;
"""


def test_the_shipped_grammar_expands_to_its_phrases():
    phrases = grammar_phrases(ROOT / "recipes/commands/commands.jsgf")
    assert len(phrases) == 53 and len(set(phrases)) == 53
    assert "turn off the living room lights" in phrases and "call sophie on work" in phrases
    assert "good night" in phrases                                    # the tag is not spoken
    assert not any("{" in p or "<" in p for p in phrases)


def test_phrase_lists_and_grammar_errors(tmp_path):
    (tmp_path / "p.txt").write_text("# my commands\nLights ON\n\nlights on\nstop\n")
    assert grammar_phrases(tmp_path / "p.txt") == ["lights on", "stop"]
    (tmp_path / "bad.jsgf").write_text("#JSGF V1.0;\ngrammar g;\npublic <a> = go <where>;\n")
    with pytest.raises(GrammarError, match=r"bad.jsgf:3.*where"):
        grammar_phrases(tmp_path / "bad.jsgf")
    (tmp_path / "empty.jsgf").write_text("#JSGF V1.0;\ngrammar g;\npublic <a> = <NULL>;\n")
    with pytest.raises(GrammarError, match="empty.jsgf: the grammar accepts no phrase"):
        grammar_phrases(tmp_path / "empty.jsgf")


def test_schedule_speaks_every_phrase_about_equally_often():
    phrases = [f"p{i}" for i in range(7)]
    sched = phrase_schedule(phrases, 45, "13-train")
    counts = Counter(sched)
    assert len(sched) == 45 and set(counts) == set(phrases) and set(counts.values()) <= {6, 7}
    assert sched == phrase_schedule(phrases, 45, "13-train")
    assert sched != phrase_schedule(phrases, 45, "13-dev")
    big = phrase_schedule([f"p{i}" for i in range(1000)], 50, "s")    # a sample without repeats
    assert len(set(big)) == 50


def test_a_data_dir_belongs_to_one_grammar(tmp_path):
    write_phrases(["call anna", "stop"], tmp_path, "a.jsgf")
    write_phrases(["call anna", "stop"], tmp_path, "a.jsgf")           # the same: fine
    stats = json.loads((tmp_path / "phrases.stats.json").read_text())
    assert stats["phrases"] == 2 and stats["vocabulary"] == ["anna", "call", "stop"]
    with pytest.raises(CorpusError, match="another grammar"):
        write_phrases(["call peter"], tmp_path, "b.jsgf")


def test_editing_the_grammar_in_place_changes_the_synth_fingerprint(tmp_path):
    from asr.corpora.stages import commands_synth_stage
    from asr.recipe import decode_stage

    (tmp_path / "g.jsgf").write_text(TINY)
    cfg = load_config(ROOT / "recipes/commands/config.yaml", {"commands.grammar": str(tmp_path / "g.jsgf")})
    assert cfg.commands == CommandsConfig(grammar=str(tmp_path / "g.jsgf"), seed=13)
    before = fingerprints(cfg, [commands_synth_stage, decode_stage])
    (tmp_path / "g.jsgf").write_text(TINY.replace("stop", "halt"))
    after = fingerprints(cfg, [commands_synth_stage, decode_stage])
    assert before[0] != after[0] and before[1] != after[1]           # and everything downstream
    (tmp_path / "g.jsgf").unlink()                                    # a missing grammar is not "unchanged"
    assert fingerprints(cfg, [commands_synth_stage, decode_stage])[0] not in (before[0], after[0])


@pytest.mark.espeak
def test_commands_recipe_end_to_end(tmp_path):
    (tmp_path / "tiny.jsgf").write_text(TINY)
    config = tmp_path / "config.yaml"
    config.write_text((ROOT / "tests/tiny_commands.yaml").read_text().replace("PLACEHOLDER", str(tmp_path)))
    res = subprocess.run([sys.executable, str(ROOT / "recipes/commands/run.py"), "--config", str(config)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    phrases = set((tmp_path / "data/phrases.txt").read_text().splitlines())
    assert len(phrases) == 9
    texts = Counter(json.loads(x)["text"] for x in (tmp_path / "data/train.jsonl").read_text().splitlines())
    assert set(texts) == phrases and max(texts.values()) - min(texts.values()) <= 1
    results = json.loads((tmp_path / "exp/results.json").read_text())
    for split in ("test_unseen", "test_noise"):
        r = results[split]
        assert set(r["methods"]) == {"greedy", "grammar"} and r["utterances"] == 27
        hyps = [line.split(" ", 1)[1] if " " in line else "" for line in
                (tmp_path / f"exp/decode/{split}/hyp.grammar.txt").read_text().splitlines()]
        assert len(hyps) == 27 and set(hyps) <= phrases               # only the grammar's phrases
        # the grammar can only help a model this small: phrase errors no more than greedy's
        assert r["methods"]["grammar"]["ser"] <= r["methods"]["greedy"]["ser"]
    assert results["test_unseen"]["methods"]["grammar"]["ser"] <= 30
    assert "grammar SER %" in res.stdout
    tuned = json.loads((tmp_path / "exp/decode/tuned.json").read_text())       # stage 4: the unit bonus on dev
    assert tuned["unit_bonus_splits"] == ["dev"] and [g["unit_bonus"] for g in tuned["unit_bonus_grid"]] == [0.0, 1.0]
    assert tuned["unit_bonus"] == min(tuned["unit_bonus_grid"], key=lambda g: (g["phrase_error"], g["unit_bonus"]))["unit_bonus"]

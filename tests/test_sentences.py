"""Sentence text for the read-speech recipe: WordNet example parsing, held-out selection, LM text."""
import pytest

from asr.corpora.real import CorpusError
from asr.corpora.sentences import TextConfig

from asr.recipe import load_config
from asr.corpora.sentences import lm_sentences, prepare_text, select_sentences, wordnet_examples


def _wordnet(tmp_path, glosses):
    d = tmp_path / "wordnet"
    d.mkdir()
    header = '  1 This software is provided "AS IS" by Princeton\n'
    lines = [f"{i:08d} 29 v 01 word 0 000 | {g}" for i, g in enumerate(glosses)]
    (d / "data.verb").write_text(header + "\n".join(lines) + "\n", encoding="latin-1")
    return d


def test_wordnet_examples_parse_normalize_and_filter(tmp_path):
    d = _wordnet(tmp_path, [
        'take a breath; "She breathed deeply"; "Don\'t breathe!"',
        'a gloss with no example',
        'numbers; "He was born in 1990"',          # digits: spoken form ambiguous
        'quotes; "the `word\' quoted"',           # quoting marks left out
        'dup; "she breathed deeply"',             # duplicate after normalisation
    ])
    assert wordnet_examples(d) == ["she breathed deeply", "don't breathe"]
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        wordnet_examples(tmp_path / "nowhere")


def test_select_sentences_disjoint_sizes_and_vocabulary():
    common = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
    examples = list(dict.fromkeys(" ".join(common[(i + k) % 8] for k in range(4 + i % 3))
                                  for i in range(200)))       # 24 distinct sentences
    examples.append("the rare zebra sat")
    cfg = TextConfig(top_words=8, min_words=4, max_words=6, held_out={"dev": 3, "test": 4}, seed=1)
    out = select_sentences(examples, cfg)
    assert len(out["dev"]) == 3 and len(out["test"]) == 4
    assert not set(out["dev"]) & set(out["test"]) and not set(out["train"]) & set(out["test"] + out["dev"])
    everything = [s for ss in out.values() for s in ss]
    assert "the rare zebra sat" not in everything              # "rare", "zebra" not in top words
    assert all(4 <= len(s.split()) <= 6 for s in everything)
    assert select_sentences(examples, cfg) == out               # deterministic
    with pytest.raises(CorpusError, match="candidate sentences"):
        select_sentences(examples, TextConfig(top_words=8, min_words=4, max_words=6, held_out={"dev": 10_000}))


def test_prepare_text_excludes_held_out_from_lm_text(tmp_path):
    glosses = [f'g; "{a} {b} {c} {d}"' for a in ("the", "a") for b in ("cat", "dog", "cow")
               for c in ("sat", "ran", "hid") for d in ("here", "there", "now")]
    d = _wordnet(tmp_path, glosses)
    cfg = load_config_text(tmp_path, d)
    chosen = prepare_text(cfg.text, cfg.data_dir, cfg.train_split)
    lm = (tmp_path / "data" / "text" / "lm_train.txt").read_text().splitlines()
    held = set(chosen["dev"]) | set(chosen["test_unseen"])
    assert len(chosen["dev"]) == 5 and len(chosen["test_unseen"]) == 6
    assert not held & set(lm) and set(chosen["train"]) <= set(lm)
    assert len(lm) == len(glosses) - 11
    assert lm_sentences(["a", "b", "c"], {"b"}) == ["a", "c"]
    assert prepare_text(cfg.text, cfg.data_dir, cfg.train_split) == chosen                          # kept on rerun


def load_config_text(tmp_path, wordnet_dir):
    path = tmp_path / "c.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\ntext:\n  wordnet_dir: {wordnet_dir}\n  top_words: 50\n"
                    "  held_out: {dev: 5, test_unseen: 6}\n")
    return load_config(path)

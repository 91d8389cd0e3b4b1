"""Real-corpus recipes on fake trees in each corpus' real layout: AN4 end to end from a
loopback "mirror" (download, extraction, dev speakers, LM, training, tuning, three decoders), and
the LibriSpeech configs' corpus, LM-text and training stages (BPE units, features computed on the
fly in loader workers)."""
import functools
import gzip
import json
import subprocess
import sys
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import soundfile as sf

from asr.recipe import load_config
from asr.corpora.stages import LIBRISPEECH_SHA256, corpus_archives, mirrored
from asr.data import read_manifest, validate_utterances
from asr.text import CharTokenizer



ROOT = Path(__file__).resolve().parents[1]
WORDS = ["yes", "no", "one", "two", "three", "go", "stop", "enter", "repeat", "rubout"]
TINY = ["--set", "model.hidden=48", "--set", "model.layers=2", "--set", "train.epochs=2",
        "--set", "train.max_batch_frames=4000", "--set", "train.device=cpu", "--set", "train.amp=off",
        "--set", "train.threads=1", "--set", "train.progress=false", "--set", "augment.freq_mask_width=5"]


def _sphere(text: str, path: Path, voice: str, speak) -> None:
    wav = path.with_suffix(".wav")
    speak(text, wav, voice)
    audio, rate = sf.read(wav, dtype="int16")
    wav.unlink()
    sf.write(path, audio, rate, format="NIST", subtype="PCM_16")


def _fake_an4(root: Path, speak) -> Path:
    """an4_sphere.tar.gz in AN4's layout: 8 training speakers x 5, 2 test speakers x 4."""
    base = root / "an4"
    (base / "etc").mkdir(parents=True)
    voices = ["en+m1", "en+m2", "en+f1", "en+f2", "en-us+m3", "en-us+f3", "en+m4", "en-us+m5", "en+f4", "en-us+f5"]
    for split, speakers, n in (("train", range(8), 5), ("test", range(8, 10), 4)):
        ids, trans = [], []
        for s in speakers:
            for k in range(n):
                uid = f"an{100 + 10 * s + k}-spk{s}-b"
                text = " ".join(WORDS[(s + k + j) % len(WORDS)] for j in range(1 + k % 3))
                folder = f"an4_{'clstk' if split == 'train' else 'test_clstk'}/spk{s}"
                (base / "wav" / folder).mkdir(parents=True, exist_ok=True)
                _sphere(text, base / "wav" / folder / f"{uid}.sph", voices[s], speak)
                ids.append(f"{folder}/{uid}")
                trans.append(f"<s> {text.upper()} </s> ({uid})")
        (base / "etc" / f"an4_{split}.fileids").write_text("\n".join(ids) + "\n")
        (base / "etc" / f"an4_{split}.transcription").write_text("\n".join(trans) + "\n")
    archive = root / "mirror" / "databases" / "an4" / "an4_sphere.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(base, arcname="an4")
    return root / "mirror"


@pytest.fixture
def mirror(tmp_path, speak):
    site = _fake_an4(tmp_path / "build", speak)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _recipe(run: str, config: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / run), "--config", str(ROOT / config), *args],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.espeak
def test_an4_recipe_end_to_end_from_a_mirror(tmp_path, mirror):
    where = ["--set", f"corpus.root={tmp_path / 'corpus'}", "--set", f"corpus.mirror={mirror}",
             "--set", f"data_dir={tmp_path / 'data'}", "--set", f"exp_dir={tmp_path / 'exp'}",
             "--set", "corpus.dev_speakers=2", "--set", "train.workers=0",
             "--set", "decode.tune_lm_weights=[0.5,1.0]", "--set", "decode.tune_word_scores=[0.0]"]
    res = _recipe("recipes/an4/run.py", "recipes/an4/config.yaml", *where, *TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    data = tmp_path / "data"
    splits = {s: read_manifest(data / f"{s}.jsonl") for s in ("train", "dev", "test")}
    assert [len(v) for v in splits.values()] == [30, 10, 8]
    assert not {u.speaker for u in splits["train"]} & {u.speaker for u in splits["dev"]}
    for utts in splits.values():
        good, problems = validate_utterances(utts, CharTokenizer())
        assert len(good) == len(utts) and not problems
    results = json.loads((tmp_path / "exp/results.json").read_text())
    assert set(results["test"]["methods"]) == {"greedy", "beam", "beam_lm"}
    assert results["test"]["utterances"] == 8 and results["test"]["oov_rate"] == 0.0
    assert (tmp_path / "corpus" / ".extracted-an4_sphere.tar.gz").exists()
    # a rerun skips every stage; the archive is not fetched again
    res = _recipe("recipes/an4/run.py", "recipes/an4/config.yaml", *where, *TINY)
    assert res.returncode == 0 and res.stderr.count("done, skipping") == 8


def _fake_librispeech(root: Path, subsets: dict[str, list[str]], speak) -> None:
    voices = iter(["en+m1", "en+f2", "en-us+m3", "en+f4", "en-us+m2", "en+m3", "en-us+f1", "en+m6"] * 4)
    for n, (subset, texts) in enumerate(subsets.items()):
        for spk in (100 + n, 200 + n):                  # speakers never shared between subsets
            voice = next(voices)
            chap = root / "LibriSpeech" / subset / str(spk) / "7"
            chap.mkdir(parents=True)
            lines = []
            for k, text in enumerate(texts):
                uid = f"{spk}-7-{k:04d}"
                wav = chap / f"{uid}.wav"
                speak(text, wav, voice)
                audio, rate = sf.read(wav)
                sf.write(chap / f"{uid}.flac", audio, rate)
                wav.unlink()
                lines.append(f"{uid} {text.upper()}")
            (chap / f"{spk}-7.trans.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.espeak
def test_librispeech_960h_config_bpe_on_the_fly(tmp_path, speak):
    train_texts = ["the cat sat on the mat", "a dog ran to the park", "she said it was late",
                   "we went home", "the sun is up", "he read the book"]
    _fake_librispeech(tmp_path / "corpus", {
        "train-clean-100": train_texts[:2], "train-clean-360": train_texts[2:4],
        "train-other-500": train_texts[4:], "dev-clean": ["the dog sat"], "dev-other": ["go home"],
        "test-clean": ["the cat ran home"], "test-other": ["it was the park"]}, speak)
    lm_text = tmp_path / "lm-norm.txt.gz"
    with gzip.open(lm_text, "wt") as f:
        f.write("THE CAT RAN HOME\nTHE DOG RAN HOME\nA CAT SAT\nTHE CAT SAT\nZYZZYVA\n")
    where = ["--set", f"corpus.root={tmp_path / 'corpus'}", "--set", "corpus.download=false",
             "--set", f"corpus.lm_text={lm_text}", "--set", f"data_dir={tmp_path / 'data'}",
             "--set", f"exp_dir={tmp_path / 'exp'}", "--set", "tokenizer.vocab_size=30",
             "--set", "lm.order=2", "--set", "lm.prune=[]", "--set", "lm.lexicon_min_count=2",
             "--set", "data.cmvn_utterances=4", "--set", "train.workers=2"]
    res = _recipe("recipes/librispeech/run.py", "recipes/librispeech/config_960h.yaml", *where, *TINY,
                  "--stop-stage", "5")
    assert res.returncode == 0, res.stderr[-3000:]
    data = tmp_path / "data"
    assert len(read_manifest(data / "train.jsonl")) == 12            # three subsets joined
    assert [len(read_manifest(data / f"{s}.jsonl")) for s in ("dev_clean", "test_clean")] == [2, 2]
    lm_lines = (data / "text/lm_train.txt").read_text().splitlines()
    assert "the cat ran home" not in lm_lines                         # a test transcript
    assert "the cat sat" in lm_lines and "the cat sat on the mat" in lm_lines
    lexicon = (data / "lm/lexicon.txt").read_text()
    assert "\nzyzzyva " not in lexicon and "\u2581" in lexicon       # BPE spellings; rare word out
    assert not (data / "feats/train.pt").exists()                     # training features on the fly
    from asr import load as load_model
    model = load_model(tmp_path / "exp/best.pt")
    assert model.tokenizer.kind == "bpe" and len(model.tokenizer) == 31


def test_librispeech_archives_carry_published_checksums():
    cfg = load_config(ROOT / "recipes/librispeech/config_960h.yaml")
    archives = dict(corpus_archives(cfg.corpus))
    assert len(archives) == 7 and all(v and v.startswith("sha256:") for v in archives.values())
    url = "https://www.openslr.org/resources/12/train-other-500.tar.gz"
    assert archives[url] == "sha256:" + LIBRISPEECH_SHA256["train-other-500"]
    assert mirrored(url, "https://openslr.elda.org") == "https://openslr.elda.org/resources/12/train-other-500.tar.gz"
    load_config(ROOT / "recipes/librispeech/config_100h.yaml")

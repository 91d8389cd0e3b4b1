"""Model packages: one ``NAME.tar.gz`` holding everything needed to recognise and to know what
the model is, with the SHA-256 of every file.

``build_package(EXP_DIR, OUT)`` packs the model (``best.pt``), its config, results and training
log, the LM, lexicon and tuned LM weights when the recipe has them, a calibration file when
there is one, and a generated ``MODEL_CARD.md`` (architecture, training data by TTS engine and
voice, results, licences of the data sources). ``package.json`` lists every other file's
SHA-256, and ``NAME.tar.gz.sha256`` beside the archive holds the digest of ``package.json``.

``open_package`` extracts safely (``asr.corpora.download.safe_extract``) into a cache folder
and checks every hash before anything is loaded: a changed, missing or added file, or a
``package.json`` that disagrees with the ``.sha256`` beside the archive, is refused. (Hashes
catch corruption and edits; a forger who rewrites the archive *and* removes the ``.sha256``
file is caught only by comparing that digest with a trusted copy.)
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from .corpora.download import safe_extract
from .data import read_manifest
from .decode import DecodeConfig
from .errors import AsrError, MissingFileError
from .lite import sha256
from .recognizer import Recognizer, load
from .results import code_version, results_table
from .tts import ENGINES, engine_of

log = logging.getLogger(__name__)

PACKAGE_FORMAT = "asr-package-v1"
MANIFEST = "package.json"
PACKAGE_SUFFIXES = (".tar.gz", ".tgz")
MAX_PACKAGE_BYTES = 4 << 30    # 4 GiB extracted: far above any model here, far below a full disk
CACHE_DIR = Path(os.environ.get("ASR_CACHE", Path.home() / ".cache" / "asr")) / "packages"


class PackageError(AsrError):
    """A package cannot be built, or a package file is altered, incomplete or foreign."""


def is_package(path: str | Path) -> bool:
    return str(path).endswith(PACKAGE_SUFFIXES) and Path(path).is_file()


def _collect(exp_dir: Path, config: dict) -> dict[str, Path]:
    """Package name -> source file for everything the package carries."""
    files = {"model.pt": exp_dir / "best.pt"}
    if not files["model.pt"].is_file():
        raise MissingFileError(f"{exp_dir}: no best.pt to package (train the recipe first)")
    for name in ("results.json", "RESULTS.md", "train_log.jsonl", "calibration.json"):
        if (exp_dir / name).is_file():
            files[name] = exp_dir / name
    if (exp_dir / "decode" / "tuned.json").is_file():
        files["tuned.json"] = exp_dir / "decode" / "tuned.json"
    lm_dir = Path(config["data_dir"]) / "lm" if config.get("data_dir") else None   # never the cwd's lm/
    decode = config.get("decode", {})
    for name, given, default in (("lexicon.txt", decode.get("lexicon"), lm_dir and lm_dir / "lexicon.txt"),
                                 ("lm.bin", decode.get("lm"), lm_dir and lm_dir / "lm.bin")):
        path = Path(given) if given else default
        if path is not None and path.is_file():
            files[name if not str(path).endswith(".arpa") else "lm.arpa"] = path
    return files


def _training_data(config: dict) -> tuple[list[str], set[str]]:
    """Markdown lines on the training manifest (utterances, hours, engines, voices) and the
    engines of every split the recipe made."""
    if not config.get("data_dir"):
        return ["(the recipe config names no data directory)"], set()
    data_dir, lines, engines = Path(config["data_dir"]), [], set()
    splits = [config.get("train_split", "train"), config.get("dev_split", "dev"), *config.get("test_splits", [])]
    for split in splits:
        path = data_dir / f"{split}.jsonl"
        if not path.is_file():
            continue
        utts = read_manifest(path)
        voices = Counter(u.speaker for u in utts)
        by_engine = Counter(engine_of(v) if ":" in v else "recorded" for v in voices.elements())
        engines |= {e for e in by_engine if e in ENGINES}
        lines.append(f"| {split} | {len(utts)} | {sum(u.duration for u in utts) / 3600:.2f} | {len(voices)} | "
                     + ", ".join(f"{e} {n}" for e, n in by_engine.most_common()) + " |")
    if lines:
        lines = ["| split | utterances | hours | voices | utterances by engine |", "|---|---|---|---|---|", *lines]
    return lines or ["(the data manifests were not found when this package was built)"], engines


def model_card(name: str, rec: Recognizer, config: dict, results: dict | None, files: dict[str, Path]) -> str:
    """The package's MODEL_CARD.md."""
    m = rec.model.cfg
    data, engines = _training_data(config)
    params = sum(p.numel() for p in rec.model.parameters())
    lines = [f"# {name}", "",
             f"BiLSTM-CTC speech recogniser made with `asr` (code {code_version()}, packaged "
             f"{time.strftime('%Y-%m-%d')}).", "",
             "## Model", "",
             f"- {m.layers} x {m.hidden} bidirectional LSTM, frame stacking {m.stack}, {params / 1e6:.1f} M parameters, "
             f"utterance CMN {'on' if m.utterance_cmn else 'off'}",
             f"- input: {rec.feature_config.n_mels} log-mels, {rec.feature_config.hop_ms} ms hop, 16 kHz mono",
             f"- output units: {len(rec.tokenizer.vocab)} ({type(rec.tokenizer).__name__})",
             f"- trained for {rec.info.get('epoch', '?')} epochs, dev WER {rec.info.get('dev_wer', float('nan')):.2f}%, "
             f"precision {rec.info.get('precision', '?')}",
             f"- decoding: greedy{'; beam search with the included lexicon and KenLM n-gram' if 'lm.bin' in files or 'lm.arpa' in files else ''}",
             "", "## Training and test data", "",
             ("Synthesized speech (TTS engines and voices below, with augmentation):" if engines else
              "Training and test data by split (voices/speakers as the manifests name them):"), "",
             *data, "", "## Results", "",
             results_table(results) if results else "(no results.json in the experiment directory)", "",
             "## Licences of the data sources", "",
             *([f"- {e}: {ENGINES[e].licence}" for e in sorted(engines)] or ["- (unknown: no manifests)"]), "",
             "## Intended use and limits", "",
             "Small-vocabulary offline recognition of English in the recipe's domain. Trained on synthetic "
             "voices only: expect higher error rates on real recordings, accents and conditions the results "
             "table does not cover.", ""]
    return "\n".join(lines)


def build_package(exp_dir: str | Path, out: str | Path, config: dict | None = None) -> Path:
    """Pack ``exp_dir`` into ``out`` (``.tar.gz``); ``config``: the recipe config as a dict
    (default: the one stored in the checkpoint). Writes ``out`` and ``out.sha256``."""
    exp_dir, out = Path(exp_dir), Path(out)
    if not str(out).endswith(PACKAGE_SUFFIXES):
        raise PackageError(f"{out}: a package name ends in .tar.gz or .tgz")
    rec = load(exp_dir / "best.pt") if (exp_dir / "best.pt").is_file() else None
    if rec is None:
        raise MissingFileError(f"{exp_dir}: no best.pt to package (train the recipe first)")
    config = config or rec.info.get("config", {})
    files = _collect(exp_dir, config)
    results = json.loads(files["results.json"].read_text()) if "results.json" in files else None
    name = out.name.removesuffix(".tar.gz").removesuffix(".tgz")
    out.parent.mkdir(parents=True, exist_ok=True)      # the staging dir beside it: os.replace stays on one filesystem
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        stage = Path(tmp) / "pkg"
        stage.mkdir()
        for arc, src in files.items():
            shutil.copyfile(src, stage / arc)
        (stage / "config.json").write_text(json.dumps(config, indent=1, default=str) + "\n")
        (stage / "MODEL_CARD.md").write_text(model_card(name, rec, config, results, files))
        manifest = {"format": PACKAGE_FORMAT, "name": name, "code_version": code_version(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "sha256": {p.name: sha256(p) for p in sorted(stage.iterdir())}}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        digest = sha256(stage / MANIFEST)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tmp) / "out.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            for p in sorted(stage.iterdir()):
                tar.add(p, arcname=p.name, recursive=False)
        os.replace(partial, out)                        # atomic: no half-written package
    Path(f"{out}.sha256").write_text(f"{digest}  {MANIFEST}\n")
    log.info("packaged %s -> %s (%d files)", exp_dir, out, len(manifest["sha256"]) + 1)
    return out


def _verify(folder: Path, archive: Path) -> dict:
    """Check an extracted package against its manifest (and the manifest against the
    ``.sha256`` beside the archive, when there is one); returns the manifest."""
    path = folder / MANIFEST
    if not path.is_file():
        raise PackageError(f"{archive}: not an asr package (no {MANIFEST})")
    sidecar = Path(f"{archive}.sha256")
    if sidecar.is_file() and sidecar.read_text().split()[:1] != [sha256(path)]:
        raise PackageError(f"{archive}: {MANIFEST} does not match {sidecar.name} (altered package)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise PackageError(f"{archive}: {MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{archive}: not an asr package (expected format {PACKAGE_FORMAT})")
    listed = manifest.get("sha256")
    if not isinstance(listed, dict):
        raise PackageError(f"{archive}: {MANIFEST} has no file list (sha256)")
    present = {p.name for p in folder.iterdir() if not p.name.startswith(".extracted-")} - {MANIFEST}
    for name in sorted(present - set(listed)):
        raise PackageError(f"{archive}: {name} is not listed in {MANIFEST} (added file)")
    for name, want in sorted(listed.items()):
        if name not in present:
            raise PackageError(f"{archive}: {name} is listed in {MANIFEST} but missing")
        if sha256(folder / name) != want:
            raise PackageError(f"{archive}: {name}: SHA-256 differs from {MANIFEST} (altered or corrupt)")
    return manifest


def open_package(archive: str | Path, cache: str | Path | None = None) -> Path:
    """Extract ``archive`` safely into a cache folder named by its SHA-256, verify every file,
    and return the folder. A folder that fails verification is removed."""
    archive = Path(archive)
    if not archive.is_file():
        raise MissingFileError(f"{archive}: package not found")
    folder = Path(cache or CACHE_DIR) / sha256(archive)[:24]
    if not (folder / f".extracted-{archive.name}").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        safe_extract(archive, folder, max_bytes=MAX_PACKAGE_BYTES)
    try:
        _verify(folder, archive)
    except PackageError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def package_decode(folder: Path, decode: DecodeConfig | None = None) -> DecodeConfig:
    """``decode`` (default: greedy) with the package's lexicon, LM, tuned LM weights and grammar
    unit bonus filled in where the caller left them at their defaults."""
    d = decode or DecodeConfig()
    lm = next((folder / n for n in ("lm.bin", "lm.arpa") if (folder / n).is_file()), None)
    if lm is not None and not d.lm:
        d = replace(d, lm=str(lm), lexicon=d.lexicon or str(folder / "lexicon.txt"))
        default = DecodeConfig()
        if (folder / "tuned.json").is_file() and (d.lm_weight, d.word_score) == (default.lm_weight, default.word_score):
            tuned = json.loads((folder / "tuned.json").read_text())      # the caller's own weights win
            d = replace(d, lm_weight=tuned.get("lm_weight", d.lm_weight), word_score=tuned.get("word_score", d.word_score))
    if (folder / "tuned.json").is_file() and d.unit_bonus == DecodeConfig().unit_bonus:
        d = replace(d, unit_bonus=json.loads((folder / "tuned.json").read_text()).get("unit_bonus", d.unit_bonus))
    return d


def load_package(archive: str | Path, int8: bool = False, decode: DecodeConfig | None = None,
                 method: str | None = None, cache: str | Path | None = None) -> Recognizer:
    """A verified package as a :class:`Recognizer` (its LM and lexicon used by ``beam_lm``)."""
    folder = open_package(archive, cache)
    return load(folder / "model.pt", int8=int8, decode=package_decode(folder, decode), method=method)

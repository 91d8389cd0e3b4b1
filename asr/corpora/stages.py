"""Corpus stages of every recipe: synthesis of the digits and sentences corpora, and for the
real-corpus recipes (LibriSpeech, Mini LibriSpeech, AN4, Common Voice) resumable checksummed
downloads with safe extraction, manifests per split (several corpus subsets joined into one
split) and the LM text. A recipe's ``run.py`` only lists stages."""
from __future__ import annotations

import gzip
import io
import itertools
import logging
from pathlib import Path
from typing import Iterator

from ..data import read_manifest, write_manifest
from ..text import normalize_text
from .download import download, safe_extract
from ..recipe import Recipe, decode_stage, features_stage, lm_stage, stage, train_stage
from ..recipe_tune import tune_stage
from .commands import prepare_commands
from .digits import prepare_digits
from .real import AN4_URL, LIBRISPEECH_URL, MINI_LIBRISPEECH_URL, CorpusConfig, CorpusError, prepare_split
from .robust import prepare_conditions
from .sentences import prepare_sentences

log = logging.getLogger(__name__)

# published SHA-256 of the OpenSLR 12 archives (as shipped in torchaudio.datasets.librispeech)
LIBRISPEECH_SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}


def corpus_archives(c: CorpusConfig) -> list[tuple[str, str | None]]:
    """``(url, checksum or None)`` of every archive the configured splits need."""
    subsets = sorted({s for subs in c.splits.values() for s in subs})
    if c.name == "librispeech":
        return [(LIBRISPEECH_URL.format(subset=s), f"sha256:{LIBRISPEECH_SHA256[s]}"
                 if s in LIBRISPEECH_SHA256 else None) for s in subsets]
    if c.name == "mini_librispeech":
        return [(MINI_LIBRISPEECH_URL.format(subset=s), None) for s in subsets]
    if c.name == "an4":
        return [(AN4_URL, None)]
    return []


def mirrored(url: str, mirror: str) -> str:
    """``url`` with its scheme and host replaced by ``mirror`` (unchanged when empty)."""
    return f"{mirror.rstrip('/')}/{url.split('/', 3)[3]}" if mirror else url


@stage(reads=("synth",), name="synth")
def digits_synth_stage(r: Recipe) -> dict[str, Path]:
    """Synthesize the digits corpus: every split of ``synth.splits`` -> manifests."""
    return prepare_digits(r.cfg.synth, r.paths.data_dir, r.cfg.train_split)


@stage(reads=("text", "synth"), name="synth")
def sentences_synth_stage(r: Recipe) -> dict[str, Path]:
    """Select the read sentences and LM text (``text``), then synthesize every split."""
    return prepare_sentences(r.cfg.text, r.cfg.synth, r.paths.data_dir, r.cfg.train_split)


@stage(reads=("commands", "synth"), name="synth")
def commands_synth_stage(r: Recipe) -> dict[str, Path]:
    """Expand the command grammar (``commands.grammar``) into ``phrases.txt``, then synthesize
    every split speaking its phrases."""
    return prepare_commands(r.cfg.commands, r.cfg.synth, r.paths.data_dir, r.cfg.train_split)


@stage(reads=("robust",))
def robust_stage(r: Recipe) -> dict[str, Path]:
    """Robustness test splits: held-out audio through the named conditions of ``robust``."""
    return prepare_conditions(r.cfg.robust, r.paths.data_dir)


@stage(reads=("corpus",))
def download_stage(r: Recipe) -> None:
    """Download (resuming) and safely extract every needed archive into ``corpus.root``; an
    archive extracted before is skipped."""
    c = r.cfg.corpus
    if not c.download:
        log.info("download: false; expecting %s under %s", c.name, c.root)
        return
    archive_dir = Path(c.archive_dir or Path(c.root) / "archives")
    for url, checksum in corpus_archives(c):
        name = url.rsplit("/", 1)[-1]
        mark = Path(c.root) / f".extracted-{name}"
        if mark.exists():
            continue
        if checksum is None:
            log.warning("%s: no published checksum; only the transfer is checked", name)
        archive = download(mirrored(url, c.mirror), archive_dir / name, checksum)
        safe_extract(archive, c.root)
        mark.write_text(url + "\n")
    if c.lm_text_url and c.lm_text and not Path(c.lm_text).exists():
        download(mirrored(c.lm_text_url, c.mirror), Path(c.lm_text))


@stage(reads=("corpus",))
def prepare_stage(r: Recipe) -> dict[str, Path]:
    """``data_dir/<split>.jsonl`` per split: its corpus subsets prepared and joined (each
    subset's skipped files are listed in ``data_dir/parts/<subset>.skipped.txt``). With
    ``corpus.dev_speakers`` and no dev subset, dev is that many speakers taken out of training."""
    cfg, c, out = r.cfg, r.cfg.corpus, r.paths.data_dir
    manifests = {}
    for split, subsets in c.splits.items():
        utts = []
        for subset in subsets:
            part = prepare_split(c.name, c.root, subset, out / "parts")
            utts += read_manifest(part)
        ids = [u.id for u in utts]
        if len(set(ids)) != len(ids):
            raise CorpusError(f"split {split}: subsets {list(subsets)} share utterance ids")
        manifests[split] = out / f"{split}.jsonl"
        if split == cfg.train_split and c.dev_speakers and cfg.dev_split not in c.splits:
            utts, dev = split_speakers(utts, c.dev_speakers)
            write_manifest(dev, out / f"{cfg.dev_split}.jsonl")
            manifests[cfg.dev_split] = out / f"{cfg.dev_split}.jsonl"
        write_manifest(utts, manifests[split])
        log.info("%s: %d utterances, %.1f h from %s", split, len(utts), sum(u.duration for u in utts) / 3600,
                 ", ".join(subsets))
    return manifests


def split_speakers(utts: list, n: int) -> tuple[list, list]:
    """(rest, held): every ``len(speakers) // n``-th speaker (sorted) held out, deterministically."""
    speakers = sorted({u.speaker for u in utts})
    if n >= len(speakers):
        raise CorpusError(f"dev_speakers={n} but training has only {len(speakers)} speakers")
    step = len(speakers) // n
    held = set(speakers[::step][:n])
    return [u for u in utts if u.speaker not in held], [u for u in utts if u.speaker in held]


def read_text_lines(path: str | Path) -> Iterator[str]:
    """Lines of a text file, gzip-compressed or not, streamed."""
    path = Path(path)
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    with io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as f:
        yield from (line.rstrip("\n") for line in f)


@stage(reads=("corpus",))
def lm_text_stage(r: Recipe) -> Path:
    """``data_dir/text/lm_train.txt``: the training transcripts plus ``corpus.lm_text``
    (normalized, streamed), minus every dev/test transcript, so no evaluated sentence is in
    the LM."""
    cfg = r.cfg
    held = set()
    for split in [cfg.dev_split, *cfg.test_splits]:
        held |= {u.text for u in read_manifest(r.paths.manifest(split))}
    out = r.paths.lm_text
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    n = dropped = 0
    with tmp.open("w", encoding="utf-8") as f:
        train = (u.text for u in read_manifest(r.paths.manifest(cfg.train_split)))
        extra = read_text_lines(cfg.corpus.lm_text) if cfg.corpus.lm_text else ()
        for line in itertools.chain(train, extra):
            text = normalize_text(line)
            if not text:
                continue
            if text in held:
                dropped += 1
                continue
            f.write(text + "\n")
            n += 1
    tmp.replace(out)
    log.info("%s: %d sentences (%d held-out sentences left out)", out, n, dropped)
    return out


# the stage list of a real-corpus recipe (librispeech and an4 share it)
REAL_CORPUS_STAGES = [download_stage, prepare_stage, lm_text_stage, features_stage, lm_stage, train_stage,
                      tune_stage, decode_stage]

"""Corpus stages of the real-corpus recipes (LibriSpeech, Mini LibriSpeech, AN4, Common Voice):
resumable checksummed downloads with safe extraction, manifests per split (several corpus
subsets joined into one split), and the LM text. A recipe folder only lists them."""
from __future__ import annotations

import gzip
import io
import itertools
import sys
from pathlib import Path
from typing import Iterator

from ..config import CorpusConfig, RecipeConfig
from ..data import read_manifest, write_manifest
from ..text import normalize_text
from .download import download, safe_extract
from .real import AN4_URL, LIBRISPEECH_URL, MINI_LIBRISPEECH_URL, prepare_split

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


def download_stage(cfg: RecipeConfig) -> None:
    """Download (resuming) and safely extract every needed archive into ``corpus.root``; an
    archive extracted before is skipped."""
    c = cfg.corpus
    if not c.download:
        print(f"[corpus] download: false; expecting {c.name} under {c.root}", file=sys.stderr)
        return
    archive_dir = Path(c.archive_dir or Path(c.root) / "archives")
    for url, checksum in corpus_archives(c):
        name = url.rsplit("/", 1)[-1]
        mark = Path(c.root) / f".extracted-{name}"
        if mark.exists():
            continue
        if checksum is None:
            print(f"[corpus] {name}: no published checksum; only the transfer is checked", file=sys.stderr)
        archive = download(mirrored(url, c.mirror), archive_dir / name, checksum)
        safe_extract(archive, c.root)
        mark.write_text(url + "\n")
    if c.lm_text_url and c.lm_text and not Path(c.lm_text).exists():
        download(mirrored(c.lm_text_url, c.mirror), Path(c.lm_text))


def prepare_stage(cfg: RecipeConfig) -> dict[str, Path]:
    """``data_dir/<split>.jsonl`` per split: its corpus subsets prepared and joined (each
    subset's skipped files are listed in ``data_dir/parts/<subset>.skipped.txt``). With
    ``corpus.dev_speakers`` and no dev subset, dev is that many speakers taken out of training."""
    c, out = cfg.corpus, Path(cfg.data_dir)
    manifests = {}
    for split, subsets in c.splits.items():
        utts = []
        for subset in subsets:
            part = prepare_split(c.name, c.root, subset, out / "parts")
            utts += read_manifest(part)
        ids = [u.id for u in utts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"split {split}: subsets {list(subsets)} share utterance ids")
        manifests[split] = out / f"{split}.jsonl"
        if split == cfg.train_split and c.dev_speakers and cfg.dev_split not in c.splits:
            utts, dev = split_speakers(utts, c.dev_speakers)
            write_manifest(dev, out / f"{cfg.dev_split}.jsonl")
            manifests[cfg.dev_split] = out / f"{cfg.dev_split}.jsonl"
        write_manifest(utts, manifests[split])
        print(f"[corpus] {split}: {len(utts)} utterances, {sum(u.duration for u in utts) / 3600:.1f} h "
              f"from {', '.join(subsets)}", file=sys.stderr)
    return manifests


def split_speakers(utts: list, n: int) -> tuple[list, list]:
    """(rest, held): every ``len(speakers) // n``-th speaker (sorted) held out, deterministically."""
    speakers = sorted({u.speaker for u in utts})
    if n >= len(speakers):
        raise ValueError(f"dev_speakers={n} but training has only {len(speakers)} speakers")
    step = len(speakers) // n
    held = set(speakers[::step][:n])
    return [u for u in utts if u.speaker not in held], [u for u in utts if u.speaker in held]


def read_text_lines(path: str | Path) -> Iterator[str]:
    """Lines of a text file, gzip-compressed or not, streamed."""
    path = Path(path)
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    with io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as f:
        yield from (line.rstrip("\n") for line in f)


def lm_text_stage(cfg: RecipeConfig) -> Path:
    """``data_dir/text/lm_train.txt``: the training transcripts plus ``corpus.lm_text``
    (normalized, streamed), minus every dev/test transcript, so no evaluated sentence is in
    the LM."""
    held = set()
    for split in [cfg.dev_split, *cfg.test_splits]:
        held |= {u.text for u in read_manifest(Path(cfg.data_dir) / f"{split}.jsonl")}
    out = Path(cfg.data_dir) / "text" / "lm_train.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    n = dropped = 0
    with tmp.open("w", encoding="utf-8") as f:
        train = (u.text for u in read_manifest(Path(cfg.data_dir) / f"{cfg.train_split}.jsonl"))
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
    print(f"[lm text] {out}: {n} sentences ({dropped} held-out sentences left out)", file=sys.stderr)
    return out



def real_corpus_stages():
    """The stage list of a real-corpus recipe (``run.py`` passes it to :func:`asr.cli.recipe_main`)."""
    from ..recipe import decode_stage, features_stage, lm_stage, train_stage, tune_stage

    data = ["corpus", "data_dir"]
    model = [*data, "tokenizer", "data", "features", "model", "augment", "train"]
    return [
        ("download", download_stage, ["corpus"]),
        ("prepare", prepare_stage, data),
        ("lm_text", lm_text_stage, data),
        ("features", features_stage, [*data, "data", "features"]),
        ("lm", lm_stage, [*data, "tokenizer", "lm"]),
        ("train", train_stage, model),
        ("tune", tune_stage, [*model, "lm", "decode"]),
        ("decode", decode_stage, [*model, "lm", "decode"]),
    ]

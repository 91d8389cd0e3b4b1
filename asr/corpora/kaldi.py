"""Import and export Kaldi data directories (``wav.scp``, ``text``, ``utt2spk``, ``segments``).

Piped ``wav.scp`` entries (``rec sox in.flac -t wav - |``) run a shell command: they are refused
unless ``allow_pipes=True``, and then each command runs once, without a shell, and its output is
cached as a WAV file.
"""
from __future__ import annotations

import shlex
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from ..audio import AudioError, audio_duration
from ..data import Utterance, write_manifest
from ..errors import AsrError, Problem

PIPE_TIMEOUT_S = 600


class KaldiDirError(AsrError):
    pass


def _read_table(path: Path, required: bool = True) -> dict[str, str]:
    """``key value...`` lines -> {key: value}; duplicate keys are errors naming file and line."""
    if not path.is_file():
        if required:
            raise KaldiDirError(f"{path}: missing")
        return {}
    out: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if key in out:
            raise KaldiDirError(f"{path}:{lineno}: duplicate key {key!r}")
        out[key] = value.strip()
    return out


def _resolve_wav(rec: str, entry: str, cache: Path, allow_pipes: bool) -> Path:
    if not entry.endswith("|"):
        return Path(entry)
    if not allow_pipes:
        raise KaldiDirError(f"wav.scp entry {rec!r} is a piped command ({entry[:60]!r}); "
                            f"refused unless allow_pipes=True")
    out = cache / f"{rec}.wav"
    if not out.exists():
        cmd = shlex.split(entry[:-1])
        if "|" in cmd or ";" in cmd or "&&" in cmd:
            raise KaldiDirError(f"wav.scp entry {rec!r}: only a single command is supported, not a pipeline")
        cache.mkdir(parents=True, exist_ok=True)
        with (cache / f".{rec}.tmp").open("wb") as f:
            res = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, timeout=PIPE_TIMEOUT_S)
        if res.returncode != 0:
            raise KaldiDirError(f"wav.scp entry {rec!r}: command failed: {res.stderr.decode(errors='replace')[-200:]}")
        (cache / f".{rec}.tmp").replace(out)
    return out


def import_kaldi_dir(data_dir: str | Path, allow_pipes: bool = False,
                     pipe_cache: str | Path | None = None) -> tuple[list[Utterance], list[str]]:
    """Kaldi data dir -> utterances (segments become ``offset`` + ``duration``) and problems."""
    d = Path(data_dir)
    wav = _read_table(d / "wav.scp")
    text = _read_table(d / "text")
    utt2spk = _read_table(d / "utt2spk", required=False)
    segments = _read_table(d / "segments", required=False)
    cache = Path(pipe_cache or d / "wav_cache")
    utts, problems, paths = [], [], {}
    for uid in sorted(text):
        rec, offset, end = uid, None, None
        if segments:
            if uid not in segments:
                problems.append(Problem(uid, f"not in {d / 'segments'}"))
                continue
            parts = segments[uid].split()
            try:
                rec, offset, end = parts[0], float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                problems.append(Problem(uid, "malformed segments line"))
                continue
        if rec not in wav:
            problems.append(Problem(uid, f"recording {rec!r} not in {d / 'wav.scp'}"))
            continue
        try:
            if rec not in paths:
                paths[rec] = _resolve_wav(rec, wav[rec], cache, allow_pipes)
            duration = audio_duration(paths[rec]) if offset is None else end - offset
        except (KaldiDirError, AudioError, subprocess.TimeoutExpired) as e:
            problems.append(Problem(uid, str(e)))
            continue
        utts.append(Utterance(uid, str(paths[rec]), round(duration, 4), text[uid], utt2spk.get(uid, uid.split("-")[0]),
                              offset))
    return utts, problems


def export_kaldi_dir(utts: Sequence[Utterance], data_dir: str | Path) -> Path:
    """Utterances -> ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` (+ ``segments`` if any offsets)."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    utts = sorted(utts, key=lambda u: u.id)
    has_segments = any(u.offset is not None for u in utts)
    rec_of: dict[str, str] = {}         # audio path -> recording id
    if has_segments:
        for u in utts:
            if u.audio not in rec_of:
                rec, n = Path(u.audio).stem, 1
                while rec in rec_of.values():
                    rec, n = f"{Path(u.audio).stem}_{n}", n + 1
                rec_of[u.audio] = rec
        recs = {r: a for a, r in rec_of.items()}
    else:
        recs = {u.id: u.audio for u in utts}
    (d / "wav.scp").write_text("".join(f"{r} {a}\n" for r, a in sorted(recs.items())), encoding="utf-8")
    (d / "text").write_text("".join(f"{u.id} {u.text}\n" for u in utts), encoding="utf-8")
    (d / "utt2spk").write_text("".join(f"{u.id} {u.speaker}\n" for u in utts), encoding="utf-8")
    spk2utt = defaultdict(list)
    for u in utts:
        spk2utt[u.speaker].append(u.id)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(ids)}\n" for s, ids in sorted(spk2utt.items())),
                               encoding="utf-8")
    if has_segments:
        (d / "segments").write_text("".join(
            f"{u.id} {rec_of[u.audio]} {u.offset or 0.0:.3f} {(u.offset or 0.0) + u.duration:.3f}\n" for u in utts),
            encoding="utf-8")
    return d


def import_to_manifest(data_dir: str | Path, manifest: str | Path, allow_pipes: bool = False) -> Path:
    from ..errors import report_problems

    utts, problems = import_kaldi_dir(data_dir, allow_pipes)
    report_problems(problems, len(utts) + len(problems), "kaldi import", Path(manifest).with_suffix(".skipped.txt"))
    write_manifest(utts, manifest)
    return Path(manifest)

"""Resumable, checksum-verified downloads and safe archive extraction."""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import logging
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import AsrError

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
REPORT_BYTES = 100 << 20       # log progress every 100 MB

log = logging.getLogger(__name__)


class DownloadError(AsrError):
    pass


class UnsafeArchiveError(AsrError):
    """An archive member would land outside the target directory (or is a device/link escape)."""


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | Path, checksum: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request.

    ``checksum`` is ``"sha256:<hex>"`` or ``"md5:<hex>"``; a mismatch removes the file and
    raises :class:`DownloadError`. An existing verified ``dest`` is not downloaded again.
    """
    dest = Path(dest)
    algo, _, expected = (checksum or "").partition(":")
    if dest.exists() and (not checksum or file_digest(dest, algo) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            if have and resp.status != 206:          # server ignored the range: start over
                have = 0
            total = have + int(resp.headers.get("Content-Length", 0))
            with part.open("ab" if have else "wb") as f:
                for block in iter(lambda: resp.read(CHUNK_BYTES), b""):
                    f.write(block)
                    have += len(block)
                    if progress and have // REPORT_BYTES != (have - len(block)) // REPORT_BYTES:
                        log.info("%s: %.1f/%.1f MB", dest.name, have / 1e6, total / 1e6)
            if have < total:
                raise DownloadError(f"{url}: connection closed after {have} of {total} bytes "
                                    f"(partial data kept in {part}; rerun to resume)")
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:                   # range not satisfiable: already complete
            pass
        else:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason} (partial data kept in {part})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: {e} (partial data kept in {part}; rerun to resume)") from None
    if checksum:
        got = file_digest(part, algo)
        if got != expected:
            part.unlink()
            raise DownloadError(f"{url}: {algo} checksum mismatch (got {got}, expected {expected}); "
                                f"the partial file was removed")
    os.replace(part, dest)
    return dest


def _inside(root: Path, target: Path) -> bool:
    root, target = root.resolve(), target.resolve()
    return target == root or root in target.parents


MAX_PATH_BYTES = 4000            # below Linux's PATH_MAX (4096) for the full extracted path
MAX_NAME_BYTES = 255             # one path component


def member_path(name: str, archive: Path) -> PurePosixPath:
    """The relative path an archive member may be written to, or :class:`UnsafeArchiveError`:
    absolute names, ``..`` anywhere, NUL bytes, over-long names and components are refused."""
    where = f"{archive}: member {name[:200]!r}"
    if "\x00" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{where} has an absolute or invalid name")
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(f"{where} escapes the target directory")
    if any(len(os.fsencode(p)) > MAX_NAME_BYTES for p in parts) or len(os.fsencode(name)) > MAX_PATH_BYTES:
        raise UnsafeArchiveError(f"{where} has a name too long for the filesystem")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


class _Budget:
    """Bytes an extraction may still write (``None``: no limit): a decompression bomb stops at
    the limit, counted on the bytes really written, not on what the headers declare."""

    def __init__(self, limit: int | None, archive: Path):
        self.left, self.limit, self.archive = limit, limit, archive

    def take(self, n: int) -> None:
        if self.left is None:
            return
        self.left -= n
        if self.left < 0:
            raise UnsafeArchiveError(f"{self.archive}: extracts to more than {self.limit} bytes (the limit)")


def _write_file(root: Path, rel: PurePosixPath, src, archive: Path, budget: _Budget | None = None) -> None:
    """Create ``root/rel`` as a new regular file from the stream ``src``, never following links."""
    path = root.joinpath(*rel.parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(root, path.parent) or path.parent.is_symlink():
        raise UnsafeArchiveError(f"{archive}: member {str(rel)!r} would be written outside the target")
    budget = budget or _Budget(None, archive)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        while chunk := src.read(CHUNK_BYTES):
            budget.take(len(chunk))
            f.write(chunk)


def _stage_tar(archive: Path, stage: Path, budget: _Budget) -> None:
    """Materialise only directories and regular files; a hard link to an earlier member becomes
    a copy of it; symlinks, devices and FIFOs are refused."""
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError as e:
        raise UnsafeArchiveError(f"{archive}: not a tar or zip archive ({e})") from None
    with tf:
        written: set[PurePosixPath] = set()
        for m in tf:
            rel = member_path(m.name, archive)
            where = f"{archive}: member {m.name[:200]!r}"
            if m.isdir():
                (stage.joinpath(*rel.parts)).mkdir(parents=True, exist_ok=True)
            elif m.isfile():
                _write_file(stage, rel, tf.extractfile(m), archive, budget)
                written.add(rel)
            elif m.islnk():
                try:
                    target = member_path(m.linkname, archive)
                except UnsafeArchiveError:
                    target = None
                if target not in written:
                    raise UnsafeArchiveError(f"{where} is a hard link to {m.linkname[:200]!r}, not an earlier file of the archive")
                with open(stage.joinpath(*target.parts), "rb") as src:
                    _write_file(stage, rel, src, archive, budget)
                written.add(rel)
            elif m.issym():
                raise UnsafeArchiveError(f"{where} is a symlink (to {m.linkname[:200]!r}); links are not extracted")
            else:
                raise UnsafeArchiveError(f"{where} is a device or FIFO")


def _stage_zip(archive: Path, stage: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            rel = member_path(info.filename, archive)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)        # 0: permission bits only (Python's writestr), a plain file
            if stat.S_ISLNK(mode) or kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchiveError(f"{archive}: member {info.filename[:200]!r} is a link or special file")
            if info.is_dir():
                stage.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
            else:
                with z.open(info) as src:
                    _write_file(stage, rel, src, archive, budget)


def _plan_moves(stage: Path, dest: Path) -> list[tuple[Path, Path]]:
    """Every staged file and its place in ``dest``, checked before anything moves: no existing
    part of a destination path may be a symlink or a file where a directory is needed, and no
    destination file may be a symlink or a directory."""
    root, moves = dest.resolve(), []
    for folder, _, files in os.walk(stage):
        rel = Path(folder).relative_to(stage)
        probe = dest
        for part in rel.parts:
            probe = probe / part
            if probe.is_symlink() or (probe.exists() and not probe.is_dir()):
                raise UnsafeArchiveError(f"{probe}: a symlink or file is in the way of an extracted folder")
        for name in files:
            target = dest / rel / name
            if target.is_symlink() or target.is_dir():
                raise UnsafeArchiveError(f"{target}: a symlink or folder is in the way of an extracted file")
            if not _inside(root, target.parent if target.parent.exists() else dest):
                raise UnsafeArchiveError(f"{target}: leads outside {dest}")
            moves.append((Path(folder) / name, target))
    return moves


def safe_extract(archive: str | Path, dest: str | Path, max_bytes: int | None = None) -> Path:
    """Extract a tar (any compression) or zip into ``dest`` safely: everything is first
    extracted into a fresh staging directory inside ``dest``, where only directories and
    regular files are created (checked one by one as the real filesystem stands, never
    following links; no reliance on tarfile's ``filter``), then moved into place. Any unsafe
    member stops the extraction before anything reaches ``dest``. A finished extraction leaves
    ``dest/.extracted-<archive name>``. ``max_bytes`` bounds what it may write in all."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    done = dest / f".extracted-{archive.name}"
    if done.exists():
        return dest
    if not archive.is_file():
        raise UnsafeArchiveError(f"{archive}: no such archive file")
    stage = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        (_stage_zip if zipfile.is_zipfile(archive) else _stage_tar)(archive, stage, _Budget(max_bytes, archive))
        moves = _plan_moves(stage, dest)           # all checked before the first file moves
        for src, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise UnsafeArchiveError(f"{archive}: cannot extract ({type(e).__name__}: {e})") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    done.touch()
    return dest


def fetch_and_extract(url: str, download_dir: str | Path, extract_dir: str | Path,
                      checksum: str | None = None) -> Path:
    archive = download(url, Path(download_dir) / url.rsplit("/", 1)[-1], checksum)
    return safe_extract(archive, extract_dir)

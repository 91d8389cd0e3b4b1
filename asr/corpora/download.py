"""Resumable, checksum-verified downloads and safe archive extraction."""
from __future__ import annotations

import hashlib
import http.client
import os
import logging
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

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


def check_tar_member(m: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    """Refuse absolute paths, ``..`` escapes, links pointing outside ``dest`` and devices."""
    where = f"{archive}: member {m.name!r}"
    if os.path.isabs(m.name) or not _inside(dest, dest / m.name):
        raise UnsafeArchiveError(f"{where} escapes the target directory")
    if m.issym():
        link_target = (dest / m.name).parent / m.linkname
        if os.path.isabs(m.linkname) or not _inside(dest, link_target):
            raise UnsafeArchiveError(f"{where} is a symlink to {m.linkname!r}, outside the target")
    if m.islnk() and (os.path.isabs(m.linkname) or not _inside(dest, dest / m.linkname)):
        raise UnsafeArchiveError(f"{where} is a hard link to {m.linkname!r}, outside the target")
    if m.isdev():
        raise UnsafeArchiveError(f"{where} is a device file")


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a tar (any compression) or zip into ``dest``, refusing unsafe members before
    writing anything. A finished extraction leaves ``dest/.extracted-<archive name>``."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    done = dest / f".extracted-{archive.name}"
    if done.exists():
        return dest
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if os.path.isabs(name) or not _inside(dest, dest / name):
                    raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the target directory")
            z.extractall(dest)
    else:
        try:
            tf = tarfile.open(archive)
        except tarfile.TarError as e:
            raise UnsafeArchiveError(f"{archive}: not a tar or zip archive ({e})") from None
        with tf:
            members = tf.getmembers()
            for m in members:
                check_tar_member(m, dest, archive)
            tf.extractall(dest, members=members, filter="data")   # second line of defence
    done.touch()
    return dest


def fetch_and_extract(url: str, download_dir: str | Path, extract_dir: str | Path,
                      checksum: str | None = None) -> Path:
    archive = download(url, Path(download_dir) / url.rsplit("/", 1)[-1], checksum)
    return safe_extract(archive, extract_dir)

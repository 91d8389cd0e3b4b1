"""Corpus preparers on tiny fake trees in each corpus' real layout; downloads and extraction."""
import hashlib
import io
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import soundfile as sf

from asr.corpora.download import DownloadError, UnsafeArchiveError, download, safe_extract
from asr.corpora.kaldi import KaldiDirError, export_kaldi_dir, import_kaldi_dir
from asr.corpora.real import prepare_split
from asr.data import Utterance, load_utterance_audio, read_manifest



def _write(tone, path, seconds=1.0, rate=16000, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, rate), rate, **kw)


def test_librispeech_and_mini(tmp_path, tone):
    for subset in ("dev-clean", "dev-clean-2"):
        chap = tmp_path / "LibriSpeech" / subset / "84" / "121123"
        _write(tone, chap / "84-121123-0000.flac", 1.5)
        _write(tone, chap / "84-121123-0001.flac", 0.5)
        (chap / "84-121123.trans.txt").write_text(
            "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n"
            "84-121123-0002 THIS ONE HAS NO AUDIO\n")
        out = prepare_split("librispeech", tmp_path, subset, tmp_path / "m")
        utts = read_manifest(out)
        assert [u.id for u in utts] == ["84-121123-0000", "84-121123-0001"]
        assert utts[0].text == "go do you hear" and utts[0].speaker == "84" and utts[0].duration == 1.5
        assert "84-121123-0002\taudio file not found" in out.with_suffix(".skipped.txt").read_text()


def test_an4(tmp_path, tone):
    base = tmp_path / "an4"
    _write(tone, base / "wav/an4_clstk/fash/an251-fash-b.sph", 1.0, format="NIST", subtype="PCM_16")
    _write(tone, base / "wav/an4_clstk/fash/an253-fash-b.sph", 0.7, format="NIST", subtype="PCM_16")
    (base / "etc").mkdir()
    (base / "etc/an4_train.fileids").write_text("an4_clstk/fash/an251-fash-b\nan4_clstk/fash/an253-fash-b\n")
    (base / "etc/an4_train.transcription").write_text(
        "<s> YES </s> (an251-fash-b)\n<s> GO </s> (an253-fash-b)\n<s> NO ID HERE </s>\n")
    utts = read_manifest(prepare_split("an4", tmp_path, "train", tmp_path / "m"))
    assert [(u.id, u.text, u.speaker) for u in utts] == [("an251-fash-b", "yes", "fash"), ("an253-fash-b", "go", "fash")]
    assert load_utterance_audio(utts[0]).size == 16000
    assert "malformed transcription line" in (tmp_path / "m/train.skipped.txt").read_text()


def test_common_voice(tmp_path, tone):
    root = tmp_path / "cv-corpus-17.0" / "en"
    _write(tone, root / "clips/common_voice_en_1.mp3", 1.0, 48000, format="MP3")
    (root / "train.tsv").write_text("client_id\tpath\tsentence\tup_votes\n"
                                    "abcdef0123456789xyz\tcommon_voice_en_1.mp3\tHello, World!\t2\n"
                                    "abcdef\tcommon_voice_en_2.mp3\tMissing clip.\t1\n")
    utts = read_manifest(prepare_split("common_voice", root, "train", tmp_path / "m"))
    assert [(u.id, u.text) for u in utts] == [("common_voice_en_1", "hello world")]
    assert abs(utts[0].duration - 1.0) < 0.06                 # mp3 framing pads a little
    assert abs(load_utterance_audio(utts[0]).size - 16000) < 1000


def test_kaldi_roundtrip_with_segments(tmp_path, tone):
    _write(tone, tmp_path / "rec1.wav", 4.0)
    utts = [Utterance("spk1-a", str(tmp_path / "rec1.wav"), 1.5, "one two", "spk1", 0.5),
            Utterance("spk1-b", str(tmp_path / "rec1.wav"), 1.0, "three", "spk1", 2.5)]
    d = export_kaldi_dir(utts, tmp_path / "data")
    assert (d / "segments").read_text() == "spk1-a rec1 0.500 2.000\nspk1-b rec1 2.500 3.500\n"
    assert (d / "spk2utt").read_text() == "spk1 spk1-a spk1-b\n"
    back, problems = import_kaldi_dir(d)
    assert back == utts and problems == []
    assert load_utterance_audio(back[1]).size == 16000


def test_kaldi_piped_wav_scp(tmp_path, tone):
    _write(tone, tmp_path / "x.flac", 1.0)
    d = tmp_path / "data"
    d.mkdir()
    (d / "wav.scp").write_text(f"u1 sox {tmp_path / 'x.flac'} -t wav - |\nu2 {tmp_path / 'missing.wav'}\n")
    (d / "text").write_text("u1 hello\nu2 bye\n")
    utts, problems = import_kaldi_dir(d)
    assert utts == [] and [p.id for p in problems] == ["u1", "u2"] and "piped command" in problems[0].reason
    if shutil.which("sox"):
        utts, problems = import_kaldi_dir(d, allow_pipes=True)
        assert [u.id for u in utts] == ["u1"] and abs(utts[0].duration - 1.0) < 0.01
    (d / "text").write_text("u1 a\nu1 b\n")
    with pytest.raises(KaldiDirError, match=r"text:2: duplicate key 'u1'"):
        import_kaldi_dir(d)


# ---------------------------------------------------------------- download and extraction
PAYLOAD = bytes(range(256)) * 4000          # ~1 MB


class _Handler(BaseHTTPRequestHandler):
    cut_after = None                         # bytes sent before dropping the connection (once)

    def do_GET(self):  # noqa: N802
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if _Handler.cut_after is not None:
            self.wfile.write(body[: _Handler.cut_after])
            _Handler.cut_after = None
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_interrupted_download_resumes_and_verifies(tmp_path, server):
    sha = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    _Handler.cut_after = 300_000
    with pytest.raises(DownloadError, match="rerun to resume|partial"):
        download(f"{server}/corpus.tar.gz", tmp_path / "corpus.tar.gz", sha, progress=False)
    assert (tmp_path / "corpus.tar.gz.part").stat().st_size == 300_000
    path = download(f"{server}/corpus.tar.gz", tmp_path / "corpus.tar.gz", sha, progress=False)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "corpus.tar.gz.part").exists()
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(f"{server}/other.tar.gz", tmp_path / "other.tar.gz", "md5:" + "0" * 32, progress=False)
    assert not (tmp_path / "other.tar.gz.part").exists()


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_safe_extract(tmp_path):
    _tar(tmp_path / "ok.tgz", [_file("LibriSpeech/README.TXT", b"hello")])
    safe_extract(tmp_path / "ok.tgz", tmp_path / "out")
    assert (tmp_path / "out/LibriSpeech/README.TXT").read_bytes() == b"hello"
    _tar(tmp_path / "dotdot.tgz", [_file("a/ok.txt"), _file("../../evil.txt")])
    with pytest.raises(UnsafeArchiveError, match=r"'../../evil.txt' escapes"):
        safe_extract(tmp_path / "dotdot.tgz", tmp_path / "out2")
    assert not (tmp_path / "out2/a/ok.txt").exists()          # refused before writing anything
    link = tarfile.TarInfo("data/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../etc"
    _tar(tmp_path / "symlink.tgz", [(link, None)])
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        safe_extract(tmp_path / "symlink.tgz", tmp_path / "out3")
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(UnsafeArchiveError, match="escapes"):
        safe_extract(tmp_path / "bad.zip", tmp_path / "out4")


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_safe_extract_stops_at_its_byte_limit(tmp_path, kind):
    """A decompression bomb (a few KB that inflate to 8 MB) stops at max_bytes, counted on what
    is really written, and leaves nothing in the destination; under the limit it extracts."""
    archive = tmp_path / f"bomb.{kind}"
    big = b"\0" * (8 << 20)
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("a/zeros.bin", big)
    else:
        with tarfile.open(archive, "w:gz") as t:
            info = tarfile.TarInfo("a/zeros.bin")
            info.size = len(big)
            t.addfile(info, io.BytesIO(big))
    assert archive.stat().st_size < 100_000
    with pytest.raises(UnsafeArchiveError, match="more than 1048576 bytes"):
        safe_extract(archive, tmp_path / "out", max_bytes=1 << 20)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []
    safe_extract(archive, tmp_path / "ok", max_bytes=16 << 20)
    assert (tmp_path / "ok/a/zeros.bin").stat().st_size == len(big)

"""asr.package: a package carries model, config, results, LM and a model card with the SHA-256
of every file; it loads only when every hash checks out and is extracted safely."""
import io
import json
import tarfile
from pathlib import Path

import pytest

from asr.corpora.download import UnsafeArchiveError
from asr.lite import sha256
from asr.package import PackageError, build_package, load_package, open_package
from tests.clirun import CliResult, run_asr


def _asr(*args, cache: Path) -> CliResult:
    return run_asr(*args, cache=cache)


@pytest.fixture(scope="module")
def digits_package(tiny_recipe, tmp_path_factory):
    tmp, config, _ = tiny_recipe
    out = tmp_path_factory.mktemp("pkg") / "digits-tiny.tar.gz"
    res = _asr("package", tmp / "exp", "--out", out, "--config", config, cache=out.parent / "cache")
    assert res.returncode == 0, res.stderr
    return tmp, out


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _repack(archive: Path, dest: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


@pytest.mark.espeak
def test_package_holds_everything_with_hashes(digits_package, tmp_path):
    tmp, archive = digits_package
    files = _members(archive)
    assert {"model.pt", "config.json", "results.json", "train_log.jsonl", "MODEL_CARD.md", "package.json"} <= set(files)
    manifest = json.loads(files["package.json"])
    assert set(manifest["sha256"]) == set(files) - {"package.json"}
    folder = open_package(archive, tmp_path)
    for name, digest in manifest["sha256"].items():
        assert sha256(folder / name) == digest
    card = files["MODEL_CARD.md"].decode()
    for heading in ("## Model", "## Training and test data", "## Results", "## Licences of the data sources"):
        assert heading in card
    assert "espeak" in card and "GPL-3.0" in card and "| test_unseen |" in card
    assert Path(f"{archive}.sha256").read_text().split()[0] == sha256(folder / "package.json")


@pytest.mark.espeak
def test_transcribe_from_a_package_equals_the_checkpoint(digits_package, tmp_path):
    tmp, archive = digits_package
    wav = sorted((tmp / "data").rglob("*.wav"))[0]
    a = _asr("transcribe", "--model", archive, wav, cache=tmp_path)
    b = _asr("transcribe", "--model", tmp / "exp/best.pt", wav, cache=tmp_path)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.strip()


@pytest.mark.espeak
@pytest.mark.parametrize("tamper,message", [
    ("edit", "model.pt: SHA-256 differs"),
    ("add", "extra.txt is not listed"),
    ("remove", "results.json is listed in package.json but missing"),
    ("rehash", "package.json does not match"),
])
def test_tampered_packages_are_refused(digits_package, tmp_path, tamper, message):
    _, archive = digits_package
    files = _members(archive)
    if tamper == "edit":
        model = bytearray(files["model.pt"])
        model[len(model) // 2] ^= 1
        files["model.pt"] = bytes(model)
    elif tamper == "add":
        files["extra.txt"] = b"surprise"
    elif tamper == "remove":
        del files["results.json"]
    else:                               # a consistent forgery: new model, new hashes, same sidecar
        files["model.pt"] = files["model.pt"][:-1] + bytes([files["model.pt"][-1] ^ 1])
        manifest = json.loads(files["package.json"])
        import hashlib
        manifest["sha256"]["model.pt"] = hashlib.sha256(files["model.pt"]).hexdigest()
        files["package.json"] = (json.dumps(manifest, indent=1) + "\n").encode()
    bad = _repack(archive, tmp_path / "bad.tar.gz", files)
    (tmp_path / "bad.tar.gz.sha256").write_text(Path(f"{archive}.sha256").read_text())
    with pytest.raises(PackageError, match=message):
        load_package(bad, cache=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())          # nothing refused stays extracted
    res = _asr("transcribe", "--model", bad, bad, cache=tmp_path / "cache2")
    assert res.returncode == 2 and message in res.stderr


def test_unsafe_archive_is_refused_before_extraction(tmp_path):
    bad = tmp_path / "evil.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("model.pt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError):
        open_package(bad, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any(p.is_symlink() for p in (tmp_path / "cache").rglob("*"))


@pytest.mark.espeak
def test_sentences_package_carries_its_lm(tiny_sentences, tmp_path):
    tmp, _ = tiny_sentences
    out = build_package(tmp / "exp", tmp_path / "s.tar.gz",
                        json.loads(json.dumps({"data_dir": str(tmp / "data"), "test_splits": ["test_unseen"]})))
    files = _members(out)
    assert {"lm.bin", "lexicon.txt", "tuned.json"} <= set(files)
    wav = sorted((tmp / "data").rglob("*.wav"))[0]
    res = _asr("transcribe", "--model", out, "--method", "beam_lm", wav, cache=tmp_path / "c")
    assert res.returncode == 0, res.stderr
    ref = _asr("transcribe", "--model", tmp / "exp/best.pt", "--method", "beam_lm", "--lm", tmp / "data/lm/lm.bin",
               "--lexicon", tmp / "data/lm/lexicon.txt", "--tuned", tmp / "exp/decode/tuned.json", wav, cache=tmp_path)
    assert res.stdout == ref.stdout
    # hotwords bias the package's own LM, as they do the same LM given by hand
    (tmp_path / "hot.txt").write_text("the\t6\nzyzzyva\n")
    hot = _asr("transcribe", "--model", out, "--method", "beam_lm", "--hotwords", tmp_path / "hot.txt", wav,
               cache=tmp_path / "c")
    assert hot.returncode == 0 and "'zyzzyva' is not in the lexicon" in hot.stderr, hot.stderr
    ref = _asr("transcribe", "--model", tmp / "exp/best.pt", "--method", "beam_lm", "--lm", tmp / "data/lm/lm.bin",
               "--lexicon", tmp / "data/lm/lexicon.txt", "--tuned", tmp / "exp/decode/tuned.json",
               "--hotwords", tmp_path / "hot.txt", wav, cache=tmp_path)
    assert hot.stdout == ref.stdout
    again = _asr("transcribe", "--model", out, "--method", "beam_lm", "--hotwords", tmp_path / "hot.txt", wav,
                 cache=tmp_path / "c")                     # the package still verifies after that
    assert again.returncode == 0 and again.stdout == hot.stdout, again.stderr
    greedy = _asr("transcribe", "--model", out, "--hotwords", tmp_path / "hot.txt", wav, cache=tmp_path / "c")
    assert greedy.returncode == 2 and "beam_lm" in greedy.stderr


def test_package_decode_takes_the_tuned_grammar_bonus(tmp_path):
    """A commands package's tuned.json holds the grammar's unit bonus (no LM weights): it is
    applied unless the caller set a bonus of their own."""
    from asr.decode import DecodeConfig
    from asr.package import package_decode

    (tmp_path / "tuned.json").write_text(json.dumps({"unit_bonus": 1.5, "unit_bonus_grid": []}))
    assert package_decode(tmp_path).unit_bonus == 1.5
    assert package_decode(tmp_path, DecodeConfig(unit_bonus=0.7)).unit_bonus == 0.7
    assert package_decode(tmp_path).lm == ""                                    # no LM in it: none made up

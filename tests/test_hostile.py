"""Careless and hostile input found by probing (issue 17): each probe reproduces the mistake
first, then checks it is named, counted and survived."""
import json
import os
import subprocess

import numpy as np
import pytest
import soundfile as sf

from asr.audio import AudioError, load_audio
from asr.checkpoint import model_payload
from asr.features import FeatureConfig
from asr.files import atomic_save
from asr.score import read_transcripts
from asr.text import CharTokenizer
from asr.transcribe import SegmentOptions, kaldi_id, list_audio_files


@pytest.fixture
def model_file(tmp_path, tiny_model):
    path = tmp_path / "m.pt"
    atomic_save(model_payload(tiny_model, FeatureConfig(), CharTokenizer()), path)
    return path


def _transcribe(model_file, *args, timeout=120):
    return subprocess.run(["asr", "transcribe", "--model", str(model_file), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_a_file_that_breaks_mid_decode_is_named_and_the_rest_is_written(tmp_path, model_file, tone):
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "a_good.wav", tone(1.0), 16000)
    x = np.concatenate([tone(12.0, freq=300), tone(12.0, freq=500)])
    sf.write(d / "b_broken.flac", x, 16000)
    raw = bytearray((d / "b_broken.flac").read_bytes())
    mid = len(raw) // 2
    raw[mid: mid + 4000] = os.urandom(4000)                 # the stream loses sync half-way
    (d / "b_broken.flac").write_bytes(bytes(raw))
    sf.write(d / "c_good.wav", tone(1.5), 16000)
    res = _transcribe(model_file, d, "--output-dir", tmp_path / "out")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "b_broken.flac" in res.stderr
    ids = [line.split(" ")[0] for line in (tmp_path / "out/text").read_text().splitlines()]
    assert "a_good" in ids and "c_good" in ids                 # files after the broken one too


def test_colliding_names_get_unique_ids_and_are_reported(tmp_path, model_file, tone):
    for sub, name in (("c1", "x.wav"), ("c2", "x.wav"), ("c3", "x.flac"), ("c3", "x.wav")):
        (tmp_path / sub).mkdir(exist_ok=True)
        sf.write(tmp_path / sub / name, tone(1.0, freq=200 + 100 * len(sub)), 16000)
    weird = tmp_path / "c4" / "new\nline\tand tab.wav"
    weird.parent.mkdir()
    sf.write(weird, tone(1.0), 16000)
    jobs, problems = list_audio_files([tmp_path / "c1/x.wav", tmp_path / "c2/x.wav", tmp_path / "c3", tmp_path / "c4"])
    ids = [uid for _, uid in jobs]
    assert ids == ["x", "x.wav", "x.flac", "x.wav-2", "new_line_and_tab"]
    assert all(kaldi_id(i) == i for i in ids)
    assert {p.kind for p in problems} == {"mapped"} and len(problems) == 3
    res = _transcribe(model_file, tmp_path / "c1/x.wav", tmp_path / "c2/x.wav", tmp_path / "c3", tmp_path / "c4",
                      "--output-dir", tmp_path / "out", "--formats", "json")
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "out/text").read_text().splitlines()
    assert len(lines) == 5 and len({line.split(" ")[0] for line in lines}) == 5
    assert len(list((tmp_path / "out").glob("*.json"))) == 5                 # nothing overwritten
    assert "taken by another file" in res.stderr


def test_fifos_are_skipped_not_opened(tmp_path, model_file, tone):
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "good.wav", tone(1.0), 16000)
    os.mkfifo(d / "pipe.wav")
    os.mkfifo(tmp_path / "alone.wav")
    res = _transcribe(model_file, d, tmp_path / "alone.wav", "--output-dir", tmp_path / "out", timeout=60)
    assert res.returncode == 1 and "pipe.wav" in res.stderr and "alone.wav" in res.stderr
    assert "not a regular file" in res.stderr
    assert (tmp_path / "out/text").read_text().startswith("good ")


def test_absurd_amplitude_is_a_named_error(tmp_path, model_file, tone):
    sf.write(tmp_path / "huge.wav", tone(1.0) * 1e30, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="huge.wav: absurd sample amplitude"):
        load_audio(tmp_path / "huge.wav")
    res = _transcribe(model_file, tmp_path / "huge.wav")
    assert res.returncode == 1 and "absurd sample amplitude" in res.stderr


def test_segment_limits_are_checked(model_file, tmp_path, tone):
    with pytest.raises(Exception, match="max_segment_s"):
        SegmentOptions(max_segment_s=0)
    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    for bad in ("0", "-3"):
        res = _transcribe(model_file, tmp_path / "a.wav", "--max-segment", bad)
        assert res.returncode == 2 and "max_segment_s" in res.stderr and "Traceback" not in res.stderr


def test_byte_order_mark_in_transcripts(tmp_path):
    (tmp_path / "ref.trn").write_text("one two (u1)\nthree (u2)\n", encoding="utf-8")
    (tmp_path / "hyp.trn").write_text("\ufeffone two (u1)\nthree (u2)\n", encoding="utf-8")
    assert read_transcripts(tmp_path / "hyp.trn") == read_transcripts(tmp_path / "ref.trn")
    res = subprocess.run(["asr", "score", "--ref", str(tmp_path / "ref.trn"), "--hyp", str(tmp_path / "hyp.trn"),
                          "--json"], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout)["summary"]["wer"] == 0.0


def test_small_files_cannot_exhaust_memory(tmp_path, tiny_model):
    """A 5-KB checkpoint that claims hidden=60000, a YAML alias bomb, a 220k-word line pair."""
    import torch

    from asr.checkpoint import CheckpointError, load_checkpoint
    from asr.config import ConfigError
    from asr.recipe import load_config
    from asr.score import ScoreError, error_rates

    payload = model_payload(tiny_model, FeatureConfig(), CharTokenizer())
    payload["model_config"]["hidden"] = 60000
    torch.save(payload, tmp_path / "big.pt")
    with pytest.raises(CheckpointError, match=r"big.pt.*hidden"):
        load_checkpoint(tmp_path / "big.pt")
    payload["model_config"]["hidden"] = 64                    # plausible, but not the file's tensors
    torch.save(payload, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match=r"wrong.pt: tensor layers.0.fwd.weight_ih_l0 has shape"):
        load_checkpoint(tmp_path / "wrong.pt")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")) + "name: *i\n"
    (tmp_path / "bomb.yaml").write_text(bomb)
    with pytest.raises(ConfigError, match="YAML aliases"):
        load_config(tmp_path / "bomb.yaml")
    long_ref, long_hyp = " ".join(["one"] * 220_000), " ".join(["two"] * 220_000)
    with pytest.raises(ScoreError, match="'u1'.*too long to align"):
        error_rates({"u1": long_ref}, {"u1": long_hyp})


def test_bad_overrides_are_one_line_errors(tmp_path):
    from asr.config import ConfigError, parse_override
    from asr.recipe import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    with pytest.raises(ConfigError, match="'name' is not a section"):
        load_config(cfg, dict([parse_override("name.x=1")]))
    with pytest.raises(ConfigError, match="not a YAML value"):
        parse_override("train.epochs=[1, 2")
    for bad in ("train.max_minutes=-1", "train.warmup_steps=-5", "augment.gain_db=-3", "train.max_batch_frames=-10"):
        with pytest.raises(ConfigError):
            load_config(cfg, dict([parse_override(bad)]))


# ---------------------------------------------------------------- archives
def _tar(path, members):
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name, kind="file", data=b"x", link=""):
    import tarfile

    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                 "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info.linkname = link
    info.size = len(data) if kind == "file" else 0
    return info, data if kind == "file" else None


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("members, reason", [
    ([_member("a", "sym", link="."), _member("a/a/a/b", "sym", link="../../../.."), _member("a/a/a/b/evil")],
     "symlink"),                                                           # a chain of links up and out
    ([_member("up", "sym", link=".."), _member("up/evil")], "symlink"),    # `..` through a link
    ([_member("d", "dir"), _member("d/" + "x" * 300)], "too long"),       # one component over NAME_MAX
    ([_member("/".join(["y" * 200] * 25))], "too long"),                   # the whole path over PATH_MAX
    ([_member("passwd", "hard", link="/etc/passwd")], "hard link"),
    ([_member("h", "hard", link="later"), _member("later")], "hard link"),
    ([_member("null", "chr")], "device"),
    ([_member("pipe", "fifo")], "device or FIFO"),
    ([_member("ok"), _member("../../evil")], "escapes"),
])
def test_unsafe_archives_write_nothing(tmp_path, members, reason):
    from asr.corpora.download import UnsafeArchiveError, safe_extract

    archive = _tar(tmp_path / "evil.tar", members)
    dest = tmp_path / "box" / "dest"
    with pytest.raises(UnsafeArchiveError, match=reason):
        safe_extract(archive, dest)
    assert _tree(tmp_path / "box") == ["dest"]                 # nothing inside or beside the target
    assert _tree(tmp_path) == ["box", "box/dest", "evil.tar"]


def test_hard_links_to_earlier_members_become_copies(tmp_path):
    from asr.corpora.download import safe_extract

    archive = _tar(tmp_path / "ok.tar", [_member("d", "dir"), _member("d/a.txt", data=b"hello"),
                                         _member("d/b.txt", "hard", link="d/a.txt")])
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/d/b.txt").read_bytes() == b"hello" and not (tmp_path / "out/d/b.txt").is_symlink()
    assert (tmp_path / "out/.extracted-ok.tar").exists()


def test_a_symlink_planted_in_the_target_is_not_followed(tmp_path):
    from asr.corpora.download import UnsafeArchiveError, safe_extract

    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data").symlink_to(outside)                       # left there by someone else
    archive = _tar(tmp_path / "a.tar", [_member("data", "dir"), _member("data/x.txt")])
    with pytest.raises(UnsafeArchiveError, match="symlink or file is in the way"):
        safe_extract(archive, dest)
    assert list(outside.iterdir()) == []


def test_fifos_in_manifests_and_as_manifests_do_not_block(tmp_path):
    from asr.data import ManifestError, Utterance, read_manifest, write_manifest

    os.mkfifo(tmp_path / "audio.wav")
    with pytest.raises(AudioError, match="audio.wav.*not a regular file"):
        load_audio(tmp_path / "audio.wav")
    os.mkfifo(tmp_path / "m.jsonl")
    with pytest.raises(ManifestError, match="m.jsonl: not a regular file"):
        read_manifest(tmp_path / "m.jsonl")
    write_manifest([Utterance("u", str(tmp_path / "audio.wav"), 1.0, "one", "s")], tmp_path / "ok.jsonl")
    res = subprocess.run(["asr", "score", "--ref", str(tmp_path / "m.jsonl"), "--hyp", str(tmp_path / "m.jsonl")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "not a regular file" in res.stderr


def test_interrupted_checkpoint_write_leaves_no_temp_file(tmp_path, monkeypatch):
    import torch

    def dies(obj, f):
        open(f, "wb").close()                                  # the temp file exists, empty
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"x": 1}, tmp_path / "best.pt")
    assert list(tmp_path.iterdir()) == []


def test_broken_archives_are_one_clean_error_and_leave_nothing(tmp_path):
    from asr.corpora.download import UnsafeArchiveError, safe_extract

    good = _tar(tmp_path / "t.tar", [_member("a/x.txt", data=b"x" * 5000), _member("a/y.txt")])
    (tmp_path / "cut.tar").write_bytes(good.read_bytes()[:3000])          # truncated mid-member
    clash = _tar(tmp_path / "clash.tar", [_member("a"), _member("a/b.txt")])   # a file, then a folder of that name
    for archive in (tmp_path / "cut.tar", clash, tmp_path / "missing.tar"):
        dest = tmp_path / f"out_{archive.stem}"
        with pytest.raises(UnsafeArchiveError, match=archive.name):
            safe_extract(archive, dest)
        assert not dest.exists() or _tree(dest) == []

import numpy as np
import pytest
import soundfile as sf

from asr.audio import SAMPLE_RATE_HZ, AudioError, check_audio, load_audio, resample



def test_resample_and_mono(wav_dir):
    x = load_audio(wav_dir / "stereo44.wav")
    assert x.ndim == 1 and x.dtype == np.float32
    assert abs(x.size - 0.5 * SAMPLE_RATE_HZ) <= 2
    # a 440 Hz tone stays at 440 Hz after resampling
    spec = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spec) * SAMPLE_RATE_HZ / x.size - 440) < 5


def test_16k_passthrough(wav_dir):
    x = load_audio(wav_dir / "good.wav")
    ref, _ = sf.read(wav_dir / "good.wav", dtype="float32")
    np.testing.assert_allclose(x, ref)


@pytest.mark.parametrize("name,reason", [("empty.wav", "cannot read"), ("junk.wav", "cannot read"),
                                         ("missing.wav", "cannot read")])
def test_bad_files_name_the_file(wav_dir, name, reason):
    with pytest.raises(AudioError, match=rf"{name}.*{reason}"):
        load_audio(wav_dir / name)


def test_bad_signals(tone):
    with pytest.raises(AudioError, match="clip.*NaN"):
        check_audio(np.array([0.0, np.nan], np.float32), 16000, "clip")
    with pytest.raises(AudioError, match="clip.*empty"):
        check_audio(np.zeros(0, np.float32), 16000, "clip")
    with pytest.raises(AudioError, match="clip.*sample rate 100 Hz"):
        check_audio(tone(0.1), 100, "clip")
    with pytest.raises(AudioError, match="clip.*too short"):
        check_audio(tone(0.01), 16000, "clip", min_seconds=0.1)


def test_resample_length(tone):
    assert resample(tone(1.0, 8000), 8000).size == SAMPLE_RATE_HZ


def test_silence_and_length_limits(tmp_path, tone):
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    assert load_audio(tmp_path / "silent.wav").size == 16000          # fine for transcription
    with pytest.raises(AudioError, match=r"silent.wav.*all silence"):
        load_audio(tmp_path / "silent.wav", reject_silence=True)
    sf.write(tmp_path / "long.wav", tone(3.0), 16000)
    with pytest.raises(AudioError, match=r"long.wav.*too long \(3.0 s > 2.0 s\)"):
        load_audio(tmp_path / "long.wav", max_seconds=2.0)


def test_mislabelled_container_is_read_by_content(tmp_path, tone):
    sf.write(tmp_path / "really_flac.wav", tone(0.5), 16000, format="FLAC")
    assert load_audio(tmp_path / "really_flac.wav").size == 8000
    (tmp_path / "text.flac").write_text("this is not audio")
    with pytest.raises(AudioError, match=r"text.flac.*cannot read"):
        load_audio(tmp_path / "text.flac")

"""decode_audio: soundfile + soxr, mono float32, clear errors for bad files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import soundfile as sf

from ser_hf.data.audio import AudioDecodeError, decode_audio, resample


def sine(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


def test_native_rate_matches_soundfile(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, sine(440, 16000), 16000, subtype="PCM_16")
    out = decode_audio(path, None)
    ref, _ = sf.read(path, dtype="float32")
    assert out.dtype == np.float32 and out.ndim == 1
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(decode_audio(path, 16000), ref)  # same rate: no resampling


def test_resample_keeps_pitch_and_duration(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, sine(1000, 22050, 2.0), 22050, subtype="PCM_16")
    out = decode_audio(path, 16000)
    assert out.dtype == np.float32
    assert len(out) == 32000
    assert abs(peak_hz(out, 16000) - 1000) < 2
    assert 0.45 < np.abs(out[1000:-1000]).max() < 0.55  # amplitude kept, no clipping


def test_downsampling_removes_content_above_new_nyquist():
    x = sine(7000, 48000, 1.0)  # above the 4 kHz Nyquist of 8 kHz
    y = resample(x, 48000, 8000)
    assert len(y) == 8000
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 1e-3  # filtered out, not aliased to 1 kHz


def test_stereo_is_averaged_to_mono(tmp_path):
    left = sine(300, 16000)
    stereo = np.stack([left, 0.5 * left], axis=1)
    path = tmp_path / "st.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    out = decode_audio(path, 16000)
    np.testing.assert_allclose(out, 0.75 * left, atol=1e-6)


@pytest.mark.parametrize("fmt,ext", [("FLAC", "flac"), ("MP3", "mp3")])
def test_flac_and_mp3(tmp_path, fmt, ext):
    path = tmp_path / f"a.{ext}"
    sf.write(path, sine(500, 16000), 16000, format=fmt)
    out = decode_audio(path, 8000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 8000) <= 600  # MP3 adds encoder padding
    assert abs(peak_hz(out, 8000) - 500) < 5


def write_good(path, sr=16000):
    sf.write(path, sine(200, sr, 0.5), sr, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    "case,reason",
    [
        ("text", "not a readable audio file"),
        ("empty", "empty file"),
        ("truncated", "truncated"),
        ("header_only", "zero-length"),
        ("missing", "no such file"),
    ],
)
def test_bad_files_raise_audio_decode_error(tmp_path, case, reason):
    path = tmp_path / f"{case}.wav"
    if case == "text":
        path.write_text("this is not audio\n" * 20)
    elif case == "empty":
        path.write_bytes(b"")
    elif case in ("truncated", "header_only"):
        data = write_good(tmp_path / "good.wav").read_bytes()
        path.write_bytes(data[: len(data) // 2] if case == "truncated" else data[:44])
        if case == "header_only":  # a valid header declaring 0 bytes of data
            raw = bytearray(path.read_bytes())
            raw[40:44] = (0).to_bytes(4, "little")
            path.write_bytes(bytes(raw))
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(path, 16000)
    err = info.value
    assert err.path == str(path)
    assert reason in err.reason
    assert str(path) in str(err)
    again = pickle.loads(pickle.dumps(err))  # survives datasets.map worker processes
    assert (again.path, again.reason) == (err.path, err.reason)


def test_truncated_detection_leaves_good_wav_alone(tmp_path):
    path = write_good(tmp_path / "good.wav")
    with open(path, "ab") as fh:  # trailing junk after the data chunk is not truncation
        fh.write(b"LIST\x04\x00\x00\x00abcd")
    assert len(decode_audio(path, 16000)) == 8000


def test_bad_sampling_rate(tmp_path):
    path = write_good(tmp_path / "good.wav")
    with pytest.raises(ValueError, match="sampling_rate"):
        decode_audio(path, 0)


@pytest.mark.parametrize("subtype,channels", [("PCM_16", 1), ("PCM_16", 2), ("PCM_24", 1), ("FLOAT", 2),
                                              ("PCM_U8", 1)])
def test_every_wav_sample_format_decodes_exactly_as_soundfile(tmp_path, subtype, channels):
    # 16-bit PCM takes the scipy.io.wavfile route, the rest soundfile: both must give libsndfile's samples.
    rng = np.random.default_rng(1)
    y = np.clip(0.3 * rng.standard_normal((4000, channels)), -1, 1)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, y, 16000, subtype=subtype)
    expected, _ = sf.read(path, dtype="float32", always_2d=True)
    got = decode_audio(path, None)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected.mean(axis=1) if channels > 1 else expected[:, 0])


def test_real_corpus_wavs_decode_as_soundfile(shared_data):
    files = sorted((shared_data / "emodb" / "wav").glob("*.wav"))[:40] + \
        sorted((shared_data / "crema-d" / "AudioWAV").glob("*.wav"))[:20]
    assert files
    for path in files:
        expected, _ = sf.read(path, dtype="float32", always_2d=True)
        np.testing.assert_array_equal(decode_audio(path, None), expected[:, 0], err_msg=str(path))

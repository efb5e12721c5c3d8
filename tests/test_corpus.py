"""load_corpus: decoding (cached), skipped clips, label sets, speaker splits, data_dir errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ser_hf.data import CorpusDict, SplitInfo, load_corpus
from ser_hf.data import audio as audio_io
from ser_hf.data.labels import COMMON_LABELS, EMODB_LABELS, labels_of
from ser_hf.data.splits import speaker_split


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts decode_audio calls made by load_corpus."""
    calls = []
    real = audio_io.decode_audio

    def counting(path, sampling_rate=16000, **segment):
        calls.append(path)
        return real(path, sampling_rate, **segment)

    monkeypatch.setattr(audio_io, "decode_audio", counting)
    return calls


def test_load_emodb_speaker_split(generated, hf_cache):
    data_dir = generated("emodb")
    corpus = load_corpus("emodb", data_dir, sampling_rate=8000)
    assert isinstance(corpus, CorpusDict) and list(corpus) == ["train", "validation", "test"]
    info = corpus.info
    assert isinstance(info, SplitInfo)
    assert (info.corpus, info.split, info.fold, info.sampling_rate, info.label_set, info.leaky) == (
        "emodb", "speaker", None, 8000, "corpus", False)
    assert info.label_names == EMODB_LABELS and info.skipped == []
    speakers = sorted({p.name[:2] for p in (data_dir / "wav").glob("*.wav")})
    assert info.speakers == speaker_split("emodb", speakers, "speaker")
    assert all(info.speakers[k] for k in ("train", "validation", "test"))
    assert sum(len(corpus[k]) for k in corpus) == len(list((data_dir / "wav").glob("*.wav")))
    for part, ds in corpus.items():
        assert sorted(set(ds["speaker_id"][:])) == info.speakers[part]
        assert ds.features["label"].names == EMODB_LABELS
    assert not set(info.speakers["train"]) & set(info.speakers["test"])
    row = corpus["test"][0]
    assert row["audio"]["sampling_rate"] == 8000
    array = np.asarray(row["audio"]["array"], dtype=np.float32)
    np.testing.assert_allclose(array, audio_io.decode_audio(row["audio"]["path"], 8000), atol=1e-7)
    assert len(array) == round(1.6 * 8000)  # generated clips are 1.6 s
    assert {"age", "text_id", "recognition", "common_label"} <= set(corpus["train"].column_names)
    assert info.to_dict()["speakers"]["test"] == info.speakers["test"]


def test_second_call_reads_the_cache(generated, hf_cache, count_decodes):
    data_dir = generated("emodb")
    first = load_corpus("emodb", data_dir, sampling_rate=8000)
    n = sum(len(first[k]) for k in first)
    assert len(count_decodes) == n
    second = load_corpus("emodb", data_dir, sampling_rate=8000)
    assert len(count_decodes) == n  # nothing decoded again
    assert second["train"]["file"][:] == first["train"]["file"][:]
    assert second["train"][0]["audio"]["array"] == first["train"][0]["audio"]["array"]
    assert {k: v._fingerprint for k, v in second.items()} == {k: v._fingerprint for k, v in first.items()}
    load_corpus("emodb", data_dir, sampling_rate=8000, split="loso", fold=2, label_set="common")
    assert len(count_decodes) == n  # other splits and label sets reuse the decoded cache too
    load_corpus("emodb", data_dir, sampling_rate=4000)
    assert len(count_decodes) == 2 * n  # another rate decodes again


def test_undecodable_clips_are_skipped_and_listed(generated, tmp_path, hf_cache, caplog):
    data_dir = tmp_path / "emodb"
    shutil.copytree(generated("emodb"), data_dir)
    wavs = sorted((data_dir / "wav").glob("*.wav"))
    truncated, empty = wavs[0], wavs[1]
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])  # header intact, data cut off: only decoding notices
    empty.write_bytes(b"")  # the builder notices
    corpus = load_corpus("emodb", data_dir, sampling_rate=8000)
    skipped = {s["file"]: s["reason"] for s in corpus.info.skipped}
    assert set(skipped) == {f"wav/{truncated.name}", f"wav/{empty.name}"}
    assert "truncated" in skipped[f"wav/{truncated.name}"] and "empty" in skipped[f"wav/{empty.name}"]
    kept = {f for k in corpus for f in corpus[k]["file"][:]}
    assert kept == {f"wav/{p.name}" for p in wavs[2:]}
    assert any(truncated.name in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    again = load_corpus("emodb", data_dir, sampling_rate=8000)  # cached: still listed
    assert again.info.skipped == corpus.info.skipped


def test_common_label_set(generated, hf_cache):
    corpus = load_corpus("emodb", generated("emodb"), sampling_rate=8000, label_set="common")
    assert corpus.info.label_names == COMMON_LABELS
    for ds in corpus.values():
        assert ds.features["label"].names == COMMON_LABELS
        assert ds["label"][:] == ds["common_label"][:]
        assert -1 not in ds["label"][:]
    full = load_corpus("emodb", generated("emodb"), sampling_rate=8000)
    boredom = EMODB_LABELS.index("boredom")
    n_boredom = sum(ds["label"][:].count(boredom) for ds in full.values())
    assert n_boredom > 0
    assert sum(len(d) for d in corpus.values()) == sum(len(d) for d in full.values()) - n_boredom


def test_random_split_is_leaky_and_complete(generated, hf_cache):
    corpus = load_corpus("ravdess", generated("ravdess"), split="random", sampling_rate=8000, seed=3)
    assert corpus.info.leaky is True and corpus.info.seed == 3
    files = [f for k in corpus for f in corpus[k]["file"][:]]
    assert len(files) == len(set(files)) == len(list(generated("ravdess").glob("Actor_*/*.wav")))
    assert len(corpus["test"]) > 0 and len(corpus["validation"]) > 0
    assert set(corpus.info.speakers["train"]) & set(corpus.info.speakers["test"])  # leaky by design


def test_crema_d_voice_labels_through_load_corpus(generated, hf_cache):
    corpus = load_corpus("crema_d", generated("crema_d"), sampling_rate=8000, label_source="voice")
    assert corpus.info.label_names == labels_of("crema_d")
    for ds in corpus.values():
        for label, vote in zip(ds["label"][:], ds["voice_vote"][:]):
            assert ds.features["label"].int2str(label) == vote
    speakers = corpus.info.speakers
    assert not (set(speakers["train"]) & set(speakers["validation"])) and not (
        set(speakers["train"]) & set(speakers["test"]))


def test_data_dir_none_says_how_to_pass_it(hf_cache, monkeypatch):
    monkeypatch.delenv("SER_HF_DATA_EMODB", raising=False)
    for empty in (None, ""):
        with pytest.raises(ValueError) as err:
            load_corpus("emodb", empty)
        assert "data.data_dir=" in str(err.value) and "SER_HF_DATA_EMODB" in str(err.value)


def test_data_dir_from_environment(generated, hf_cache, monkeypatch):
    monkeypatch.setenv("SER_HF_DATA_RAVDESS", str(generated("ravdess")))
    corpus = load_corpus("ravdess", None, sampling_rate=8000)
    assert sum(len(d) for d in corpus.values()) == len(list(generated("ravdess").glob("Actor_*/*.wav")))


def test_bad_arguments(generated, tmp_path, hf_cache):
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("timit", tmp_path)
    with pytest.raises(ValueError, match="unknown split 'speakers'.*speaker, loso, kfold, session, manifest, random"):
        load_corpus("emodb", generated("emodb"), split="speakers")
    with pytest.raises(ValueError, match="label_set"):
        load_corpus("emodb", generated("emodb"), label_set="ekman")
    with pytest.raises(ValueError, match="sampling_rate"):
        load_corpus("emodb", generated("emodb"), sampling_rate=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus("emodb", tmp_path / "missing")
    with pytest.raises(TypeError, match="emodb: unknown option.*label_source"):
        load_corpus("emodb", generated("emodb"), label_source="voice")


@pytest.mark.shared_data
def test_real_emodb_speaker_split(shared_data, hf_cache):
    corpus = load_corpus("emodb", shared_data / "emodb", sampling_rate=16000)
    info = corpus.info
    assert info.speakers["test"] == ["12", "14", "15", "16"]
    assert sum(len(d) for d in corpus.values()) == 535 and info.skipped == []
    all_speakers = sorted(s for part in info.speakers.values() for s in part)
    assert all_speakers == ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
    assert not set(info.speakers["train"]) & set(info.speakers["validation"])
    row = corpus["test"][0]
    assert row["audio"]["sampling_rate"] == 16000 and len(row["audio"]["array"]) == 32000  # 2.0 s clips
    assert set(corpus["test"]["speaker_id"][:]) == {"12", "14", "15", "16"}

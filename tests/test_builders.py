"""Corpus builders: layouts, label parsing, metadata joins, skip-and-report, cache fingerprint."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_hf.data.builders import BUILDERS, RAVDESS, CremaD, EmoDB
from ser_hf.data.labels import (
    COMMON_LABELS,
    CREMA_D_CODES,
    CREMA_D_LABELS,
    CREMA_D_VOTE_CODES,
    EMODB_CODES,
    EMODB_LABELS,
    RAVDESS_CODES,
    RAVDESS_LABELS,
    common_label_index,
)


def write_wav(path: Path, seconds: float = 0.1, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


def build(cls, data_dir, cache, **kw):
    builder = cls(data_dir=data_dir, cache_dir=str(cache), **kw)
    builder.download_and_prepare()
    return builder, builder.as_dataset(split="train")


def names(ds, column="label"):
    return [ds.features[column].int2str(i) for i in ds[column][:]]


COMMON_COLUMNS = ["audio", "file", "label", "common_label", "speaker_id", "gender", "file_frames",
                  "file_sampling_rate"]


# ---- EmoDB ------------------------------------------------------------------------------------------


def test_emodb_generated(generated, hf_cache):
    data_dir = generated("emodb")
    wavs = sorted((data_dir / "wav").glob("*.wav"))
    builder, ds = build(EmoDB, data_dir, hf_cache)
    assert len(ds) == len(wavs) > 0
    assert ds.column_names == COMMON_COLUMNS + ["age", "text_id", "version", "recognition", "naturalness"]
    assert ds.features["label"].names == EMODB_LABELS
    assert ds.features["common_label"].names == COMMON_LABELS
    assert ds.features["audio"].decode is False
    assert builder.skipped == [] and builder.excluded == {}
    by_file = {row["file"]: row for row in ds}
    assert sorted(by_file) == [f"wav/{p.name}" for p in wavs]
    for path in wavs:
        row = by_file[f"wav/{path.name}"]
        stem = path.stem
        label = EMODB_CODES[stem[5]]
        assert ds.features["label"].int2str(row["label"]) == label
        assert row["common_label"] == common_label_index("emodb", label)
        assert (row["speaker_id"], row["text_id"], row["version"]) == (stem[:2], stem[2:5], stem[6])
        assert row["audio"] == {"path": str(path.resolve()), "bytes": None}
    # speaker table of the corpus documentation
    first = next(r for r in ds if r["speaker_id"] == "03")
    assert (first["gender"], first["age"]) == ("male", 31)
    # boredom has no common counterpart
    boredom = [r for r in ds if r["label"] == EMODB_LABELS.index("boredom")]
    assert boredom and all(r["common_label"] == -1 for r in boredom)
    # perception test joined from erkennung.txt (Latin-1, comma decimals)
    listed = {}
    for line in (data_dir / "erkennung.txt").read_text(encoding="latin-1").splitlines()[1:]:
        fields = line.split()
        listed[fields[1]] = (float(fields[2].replace(",", ".")), float(fields[3].replace(",", ".")))
    for path in wavs:
        row = by_file[f"wav/{path.name}"]
        if path.name in listed:
            assert (row["recognition"], row["naturalness"]) == pytest.approx(listed[path.name], abs=1e-4)
        else:
            assert math.isnan(row["recognition"]) and math.isnan(row["naturalness"])


def test_emodb_bad_files_are_skipped_and_reported(tmp_path, hf_cache, caplog):
    root = tmp_path / "emodb"
    write_wav(root / "wav" / "03a01Fa.wav")
    write_wav(root / "wav" / "16b10Tc.wav")
    write_wav(root / "wav" / "notes.wav")  # bad name
    write_wav(root / "wav" / "99a01Fa.wav")  # unknown speaker
    write_wav(root / "wav" / "03a01Xa.wav")  # unknown emotion letter
    (root / "wav" / "08a02Wb.wav").write_bytes(b"")  # empty
    (root / "wav" / "09a03Nc.wav").write_text("not audio at all\n" * 10)  # text renamed .wav
    (root / "wav" / "readme.txt").write_text("not an audio file, ignored")
    with caplog.at_level(logging.WARNING):
        builder, ds = build(EmoDB, root, hf_cache)
    assert sorted(ds["file"][:]) == ["wav/03a01Fa.wav", "wav/16b10Tc.wav"]
    reasons = {s["file"]: s["reason"] for s in builder.skipped}
    assert set(reasons) == {"wav/notes.wav", "wav/99a01Fa.wav", "wav/03a01Xa.wav", "wav/08a02Wb.wav",
                            "wav/09a03Nc.wav"}
    assert "SSTTTEV" in reasons["wav/notes.wav"]
    assert "unknown speaker '99'" in reasons["wav/99a01Fa.wav"]
    assert "emotion letter 'X'" in reasons["wav/03a01Xa.wav"]
    assert "empty" in reasons["wav/08a02Wb.wav"]
    assert "unreadable audio header" in reasons["wav/09a03Nc.wav"]
    for file in reasons:
        assert any(file in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert any("skipped 5 files" in r.getMessage() for r in caplog.records)
    # no erkennung.txt: perception columns are NaN
    assert all(math.isnan(v) for v in ds["recognition"][:])
    # the skip report survives a cache hit (read back, not re-scanned)
    again = EmoDB(data_dir=root, cache_dir=str(hf_cache))
    again.download_and_prepare()
    assert again._report is None
    assert again.skipped == builder.skipped


def test_builders_leave_their_modules_unpatched(tmp_path, hf_cache):
    # datasets patches a builder's module for remote streaming (Path -> xPath, open -> fsspec); ours read
    # local folders only and opt out, which keeps the scan fast and Path a plain pathlib.Path.
    import pathlib

    import ser_hf.data.builders._common as common
    import ser_hf.data.builders.emodb as emodb_module

    root = tmp_path / "emodb"
    (root / "wav").mkdir(parents=True)
    sf.write(root / "wav" / "03a01Fa.wav", np.zeros(1600, dtype=np.float32), 16000)
    builder = EmoDB(data_dir=root, cache_dir=str(hf_cache))
    builder.download_and_prepare()
    assert common.Path is pathlib.Path and emodb_module.Path is pathlib.Path
    ds = builder.as_dataset(split="train")  # the header's length and rate, recorded at scan time
    assert ds["file_frames"][:] == [1600] and ds["file_sampling_rate"][:] == [16000]
    assert getattr(common, "open", open) is open  # not fsspec's xopen


def test_fingerprint_rebuilds_when_files_change(tmp_path, hf_cache):
    root = tmp_path / "emodb"
    write_wav(root / "wav" / "03a01Fa.wav")
    first, ds1 = build(EmoDB, root, hf_cache)
    same, _ = build(EmoDB, str(root) + os.sep, hf_cache)  # same folder spelled differently
    assert same.config.fingerprint == first.config.fingerprint
    assert same.cache_dir == first.cache_dir
    write_wav(root / "wav" / "08a02Wb.wav")
    grown, ds2 = build(EmoDB, root, hf_cache)
    assert grown.config.fingerprint != first.config.fingerprint
    assert grown.cache_dir != first.cache_dir
    assert (len(ds1), len(ds2)) == (1, 2)
    # editing a metadata file (same names) also invalidates
    (root / "erkennung.txt").write_text("Nr.\tSatz\terkannt\tnatuerlich\n1\t03a01Fa.wav\t50,00\t60,00\n", "latin-1")
    edited, ds3 = build(EmoDB, root, hf_cache)
    assert edited.config.fingerprint != grown.config.fingerprint
    assert ds3.filter(lambda f: f == "wav/03a01Fa.wav", input_columns="file")[0]["recognition"] == 50.0


def test_flat_emodb_layout(tmp_path, hf_cache):
    write_wav(tmp_path / "03a01Fa.wav")
    _, ds = build(EmoDB, tmp_path, hf_cache)
    assert ds["file"][:] == ["03a01Fa.wav"]


# ---- RAVDESS ----------------------------------------------------------------------------------------


def test_ravdess_generated(generated, hf_cache):
    data_dir = generated("ravdess")
    wavs = sorted(data_dir.glob("Actor_*/*.wav"))
    builder, ds = build(RAVDESS, data_dir, hf_cache)
    assert len(ds) == len(wavs) > 0
    assert ds.column_names == COMMON_COLUMNS + ["intensity", "statement", "repetition"]
    assert ds.features["label"].names == RAVDESS_LABELS
    for row in ds:
        fields = Path(row["file"]).stem.split("-")
        assert row["file"].startswith(f"Actor_{fields[6]}/")
        assert ds.features["label"].int2str(row["label"]) == RAVDESS_CODES[fields[2]]
        assert row["speaker_id"] == fields[6]
        assert row["gender"] == ("male" if int(fields[6]) % 2 else "female")
        assert row["intensity"] == {"01": "normal", "02": "strong"}[fields[3]]
        assert (row["statement"], row["repetition"]) == (fields[4], fields[5])
    calm = RAVDESS_LABELS.index("calm")
    assert all(r["common_label"] == -1 for r in ds if r["label"] == calm)


def test_ravdess_flat_layout_and_modality_filter(tmp_path, hf_cache, caplog):
    write_wav(tmp_path / "03-01-05-02-01-01-01.wav")  # angry, strong, actor 01
    write_wav(tmp_path / "03-01-02-01-02-02-12.wav")  # calm, actor 12
    write_wav(tmp_path / "03-02-05-01-01-01-01.wav")  # song: excluded
    write_wav(tmp_path / "03-02-03-01-01-01-12.wav")  # song: excluded
    write_wav(tmp_path / "01-01-05-01-01-01-01.wav")  # audio-video: excluded
    write_wav(tmp_path / "03-01-09-01-01-01-01.wav")  # emotion 09: bad name
    write_wav(tmp_path / "03-01-05-01-01-01.wav")  # six fields: bad name
    write_wav(tmp_path / "Actor_02" / "03-01-04-01-01-01-02.wav")  # Actor folders and flat files mix
    write_wav(tmp_path / "Actor_02" / "03-01-04-01-01-02-04.wav")  # actor 04 filed under Actor_02
    with caplog.at_level(logging.WARNING):
        builder, ds = build(RAVDESS, tmp_path, hf_cache)
    assert sorted(ds["file"][:]) == [
        "03-01-02-01-02-02-12.wav", "03-01-05-02-01-01-01.wav", "Actor_02/03-01-04-01-01-01-02.wav"]
    row = next(r for r in ds if r["file"] == "03-01-05-02-01-01-01.wav")
    assert (row["intensity"], row["speaker_id"], row["gender"]) == ("strong", "01", "male")
    assert ds.features["label"].int2str(row["label"]) == "angry"
    assert dict(zip(ds["speaker_id"][:], ds["gender"][:])) == {"01": "male", "12": "female", "02": "female"}
    assert builder.excluded == {
        "vocal channel 02 (song), not speech 01": 2,
        "modality 01 (audio-video), not audio-only 03": 1,
    }
    assert sorted(s["file"] for s in builder.skipped) == [
        "03-01-05-01-01-01.wav", "03-01-09-01-01-01-01.wav", "Actor_02/03-01-04-01-01-02-04.wav"]
    assert any("left out 3 clips by design" in r.getMessage() for r in caplog.records)


# ---- CREMA-D ----------------------------------------------------------------------------------------


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_crema_d_generated_metadata_join(generated, hf_cache):
    data_dir = generated("crema_d")
    wavs = sorted((data_dir / "AudioWAV").glob("*.wav"))
    builder, ds = build(CremaD, data_dir, hf_cache)
    assert len(ds) == len(wavs) > 0
    assert ds.column_names == COMMON_COLUMNS + [
        "sentence", "level", "age", "race", "ethnicity", "voice_vote", "voice_level"]
    assert ds.features["label"].names == CREMA_D_LABELS
    people = {r["ActorID"]: r for r in read_csv(data_dir / "VideoDemographics.csv")}
    votes = {r["FileName"]: r for r in read_csv(data_dir / "processedResults" / "summaryTable.csv")}
    for row in ds:
        actor, sentence, emotion, level = Path(row["file"]).stem.split("_")
        assert ds.features["label"].int2str(row["label"]) == CREMA_D_CODES[emotion]
        assert (row["speaker_id"], row["sentence"], row["level"]) == (actor, sentence, level)
        person = people[actor]
        assert (row["gender"], row["age"], row["race"], row["ethnicity"]) == (
            person["Sex"].lower(), int(person["Age"]), person["Race"], person["Ethnicity"])
        vote = votes[Path(row["file"]).stem]
        assert row["voice_vote"] == ":".join(CREMA_D_VOTE_CODES[v] for v in vote["VoiceVote"].split(":"))
        if ":" in vote["VoiceVote"]:
            assert math.isnan(row["voice_level"])
        else:
            assert row["voice_level"] == pytest.approx(float(vote["VoiceLevel"]), abs=1e-3)


def test_crema_d_voice_labels(generated, hf_cache):
    data_dir = generated("crema_d")
    votes = {r["FileName"]: r["VoiceVote"] for r in read_csv(data_dir / "processedResults" / "summaryTable.csv")}
    stems = [p.stem for p in (data_dir / "AudioWAV").glob("*.wav")]
    ties = sum(":" in votes[s] for s in stems)
    assert ties > 0  # the generated corpus has tied votes to drop
    builder, ds = build(CremaD, data_dir, hf_cache, label_source="voice")
    assert builder.excluded == {"tied voice-only vote": ties}
    assert len(ds) == len(stems) - ties
    for row in ds:
        assert ds.features["label"].int2str(row["label"]) == CREMA_D_VOTE_CODES[votes[Path(row["file"]).stem]]
    acted, _ = build(CremaD, data_dir, hf_cache)
    assert acted.cache_dir != builder.cache_dir  # label_source is part of the cache key


def test_crema_d_flat_without_metadata(tmp_path, hf_cache):
    write_wav(tmp_path / "1001_DFA_ANG_XX.wav")
    write_wav(tmp_path / "1091_IEO_SAD_HI.wav")
    write_wav(tmp_path / "1001_XYZ_ANG_XX.wav")  # unknown sentence
    write_wav(tmp_path / "1001_DFA_ANG_ZZ.wav")  # unknown level
    builder, ds = build(CremaD, tmp_path, hf_cache)
    assert sorted(ds["file"][:]) == ["1001_DFA_ANG_XX.wav", "1091_IEO_SAD_HI.wav"]
    assert len(builder.skipped) == 2
    assert set(ds["gender"][:]) == {""} and set(ds["age"][:]) == {-1}
    assert set(ds["voice_vote"][:]) == {""} and all(math.isnan(v) for v in ds["voice_level"][:])
    with pytest.raises(FileNotFoundError, match="summaryTable.csv"):
        CremaD(data_dir=tmp_path, cache_dir=str(hf_cache), label_source="voice")
    with pytest.raises(ValueError, match="label_source"):
        CremaD(data_dir=tmp_path, cache_dir=str(hf_cache), label_source="face")


# ---- bad data_dir -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - {"manifest", "folder"}))  # those: tests/test_user_data.py
def test_missing_and_empty_data_dir(name, tmp_path, hf_cache):
    cls = BUILDERS[name]
    with pytest.raises(ValueError, match="no data_dir given"):
        cls(data_dir=None, cache_dir=str(hf_cache))
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        cls(data_dir=tmp_path / "nope", cache_dir=str(hf_cache))
    assert str(tmp_path / "nope") in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        cls(data_dir=empty, cache_dir=str(hf_cache))
    message = str(err.value)
    assert "found 0 audio files" in message and "empty folder" in message and str(empty) in message
    example = {"emodb": "wav/03a01Fa.wav", "ravdess": "Actor_01/03-01-05", "crema_d": "AudioWAV/1001_DFA_ANG_XX",
               "iemocap": "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav",
               "msp_podcast": "Audios/MSP-PODCAST_0001_0008.wav", "tess": "OAF_angry/OAF_back_angry.wav",
               "savee": "DC/a01.wav", "emovo": "f1/rab-f1-b1.wav"}
    assert example[name] in message


def test_wrong_level_data_dir_points_to_the_files(tmp_path, hf_cache):
    write_wav(tmp_path / "download" / "emodb" / "wav" / "03a01Fa.wav")
    with pytest.raises(FileNotFoundError) as err:
        EmoDB(data_dir=tmp_path, cache_dir=str(hf_cache))
    assert "download/" in str(err.value) and "download/emodb/wav/03a01Fa.wav" in str(err.value)


# ---- real corpora -----------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_emodb(shared_data, hf_cache):
    builder, ds = build(EmoDB, shared_data / "emodb", hf_cache)
    assert len(ds) == 535 and builder.skipped == []
    assert sorted(set(names(ds))) == sorted(EMODB_LABELS)
    genders = dict(zip(ds["speaker_id"][:], ds["gender"][:]))
    assert genders == {"03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
                       "12": "male", "13": "female", "14": "female", "15": "male", "16": "female"}
    row = ds.filter(lambda f: f == "wav/03a01Fa.wav", input_columns="file")[0]
    assert (row["recognition"], row["naturalness"], row["age"]) == (90.0, 75.0, 31)
    assert not any(math.isnan(v) for v in ds["recognition"][:])  # every clip is in erkennung.txt


@pytest.mark.shared_data
def test_real_ravdess(shared_data, hf_cache):
    builder, ds = build(RAVDESS, shared_data / "ravdess", hf_cache)
    assert len(ds) == 118 and builder.skipped == [] and builder.excluded == {}
    assert Counter(ds["speaker_id"][:]) == {"01": 58, "02": 60}
    assert set(names(ds)) == set(RAVDESS_LABELS)


@pytest.mark.shared_data
def test_real_crema_d(shared_data, hf_cache):
    builder, ds = build(CremaD, shared_data / "crema-d", hf_cache)
    assert len(ds) == 150 and builder.skipped == []
    assert set(ds["speaker_id"][:]) == {"1001", "1002", "1003"}
    assert set(names(ds)) == {"anger", "disgust", "fear", "happy", "sad"}
    row = ds.filter(lambda f: f == "AudioWAV/1001_DFA_ANG_XX.wav", input_columns="file")[0]
    assert (row["gender"], row["age"], row["race"], row["ethnicity"]) == ("male", 51, "Caucasian", "Not Hispanic")
    assert (row["voice_vote"], round(row["voice_level"], 2)) == ("anger", 47.33)
    assert dict(zip(ds["speaker_id"][:], ds["gender"][:])) == {"1001": "male", "1002": "female", "1003": "female"}
    assert all(v for v in ds["voice_vote"][:])  # every clip has a voice vote
    voice, vds = build(CremaD, shared_data / "crema-d", hf_cache, label_source="voice")
    ties = sum(":" in v for v in ds["voice_vote"][:])
    assert voice.excluded == {"tied voice-only vote": ties} and len(vds) == 150 - ties
    assert "neutral" in names(vds)  # raters hear neutral where actors acted something else

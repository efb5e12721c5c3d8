"""Your own data: manifest and folder corpora, bad manifests named by line, and the EmoDB equality test."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from ser_hf.config import load_config
from ser_hf.data import load_corpus
from ser_hf.data.synthetic import FOLDER_SPEAKER_REGEX, generate_corpus

CHEAP = ["trainer.progress_bar=false", "trainer.log_with=null"]
COMMON = ["angry", "disgust", "fear", "happy", "neutral", "sad"]


def write_wav(path, seconds=0.5, sr=16000, freq=220.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def gen_manifest(tmp_path_factory):
    return generate_corpus("manifest", tmp_path_factory.mktemp("manifest"), speakers=6, per_class=2) / "manifest.csv"


def test_generated_manifest_speaker_split_labels_and_dimensions(gen_manifest, hf_cache):
    ds = load_corpus("manifest", None, manifest=str(gen_manifest))
    assert ds.info.label_names == COMMON  # sorted
    assert ds.info.speakers == {"train": ["spk04", "spk05"], "validation": ["spk02", "spk03"],
                                "test": ["spk01", "spk06"]}
    assert not ds.info.leaky and all(len(ds[k]) == 2 * 6 * 2 for k in ds)
    assert set(ds["test"]["gender"]) == {"female", "male"}
    arousal = np.asarray(ds["train"]["arousal"])
    names = [COMMON[i] for i in ds["train"]["label"]]
    assert arousal[[n == "angry" for n in names]].mean() > arousal[[n == "sad" for n in names]].mean() + 1
    # the manifest's own split column; the file itself as data_dir; a given label order
    own = load_corpus("manifest", gen_manifest, split="manifest")
    assert own.info.speakers == ds.info.speakers and not own.info.leaky
    order = ["sad", "neutral", "happy", "fear", "disgust", "angry"]
    ordered = load_corpus("manifest", None, manifest=str(gen_manifest), labels=order)
    assert ordered.info.label_names == order
    assert [order[i] for i in ordered["test"]["label"]] == [COMMON[i] for i in ds["test"]["label"]]
    loso = load_corpus("manifest", None, manifest=str(gen_manifest), split="loso", fold=2)
    assert loso.info.speakers["test"] == ["spk02"]


def test_folder_corpus_with_and_without_speaker_regex(tmp_path, hf_cache, caplog):
    root = generate_corpus("folder", tmp_path / "folder", speakers=6, per_class=2)
    ds = load_corpus("folder", root, speaker_regex=FOLDER_SPEAKER_REGEX)
    assert ds.info.label_names == COMMON and not ds.info.leaky
    assert ds.info.speakers["test"] == ["spk01", "spk06"] and len(ds["test"]) == 2 * 6 * 2
    with caplog.at_level(logging.WARNING):
        blind = load_corpus("folder", root)
    assert blind.info.leaky and "no speaker information" in blind.info.leaky_reason
    assert "NO SPEAKER INFORMATION" in caplog.text
    assert sum(len(blind[k]) for k in blind) == 6 * 6 * 2
    with pytest.raises(ValueError, match="needs speaker ids"):
        load_corpus("folder", root, split="loso", fold=1)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        load_corpus("folder", root, speaker_regex="(spk")
    subset = load_corpus("folder", root, speaker_regex=FOLDER_SPEAKER_REGEX, labels=["sad", "angry"])
    assert subset.info.label_names == ["sad", "angry"]
    assert sum("not in data.labels" in s["reason"] for s in subset.info.skipped) == 4 * 6 * 2


def test_bad_manifest_rows_are_skipped_and_named_by_line(tmp_path, hf_cache, caplog):
    for name in ("a", "b", "c", "d"):
        write_wav(tmp_path / "clips" / f"{name}.wav", seconds=1.0)
    (tmp_path / "clips" / "empty.wav").write_bytes(b"")
    rows = [
        "path,label,speaker,gender,start,end,arousal",
        "clips/a.wav,angry,s1,F,,,3.5",          # 2 good
        "clips/b.wav,sad,s2,m,,,",               # 3 good
        "clips/missing.wav,sad,s1,f,,,",         # 4 missing file
        "clips/c.wav,happy,s2,x,,,",             # 5 bad gender
        "clips/c.wav,happy,s2,male,0.8,0.2,",    # 6 end < start
        "clips/a.wav,angry,s1,F,,,",             # 7 duplicate of line 2
        "clips/d.wav,,s1,F,,,",                  # 8 empty label
        "clips/d.wav,sad,,F,,,",                 # 9 empty speaker
        "clips/d.wav,sad,s3,F,,,high",           # 10 arousal not a number
        "clips/empty.wav,sad,s3,F,,,",           # 11 unreadable audio
        "clips/c.wav,happy,s3,female,0.25,0.75,2",  # 12 good segment
        "clips/c.wav,happy,s3,female,0.5,3.0,",  # 13 segment past the end of the file
        "clips/d.wav,sad,s4,male,,,",            # 14 good
    ]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        ds = load_corpus("manifest", None, manifest=str(manifest))
    reasons = {s["line"]: s["reason"] for s in ds.info.skipped}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10, 11, 13]
    for line, words in {4: "no such file", 5: "gender 'x'", 6: "end 0.2 is not after start 0.8",
                        7: "duplicate of line 2", 8: "empty label", 9: "empty speaker", 10: "arousal 'high'",
                        11: "empty file", 13: "past the end"}.items():
        assert words in reasons[line] and f"m.csv line {line}" in reasons[line], (line, reasons[line])
    assert "line 6" in caplog.text
    everything = {f: (a, n) for part in ds.values()
                  for f, a, n in zip(part["file"], part["audio"], part["arousal"])}
    assert sorted(everything) == ["clips/a.wav", "clips/b.wav", "clips/c.wav@0.250-0.750", "clips/d.wav"]
    segment = everything["clips/c.wav@0.250-0.750"][0]["array"]
    assert len(segment) == 8000  # 0.5 s at 16 kHz, cut from the 1 s file
    whole = sf.read(tmp_path / "clips" / "c.wav", dtype="float32")[0]
    np.testing.assert_array_equal(segment, whole[4000:12000])
    assert everything["clips/a.wav"][1] == 3.5 and np.isnan(everything["clips/b.wav"][1])
    assert ds.info.label_names == ["angry", "happy", "sad"]


def test_bad_manifests_fail_naming_the_problem(tmp_path, hf_cache):
    write_wav(tmp_path / "a.wav")
    bad = tmp_path / "nolabel.csv"
    bad.write_text("path,speaker\na.wav,s1\n")
    with pytest.raises(ValueError, match=r"nolabel.csv: missing required column\(s\) label"):
        load_corpus("manifest", None, manifest=str(bad))
    with pytest.raises(ValueError, match="no manifest file given"):
        load_corpus("manifest", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus("manifest", None, manifest=str(tmp_path / "nope.csv"))
    tsv = tmp_path / "clips.tsv"
    tsv.write_text("path\tlabel\nmissing.wav\tsad\n")
    with pytest.raises(ValueError, match="no usable row.*clips.tsv line 2: no such file"):
        load_corpus("manifest", None, manifest=str(tsv))
    nosplit = tmp_path / "nosplit.csv"
    nosplit.write_text("path,label,speaker\na.wav,sad,s1\n" + "".join(
        f"{write_wav(tmp_path / f'x{i}.wav').name},{'sad' if i % 2 else 'angry'},s{i % 3}\n" for i in range(6)))
    with pytest.raises(ValueError, match="needs a 'split' column"):
        load_corpus("manifest", None, manifest=str(nosplit), split="manifest")
    with pytest.raises(ValueError, match="unknown label 'sad'"):
        load_corpus("manifest", None, manifest=str(nosplit), labels=["happy"])


def test_manifest_without_speakers_is_marked_in_every_output(tmp_path, monkeypatch):
    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    src = generate_corpus("manifest", tmp_path / "gen", speakers=4, per_class=2)
    lines = (src / "manifest.csv").read_text().splitlines()
    (src / "nospk.csv").write_text("\n".join(",".join(l.split(",")[:2]) for l in lines) + "\n")
    out = run(load_config(["recipe=svm_stats_emodb", "data.corpus=manifest", f"data.manifest={src / 'nospk.csv'}",
                           f"data.cache_dir={tmp_path / 'ds'}", f"output_dir={tmp_path / 'run'}", *CHEAP]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["leaky"] is True and "no speaker information" in metrics["leaky_reason"]
    report = (out / "classification_report.txt").read_text()
    assert "NOT SPEAKER-INDEPENDENT" in report and "NOT speaker-independent" in report
    assert "NOT SPEAKER-INDEPENDENT" in (out / "model" / "README.md").read_text()


def _emodb_manifest(emodb, out):
    from ser_hf.data.builders.emodb import NAME, SPEAKERS
    from ser_hf.data.labels import EMODB_CODES

    rows = ["path,label,speaker,gender"]
    for wav in sorted((emodb / "wav").glob("*.wav")):
        m = NAME.match(wav.stem)
        rows.append(f"{wav.relative_to(emodb).as_posix()},{EMODB_CODES[m['emotion']]},{m['speaker']},"
                    f"{SPEAKERS[m['speaker']][0]}")
    (out / "emodb.csv").write_text("\n".join(rows) + "\n")
    return out / "emodb.csv"


def _equal_folds(shared_data, tmp_path, monkeypatch, folds):
    """The manifest of the shared EmoDB copy gives the emodb builder's LOSO folds: same speakers, same macro-F1."""
    import shutil

    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    emodb = shared_data / "emodb"
    manifest = _emodb_manifest(emodb, tmp_path)
    # The manifest sits outside the corpus folder: its paths are absolute.
    text = manifest.read_text().replace("wav/", f"{emodb}/wav/")
    manifest.write_text(text)
    common = ["recipe=svm_stats_emodb", "data.split=loso", f"data.cache_dir={tmp_path / 'ds'}", *CHEAP]
    for fold in folds:
        a = run(load_config([*common, f"data.fold={fold}", f"data.data_dir={emodb}",
                             f"output_dir={tmp_path / f'emodb{fold}'}"]))
        b = run(load_config([*common, f"data.fold={fold}", "data.corpus=manifest", f"data.manifest={manifest}",
                             f"output_dir={tmp_path / f'manifest{fold}'}"]))
        ma, mb = (json.loads((x / "metrics.json").read_text()) for x in (a, b))
        assert ma["speakers"] == mb["speakers"], fold
        assert ma["label_names"] == mb["label_names"]
        assert mb["test"]["macro_f1"] == pytest.approx(ma["test"]["macro_f1"], abs=1e-12), fold
        assert mb["test"]["confusion_matrix"] == ma["test"]["confusion_matrix"], fold
        assert ("validation" in ma) == ("validation" in mb)  # classic models train on train+validation
        assert not mb["leaky"]
        print(f"fold {fold}: test {ma['speakers']['test']} macro-F1 emodb {ma['test']['macro_f1']:.4f} "
              f"manifest {mb['test']['macro_f1']:.4f}")
        shutil.rmtree(a / "model"), shutil.rmtree(b / "model")


@pytest.mark.shared_data
def test_emodb_manifest_equals_emodb_builder_two_folds(shared_data, tmp_path, monkeypatch):
    _equal_folds(shared_data, tmp_path, monkeypatch, folds=[1, 7])


@pytest.mark.slow
@pytest.mark.shared_data
def test_emodb_manifest_equals_emodb_builder_every_fold(shared_data, tmp_path, monkeypatch):
    _equal_folds(shared_data, tmp_path, monkeypatch, folds=range(1, 11))


def ccc(a, b):
    return 2 * np.cov(a, b, bias=True)[0, 1] / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)


def test_generated_dimensions_follow_the_audio(tmp_path, hf_cache):
    """A/V/D of the generated corpora are predictable from the audio on held-out speakers (ridge on statistics)."""
    from datasets import concatenate_datasets
    from sklearn.linear_model import RidgeCV

    from ser_hf.features import FeatureConfig, extract

    data_dir = generate_corpus("manifest", tmp_path / "m", speakers=8, per_class=4)
    ds = load_corpus("manifest", None, manifest=str(data_dir / "manifest.csv"))
    cfg = FeatureConfig(kind="stats", n_fft=512, hop_length=160, n_mels=40, n_mfcc=20)

    def xy(part):
        x = np.stack([extract(a["array"], 16000, cfg) for a in part["audio"]])
        spk = np.asarray(part["speaker_id"])
        for s in set(spk):  # per-speaker normalisation: the ratings are relative to each speaker's voice
            x[spk == s] = (x[spk == s] - x[spk == s].mean(0)) / (x[spk == s].std(0) + 1e-6)
        return x, np.stack([part[k] for k in ("arousal", "valence", "dominance")], 1)

    x_train, y_train = xy(concatenate_datasets([ds["train"], ds["validation"]]))
    x_test, y_test = xy(ds["test"])
    pred = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(x_train, y_train).predict(x_test)
    scores = [ccc(pred[:, i], y_test[:, i]) for i in range(3)]
    assert min(scores) > 0.5, scores

"""Generated corpora: exact layouts and names, metadata formats, determinism, and learnability."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_hf.data.labels import CREMA_D_CODES, EMODB_CODES, RAVDESS_CODES
from ser_hf.data.splits import EMODB_GENDERS, speaker_split
from ser_hf.data.synthetic import CREMA_D_GENDERS, generate_corpus, main, speaker_order

EMODB_NAME = re.compile(r"^(\d{2})(a01|a02|a04|a05|a07|b01|b02|b03|b09|b10)([WLEAFTN])([a-f])\.wav$")
RAVDESS_NAME = re.compile(r"^03-01-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d{2})\.wav$")
CREMA_D_NAME = re.compile(
    r"^(10\d\d)_(IEO|TIE|IOM|IWW|TAI|MTI|IWL|ITH|DFA|ITS|TSI|WSI)_(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|MD|HI|XX)\.wav$")
CREMA_D_HEADERS = {
    "VideoDemographics.csv": '"ActorID","Age","Sex","Race","Ethnicity"',
    "SentenceFilenames.csv": '"Stimulus_Number","Filename"',
    "processedResults/summaryTable.csv":
        '"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote","MultiModalLevel"',
}


def wavs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.wav"))


def check_audio(path: Path, sampling_rate=16000, duration_s=1.6):
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (sampling_rate, 1, "PCM_16", "WAV")
    assert info.frames == round(sampling_rate * duration_s)
    x, _ = sf.read(path)
    assert 0.005 < np.sqrt(np.mean(x**2)) and np.abs(x).max() < 0.995  # audible, not clipped


# --- layouts ------------------------------------------------------------------------------------------


def test_emodb_layout_names_and_erkennung(generated):
    root = generated("emodb")  # 4 speakers x 7 emotions x 2
    files = wavs(root)
    assert {p.parent for p in files} == {root / "wav"}
    parsed = [EMODB_NAME.match(p.name) for p in files]
    assert all(parsed), [p.name for p, m in zip(files, parsed) if not m]
    counts = Counter((m[1], m[3]) for m in parsed)
    speakers = sorted({m[1] for m in parsed})
    assert speakers == sorted(speaker_order("emodb")[:4]) == ["03", "08", "10", "14"]
    assert {EMODB_GENDERS[s] for s in speakers} == {"male", "female"}
    assert counts == Counter({(s, e): 2 for s in speakers for e in EMODB_CODES})
    check_audio(files[0])

    raw = (root / "erkennung.txt").read_bytes()
    assert raw.startswith(b"Nr.\tSatz\terkannt\tnatuerlich\n")
    assert b"\xa0" in raw  # Latin-1 non-breaking-space padding as in the real file
    rows = [line.split("\t") for line in raw.decode("latin-1").splitlines()[1:]]
    assert all(len(r) == 4 for r in rows)
    table = {r[1]: (float(r[2].strip("\xa0 ").replace(",", ".")), float(r[3].strip("\xa0 ").replace(",", ".")))
             for r in rows}
    assert [int(r[0].strip("\xa0")) for r in rows] == list(range(1, len(rows) + 1))
    assert {p.name for p in files} <= set(table)
    assert len(table) > len(files)  # like the real file, it also lists utterances not in wav/
    assert all(0 <= rec <= 100 and 0 <= nat <= 100 for rec, nat in table.values())


def test_ravdess_layout_names(generated):
    root = generated("ravdess", speakers=2, per_class=8)
    files = wavs(root)
    for p in files:
        m = RAVDESS_NAME.match(p.name)
        assert m, p.name
        assert p.parent.name == f"Actor_{m[5]}"
        assert not (m[1] == "01" and m[2] == "02"), f"{p.name}: neutral has no strong intensity"
    per_actor = Counter(p.parent.name for p in files)
    assert per_actor == {"Actor_01": 60, "Actor_02": 60}  # 4 neutral + 7 x 8, as in the real corpus
    emotions = Counter(RAVDESS_NAME.match(p.name)[1] for p in files)
    assert emotions == {code: (8 if code == "01" else 16) for code in RAVDESS_CODES}
    check_audio(files[0])


def test_crema_d_layout_names_and_metadata(generated):
    root = generated("crema_d", speakers=3, per_class=4)
    files = wavs(root)
    assert {p.parent for p in files} == {root / "AudioWAV"}
    parsed = [CREMA_D_NAME.match(p.name) for p in files]
    assert all(parsed), [p.name for p, m in zip(files, parsed) if not m]
    for m in parsed:
        if m[3] == "NEU" or m[2] != "IEO":
            assert m[4] == "XX", m[0]
    actors = sorted({m[1] for m in parsed})
    assert actors == sorted(speaker_order("crema_d")[:3])
    assert Counter(m[3] for m in parsed) == {code: 12 for code in CREMA_D_CODES}
    check_audio(files[0])

    for name, header in CREMA_D_HEADERS.items():
        assert (root / name).read_text(encoding="utf-8").splitlines()[0] == header, name
    with open(root / "VideoDemographics.csv", newline="") as f:
        demo = list(csv.DictReader(f))
    assert [r["ActorID"] for r in demo] == actors
    assert all(r["Sex"] == CREMA_D_GENDERS[r["ActorID"]].capitalize() and 18 <= int(r["Age"]) <= 80 for r in demo)
    stems = sorted(p.stem for p in files)
    with open(root / "SentenceFilenames.csv", newline="") as f:
        listed = list(csv.DictReader(f))
    assert sorted(r["Filename"] for r in listed) == stems
    assert [int(r["Stimulus_Number"]) for r in listed] == list(range(1, len(stems) + 1))
    with open(root / "processedResults" / "summaryTable.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert sorted(r["FileName"] for r in summary) == stems
    votes = Counter()
    for r in summary:
        assert re.fullmatch(r"[ADFHNS](:[ADFHNS])?", r["VoiceVote"]), r
        assert len(r["VoiceLevel"].split(":")) == len(r["VoiceVote"].split(":"))
        assert all(0 < float(x) <= 100 for x in r["VoiceLevel"].split(":"))
        acted = r["FileName"].split("_")[2][0]
        votes["tie" if ":" in r["VoiceVote"] else "agree" if r["VoiceVote"] == acted else "other"] += 1
    assert votes["agree"] > votes["other"] > 0 and votes["tie"] > 0


@pytest.mark.shared_data
def test_metadata_headers_match_the_real_files(shared_data, generated):
    real_emodb = (shared_data / "emodb" / "erkennung.txt").read_bytes().split(b"\n")[0]
    assert (generated("emodb") / "erkennung.txt").read_bytes().split(b"\n")[0] == real_emodb
    root = generated("crema_d", speakers=3, per_class=4)
    for name in CREMA_D_HEADERS:
        real = (shared_data / "crema-d" / name).read_text(encoding="utf-8").splitlines()
        ours = (root / name).read_text(encoding="utf-8").splitlines()
        assert ours[0] == real[0], name
        # Same quoting of data rows: the same cells are quoted.
        assert [c.startswith('"') for c in ours[1].split(",")] == [c.startswith('"') for c in real[1].split(",")]


# --- speakers and splits ------------------------------------------------------------------------------


@pytest.mark.parametrize("corpus", ["emodb", "ravdess", "crema_d"])
def test_default_speaker_split_of_generated_speakers_is_usable(corpus):
    order = speaker_order(corpus)
    assert len(set(order)) == len(order)
    genders = {s: (EMODB_GENDERS.get(s) or CREMA_D_GENDERS.get(s) or ("male" if int(s) % 2 else "female"))
               for s in order}
    for n in range(2, len(order) + 1):
        out = speaker_split(corpus, order[:n])
        assert out["train"] and out["test"], (n, out)
        if n >= 4:
            assert out["validation"], (n, out)
        if n >= 2 and corpus != "crema_d":
            assert {genders[s] for s in order[:n]} == {"male", "female"}


def test_first_six_ravdess_actors_cover_every_emobox_fold():
    from ser_hf.data.splits import EMOBOX_RAVDESS_FOLDS

    first = speaker_order("ravdess")[:6]
    assert first[:2] == ("01", "02")  # the actors of the shared sample come first
    assert {k for k, actors in EMOBOX_RAVDESS_FOLDS.items() for s in first if s in actors} == set(range(1, 7))


def test_generated_files_give_a_three_way_speaker_split(generated):
    root = generated("emodb")
    speakers = {p.name[:2] for p in wavs(root)}
    out = speaker_split("emodb", speakers)
    assert all(out[k] for k in ("train", "validation", "test")), out


# --- determinism, options, errors ---------------------------------------------------------------------


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    a = tree_bytes(generate_corpus("crema_d", tmp_path / "a", speakers=3, per_class=1, seed=5))
    b = tree_bytes(generate_corpus("crema_d", tmp_path / "b", speakers=3, per_class=1, seed=5))
    c = tree_bytes(generate_corpus("crema_d", tmp_path / "c", speakers=3, per_class=1, seed=6))
    assert a == b and len(a) == 3 * 6 + 3
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".wav"))


def test_sampling_rate_and_duration_options(tmp_path):
    root = generate_corpus("ravdess", tmp_path, speakers=1, per_class=1, sampling_rate=8000, duration_s=0.8)
    for p in wavs(root):
        check_audio(p, sampling_rate=8000, duration_s=0.8)


def test_emotion_drives_prosody(generated):
    """Anger is louder than sadness for every speaker (a direction the learnability test relies on)."""
    root = generated("emodb")

    def rms(path):
        x, _ = sf.read(path)
        return np.sqrt(np.mean(x**2))

    for spk in ("03", "08", "10", "14"):
        anger = np.mean([rms(p) for p in (root / "wav").glob(f"{spk}???Wa.wav")])
        sadness = np.mean([rms(p) for p in (root / "wav").glob(f"{spk}???Ta.wav")])
        assert anger > 2 * sadness, spk


@pytest.mark.parametrize("kw, message", [
    ({"corpus": "emodb", "speakers": 11}, "emodb has 1..10 speakers"),
    ({"corpus": "ravdess", "speakers": 0}, "ravdess has 1..24 speakers"),
    ({"corpus": "crema_d", "speakers": 92}, "crema_d has 1..91 speakers"),
    ({"corpus": "ravdess", "per_class": 9}, "ravdess allows 1..8 clips"),
    ({"corpus": "emodb", "sampling_rate": 4000}, "sampling_rate=4000"),
    ({"corpus": "timit"}, "unknown corpus 'timit'"),
])
def test_bad_arguments_raise_clear_errors(tmp_path, kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_corpus(out_dir=tmp_path, **kw)


def test_cli_prints_counts(tmp_path, capsys):
    assert main(["--corpus", "emodb", "--out", str(tmp_path), "--speakers", "2", "--per-class", "1"]) == 0
    out = capsys.readouterr().out
    assert "14 clips, 2 speakers" in out
    assert re.search(r"^03\s+male(\s+1){7}$", out, re.M), out
    assert len(wavs(tmp_path)) == 14


def test_cli_module_entry_point_rejects_bad_args(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ser_hf.data.synthetic", "--corpus", "emodb", "--out",
                           str(tmp_path), "--speakers", "12"], capture_output=True, text=True)
    assert proc.returncode == 2 and "emodb has 1..10 speakers" in proc.stderr


# --- learnability -------------------------------------------------------------------------------------


def test_emotion_is_learnable_across_speakers(generated):
    """MFCC means + logistic regression, trained on EmoDB training-side speakers, tested on 12, 14, 15, 16."""
    import librosa
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    root = generated("emodb", speakers=10, per_class=4)
    X, y, spk = [], [], []
    # One BLAS thread: on a busy shared machine, threaded small matmuls in librosa are 50x slower.
    with threadpool_limits(1):
        for p in wavs(root):
            x, sr = sf.read(p, dtype="float32")
            X.append(librosa.feature.mfcc(y=x, sr=sr, n_mfcc=20, n_fft=512, hop_length=256, n_mels=40).mean(1))
            y.append(EMODB_CODES[p.name[5]])
            spk.append(p.name[:2])
        X, y, spk = np.array(X), np.array(y), np.array(spk)
        split = speaker_split("emodb", set(spk))
        test = np.isin(spk, split["test"])
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(X[~test], y[~test])
        f1 = f1_score(y[test], clf.predict(X[test]), average="macro")
    assert sorted(set(spk[test])) == ["12", "14", "15", "16"]
    assert f1 > 0.6, f"macro-F1 {f1:.3f} on held-out speakers (chance is 0.14)"

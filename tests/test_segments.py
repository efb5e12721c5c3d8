"""Long recordings: VAD / window segments, per-segment rows, outputs, block reading."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_hf.inference import load_for_inference
from ser_hf.segments import (
    SegmentSettings,
    segment_file,
    stream_blocks,
    window_spans,
    write_outputs,
)

SR = 16000
RECORDING_SPEAKER = "12"
TRAIN_SPEAKERS = ("03", "08", "09", "10", "11", "13", "14", "15", "16")


@pytest.fixture(scope="module")
def emodb_model(shared_data, tmp_path_factory):
    """A small classic model trained on four EmoDB speakers (MFCC/prosody statistics, logistic regression)."""
    from ser_hf.data.audio import decode_audio
    from ser_hf.features import FeatureConfig, extract
    from ser_hf.models.classic import ClassicClassifier

    wavs = sorted((shared_data / "emodb" / "wav").glob("*.wav"))
    train = [p for p in wavs if p.name[:2] in TRAIN_SPEAKERS]
    labels = sorted({p.name[5] for p in train})
    # trim_db: the model trims leading/trailing quiet parts itself, as the RAVDESS recipes do
    fcfg = FeatureConfig(kind="stats", sampling_rate=SR, trim_db=30, n_mfcc=13, n_mels=40, n_fft=512, hop_length=256,
                         stats=("mean", "std"))
    X = np.stack([extract(decode_audio(p, SR), SR, fcfg) for p in train])
    y = np.array([labels.index(p.name[5]) for p in train])
    out = tmp_path_factory.mktemp("emodb_clf")
    clf = ClassicClassifier("logistic_regression", id2label=labels).fit(X, y)
    clf.save_pretrained(out)
    fcfg.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def recording(shared_data, tmp_path_factory):
    """EmoDB clips of one speaker, trimmed (top_db=30), joined by 1-2 s of -60 dBFS noise."""
    import librosa

    root = tmp_path_factory.mktemp("recording")
    wavs = sorted((shared_data / "emodb" / "wav").glob(f"{RECORDING_SPEAKER}*.wav"))
    picked, seen = [], set()
    for p in wavs:  # one clip per emotion, in file order
        if p.name[5] not in seen:
            seen.add(p.name[5])
            picked.append(p)
    rng = np.random.default_rng(0)
    sr = sf.info(picked[0]).samplerate
    noise = lambda seconds: (1e-3 * rng.standard_normal(int(seconds * sr))).astype(np.float32)
    parts, spans, clips, t = [noise(1.0)], [], [], 1.0
    for i, p in enumerate(picked):
        y, file_sr = sf.read(p, dtype="float32")
        assert file_sr == sr
        y, _ = librosa.effects.trim(y, top_db=30)
        clip = root / f"clip{i}_{p.name}"
        sf.write(clip, y, sr)
        clips.append(clip)
        spans.append((t, t + len(y) / sr))
        gap = float(rng.uniform(1.0, 2.0))
        parts += [y, noise(gap)]
        t += len(y) / sr + gap
    path = root / "recording.wav"
    sf.write(path, np.concatenate(parts), sr)
    return path, spans, clips


def test_vad_finds_one_segment_per_clip_labelled_like_the_clip_alone(emodb_model, recording):
    path, spans, clips = recording
    pred = load_for_inference(emodb_model)
    result = segment_file(pred, path, SegmentSettings(mode="vad", min_silence_s=0.5))
    rows = result["rows"]
    found = [(r["start"], r["end"]) for r in rows]
    assert len(rows) == len(spans), (found, spans)
    for (start, end), (a, b) in zip(found, spans):
        assert abs(start - a) <= 0.25 and abs(end - b) <= 0.25, (found, spans)
    alone = pred.predict_files(clips)  # what predict.py prints for each clip alone
    assert [r["label"] for r in rows] == [r["label"] for r in alone]
    assert len({r["label"] for r in rows}) > 2  # the model tells clips apart (not one label everywhere)


@pytest.fixture(scope="module")
def tone_model(tmp_path_factory):
    from ser_hf.features import FeatureConfig, extract
    from ser_hf.models.classic import ClassicClassifier

    fcfg = FeatureConfig(kind="stats", n_mfcc=8, n_mels=32, n_fft=512, hop_length=256, f0=False)
    X = np.stack([extract(_tone(1.0, f), SR, fcfg) for f in (120, 140, 300, 320)])
    out = tmp_path_factory.mktemp("tone_clf")
    clf = ClassicClassifier("logistic_regression", id2label=["low", "high"]).fit(X, np.array([0, 0, 1, 1]))
    clf.save_pretrained(out)
    fcfg.save_pretrained(out)
    return out


def _tone(seconds: float, f0: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


def test_stream_blocks_resample_like_one_shot(tmp_path):
    from ser_hf.data.audio import resample

    y = _tone(7.3, 200, sr=22050)
    sf.write(tmp_path / "a.wav", y, 22050, subtype="FLOAT")
    blocks = list(stream_blocks(tmp_path / "a.wav", SR, block_s=1.0))
    assert len(blocks) >= 8  # read in blocks, not whole
    streamed = np.concatenate(blocks)
    whole = resample(y, 22050, SR)
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    assert np.abs(streamed[100:n - 100] - whole[100:n - 100]).max() < 1e-3


def test_window_mode_rows_outputs_and_summary(tone_model, tmp_path):
    pred = load_for_inference(tone_model)
    y = np.concatenate([_tone(4.0, 130), np.zeros(2 * SR, np.float32), _tone(3.0, 310)])
    sf.write(tmp_path / "rec.wav", y, SR)
    assert window_spans(9.0, 2.0, None)[-1] == (8.0, 9.0)
    result = segment_file(pred, tmp_path / "rec.wav", SegmentSettings(mode="window", window_s=2.0))
    labels = [r["label"] for r in result["rows"]]
    assert labels == ["low", "low", "no speech", "high", "high"]
    assert [(r["start"], r["end"]) for r in result["rows"]][-1] == (8.0, 9.0)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(3 * SR, np.float32), SR)
    quiet = segment_file(pred, silent, SegmentSettings(mode="vad"))
    assert [(r["label"], r["start"], r["end"]) for r in quiet["rows"]] == [("no speech", 0.0, 3.0)]

    write_outputs([result, quiet], pred.label_names, tmp_path / "out")
    rows = list(csv.DictReader(open(tmp_path / "out" / "segments.csv")))
    assert [r["label"] for r in rows] == labels + ["no speech"]
    assert float(rows[0]["p_low"]) + float(rows[0]["p_high"]) == pytest.approx(1.0, abs=1e-5)
    assert json.loads((tmp_path / "out" / "segments.json").read_text())[3]["label"] == "high"
    summary = {s["file"]: s for s in json.loads((tmp_path / "out" / "summary.json").read_text())}
    rec = summary[str(tmp_path / "rec.wav")]
    assert rec["speech_s"] == pytest.approx(7.0) and rec["share"] == {"low": pytest.approx(4 / 7, abs=1e-3),
                                                                      "high": pytest.approx(3 / 7, abs=1e-3)}
    assert summary[str(silent)]["label"] == "no speech"
    for name in ("rec", "silent"):
        png = tmp_path / "out" / f"{name}.timeline.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


def test_predict_script_segments_into_a_folder(tone_model, generated, tmp_path, capsys):
    import importlib.util

    clips = sorted((generated("emodb", speakers=4, per_class=1) / "wav").glob("*.wav"))[:2]  # speech-like audio
    z = np.zeros(SR, np.float32)
    parts = [z]
    for c in clips:
        y, sr = sf.read(c, dtype="float32")
        assert sr == SR
        parts += [y, z]
    sf.write(tmp_path / "rec.wav", np.concatenate(parts), SR)
    spec = importlib.util.spec_from_file_location("predict_script", Path(__file__).resolve().parents[1]
                                                  / "scripts" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main([f"model={tone_model}", f"audio={tmp_path / 'rec.wav'}", "segment=vad",
                        f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1 of 1 file(s) scored, 2 segment(s)" in err
    rows = list(csv.DictReader(open(tmp_path / "out" / "segments.csv")))
    assert len(rows) == 2 and float(rows[0]["start"]) == pytest.approx(1.0, abs=0.25)
    alone = load_for_inference(tone_model).predict_files(clips)
    for row, rec in zip(rows, alone):
        assert float(row["p_low"]) == pytest.approx(rec["scores"]["low"], abs=0.2)
    assert (tmp_path / "out" / "rec.timeline.png").is_file()
    code = module.main([f"model={tone_model}", f"audio={tmp_path / 'rec.wav'}", "segment=vad"])
    out = capsys.readouterr().out
    assert code == 0 and [json.loads(line)["label"] for line in out.splitlines()] == [r["label"] for r in rows]
    assert module.main([f"model={tone_model}", f"audio={tmp_path / 'rec.wav'}", "segment=vads"]) == 2
    assert "segment='vads'" in capsys.readouterr().err


def test_vad_import_keeps_the_thread_count():
    """silero_vad's import sets torch to one thread process-wide; loading the VAD must not (fresh process)."""
    import os
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(2); from ser_hf.segments import _vad_model; _vad_model(); "
            "print(torch.get_num_threads())")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         check=True)
    assert out.stdout.strip() == "2"

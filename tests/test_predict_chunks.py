"""predict: chunked scoring for every family, one clip-averaging function, short/silent files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ser_hf.clips import aggregate_clips, clip_probabilities, log_probabilities, softmax
from ser_hf.inference import load_for_inference

LABELS = ["anger", "happiness", "sadness"]
SR = 16000
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "predict.py"


def _tone(seconds: float, f0: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)  # loudness varies over time, so chunks differ
    return (0.3 * env * np.sin(2 * np.pi * f0 * t * (1 + 0.05 * np.sin(2 * np.pi * 0.1 * t)))
            + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def classic_dir(tmp_path_factory):
    from ser_hf.features import FeatureConfig, extract
    from ser_hf.models.classic import ClassicClassifier

    out = tmp_path_factory.mktemp("clf")
    fcfg = FeatureConfig(kind="stats", n_mfcc=8, n_mels=32, n_fft=512, hop_length=256, f0=False)
    X = np.stack([extract(_tone(1.0, f, seed=i), SR, fcfg) for i, f in enumerate([120, 130, 250, 260, 400, 410])])
    clf = ClassicClassifier("logistic_regression", id2label=LABELS).fit(X, np.array([0, 0, 1, 1, 2, 2]))
    clf.save_pretrained(out)
    fcfg.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory):
    from ser_hf.features import FeatureConfig
    from ser_hf.models import build_baseline

    out = tmp_path_factory.mktemp("cnn")
    fcfg = FeatureConfig(kind="logmel", n_mels=16, n_mfcc=8, n_fft=256, hop_length=128, window_frames=20, window_hop_frames=10)
    torch.manual_seed(0)
    build_baseline("cnn2d", (1, 16, 20), id2label=LABELS).eval().save_pretrained(out)
    fcfg.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """A 10-minute generated recording (pitch drifts, so its chunks are scored differently)."""
    path = tmp_path_factory.mktemp("long") / "ten_minutes.wav"
    t = np.arange(600 * SR) / SR
    f0 = 120 + 280 * (0.5 + 0.5 * np.sin(2 * np.pi * t / 200))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = 0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)) * np.sin(phase)
    y += 0.01 * np.random.default_rng(1).standard_normal(t.size)
    sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")
    return path


def test_one_clip_averaging_function():
    ids = np.array([2, 0, 2, 0, 1])
    logits = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    uniq, probs = clip_probabilities(ids, logits)
    assert uniq.tolist() == [0, 1, 2]
    np.testing.assert_allclose(probs, softmax(np.array([[0.0, 1.0], [5.0, 5.0], [2.0, 0.0]])), atol=1e-7)
    assert softmax(np.zeros((1, 2), np.float32)).dtype == np.float32  # evaluation keeps its float32 path
    # classic models: a single piece's probabilities come back unchanged
    p = np.array([[0.2, 0.5, 0.3]])
    np.testing.assert_allclose(clip_probabilities([0], log_probabilities(p))[1], p, atol=1e-7)
    # the trainer and the predictor share it
    from ser_hf import training

    assert training.aggregate_clips is aggregate_clips


def test_classic_model_scores_a_long_file_in_chunks_with_bounded_memory(classic_dir, long_wav):
    from ser_hf.data.audio import decode_audio
    from ser_hf.features import extract
    from ser_hf.models.transformer import chunk_clip

    pred = load_for_inference(classic_dir)
    tracemalloc.start()
    rec = pred.predict_files([long_wav], chunk_s=10.0, overlap_s=1.0)[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 250e6, f"peak {peak / 1e6:.0f} MB"  # ~190 MB; the old whole-file features: 320 MB traced, 1.2 GB RSS
    x = decode_audio(long_wav, SR)
    chunks = chunk_clip(x, SR, 10.0, 1.0)
    assert len(chunks) == 67
    per_chunk = pred.model.predict_proba(np.stack([extract(c, SR, pred.feature_config) for c in chunks]))
    assert len({int(np.argmax(p)) for p in per_chunk}) > 1  # the chunks really disagree
    expected = softmax(np.log(per_chunk).mean(0))
    np.testing.assert_allclose([rec["scores"][k] for k in LABELS], expected, atol=1e-6)
    whole = pred.model.predict_proba(extract(x, SR, pred.feature_config)[None])[0]
    assert np.abs(expected - whole).max() > 1e-3  # not the old one-vector-per-file answer


def test_baseline_model_scores_a_long_file_in_chunks(baseline_dir, long_wav):
    from ser_hf.data.audio import decode_audio
    from ser_hf.features import extract_windows
    from ser_hf.models.transformer import chunk_clip

    pred = load_for_inference(baseline_dir)
    x = decode_audio(long_wav, SR)[: 30 * SR]
    rec = pred.predict_arrays([x], SR, chunk_s=10.0, overlap_s=1.0)[0]
    chunks = chunk_clip(x, SR, 10.0, 1.0)
    assert len(chunks) == 4
    windows = np.concatenate([extract_windows(c, SR, pred.feature_config) for c in chunks])
    with torch.no_grad():
        logits = pred.model(input_values=torch.from_numpy(windows)).logits.double().mean(0)
    np.testing.assert_allclose([rec["scores"][k] for k in LABELS], torch.softmax(logits, -1).numpy(), atol=1e-5)


def test_short_clip_warns_and_silence_gives_no_speech(classic_dir, caplog):
    pred = load_for_inference(classic_dir)
    short, silent, ok = _tone(0.05, 200), np.zeros(SR, np.float32), _tone(1.0, 250)
    with caplog.at_level("WARNING"):
        records = pred.predict_arrays([short, silent, ok], SR, names=["short", "silent", "ok"])
    assert "0.050 s is shorter" in records[0]["warning"] and records[0]["label"] in LABELS
    assert "short: 0.050 s" in caplog.text
    assert records[1] == {"file": "silent", "label": "no speech", "scores": None}
    assert "warning" not in records[2] and records[2]["label"] in LABELS


def _main(capsys, *args):
    """scripts/predict.py's main() in this process: (exit code, stdout, stderr)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    code = module.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_script_exit_codes_and_summary(classic_dir, tmp_path, capsys):
    good = tmp_path / "good.wav"
    sf.write(good, _tone(1.0, 130), SR)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR, np.float32), SR)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")

    code, out, err = _main(capsys, f"model={classic_dir}", f"audio={good},{silent}")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]  # stdout: JSON lines only
    assert [r["label"] == "no speech" for r in records] == [False, True]
    assert "2 of 2 file(s) scored (1 without speech), 0 failed" in err

    code, out, err = _main(capsys, f"model={classic_dir}", f"audio={good},{bad}")
    assert code == 1
    assert [("error" in json.loads(line)) for line in out.splitlines()] == [False, True]
    assert "1 of 2 file(s) scored" in err and "1 failed" in err
    assert _main(capsys, f"model={classic_dir}", f"audio={bad}")[0] == 1

    code, _, err = _main(capsys, f"model={classic_dir}", f"audio={good}", "chunk=3")
    assert code == 2 and "unknown key 'chunk'" in err
    code, _, err = _main(capsys, f"model={tmp_path / 'nope'}", f"audio={good}")
    assert code == 2 and "does not exist" in err
    assert _main(capsys, f"model={classic_dir}")[0] == 2
    code, _, err = _main(capsys, f"model={classic_dir}", f"audio={good}", "chunk_s=2", "overlap_s=2")
    assert code == 2 and "overlap_s=2.0" in err
    assert _main(capsys, f"model={classic_dir}", f"audio={tmp_path / 'none.wav'}")[0] == 2


def test_predict_script_process_exit_code(classic_dir, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}  # this checkout's ser_hf, not another install
    run = subprocess.run([sys.executable, str(SCRIPT), f"model={classic_dir}", f"audio={bad}"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 1 and "0 of 1 file(s) scored" in run.stderr
    assert "error" in json.loads(run.stdout)


def test_streaming_scores_equal_the_in_memory_chunks_with_small_memory(classic_dir, long_wav):
    from ser_hf.segments import score_streaming

    pred = load_for_inference(classic_dir)
    in_memory = pred.predict_files([long_wav], chunk_s=10.0, overlap_s=1.0)[0]
    tracemalloc.start()
    streamed = score_streaming(pred, long_wav, chunk_s=10.0, overlap_s=1.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 60e6, f"peak {peak / 1e6:.0f} MB"  # the file alone is 38 MB at 16 kHz float32
    assert streamed["label"] == in_memory["label"]
    assert streamed["scores"] == pytest.approx(in_memory["scores"], abs=1e-6)

"""Inference on every kind of saved ser_hf model, checked against transformers' pipeline and by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ser_hf.inference import load_for_inference, predict_arrays, predict_files
from ser_hf.models import transformer as tf
from tiny_models import tiny_ast, tiny_hubert, tiny_wav2vec2, tiny_whisper

LABELS = ["anger", "happiness", "sadness"]
SR = 16000


def _finetuned(base_dir, out_dir):
    """A saved 'fine-tuned' classifier whose head is sharp enough that classes actually differ."""
    model, fe = tf.load_audio_classifier(base_dir, LABELS)
    model.eval()
    t = np.arange(SR) / SR
    probes = [0.3 * np.sin(2 * np.pi * f * t).astype(np.float32) for f in (120, 300, 480, 660)]
    with torch.no_grad():
        model.classifier.weight.mul_(200.0)
        logits = torch.cat([model(**tf.featurize(fe, [p], SR)).logits for p in probes])
        model.classifier.bias.sub_(logits.mean(0))  # centre the classes over varied inputs
    model.save_pretrained(out_dir)
    fe.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{"masked": dir, "unmasked": dir}: large-like (attention mask) and base-like (no mask) models."""
    root = tmp_path_factory.mktemp("models")
    return {
        "masked": _finetuned(tiny_hubert(root / "hubert", attention_mask=True), root / "ft_hubert"),
        "unmasked": _finetuned(tiny_wav2vec2(root / "w2v", attention_mask=False), root / "ft_w2v"),
    }


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate([7000, 16000, 9000, 16000, 24000]):
        t = np.arange(n) / SR
        y = 0.3 * np.sin(2 * np.pi * (120 + 90 * i) * t) + 0.05 * rng.standard_normal(n)
        sr = SR if i != 2 else 22050  # one file at another rate: decode_audio resamples it
        if sr != SR:
            import soxr

            y = soxr.resample(y, SR, sr)
        path = root / f"clip{i}.wav"
        sf.write(path, y.astype(np.float32), sr)
        paths.append(path)
    return paths


_PIPES: dict = {}


def _pipeline_scores(model_dir, array, as_dict: bool):
    from transformers import pipeline

    if model_dir not in _PIPES:
        _PIPES[model_dir] = pipeline("audio-classification", model=str(model_dir))
    pipe = _PIPES[model_dir]
    inputs = {"raw": array, "sampling_rate": SR} if as_dict else array
    return {d["label"]: d["score"] for d in pipe(inputs, top_k=None)}


@pytest.mark.parametrize("kind", ["masked", "unmasked"])
def test_predict_files_equals_pipeline(saved, wavs, kind):
    from ser_hf.data.audio import decode_audio

    records = predict_files(wavs, saved[kind], batch_size=4)
    assert [r["file"] for r in records] == [str(p) for p in wavs]
    labels_seen = set()
    for rec, path in zip(records, wavs):
        x = decode_audio(path, SR)
        for as_dict in (True, False):
            ref = _pipeline_scores(saved[kind], x, as_dict)
            assert set(ref) == set(LABELS)
            for label in LABELS:
                assert rec["scores"][label] == pytest.approx(ref[label], abs=1e-5)
            assert rec["label"] == max(ref, key=ref.get)
        assert sum(rec["scores"].values()) == pytest.approx(1.0)
        labels_seen.add(rec["label"])
    assert len(labels_seen) >= 2  # the check above compared real decisions, not one constant class


def test_unmasked_models_batch_only_equal_lengths_by_default(saved, wavs):
    pred = load_for_inference(saved["unmasked"])
    batched = pred.predict_files(wavs, batch_size=8)
    single = pred.predict_files(wavs, batch_size=1)
    for a, b in zip(batched, single):
        for label in LABELS:
            assert a["scores"][label] == pytest.approx(b["scores"][label], abs=1e-6)
    padded = pred.predict_files(wavs, batch_size=8, allow_padding=True)  # HF's recipe: zero-pad, no mask
    diffs = [abs(a["scores"][k] - b["scores"][k]) for a, b in zip(padded, single) for k in LABELS]
    assert max(diffs) > 1e-6  # padding does change an unmasked model's outputs, hence the default


def test_bad_and_missing_files_are_reported_and_skipped(saved, wavs, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    paths = [wavs[0], bad, tmp_path / "missing.wav", empty, wavs[1]]
    records = predict_files(paths, saved["masked"])
    assert [r["file"] for r in records] == [str(p) for p in paths]
    for rec in records[1:4]:
        assert rec["label"] is None and rec["scores"] is None
        assert rec["file"] in rec["error"]
    assert records[0]["label"] in LABELS and records[4]["label"] in LABELS
    assert records[0]["scores"] == pytest.approx(predict_files([wavs[0]], saved["masked"])[0]["scores"], abs=1e-6)


def test_long_inputs_are_chunked_and_chunk_logits_averaged(saved):
    pred = load_for_inference(saved["masked"])
    x = np.random.default_rng(3).standard_normal(3 * SR + 500).astype(np.float32) * 0.1
    rec = pred.predict_arrays([x], SR, chunk_s=1.0, overlap_s=0.25)[0]
    chunks = tf.chunk_clip(x, SR, 1.0, 0.25)
    assert len(chunks) == 4  # starts 0, 12000, 24000 and the end-aligned 32500
    with torch.no_grad():
        logits = [pred.model(**tf.featurize(pred.feature_extractor, [c], SR)).logits[0] for c in chunks]
    expected = torch.softmax(torch.stack(logits).mean(0), -1).numpy()
    np.testing.assert_allclose([rec["scores"][k] for k in LABELS], expected, atol=1e-5)
    whole = pred.predict_arrays([x], SR, chunk_s=None)[0]
    assert whole["scores"] != rec["scores"]


def test_predict_arrays_resamples_and_names(saved):
    from ser_hf.data.audio import resample

    x8k = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    got = predict_arrays([x8k], 8000, saved["masked"], names=["phone.wav"])[0]
    ref = predict_arrays([resample(x8k, 8000, SR)], SR, saved["masked"])[0]
    assert got["file"] == "phone.wav" and ref["file"] == "<array 0>"
    assert got["scores"] == pytest.approx(ref["scores"])
    with pytest.raises(ValueError, match="non-empty mono"):
        predict_arrays([np.zeros((2, 100), np.float32)], SR, saved["masked"])


def test_adapter_folder_predicts_like_its_merged_model(saved, tmp_path, wavs):
    base = tiny_hubert(tmp_path / "base", attention_mask=True)
    model, fe = tf.load_audio_classifier(base, LABELS)
    peft_model = tf.apply_lora(model, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # stand-in for training: move the adapters and the head away from their init
        for name, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    tf.save_adapter(peft_model, tmp_path / "adapter", fe)
    tf.merge_and_save(peft_model, tmp_path / "merged", fe)
    via_adapter = predict_files(wavs, tmp_path / "adapter")
    via_merged = predict_files(wavs, tmp_path / "merged")
    assert load_for_inference(tmp_path / "adapter").kind == "adapter"
    for a, b in zip(via_adapter, via_merged):
        assert a["label"] == b["label"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_baseline_model_with_feature_config(tmp_path, wavs):
    from ser_hf.data.audio import decode_audio
    from ser_hf.features import FeatureConfig, extract_windows
    from ser_hf.models import build_baseline

    fcfg = FeatureConfig(kind="logmel", n_mels=16, n_mfcc=8, n_fft=256, hop_length=128, window_frames=20,
                         window_hop_frames=10)
    torch.manual_seed(0)
    model = build_baseline("cnn2d", (1, 16, 20), id2label=LABELS).eval()
    model.save_pretrained(tmp_path / "cnn")
    fcfg.save_pretrained(tmp_path / "cnn")
    pred = load_for_inference(tmp_path / "cnn")
    assert pred.kind == "baseline" and pred.label_names == LABELS
    records = pred.predict_files(wavs)
    for rec, path in zip(records, wavs):
        windows = extract_windows(decode_audio(path, SR), SR, fcfg)
        assert len(windows) > 1
        with torch.no_grad():
            logits = model(input_values=torch.from_numpy(windows)).logits.mean(0)
        np.testing.assert_allclose([rec["scores"][k] for k in LABELS], torch.softmax(logits, -1).numpy(), atol=1e-5)


def test_classic_model_on_acoustic_features(tmp_path, wavs):
    from ser_hf.data.audio import decode_audio
    from ser_hf.features import FeatureConfig, extract
    from ser_hf.models.classic import ClassicClassifier

    fcfg = FeatureConfig(kind="stats", n_mfcc=8, n_mels=32, n_fft=512, hop_length=256, f0=False)
    X = np.stack([extract(decode_audio(p, SR), SR, fcfg) for p in wavs])
    y = np.array([0, 1, 2, 0, 1])
    clf = ClassicClassifier("logistic_regression", id2label=LABELS).fit(X, y)
    clf.save_pretrained(tmp_path / "clf")
    fcfg.save_pretrained(tmp_path / "clf")
    records = predict_files(wavs, tmp_path / "clf")
    np.testing.assert_allclose([[r["scores"][k] for k in LABELS] for r in records], clf.predict_proba(X), atol=1e-9)


def test_classic_model_on_embeddings(saved, tmp_path, wavs):
    import datasets

    from ser_hf.data.audio import decode_audio
    from ser_hf.embeddings import embedding_matrix, extract_embeddings, save_embedding_config
    from ser_hf.models.classic import ClassicClassifier

    encoder = saved["masked"]
    ds = datasets.Dataset.from_list([{"audio": {"array": decode_audio(p, SR), "sampling_rate": SR}} for p in wavs])
    X = embedding_matrix(extract_embeddings(ds, encoder, layers="mean", pooling="mean_std"))
    clf = ClassicClassifier("logistic_regression", id2label=LABELS).fit(X, np.array([0, 1, 2, 0, 1]))
    clf.save_pretrained(tmp_path / "emb_clf")
    save_embedding_config(tmp_path / "emb_clf", encoder, "mean", "mean_std")
    assert json.loads((tmp_path / "emb_clf" / "embedding_config.json").read_text())["pooling"] == "mean_std"
    records = predict_files(wavs, tmp_path / "emb_clf", batch_size=2)
    np.testing.assert_allclose([[r["scores"][k] for k in LABELS] for r in records], clf.predict_proba(X),
                               atol=1e-5)


def test_unrecognised_folders_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_for_inference(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_for_inference(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="cannot tell what model this is"):
        load_for_inference(tmp_path / "odd")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps({"model_type": "ser_cnn2d"}))
    with pytest.raises(FileNotFoundError, match="feature_config.json"):
        load_for_inference(tmp_path / "base")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_stays_close_to_fp32(saved, wavs, precision):
    fp32 = predict_files(wavs, saved["masked"])
    low = load_for_inference(saved["masked"], device="cpu", precision=precision)
    assert low.precision == precision
    if precision == "int8":
        assert "quantized.dynamic" in type(low.model.classifier).__module__
    for a, b in zip(low.predict_files(wavs), fp32):
        assert a["scores"] == pytest.approx(b["scores"], abs=0.05)


def test_auto_precision_runs_fp32_for_torch_folders(saved, monkeypatch):
    """precision=auto never trades quality silently: a torch folder records no quality check, so auto is fp32
    even on a CPU with native bf16 (the rule and its CPU-flag cases: tests/test_precision_rule.py)."""
    import ser_hf.precision as precision

    for flags in ({"avx2", "avx512_bf16"}, {"avx2"}):
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: set(flags))
        assert load_for_inference(saved["masked"], device="cpu", precision="auto").precision == "fp32"


def test_bad_precision_is_explained(saved):
    with pytest.raises(ValueError, match="precision='fp16'"):
        load_for_inference(saved["masked"], precision="fp16")


@pytest.mark.parametrize("maker", [tiny_whisper, tiny_ast], ids=["whisper", "ast"])
def test_log_mel_models_load_train_and_predict_like_the_pipeline(maker, tmp_path, wavs):
    """Checkpoints whose extractor makes log-mel frames (Whisper: input_features; AST: input_values frames)."""
    from ser_hf.data.audio import decode_audio

    base = maker(tmp_path / "base")  # ships a 2-class head: relabelled to 3 classes here
    model, fe = tf.load_audio_classifier(base, LABELS)
    assert model.config.id2label[2] == "sadness"
    rows = [{"audio": {"array": decode_audio(p, SR), "sampling_rate": SR}, "label": i % 3, "clip_id": i}
            for i, p in enumerate(wavs[:3])]
    batch = tf.AudioCollator(fe, max_duration_s=1.0, train=True)(rows)
    key = "input_features" if maker is tiny_whisper else "input_values"
    assert key in batch and "attention_mask" not in batch
    model.train()
    model(**{k: v for k, v in batch.items() if k != "clip_id"}).loss.backward()
    model.save_pretrained(tmp_path / "ft")
    fe.save_pretrained(tmp_path / "ft")
    records = predict_files(wavs, tmp_path / "ft", batch_size=4)
    for rec, path in zip(records, wavs):
        ref = _pipeline_scores(tmp_path / "ft", decode_audio(path, SR), as_dict=True)
        assert rec["scores"] == pytest.approx(ref, abs=1e-5)


def test_audio_paths_expands_files_folders_and_patterns(tmp_path):
    from ser_hf.inference import audio_paths

    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.wav", "a/b/y.flac", "a/b/notes.txt", "z.WAV"):
        (tmp_path / name).write_bytes(b"")
    assert audio_paths(tmp_path / "a") == [tmp_path / "a/b/y.flac", tmp_path / "a/x.wav"]
    assert audio_paths(str(tmp_path / "z.WAV")) == [tmp_path / "z.WAV"]
    assert audio_paths(str(tmp_path / "a" / "*.wav")) == [tmp_path / "a/x.wav"]
    assert audio_paths(f"{tmp_path / 'z.WAV'},{tmp_path / 'a' / 'x.wav'}") == [tmp_path / "z.WAV", tmp_path / "a/x.wav"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        audio_paths(tmp_path / "nope.wav")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        audio_paths(tmp_path / "empty")


def test_predict_script_takes_precision_and_padding_and_matches_the_api(saved, wavs):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "predict.py"
    folder = wavs[0].parent
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}  # this checkout's ser_hf, not another install
    run = lambda *a: subprocess.run([sys.executable, str(script), f"model={saved['unmasked']}", f"audio={folder}", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=300, env=env)
    out = run("precision=bf16", "allow_padding=false", "batch_size=2")
    assert out.returncode == 0, out.stderr[-2000:]
    records = {r["file"]: r for r in map(json.loads, out.stdout.splitlines())}
    api = predict_files(sorted(wavs), saved["unmasked"], precision="bf16", allow_padding=False, batch_size=2)
    assert sorted(records) == sorted(str(p) for p in wavs)
    for r in api:
        assert records[r["file"]]["label"] == r["label"]
        assert records[r["file"]]["scores"] == pytest.approx(r["scores"], abs=1e-6)
    bad = run("allow_padding=maybe")
    assert bad.returncode != 0 and "allow_padding='maybe'" in bad.stderr

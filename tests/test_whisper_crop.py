"""Whisper encoders cropped to short inputs through standard config (ser_hf.models.whisper_crop):
the saved model stays pipeline()-compatible, fine-tuning / embeddings / inference all crop alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ser_hf.models import transformer as tf
from ser_hf.models.whisper_crop import (
    crop_seconds,
    crop_whisper,
    encoder_frames,
    fixed_input_chunk_s,
)
from tiny_models import tiny_wav2vec2, tiny_whisper

SR = 16000
LABELS = ["neutral", "anger", "sadness"]


def _clips(n=4, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(1.6 * SR)) / SR
    out = []
    for i in range(n):  # varied lengths <= the 2 s crop, different content so labels differ
        x = 0.4 * np.sin(2 * np.pi * (120 + 90 * i) * t[: int((0.9 + 0.2 * i) * SR)])
        out.append((x + 0.05 * rng.standard_normal(len(x))).astype(np.float32))
    return out


def test_crop_seconds_rounds_up_to_whole_seconds():
    assert crop_seconds(None) is None
    assert crop_seconds(2.0) == 2 and crop_seconds(2.2) == 3 and crop_seconds(0.3) == 1
    with pytest.raises(ValueError, match="max_duration_s must be > 0"):
        crop_seconds(0)


def test_crop_slices_positions_and_sets_standard_config(tmp_path):
    base = tiny_whisper(tmp_path / "base")
    model, fe = tf.load_audio_classifier(base, LABELS)
    full_positions = model.encoder.embed_positions.weight.detach().clone()
    assert encoder_frames(model) == 1500 and fe.chunk_length == 30
    model, fe = crop_whisper(model, fe, 1.5)
    assert encoder_frames(model) == 100 and model.config.max_source_positions == 100
    torch.testing.assert_close(model.encoder.embed_positions.weight, full_positions[:100])
    assert fe.chunk_length == 2 and fe.n_samples == 2 * SR and fe.nb_max_frames == 200
    features = fe([_clips(1)[0]], sampling_rate=SR, return_tensors="pt").input_features
    assert features.shape == (1, 16, 200)
    assert model(input_features=features).logits.shape == (1, 3)
    # already short enough: unchanged; non-Whisper models pass through untouched
    model, fe = crop_whisper(model, fe, 5.0)
    assert encoder_frames(model) == 100 and fe.chunk_length == 2
    w2v, w2v_fe = tf.load_audio_classifier(tiny_wav2vec2(tmp_path / "w2v"), LABELS)
    assert crop_whisper(w2v, w2v_fe, 1.0) == (w2v, w2v_fe)


def test_fixed_input_chunk_s_caps_chunks_at_the_cropped_length(tmp_path):
    _, fe = tf.load_audio_classifier(tiny_whisper(tmp_path / "base"), LABELS)
    assert fixed_input_chunk_s(fe, 10.0) == 10.0  # 30 s model
    _, fe = crop_whisper(*tf.load_audio_classifier(tmp_path / "base", LABELS), 2.0)
    assert fixed_input_chunk_s(fe, 10.0) == 2.0 and fixed_input_chunk_s(fe, 1.0) == 1.0
    assert fixed_input_chunk_s(fe, None) is None


def test_finetuned_cropped_model_predicts_like_the_pipeline(tmp_path):
    """run_finetune crops to model.max_duration_s; the saved folder is a 2 s Whisper that
    pipeline("audio-classification") and predict.py score identically."""
    import subprocess
    import sys
    from pathlib import Path

    import datasets
    import soundfile as sf
    from omegaconf import OmegaConf
    from transformers import pipeline

    from ser_hf.experiment import ExperimentData

    clips = _clips(6)
    ds = datasets.Dataset.from_list([{"audio": {"array": c, "sampling_rate": SR}, "label": i % 3, "file": f"c{i}"}
                                     for i, c in enumerate(clips)])
    data = ExperimentData(train=ds, validation=ds.select([0, 1]), tests={"gen": ds.select([2, 3, 4, 5])},
                          label_names=LABELS)
    cfg = OmegaConf.create({"seed": 0, "resume": False, "peft": {"enabled": False},
                            "trainer": {"max_epochs": 1, "batch_size": 3, "learning_rate": 1e-3, "optimizer": "adamw",
                                        "log_with": None, "progress_bar": False}})
    base = tiny_whisper(tmp_path / "base")
    # as written by scripts/convert_whisper_ct2.py: the card's base_model is the Hub id, not the local folder
    config_path = base / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()),
                                       "ser_hf_conversion": {"source_hub_id": "openai/whisper-tiny.en"}}))
    outcome = tf.run_finetune(cfg, {"name_or_path": str(base), "max_duration_s": 2.0, "eval_chunk_s": 2.0,
                                    "freeze_feature_encoder": False}, data, tmp_path / "run")
    assert outcome.base_model == "openai/whisper-tiny.en"
    outcome.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    pre = json.loads((tmp_path / "model" / "preprocessor_config.json").read_text())
    assert config["max_source_positions"] == 100 and pre["chunk_length"] == 2

    wav_dir = tmp_path / "wavs"
    wav_dir.mkdir()
    for i, c in enumerate(clips[:4]):
        sf.write(wav_dir / f"c{i}.wav", c, SR)
    script = Path(__file__).resolve().parents[1] / "scripts" / "predict.py"
    out = subprocess.run([sys.executable, str(script), f"model={tmp_path / 'model'}", f"audio={wav_dir}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    records = {Path(r["file"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    pipe = pipeline("audio-classification", model=str(tmp_path / "model"))
    assert pipe.feature_extractor.n_samples == 2 * SR
    spread = []
    for i, c in enumerate(clips[:4]):
        ref = {d["label"]: d["score"] for d in pipe({"raw": c, "sampling_rate": SR}, top_k=None)}
        got = records[f"c{i}.wav"]["scores"]
        assert set(ref) == set(LABELS)
        for label in LABELS:
            assert got[label] == pytest.approx(ref[label], abs=1e-5)
        spread.append(max(ref.values()) - min(ref.values()))
    assert max(spread) > 1e-4  # real, clip-dependent scores were compared


def test_embeddings_crop_and_key_the_cache(tmp_path):
    import datasets

    from ser_hf.embeddings import _load_encoder, embeddings_fingerprint, extract_embeddings

    base = tiny_whisper(tmp_path / "base")
    enc = _load_encoder(str(base), "last", "cpu", True, 2.0)
    assert encoder_frames(enc.model) == 100 and enc.feature_extractor.n_samples == 2 * SR
    clips = _clips(3)
    ds = datasets.Dataset.from_list([{"audio": {"array": c, "sampling_rate": SR}} for c in clips])
    full = np.asarray(extract_embeddings(ds, base, cache=False)["embedding"])
    cropped = np.asarray(extract_embeddings(ds, base, cache=False, max_duration_s=2.0)["embedding"])
    assert full.shape == cropped.shape == (3, 16)
    assert not np.allclose(full, cropped)  # the encoder saw less padding
    # cropped embeddings do not depend on the batch they were computed in
    alone = np.asarray(extract_embeddings(ds.select([1]), base, cache=False, max_duration_s=2.0)["embedding"])
    np.testing.assert_allclose(alone[0], cropped[1], atol=1e-5)
    fp = lambda m: embeddings_fingerprint(ds, base, "last", "mean", m)  # noqa: E731
    assert fp(None) != fp(2.0) and fp(2.0) == fp(1.5) and fp(2.0) != fp(3.0)

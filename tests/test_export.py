"""ONNX export (scripts/export.py, ser_hf.export) and the onnxruntime backend (predict.py backend=onnx).

Parity is checked on real EmoDB clips with models trained for an epoch or two (random weights give near-equal
class probabilities, where top-1 agreement would mean nothing); shapes and families on tiny models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnx, onnxruntime) is not installed")

from ser_hf.config import load_config
from ser_hf.export import export_onnx
from ser_hf.inference import load_for_inference, predict_files
from ser_hf.onnx_backend import OnnxModel, read_onnx_config

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import tiny_ast, tiny_hubert, tiny_wav2vec2, tiny_whisper  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHEAP = ["trainer.progress_bar=false", "trainer.log_with=null"]


def _train(tmp_path_factory, name: str, overrides: list[str]) -> Path:
    import os

    from ser_hf.experiment import run

    root = tmp_path_factory.mktemp(name)
    old = os.environ.get("SER_HF_CACHE")
    os.environ["SER_HF_CACHE"] = str(root / "cache")
    try:
        out = run(load_config([*overrides, f"data.cache_dir={root / 'datasets'}", *CHEAP,
                               f"output_dir={root / 'run'}"]))
    finally:
        if old is None:
            os.environ.pop("SER_HF_CACHE", None)
        else:
            os.environ["SER_HF_CACHE"] = old
    return out / "model"


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory, shared_data):
    """The README's demo model (2-D CNN on log-mel) trained for 6 epochs (~20 s) on the real EmoDB copy (speaker split),
    so that its predictions on EmoDB clips are varied and confident."""
    return _train(tmp_path_factory, "demo", ["recipe=demo", "data.synthetic=null",
                                            f"data.data_dir={shared_data / 'emodb'}", "trainer.max_epochs=6"])


@pytest.fixture(scope="session")
def trained_tiny_transformer(tmp_path_factory, shared_data):
    """A tiny wav2vec2 classifier fine-tuned for 3 epochs on the real EmoDB copy (speaker split)."""
    base = tiny_wav2vec2(tmp_path_factory.mktemp("tiny_w2v") / "base")
    return _train(tmp_path_factory, "w2v", [
        "recipe=wav2vec2_emodb", f"model.name_or_path={base}", f"data.data_dir={shared_data / 'emodb'}",
        "model.freeze_feature_encoder=false", "model.head_learning_rate=0.01", "trainer.max_epochs=3",
        "trainer.batch_size=8", "trainer.grad_accum_steps=1", "trainer.learning_rate=0.003",
        "trainer.warmup_ratio=0.0"])


@pytest.fixture(scope="session")
def emodb_clips(shared_data):
    files = sorted((shared_data / "emodb" / "wav").glob("*.wav"))
    if not files:
        pytest.skip(f"no EmoDB clips under {shared_data / 'emodb' / 'wav'}")
    idx = np.linspace(0, len(files) - 1, num=60).round().astype(int)
    return [files[i] for i in idx]


def _probs(records) -> np.ndarray:
    return np.array([[r["scores"][k] for k in sorted(r["scores"])] for r in records])


@pytest.mark.slow  # trains two models (~1-2 min on 2 cores)
@pytest.mark.parametrize("model_fixture", ["trained_demo", "trained_tiny_transformer"])
def test_onnx_parity_on_emodb_clips(model_fixture, request, emodb_clips, tmp_path):
    model_dir = request.getfixturevalue(model_fixture)
    out = export_onnx(model_dir, tmp_path / "onnx", quantize="int8")
    assert {"model.onnx", "model.int8.onnx", "config.json", "onnx_config.json"} <= {p.name for p in out.iterdir()}
    ref = predict_files(emodb_clips, model_dir, device="cpu", backend="torch")
    fp32 = predict_files(emodb_clips, out, backend="onnx", precision="fp32")
    int8 = predict_files(emodb_clips, out, backend="onnx", precision="int8")
    check = read_onnx_config(out)["int8_check"]  # measured on the run folder's test split at export
    assert check["clips"] > 0 and "test split of run" in check["source"]
    p_ref, p_fp32, p_int8 = _probs(ref), _probs(fp32), _probs(int8)
    # trained: the model is not indifferent between classes (otherwise top-1 agreement is meaningless)
    margins = np.sort(p_ref, axis=1)[:, -1] - np.sort(p_ref, axis=1)[:, -2]
    assert np.mean(margins > 0.1) >= 0.2, f"model barely trained: top-1 margins {np.percentile(margins, [50, 90])}"
    assert len({r["label"] for r in ref}) >= 2
    assert np.abs(p_fp32 - p_ref).max() < 1e-4
    assert [r["label"] for r in fp32] == [r["label"] for r in ref]
    assert np.abs(p_int8 - p_ref).max() < 1e-2
    agree = np.mean([a["label"] == b["label"] for a, b in zip(int8, ref)])
    assert agree >= 0.98, f"int8 top-1 agreement {agree:.1%}"


@pytest.mark.parametrize("maker, kwargs", [(tiny_wav2vec2, {"attention_mask": False}),
                                           (tiny_hubert, {"attention_mask": True}),
                                           (tiny_whisper, {}), (tiny_ast, {})],
                         ids=["wav2vec2-base-like", "hubert-large-like", "whisper", "ast"])
def test_transformer_families_export_with_dynamic_batch_and_time(maker, kwargs, tmp_path):
    from ser_hf.models import transformer as tf

    model, fe = tf.load_audio_classifier(maker(tmp_path / "base", **kwargs), ["a", "b", "c"])
    model.save_pretrained(tmp_path / "model")
    fe.save_pretrained(tmp_path / "model")
    out = export_onnx(tmp_path / "model", tmp_path / "onnx")
    cfg = read_onnx_config(out)
    assert cfg["kind"] == "transformer" and cfg["export_max_abs_logit_diff"] < 1e-4
    waveform = maker in (tiny_wav2vec2, tiny_hubert)
    if waveform:  # any number of samples; Whisper and AST take their extractor's fixed length
        assert "time" in cfg["dynamic_axes"]["input_values"].values()
    rng = np.random.default_rng(1)
    arrays = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (9000, 16000, 16000, 23000)]
    torch_pred = load_for_inference(tmp_path / "model", device="cpu")
    onnx_pred = load_for_inference(out)  # backend=auto recognises the export folder
    assert type(onnx_pred.model) is OnnxModel
    a = _probs(torch_pred.predict_arrays(arrays, 16000, batch_size=3))
    b = _probs(onnx_pred.predict_arrays(arrays, 16000, batch_size=3))
    assert np.abs(a - b).max() < 1e-5


def test_cropped_whisper_exports_at_its_cropped_length(tmp_path):
    from ser_hf.models import transformer as tf
    from ser_hf.models.whisper_crop import crop_whisper, encoder_frames

    model, fe = tf.load_audio_classifier(tiny_whisper(tmp_path / "base"), ["a", "b", "c"])
    model, fe = crop_whisper(model, fe, 2.0)
    assert encoder_frames(model) == 100
    model.save_pretrained(tmp_path / "model")
    fe.save_pretrained(tmp_path / "model")
    out = export_onnx(tmp_path / "model", tmp_path / "onnx")
    assert read_onnx_config(out)["export_max_abs_logit_diff"] < 1e-4
    rng = np.random.default_rng(3)
    arrays = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 32000, 50000)]  # 50000: 2 chunks
    a = _probs(load_for_inference(tmp_path / "model", device="cpu").predict_arrays(arrays, 16000))
    b = _probs(load_for_inference(out).predict_arrays(arrays, 16000))
    assert np.abs(a - b).max() < 1e-5


def test_merged_lora_adapter_exports(tmp_path):
    import torch

    from ser_hf.models import transformer as tf

    model, fe = tf.load_audio_classifier(tiny_wav2vec2(tmp_path / "base"), ["a", "b", "c"])
    model = tf.apply_lora(model, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    tf.save_adapter(model, tmp_path / "adapter", fe)
    out = export_onnx(tmp_path / "adapter", tmp_path / "onnx")
    cfg = read_onnx_config(out)
    assert cfg["source_kind"] == "adapter" and cfg["export_max_abs_logit_diff"] < 1e-4
    x = [np.sin(np.arange(16000) / 16000 * 2 * np.pi * 200).astype(np.float32)]
    a = _probs(load_for_inference(tmp_path / "adapter", device="cpu").predict_arrays(x, 16000))
    b = _probs(load_for_inference(out).predict_arrays(x, 16000))
    assert np.abs(a - b).max() < 1e-5


@pytest.mark.parametrize("family, kind", [("lstm", "frame_stack"), ("cnn1d", "frame_stack"),
                                          ("cnn_lstm", "frame_stack"), ("cnn7", "logmel")])
def test_baseline_families_export(family, kind, tmp_path):
    from ser_hf.features import FeatureConfig, extract
    from ser_hf.models import build_baseline

    windows = {"window_frames": 64, "window_hop_frames": 32} if kind == "logmel" else {}
    fcfg = FeatureConfig(kind=kind, n_fft=512, hop_length=160, n_mels=32, n_mfcc=13, **windows)
    x = extract(np.zeros(16000, np.float32), 16000, fcfg)
    shape = (None, x.shape[1]) if kind == "frame_stack" else (x.shape[0], x.shape[1], None)
    build_baseline(family, shape, id2label=["a", "b", "c"]).eval().save_pretrained(tmp_path / "model")
    fcfg.save_pretrained(tmp_path / "model")
    out = export_onnx(tmp_path / "model", tmp_path / "onnx", quantize="int8")
    cfg = read_onnx_config(out)
    assert cfg["kind"] == "baseline" and cfg["export_max_abs_logit_diff"] < 1e-4
    if kind == "frame_stack":  # unwindowed frame sequences: any number of frames
        assert "time" in cfg["dynamic_axes"]["input_values"].values()
    rng = np.random.default_rng(2)
    arrays = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (12000, 16000, 30000)]
    a = _probs(load_for_inference(tmp_path / "model", device="cpu").predict_arrays(arrays, 16000))
    b = _probs(load_for_inference(out, precision="fp32").predict_arrays(arrays, 16000))
    assert np.abs(a - b).max() < 1e-4


def test_export_refuses_classic_and_unknown_folders(tmp_path):
    from ser_hf.features import FeatureConfig
    from ser_hf.models import ClassicClassifier

    rng = np.random.default_rng(0)
    clf = ClassicClassifier("logistic_regression", id2label=["a", "b"]).fit(rng.standard_normal((6, 3)),
                                                                           np.array([0, 1] * 3))
    clf.save_pretrained(tmp_path / "classic")
    FeatureConfig(kind="stats").save_pretrained(tmp_path / "classic")
    with pytest.raises(ValueError, match="classic scikit-learn model.*neural families"):
        export_onnx(tmp_path / "classic", tmp_path / "out0")
    assert not (tmp_path / "out0").exists()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_onnx(tmp_path / "junk", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(tmp_path / "missing", tmp_path / "out2")
    with pytest.raises(FileNotFoundError, match="onnx_config.json"):
        load_for_inference(tmp_path / "junk", backend="onnx")
    with pytest.raises(ValueError, match="quantize='int4'"):
        export_onnx(tmp_path / "junk", tmp_path / "out3", quantize="int4")


def _small_cnn(model_dir: Path) -> Path:
    from ser_hf.features import FeatureConfig
    from ser_hf.models import build_baseline

    fcfg = FeatureConfig(kind="logmel", n_fft=512, hop_length=160, n_mels=32, n_mfcc=13, window_frames=64,
                         window_hop_frames=32)
    build_baseline("cnn2d", (1, 32, None), id2label=["anger", "neutral", "sadness"]).eval().save_pretrained(model_dir)
    fcfg.save_pretrained(model_dir)
    return model_dir


def test_export_and_predict_scripts(tmp_path, generated):
    import os

    from ser_hf.inference import audio_paths

    model_dir = _small_cnn(tmp_path / "model")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "exported"
    done = subprocess.run([sys.executable, "scripts/export.py", f"model={model_dir}", "format=onnx",
                           f"output_dir={out}", "quantize=int8"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = subprocess.run([sys.executable, "scripts/export.py", f"model={model_dir}", f"output_dir={out}"],
                           cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "not empty" in again.stderr
    bad = subprocess.run([sys.executable, "scripts/export.py", f"model={model_dir}", "format=tflite",
                          f"output_dir={tmp_path / 'x'}"], cwd=REPO, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "format='tflite'" in bad.stderr
    folder = generated("emodb", speakers=2, per_class=1) / "wav"
    pred = subprocess.run([sys.executable, "scripts/predict.py", f"model={out}", f"audio={folder}",
                           "backend=onnx", "precision=fp32"], cwd=REPO, env=env, capture_output=True, text=True)
    assert pred.returncode == 0, pred.stderr
    records = [json.loads(line) for line in pred.stdout.splitlines()]
    reference = predict_files(audio_paths(folder), model_dir, backend="torch", device="cpu")
    assert len(records) == len(reference) > 0
    assert [r["label"] for r in records] == [r["label"] for r in reference]
    assert np.abs(_probs(records) - _probs(reference)).max() < 1e-4

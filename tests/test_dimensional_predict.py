"""Prediction with dimensional (arousal/valence/dominance) models: records, predict.py, segments, ONNX (issue 14
item 4), and speaker-normalised clip vectors z-scored at prediction as in training."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from ser_hf.data.audio import decode_audio
from ser_hf.features import FeatureConfig, extract, extract_windows
from ser_hf.inference import Predictor, load_for_inference, predict_files
from ser_hf.models import build_baseline
from ser_hf.models import transformer as tf
from ser_hf.segments import SegmentSettings, segment_file, window_spans, write_outputs
from ser_hf.tasks import ModelTask
from tiny_models import tiny_wav2vec2

SR = 16000
TARGETS = ["arousal", "valence", "dominance"]
FCFG = dict(kind="logmel", n_mels=16, n_mfcc=8, n_fft=256, hop_length=128, window_frames=20, window_hop_frames=10)


def _tone(n, f, amp, rng):
    t = np.arange(n) / SR
    return (amp * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dim_wavs")
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate([9000, 16000, 12000, 20000]):
        path = root / f"clip{i}.wav"
        sf.write(path, _tone(n, 120 + 80 * i, 0.1 + 0.08 * i, rng), SR)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """6 s: tones of rising loudness and pitch, with 1 s of silence in the middle."""
    rng = np.random.default_rng(1)
    parts = [_tone(2 * SR, 150, 0.1, rng), np.zeros(SR, np.float32), _tone(3 * SR, 400, 0.4, rng)]
    path = tmp_path_factory.mktemp("dim_long") / "talk.wav"
    sf.write(path, np.concatenate(parts), SR)
    return path


@pytest.fixture(scope="module")
def reg_transformer(tmp_path_factory):
    """A tiny wav2vec2 regressor (HF problem_type=regression, id2label = the targets) saved like a trained one."""
    root = tmp_path_factory.mktemp("dim_tf")
    base = tiny_wav2vec2(root / "base", attention_mask=True)
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

    torch.manual_seed(0)
    task = ModelTask("regression", TARGETS)
    config = AutoConfig.from_pretrained(base)
    config.update(task.hf_config())  # the task's config keys (id2label = the targets, problem_type, ser_hf_task)
    model = AutoModelForAudioClassification.from_pretrained(base, config=config)
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)
        model.classifier.bias.add_(torch.tensor([3.0, 2.5, 2.0]))  # values around a 1..5 rating scale
    model.eval().save_pretrained(root / "model")
    AutoFeatureExtractor.from_pretrained(base).save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def reg_baseline(tmp_path_factory):
    """A cnn2d regressor on log-mel windows (three outputs: A/V/D)."""
    root = tmp_path_factory.mktemp("dim_cnn")
    fcfg = FeatureConfig(**FCFG)
    torch.manual_seed(0)
    model = build_baseline("cnn2d", (1, 16, 20), id2label=TARGETS, task=ModelTask("regression", TARGETS)).eval()
    model.save_pretrained(root / "cnn")
    fcfg.save_pretrained(root / "cnn")
    return root / "cnn"


def _predict_main():
    """scripts/predict.py's main (the scripts folder is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("predict_script", Path(__file__).resolve().parents[1] / "scripts"
                                                  / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _values(records):
    return np.asarray([[r["values"][t] for t in TARGETS] for r in records])


def test_regression_transformer_predicts_the_forward_values(reg_transformer, wavs):
    pred = load_for_inference(reg_transformer)
    assert pred.task.task == "regression" and pred.targets == TARGETS and pred.label_names == []
    records = pred.predict_files(wavs)
    assert all(set(r) == {"file", "values"} for r in records)
    model, fe = pred.model, pred.feature_extractor
    with torch.no_grad():
        expected = np.concatenate([model(**tf.featurize(fe, [decode_audio(p, SR)], SR)).logits.numpy() for p in wavs])
    np.testing.assert_allclose(_values(records), expected, atol=1e-5)
    assert np.ptp(expected[:, 0]) > 0.05  # the clips get different values: the test can tell them apart
    # a long input: chunk outputs averaged (values, not softmaxed)
    x = np.concatenate([decode_audio(p, SR) for p in wavs])
    rec = pred.predict_arrays([x], SR, chunk_s=1.0, overlap_s=0.25)[0]
    chunks = tf.chunk_clip(x, SR, 1.0, 0.25)
    with torch.no_grad():
        per_chunk = np.concatenate([model(**tf.featurize(fe, [c], SR)).logits.numpy() for c in chunks])
    np.testing.assert_allclose([rec["values"][t] for t in TARGETS], per_chunk.mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="regression model .* no class scores"):
        pred.scores([x])


def test_predict_script_prints_the_values(reg_transformer, wavs, capsys):
    main = _predict_main()
    assert main([f"model={reg_transformer}", f"audio={wavs[0].parent}"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    api = predict_files(wavs, reg_transformer)
    assert [x["file"] for x in lines] == [str(p) for p in wavs]
    np.testing.assert_allclose(_values(lines), _values(api), atol=1e-6)


def test_regression_baseline_averages_window_values(reg_baseline, wavs):
    pred = load_for_inference(reg_baseline)
    records = pred.predict_files(wavs)
    fcfg = FeatureConfig(**FCFG)
    for rec, path in zip(records, wavs):
        windows = extract_windows(decode_audio(path, SR), SR, fcfg)
        with torch.no_grad():
            expected = pred.model(input_values=torch.from_numpy(windows)).logits.mean(0).numpy()
        np.testing.assert_allclose([rec["values"][t] for t in TARGETS], expected, atol=1e-5)


def test_multitask_records_carry_label_scores_and_values(wavs, tmp_path):
    labels = ("anger", "neutral")
    task = ModelTask("multitask", TARGETS, labels)
    fcfg = FeatureConfig(**FCFG)

    class TwoHeads(torch.nn.Module):  # window mean energy -> logits [e, -e], values [e, 2e, 3e]
        def forward(self, input_values):
            e = input_values.mean(dim=(1, 2, 3))[:, None]
            return SimpleNamespace(logits=torch.cat([e, -e, e, 2 * e, 3 * e], dim=1))

    pred = Predictor("baseline", TwoHeads(), list(labels), SR, tmp_path, feature_config=fcfg, task=task)
    rec = pred.predict_files(wavs[:1])[0]
    e = float(extract_windows(decode_audio(wavs[0], SR), SR, fcfg).mean(axis=(1, 2, 3)).mean())
    assert rec["values"] == pytest.approx({"arousal": e, "valence": 2 * e, "dominance": 3 * e}, abs=1e-5)
    p = np.exp([e, -e]) / np.exp([e, -e]).sum()
    assert rec["scores"] == pytest.approx(dict(zip(labels, p)), abs=1e-6)
    assert rec["label"] == labels[int(np.argmax(p))]


def test_saved_multitask_baseline_splits_its_outputs(wavs, tmp_path):
    task = ModelTask("multitask", TARGETS, ("anger", "neutral", "sadness"))
    torch.manual_seed(1)
    model = build_baseline("cnn2d", (1, 16, 20), id2label=list(task.output_names), task=task).eval()
    model.save_pretrained(tmp_path / "mt")
    fcfg = FeatureConfig(**FCFG)
    fcfg.save_pretrained(tmp_path / "mt")
    pred = load_for_inference(tmp_path / "mt")
    assert pred.task == task and pred.label_names == list(task.labels)
    for rec, path in zip(pred.predict_files(wavs), wavs):
        with torch.no_grad():
            out = model(input_values=torch.from_numpy(extract_windows(decode_audio(path, SR), SR, fcfg)))
        mean = out.logits.mean(0).numpy()
        probs = np.exp(mean[:3] - mean[:3].max())
        probs /= probs.sum()
        assert [rec["scores"][k] for k in task.labels] == pytest.approx(probs.tolist(), abs=1e-5)
        assert [rec["values"][t] for t in TARGETS] == pytest.approx(mean[3:].tolist(), abs=1e-5)


def test_window_segments_carry_values_and_the_summary_their_mean(reg_baseline, long_wav, tmp_path):
    pred = load_for_inference(reg_baseline)
    result = segment_file(pred, long_wav, SegmentSettings(mode="window", window_s=1.0))
    rows = result["rows"]
    spans = window_spans(6.0, 1.0, None)
    assert [(r["start"], r["end"]) for r in rows] == spans
    silent = [r for r in rows if r["values"] is None]
    assert [(r["start"], r["label"]) for r in silent] == [(2.0, "no speech")]
    audio = decode_audio(long_wav, SR)
    scored = [r for r in rows if r["values"] is not None]
    direct = pred.predict_arrays([audio[int(r["start"] * SR):int(r["end"] * SR)] for r in scored], SR)
    np.testing.assert_allclose(_values(scored), _values(direct), atol=1e-5)
    write_outputs([result], pred.label_names, tmp_path / "out", pred.targets)
    with open(tmp_path / "out" / "segments.csv") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["file", "start", "end", "label", *TARGETS]
    assert float(table[0]["arousal"]) == pytest.approx(rows[0]["values"]["arousal"], abs=1e-5)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())[0]
    assert summary["speech_s"] == 5.0 and "share" not in summary
    assert summary["mean"]["valence"] == pytest.approx(_values(scored)[:, 1].mean(), abs=1e-5)
    with open(tmp_path / "out" / "summary.csv") as fh:
        assert next(csv.reader(fh)) == ["file", "duration_s", "speech_s", "mean_arousal", "mean_valence",
                                        "mean_dominance"]
    assert (tmp_path / "out" / "talk.timeline.png").stat().st_size > 10_000


@pytest.mark.parametrize("which", ["reg_baseline", "reg_transformer"])
def test_onnx_export_of_a_regressor_keeps_the_task_and_the_values(which, request, wavs, tmp_path):
    pytest.importorskip("onnxruntime")
    from ser_hf.export import export_onnx

    source = request.getfixturevalue(which)
    out = export_onnx(source, tmp_path / "onnx")
    assert json.loads((out / "config.json").read_text())["ser_hf_task"] == "regression"
    assert json.loads((out / "onnx_config.json").read_text())["targets"] == TARGETS
    onnx = load_for_inference(out, backend="onnx", precision="fp32")
    assert onnx.task == ModelTask("regression", TARGETS)
    torch_values = _values(load_for_inference(source).predict_files(wavs))
    assert np.ptp(torch_values[:, 0]) > 1e-3  # values differ between clips: 1e-4 parity means something
    np.testing.assert_allclose(_values(onnx.predict_files(wavs)), torch_values, atol=1e-4)


# --- speaker-normalised clip vectors (features.speaker_norm on stats features) ---------------------------------


@pytest.fixture(scope="module")
def spknorm_model(wavs, tmp_path_factory):
    """A classic model trained, as the classic family trains, on stats vectors z-scored per speaker
    (ser_hf.features.speaker_normalise); the four clips are one speaker's."""
    import datasets

    from ser_hf.features import speaker_normalise
    from ser_hf.models.classic import ClassicClassifier

    fcfg = FeatureConfig(kind="stats", n_mfcc=8, n_mels=32, n_fft=512, hop_length=256, f0=False, speaker_norm=True)
    raw = np.stack([extract(decode_audio(p, SR), SR, fcfg) for p in wavs])
    ds = datasets.Dataset.from_dict({"features": raw.tolist(), "speaker_id": ["s1"] * len(wavs)})
    normalised = np.asarray(speaker_normalise(ds)["features"], dtype=np.float32)
    out = tmp_path_factory.mktemp("spknorm") / "clf"
    clf = ClassicClassifier("logistic_regression", id2label=["a", "b"]).fit(normalised, np.array([0, 1, 0, 1]))
    clf.save_pretrained(out)
    fcfg.save_pretrained(out)
    return SimpleNamespace(dir=out, clf=clf, raw=raw, normalised=normalised)


def test_speaker_normalised_stats_are_z_scored_over_the_call_as_in_training(spknorm_model, wavs):
    m = spknorm_model
    records = predict_files(wavs, m.dir)
    got = np.asarray([[r["scores"][k] for k in "ab"] for r in records])
    np.testing.assert_allclose(got, m.clf.predict_proba(m.normalised), atol=1e-5)
    # before the fix the vectors went in unnormalised: those probabilities are far from these
    assert np.abs(m.clf.predict_proba(m.raw) - got).max() > 0.1
    # block_files does not split the speaker's clips into separately normalised blocks
    again = predict_files(wavs, m.dir, block_files=2)
    np.testing.assert_allclose([[r["scores"][k] for k in "ab"] for r in again], got, atol=1e-9)


def test_speaker_normalised_model_refuses_a_single_clip(spknorm_model, wavs, capsys):
    main = _predict_main()
    with pytest.raises(ValueError, match="speaker-normalised feature vectors: pass at least 2 clips"):
        predict_files(wavs[:1], spknorm_model.dir)
    assert main([f"model={spknorm_model.dir}", f"audio={wavs[0]}"]) == 2
    assert "at least 2 clips" in capsys.readouterr().err


# --- end to end: a trained dimensional recipe, predicted again and compared ----------------------------------


def test_demo_dimensional_run_is_reproduced_by_predict_and_compared(tmp_path, monkeypatch):
    """demo_dimensional (ridge on speaker-normalised stats): predicting one test speaker's clips in one call gives
    the run's own test predictions, and compare reads two such runs on CCC."""
    from ser_hf import experiment
    from ser_hf.compare import compare
    from ser_hf.config import load_config
    from ser_hf.runfolder import load_run

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    common = ["recipe=demo_dimensional", f"data.cache_dir={tmp_path / 'ds'}", "trainer.progress_bar=false",
              "trainer.log_with=null"]
    experiment.run(load_config([*common, f"output_dir={tmp_path / 'ridge'}"]))
    experiment.run(load_config([*common, "model.alpha=100000.0", f"output_dir={tmp_path / 'flat'}"]))
    run = load_run(tmp_path / "ridge")
    assert run.task == "regression" and run.targets == tuple(TARGETS)
    root = next((tmp_path / "cache" / "generated").glob("iemocap-*"))
    _, pred = run.target_values()
    for speaker in run.test_speakers:
        idx = [i for i, r in enumerate(run.test_rows) if r["speaker_id"] == speaker]
        records = predict_files([root / run.test_rows[i]["file"] for i in idx], tmp_path / "ridge" / "model")
        np.testing.assert_allclose(_values(records), pred[idx], atol=1e-4)
    res = compare({"ridge": [tmp_path / "ridge"], "flat": [tmp_path / "flat"]}, tmp_path / "cmp", n_resamples=500)
    pair = res["dimensions"]["pairs"][0]
    assert pair["ccc_mean_a"] == pytest.approx(run.headline("ccc_mean"))
    assert pair["delta_ccc_mean"] > 0.2 and pair["significant"]


def test_segments_of_a_speaker_normalised_model_are_normalised_together(spknorm_model, long_wav):
    pred = load_for_inference(spknorm_model.dir)
    assert pred.normalises_over_call
    rows = segment_file(pred, long_wav, SegmentSettings(mode="window", window_s=0.5), batch_size=1)["rows"]
    scored = [r for r in rows if r["scores"] is not None]
    assert len(scored) == 10 > 4 * 1  # more segments than one scoring group of batch_size=1 would hold
    audio = decode_audio(long_wav, SR)
    together = pred.predict_arrays([audio[int(r["start"] * SR):int(r["end"] * SR)] for r in scored], SR)
    assert [r["scores"] for r in scored] == [pytest.approx(t["scores"], abs=1e-9) for t in together]


def test_speaker_normalised_frame_features_pool_the_calls_frames_as_training_did(wavs, tmp_path):
    """log-mel with features.speaker_norm: training z-scores with statistics pooled over the speaker's clips and
    frames; prediction pools the call's (was: each file its own, an utterance normalisation)."""
    import datasets

    from ser_hf.features import speaker_normalise, window_array

    fcfg = FeatureConfig(**FCFG, speaker_norm=True)
    torch.manual_seed(2)
    model = build_baseline("cnn2d", (1, 16, 20), id2label=TARGETS, task=ModelTask("regression", TARGETS)).eval()
    model.save_pretrained(tmp_path / "cnn")
    fcfg.save_pretrained(tmp_path / "cnn")
    raw = [extract(decode_audio(p, SR), SR, fcfg) for p in wavs]
    ds = datasets.Dataset.from_dict({"features": [x.tolist() for x in raw], "speaker_id": ["s1"] * len(raw)})
    trained_on = [np.asarray(x, np.float32) for x in speaker_normalise(ds).with_format("numpy")["features"]]
    with torch.no_grad():
        expected = np.stack([model(input_values=torch.from_numpy(window_array(x, fcfg))).logits.mean(0).numpy()
                             for x in trained_on])
    pred = load_for_inference(tmp_path / "cnn")
    assert pred.normalises_over_call
    np.testing.assert_allclose(_values(pred.predict_files(wavs)), expected, atol=1e-5)
    # one file alone: its own frames' statistics (allowed for frame features), which differ from the speaker's
    alone = _values(pred.predict_files(wavs[:1]))[0]
    assert np.abs(alone - expected[0]).max() > 1e-3


def test_cnn_regression_run_is_reproduced_by_predict_per_speaker(tmp_path, monkeypatch):
    """demo's 2-D CNN on speaker-normalised log-mel, task=regression: predict.py on one test speaker's clips gives
    the run's own test values (per-file normalisation gave CCC 0.22 instead of the run's 0.83 after 8 epochs)."""
    from ser_hf import experiment
    from ser_hf.config import load_config
    from ser_hf.runfolder import load_run

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    experiment.run(load_config(["recipe=demo", "task=regression", "data.corpus=iemocap", "trainer.max_epochs=1",
                                f"data.cache_dir={tmp_path / 'ds'}", "trainer.progress_bar=false",
                                "trainer.log_with=null", f"output_dir={tmp_path / 'cnn'}"]))
    run = load_run(tmp_path / "cnn")
    root = next((tmp_path / "cache" / "generated").glob("iemocap-*"))
    _, pred = run.target_values()
    for speaker in run.test_speakers:
        idx = [i for i, r in enumerate(run.test_rows) if r["speaker_id"] == speaker]
        records = predict_files([root / run.test_rows[i]["file"] for i in idx], tmp_path / "cnn" / "model")
        np.testing.assert_allclose(_values(records), pred[idx], atol=1e-4)

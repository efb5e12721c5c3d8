"""Dimensional emotion (issue 14 items 3-4): the task contract, regression metrics/losses, spec errors,
regression training per family, saved-model round trips."""

from __future__ import annotations

import numpy as np
import pytest

from ser_hf.tasks import ModelTask


def test_model_task_config_round_trip_and_split():
    multi = ModelTask("multitask", ("arousal", "valence"), ("angry", "sad", "neutral"))
    cfg = {"id2label": {"0": "angry", "1": "sad", "2": "neutral"}, **multi.to_config()}
    assert cfg["ser_hf_task"] == "multitask" and cfg["ser_hf_targets"] == ["arousal", "valence"]
    assert ModelTask.from_config(cfg) == multi
    out = np.arange(10, dtype=float).reshape(2, 5)
    logits, values = multi.split_outputs(out)
    np.testing.assert_array_equal(logits, [[0, 1, 2], [5, 6, 7]])
    np.testing.assert_array_equal(values, [[3, 4], [8, 9]])

    reg = ModelTask.from_config({"ser_hf_task": "regression", "ser_hf_targets": ["arousal", "valence", "dominance"],
                                 "problem_type": "regression",
                                 "id2label": {"0": "arousal", "1": "valence", "2": "dominance"}})
    assert reg.labels == () and reg.n_outputs == 3
    logits, values = reg.split_outputs(out[:, :3])
    assert logits is None and values.tolist() == [[0, 1, 2], [5, 6, 7]]

    old = ModelTask.from_config({"id2label": {"1": "b", "0": "a"}})  # no task keys: classification
    assert old == ModelTask("classification", (), ("a", "b"))
    logits, values = old.split_outputs(out[:, :2])
    assert values is None and logits.shape == (2, 2)


def test_model_task_errors():
    with pytest.raises(ValueError, match="task must be one of"):
        ModelTask("ranking")
    with pytest.raises(ValueError, match="needs at least one target"):
        ModelTask("regression")
    with pytest.raises(ValueError, match="outputs 2 values per row, got 3"):
        ModelTask("regression", ("arousal", "valence")).split_outputs(np.zeros((4, 3)))


def _textbook_ccc(x, y):
    sxy = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * sxy / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_ccc_pearson_mae_against_references():
    from scipy.stats import pearsonr

    from ser_hf.metrics import SERRegressionMetrics, ccc, compute_regression_metrics, pearson

    rng = np.random.default_rng(0)
    t = rng.normal(3, 1, size=(200, 2))
    p = 0.5 * t + rng.normal(0.4, 0.6, size=t.shape)
    for j in range(2):
        assert ccc(t[:, j], p[:, j]) == pytest.approx(_textbook_ccc(t[:, j], p[:, j]))
        assert pearson(t[:, j], p[:, j]) == pytest.approx(pearsonr(t[:, j], p[:, j])[0])
    assert ccc(t[:, 0], t[:, 0]) == pytest.approx(1.0)
    assert ccc(t[:, 0], t[:, 0] + 1.0) < 1.0 and pearson(t[:, 0], t[:, 0] + 1.0) == pytest.approx(1.0)
    # hand example: t = [1, 2, 3], p = [2, 2, 2]: cov 0 -> ccc 0; mae = 2/3
    m = compute_regression_metrics([[1.0], [2.0], [3.0]], [[2.0], [2.0], [2.0]], ["valence"])
    assert m["ccc_valence"] == 0.0 and m["pearson_valence"] == 0.0 and m["mae_valence"] == pytest.approx(2 / 3)
    m = compute_regression_metrics(t, p, ["arousal", "valence"])
    assert m["ccc_mean"] == pytest.approx((_textbook_ccc(t[:, 0], p[:, 0]) + _textbook_ccc(t[:, 1], p[:, 1])) / 2)
    assert m["mae_arousal"] == pytest.approx(np.abs(t[:, 0] - p[:, 0]).mean())
    metric = SERRegressionMetrics(targets=["arousal", "valence"])
    metric.add_batch(predictions=p[:100].tolist(), references=t[:100].tolist())
    metric.add_batch(predictions=p[100:].tolist(), references=t[100:].tolist())
    assert metric.compute()["ccc_mean"] == pytest.approx(m["ccc_mean"])
    with pytest.raises(ValueError, match="NaN"):
        ccc([1.0, np.nan], [1.0, 2.0])


def test_ccc_loss_is_one_minus_ccc():
    import torch

    from ser_hf.losses import CCCLoss, build_regression_loss

    rng = np.random.default_rng(1)
    t = rng.normal(size=(64, 3))
    p = t + rng.normal(size=t.shape)
    loss = build_regression_loss("ccc")(torch.tensor(p), torch.tensor(t))
    assert isinstance(build_regression_loss("ccc"), CCCLoss)
    assert float(loss) == pytest.approx(1 - np.mean([_textbook_ccc(t[:, j], p[:, j]) for j in range(3)]), abs=1e-5)
    mse = build_regression_loss("mse")(torch.tensor(p), torch.tensor(t))
    assert float(mse) == pytest.approx(np.mean((p - t) ** 2))
    with pytest.raises(ValueError, match="regression_loss='mae'"):
        build_regression_loss("mae")


REG = ["task=regression", "data.corpus=iemocap"]


@pytest.mark.parametrize("recipe, overrides, message", [
    ("svm_stats_emodb", ["task=regression"], "data.corpus=emodb has no arousal/valence/dominance"),
    ("svm_stats_emodb", ["task=regresion", "data.corpus=iemocap"], "did you mean 'regression'"),
    ("svm_stats_emodb", REG, "model.classifier=svm is a classifier but task=regression"),
    ("svm_stats_emodb", ["data.corpus=iemocap", "model.classifier=svr"], "svr is a regressor"),
    ("svm_stats_emodb", [*REG, "model.classifier=svr", "targets=[arousl]"], "unknown target 'arousl'"),
    ("svm_stats_emodb", [*REG, "model.classifier=svr", "targets=[]"], "needs at least one"),
    ("svm_stats_emodb", ["targets=[arousal]"], "task=classification predicts classes only"),
    ("svm_stats_emodb", ["task=multitask", "data.corpus=iemocap"], "model.family=classic has no multitask head"),
    ("whisper_lora_emodb", REG, "LoRA dimensional runs are not built"),
    ("whisper_emodb", [*REG, "data.test_corpus=msp_podcast"], "cross-/multi-corpus dimensional runs"),
    ("whisper_svm_emodb", ["task=multitask", "data.corpus=iemocap"], "model.family=embedding has no multitask head"),
    ("demo", ["trainer.regression_weight=2"], "task=classification has no regression head"),
    ("demo", [*REG, "trainer.regression_loss=mae"], "regression_loss='mae'"),
    ("demo", [*REG, "trainer.regression_weight=0"], "regression_weight=0"),
])
def test_spec_refuses_dimensional_misuse(recipe, overrides, message):
    from ser_hf.config import load_spec
    from ser_hf.spec import SpecError

    with pytest.raises(SpecError, match=message):
        load_spec([f"recipe={recipe}", *overrides])


def test_spec_task_defaults_and_constants():
    from ser_hf.config import load_spec
    from ser_hf.data.labels import DIMENSIONAL_CORPORA, DIMENSIONS
    from ser_hf import spec

    assert spec.DIMENSIONS == DIMENSIONS and spec.DIMENSIONAL_CORPORA == DIMENSIONAL_CORPORA
    s = load_spec(["recipe=demo", *REG])
    assert (s.task, s.targets, s.trainer.regression_loss) == ("regression", DIMENSIONS, "ccc")
    s = load_spec(["recipe=demo", "task=multitask", "data.corpus=iemocap", "targets=[valence]",
                   "trainer.regression_loss=mse", "trainer.regression_weight=0.5"])
    assert (s.task, s.targets, s.trainer.regression_loss, s.trainer.regression_weight) == \
        ("multitask", ("valence",), "mse", 0.5)
    s = load_spec(["recipe=demo"])
    assert (s.task, s.targets) == ("classification", ())


# ------------------------------------------------------------------------------------------- runs (regression)

import csv  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402


def _run(overrides, tmp_path, gen_cache, monkeypatch, name="run"):
    from ser_hf.config import load_config
    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(gen_cache))
    cfg = load_config([*overrides, "trainer.progress_bar=false", "trainer.log_with=null",
                       f"data.cache_dir={gen_cache / 'datasets'}", f"output_dir={tmp_path / name}"]
                      if not any(o.startswith("model.family=classic") or "classic" in o for o in overrides) else
                      [*overrides, f"data.cache_dir={gen_cache / 'datasets'}", f"output_dir={tmp_path / name}"])
    out = run(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return out, metrics, rows


@pytest.fixture(scope="module")
def gen_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gen")


def _window_outputs(model_dir: Path, ds):
    """Clip-level raw outputs of a saved baseline on ``ds``, computed from the saved folder only."""
    import torch
    from transformers import AutoModelForAudioClassification

    from ser_hf.clips import aggregate_clips
    from ser_hf.features import compute_features, make_windows
    from ser_hf.spec import FeatureConfig

    cfg = FeatureConfig.from_pretrained(model_dir)
    windows = make_windows(compute_features(ds, cfg), cfg).with_format("numpy")
    model = AutoModelForAudioClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(np.stack(windows["features"]))).logits.numpy()
    return aggregate_clips(windows["clip_id"], logits)[1]


def test_cnn_regression_learns_and_reloads_as_ratings(tmp_path, gen_cache, monkeypatch):
    """cnn2d on a generated IEMOCAP twin, 6 epochs: test mean CCC > 0.3 on held-out speakers; the saved model's
    raw outputs ARE the ratings in predictions.csv (the standardisation is folded into its output layer)."""
    from ser_hf.config import load_spec
    from ser_hf.experiment import load_data
    from ser_hf.tasks import ModelTask

    overrides = ["recipe=demo", "task=regression", "data.corpus=iemocap", "data.synthetic={speakers:6,per_class:4,seed:0}",
                 "trainer.max_epochs=6"]
    out, metrics, rows = _run(overrides, tmp_path, gen_cache, monkeypatch)
    test = metrics["test"]
    assert metrics["task"] == "regression" and metrics["targets"] == ["arousal", "valence", "dominance"]
    assert test["ccc_mean"] > 0.3, test
    assert test["ccc_mean"] == pytest.approx(np.mean([test[f"ccc_{t}"] for t in metrics["targets"]]))
    assert "macro_f1" not in test and "label" not in rows[0] and "pred_valence" in rows[0]
    assert metrics["speakers_and_gender"]["test"]["group_score"] == "ccc_mean"
    assert (out / "scatter.png").is_file() and (out / "curves.png").is_file()
    config = json.loads((out / "model" / "config.json").read_text())
    assert ModelTask.from_config(config) == ModelTask("regression", ("arousal", "valence", "dominance"))
    assert config["problem_type"] == "regression"
    assert "Test CCC per dimension: arousal" in (out / "model" / "README.md").read_text()

    spec = load_spec([*overrides, f"data.cache_dir={gen_cache / 'datasets'}"])
    monkeypatch.setenv("SER_HF_CACHE", str(gen_cache))
    test_ds = load_data(spec.data, spec.seed).tests["iemocap"]
    outputs = _window_outputs(out / "model", test_ds)
    pred = {r["file"]: [float(r[f"pred_{t}"]) for t in metrics["targets"]] for r in rows if r["split"] == "test"}
    np.testing.assert_allclose(outputs, [pred[f] for f in test_ds["file"]], atol=1e-4)
    assert (outputs.mean(0) > 1.5).all() and (outputs.mean(0) < 4.5).all()  # ratings (1..5), not z-scores (~0)


def test_multitask_cnn_outputs_classes_and_values(tmp_path, gen_cache, monkeypatch):
    out, metrics, rows = _run(["recipe=demo", "task=multitask", "data.corpus=iemocap", "targets=[arousal]",
                               "data.synthetic={speakers:10,per_class:8,seed:0}", "trainer.max_epochs=3"],
                              tmp_path, gen_cache, monkeypatch)
    test = metrics["test"]
    assert {"macro_f1", "confusion_matrix", "ccc_arousal", "ccc_mean"} <= set(test)
    assert test["ccc_arousal"] > 0.3, test
    assert {"label", "prediction", "prob_anger", "true_arousal", "pred_arousal"} <= set(rows[0])
    assert "pred_valence" not in rows[0]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["ser_hf_task"] == "multitask" and list(config["id2label"].values())[-1] == "arousal"


def test_classic_regression_skips_unrated_rows_and_reloads(tmp_path, gen_cache, monkeypatch):
    """A manifest with blank arousal cells: those rows leave every split and are listed in metrics.json
    'skipped'; the saved ridge model reloads and predicts exactly predictions.csv."""
    from ser_hf.data.synthetic import generate_corpus
    from ser_hf.features import compute_features
    from ser_hf.models.classic import ClassicClassifier
    from ser_hf.spec import FeatureConfig

    root = generate_corpus("manifest", tmp_path / "corpus", speakers=6, per_class=2)
    manifest = root / "manifest.csv"
    lines = manifest.read_text().splitlines()
    header = lines[0].split(",")
    blanked = []
    for i in (1, 5, 9):
        cells = lines[i].split(",")
        cells[header.index("arousal")] = ""
        blanked.append(cells[0])
        lines[i] = ",".join(cells)
    manifest.write_text("\n".join(lines) + "\n")
    out, metrics, rows = _run(["recipe=demo_dimensional", "data.corpus=manifest", "data.synthetic=null",
                               f"data.manifest={manifest}", "data.split=speaker"], tmp_path, gen_cache, monkeypatch)
    reasons = {s["reason"] for s in metrics["skipped"] if any(s["file"].endswith(p) for p in blanked)}
    assert reasons == {"no arousal rating (NaN)"} and len(metrics["skipped"]) == 3
    assert not [r["file"] for r in rows if any(r["file"].endswith(p) for p in blanked)]
    assert "skipped clips (3" in (out / "classification_report.txt").read_text()

    model = ClassicClassifier.from_pretrained(out / "model")
    assert model.task.task == "regression" and model.targets == ("arousal", "valence", "dominance")
    from ser_hf.config import load_spec
    from ser_hf.experiment import drop_unrated, load_data, model_task

    spec = load_spec(["recipe=demo_dimensional", "data.corpus=manifest", "data.synthetic=null",
                      f"data.manifest={manifest}", "data.split=speaker"])
    data = load_data(spec.data, spec.seed)
    data = drop_unrated(data, model_task(spec, data.label_names))
    test = data.tests["manifest"]
    feats = compute_features(test, FeatureConfig.from_pretrained(out / "model"))
    values = model.predict_values(np.stack(feats.with_format("numpy")["features"]))
    pred = {r["file"]: [float(r[f"pred_{t}"]) for t in model.targets] for r in rows if r["split"] == "test"}
    np.testing.assert_allclose(values, [pred[f] for f in test["file"]], rtol=1e-6)


def test_manifest_without_ratings_is_refused(tmp_path, gen_cache, monkeypatch):
    from ser_hf.data.synthetic import generate_corpus

    root = generate_corpus("manifest", tmp_path / "corpus", speakers=4, per_class=1)
    manifest = root / "manifest.csv"
    lines = [",".join(line.split(",")[:5]) for line in manifest.read_text().splitlines()]  # drop a/v/d columns
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="no training clip of manifest has a arousal/valence/dominance rating"):
        _run(["recipe=demo_dimensional", "data.corpus=manifest", "data.synthetic=null", f"data.manifest={manifest}"],
             tmp_path, gen_cache, monkeypatch)


def test_trainer_regresses_and_fold_target_scale_gives_ratings(tmp_path):
    """The shared Trainer with a regression task (CCC loss on standardised targets, selection by validation mean
    CCC) fits a linear signal; folding the scale into the output layer turns outputs into the targets' units."""
    import torch
    from torch import nn
    from transformers.modeling_outputs import SequenceClassifierOutput

    from ser_hf.tasks import TargetScale
    from ser_hf.models.heads import fold_target_scale
    from ser_hf.spec import TrainerConfig
    from ser_hf.tasks import ModelTask
    from ser_hf.training import Trainer

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
            self.classifier = nn.Linear(16, 2)

        def forward(self, input_values):
            return SequenceClassifierOutput(logits=self.classifier(self.encoder(input_values)))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4)).astype(np.float32)
    y = np.stack([3 + 0.8 * x[:, 0] - 0.4 * x[:, 1], 4 + 0.5 * x[:, 2]], axis=1)  # "ratings", not standardised
    scale = TargetScale(y[:160].mean(0), y[:160].std(0))

    def loader(rows, train):
        data = [{"input_values": torch.tensor(x[i]), "labels": torch.tensor(0), "clip_id": torch.tensor(i),
                 "targets": torch.tensor(scale.standardise(y[i]))} for i in rows]
        return torch.utils.data.DataLoader(data, batch_size=32, shuffle=train)

    torch.manual_seed(0)
    task = ModelTask("regression", ("arousal", "valence"))
    cfg = TrainerConfig(max_epochs=15, learning_rate=0.01, progress_bar=False, log_with=None)
    trainer = Trainer(Net(), cfg, tmp_path, task=task)
    result = trainer.fit(loader(range(160), True), loader(range(160, 240), False))
    assert result.best_metric > 0.9 and "val_ccc_mean" in result.history[0]
    assert result.best_metric == max(h["val_ccc_mean"] for h in result.history)
    _, standardised, _ = trainer.predict(loader(range(160, 240), False))
    fold_target_scale(trainer.unwrapped_model, 0, scale.mean, scale.std)
    _, ratings, _ = trainer.predict(loader(range(160, 240), False))
    np.testing.assert_allclose(ratings, standardised * scale.std + scale.mean, rtol=1e-4, atol=1e-4)
    from ser_hf.metrics import compute_regression_metrics

    m = compute_regression_metrics(y[160:], ratings, task.targets)
    assert m["ccc_mean"] > 0.9 and m["mae_arousal"] < 0.3, m


def test_transformer_regression_saves_ratings_head(tmp_path, gen_cache, monkeypatch, w2v_dir):
    """A tiny wav2vec2 with task=regression: config.json has problem_type=regression, id2label = the targets and
    the task keys; the reloaded checkpoint's raw output on a test clip equals its pred_<t> row (the target
    scaling is folded into the classifier)."""
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    from ser_hf.config import load_spec
    from ser_hf.experiment import load_data

    overrides = ["recipe=wav2vec2_emodb", "task=regression", "targets=[arousal,dominance]", "data.corpus=iemocap",
                 "data.synthetic={speakers:6,per_class:2,seed:0}", "data.data_dir=null",
                 f"model.name_or_path={w2v_dir}", "trainer.max_epochs=1", "trainer.grad_accum_steps=1"]
    out, metrics, rows = _run(overrides, tmp_path, gen_cache, monkeypatch)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["ser_hf_task"] == "regression"
    assert list(config["id2label"].values()) == ["arousal", "dominance"] == metrics["targets"]
    assert {"ccc_arousal", "ccc_dominance", "ccc_mean"} <= set(metrics["test"]) and "pred_valence" not in rows[0]

    spec = load_spec([*overrides, f"data.cache_dir={gen_cache / 'datasets'}"])
    test_ds = load_data(spec.data, spec.seed).tests["iemocap"]
    model = AutoModelForAudioClassification.from_pretrained(out / "model").eval()
    fe = AutoFeatureExtractor.from_pretrained(out / "model")
    pred = {r["file"]: [float(r["pred_arousal"]), float(r["pred_dominance"])] for r in rows if r["split"] == "test"}
    for i in range(2):
        audio = test_ds[i]["audio"]
        inputs = fe(np.asarray(audio["array"], dtype=np.float32), sampling_rate=audio["sampling_rate"],
                    return_tensors="pt")
        with torch.no_grad():
            values = model(**inputs).logits[0].numpy()
        np.testing.assert_allclose(values, pred[test_ds[i]["file"]], atol=1e-4)


def test_probe_regression_and_transformer_multitask(tmp_path, gen_cache, monkeypatch, w2v_dir):
    """The probe family regresses (test mean CCC > 0.3 on a tiny random encoder's states: the generated ratings
    follow loudness and pitch, which survive even random convolutions); a transformer multitask model writes
    class probabilities and values, and its id2label names labels then targets."""
    from ser_hf.tasks import ModelTask

    common = ["data.corpus=iemocap", "data.synthetic={speakers:6,per_class:3,seed:0}", "data.data_dir=null"]
    out, metrics, rows = _run(["recipe=whisper_probe_emodb", "task=regression", f"embeddings.name_or_path={w2v_dir}",
                               *common], tmp_path, gen_cache, monkeypatch, name="probe")
    assert metrics["test"]["ccc_mean"] > 0.3, metrics["test"]
    config = json.loads((out / "model" / "config.json").read_text())
    assert ModelTask.from_config(config) == ModelTask("regression", ("arousal", "valence", "dominance"))

    out, metrics, rows = _run(["recipe=wav2vec2_emodb", "task=multitask", "targets=[valence]",
                               f"model.name_or_path={w2v_dir}", "trainer.max_epochs=1", *common],
                              tmp_path, gen_cache, monkeypatch, name="mt")
    config = json.loads((out / "model" / "config.json").read_text())
    task = ModelTask.from_config(config)
    assert task.task == "multitask" and task.targets == ("valence",) and len(task.labels) == 4
    assert list(config["id2label"].values())[-1] == "valence"
    assert {"macro_f1", "ccc_valence"} <= set(metrics["test"])
    assert {"prob_anger", "pred_valence", "true_valence"} <= set(rows[0])
    probs = np.array([[float(r[f"prob_{n}"]) for n in task.labels] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)

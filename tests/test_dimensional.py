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
    ("whisper_probe_emodb", REG, "model.family=probe has no regression head"),
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

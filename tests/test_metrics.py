"""compute_metrics / SERMetrics against scikit-learn and a hand-computed example; offline, no cache files."""

from __future__ import annotations


import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support)

from ser_hf.metrics import SERMetrics, compute_metrics

NAMES = ["angry", "happy", "neutral", "sad"]


def test_hand_computed_example():
    # true:  a a a b b c ; pred: a a b b c c  (3 classes, one absent class "d")
    refs = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 2, 2]
    m = compute_metrics(refs, preds, ["a", "b", "c", "d"])
    # a: P=2/2 R=2/3 F=0.8 ; b: P=1/2 R=1/2 F=0.5 ; c: P=1/2 R=1/1 F=2/3 ; d: no support
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert m["labels"] == ["a", "b", "c", "d"]
    assert m["absent_labels"] == ["d"]
    assert m["num_examples"] == 6


def test_matches_sklearn_with_class_never_predicted():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 4, 200)
    preds = np.where(rng.random(200) < 0.5, refs, rng.integers(0, 4, 200))
    preds[preds == 3] = 1  # "sad" is never predicted
    m = compute_metrics(refs, preds, NAMES)
    assert m["per_class"]["sad"]["precision"] == 0.0 and m["per_class"]["sad"]["recall"] == 0.0
    assert m["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(refs, preds))
    assert m["macro_f1"] == pytest.approx(f1_score(refs, preds, labels=range(4), average="macro", zero_division=0))
    assert m["weighted_f1"] == pytest.approx(f1_score(refs, preds, average="weighted", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(refs, preds, labels=range(4), zero_division=0)
    for i, name in enumerate(NAMES):
        assert m["per_class"][name] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert m["confusion_matrix"] == confusion_matrix(refs, preds, labels=range(4)).tolist()
    assert sum(map(sum, m["confusion_matrix"])) == 200


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_absent_reference_class_excluded_from_macro_but_kept_in_matrix():
    refs = [0, 0, 1, 1]
    preds = [0, 2, 1, 1]  # class 2 predicted once, never true; class 3 nowhere
    m = compute_metrics(refs, preds, NAMES)
    assert m["uar"] == pytest.approx(balanced_accuracy_score(refs, preds)) == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(f1_score(refs, preds, labels=[0, 1], average="macro"))
    assert len(m["confusion_matrix"]) == 4 and all(len(r) == 4 for r in m["confusion_matrix"])
    assert m["confusion_matrix"][0] == [1, 0, 1, 0]
    assert m["absent_labels"] == ["neutral", "sad"]


def test_label_name_inputs_and_torch_tensors():
    torch = pytest.importorskip("torch")
    by_name = compute_metrics(["angry", "sad", "sad"], ["angry", "sad", "happy"], NAMES)
    by_tensor = compute_metrics(torch.tensor([0, 3, 3]), torch.tensor([0, 3, 1]), NAMES)
    assert by_name == by_tensor
    assert by_name["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("refs, preds, names, match", [
    ([0, 1], [0], NAMES, "differ in length"),
    ([], [], NAMES, "no examples"),
    ([0, 4], [0, 1], NAMES, "outside 0..3"),
    ([0, -1], [0, 1], NAMES, "outside"),
    (["angry", "calm"], ["angry", "sad"], NAMES, "calm"),
    ([[0, 1]], [[0, 1]], NAMES, "flat"),
    ([0.5], [0], NAMES, "non-integer"),
    ([0], [0], [], "label_names is empty"),
    ([0], [0], ["a", "a"], "duplicates"),
])
def test_bad_inputs_raise_clear_errors(refs, preds, names, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(refs, preds, names)


def test_evaluate_metric_compute_and_add_batch_offline(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    import evaluate

    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", str(tmp_path / "metrics_cache"))
    refs = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 2, 2]
    expected = compute_metrics(refs, preds, NAMES)

    metric = SERMetrics()
    assert isinstance(metric, evaluate.Metric)
    assert metric.compute(predictions=preds, references=refs, label_names=NAMES) == expected

    batched = SERMetrics(label_names=NAMES)
    batched.add_batch(predictions=preds[:2], references=refs[:2])
    batched.add_batch(predictions=np.array(preds[2:5]), references=np.array(refs[2:5]))
    batched.add(prediction=preds[5], reference=refs[5])
    assert batched.compute() == expected
    # Nothing written under the evaluate cache or HF_HOME.
    assert not (tmp_path / "metrics_cache").exists() and not (tmp_path / "hf_home").exists()


def test_evaluate_metric_needs_label_names():
    with pytest.raises(ValueError, match="label_names"):
        SERMetrics().compute(predictions=[0], references=[0])

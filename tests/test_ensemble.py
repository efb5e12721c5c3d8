"""ser_hf.ensemble: late fusion of cross-validations, on hand-made run folders and on generated corpora."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ser_hf.compare import compare, group_runs
from ser_hf.crossval import load_run
from ser_hf.ensemble import ensemble, ensemble_from_args, validation_weights
from ser_hf.metrics import compute_metrics
from ser_hf.reporting import read_predictions, write_json, write_predictions

LABELS = ["a", "b", "c"]


def fake_cv(root: Path, recipe: str, probs: dict, labels: dict, val: dict | None = None, speakers=None) -> Path:
    """A cross-validation folder: probs[fold] (n, 3) test probabilities for clips f<fold>_<i>."""
    for k, p in probs.items():
        d = root / recipe / f"fold{k}"
        rows = []
        for split, pp, lab in [("test", p, labels[k])] + ([("validation", *val[k])] if val else []):
            for i, (row, y) in enumerate(zip(pp, lab)):
                rows.append({"split": split, "corpus": "emodb", "file": f"{split[0]}{k}_{i}.wav",
                             "speaker_id": (speakers or {}).get(k, f"s{k}") if split == "test" else "v",
                             "label": LABELS[y], "prediction": LABELS[int(np.argmax(row))],
                             **{f"prob_{n}": float(v) for n, v in zip(LABELS, row)}})
        write_predictions(d / "predictions.csv", rows, label_names=LABELS)
        test = compute_metrics(labels[k], np.argmax(p, axis=1), LABELS)
        write_json(d / "metrics.json", {
            "recipe": recipe, "corpus": "emodb", "split": "loso", "fold": k, "seed": 0,
            "speakers": {"train": ["x"], "validation": ["v"] if val else [],
                         "test": [(speakers or {}).get(k, f"s{k}")]},
            "label_names": LABELS, "test": test, "train_seconds": 1.0})
    return root / recipe


def rand_probs(rng, n):
    p = rng.random((n, 3))
    return p / p.sum(axis=1, keepdims=True)


@pytest.fixture
def two_members(tmp_path):
    rng = np.random.default_rng(0)
    labels = {k: rng.integers(0, 3, 12) for k in (1, 2, 3)}
    pa = {k: rand_probs(rng, 12) for k in labels}
    pb = {k: rand_probs(rng, 12) for k in labels}
    a = fake_cv(tmp_path, "A", pa, labels)
    b = fake_cv(tmp_path, "B", pb, labels)
    return a, b, pa, pb, labels


def test_equal_weights_average_probabilities_and_compare_reads_the_folds(tmp_path, two_members):
    a, b, pa, pb, labels = two_members
    out = ensemble([a, b], tmp_path / "fused")
    for k in (1, 2, 3):
        run = load_run(out / f"fold{k}")
        assert run.recipe == "ensemble_A+B" and run.fold == k and run.test_speakers == [f"s{k}"]
        got = np.asarray([[r[f"prob_{n}"] for n in LABELS] for r in run.test_rows])
        np.testing.assert_allclose(got, (pa[k] + pb[k]) / 2, atol=1e-12)
        expected = compute_metrics(labels[k], ((pa[k] + pb[k]) / 2).argmax(axis=1), LABELS)["macro_f1"]
        assert run.headline("macro_f1") == pytest.approx(expected)
    summary = json.loads((out / "crossval_summary.json").read_text())
    assert summary["n_folds"] == 3
    res = compare(group_runs([a, b, out]), tmp_path / "cmp")
    assert [r["recipe"] for r in res["rows"]] == ["A", "B", "ensemble_A+B"] and len(res["pairs"]) == 3


def test_refuses_mismatched_fold_plans(tmp_path, two_members):
    a, _, pa, pb, labels = two_members
    rng = np.random.default_rng(1)
    fewer = fake_cv(tmp_path, "C", {k: pa[k] for k in (1, 2)}, labels)
    with pytest.raises(ValueError, match=r"folds \[1, 2, 3\].*'C'.*folds \[1, 2\]"):
        ensemble([a, fewer], tmp_path / "x")
    other_spk = fake_cv(tmp_path, "D", pb, labels, speakers={2: "zz"})
    with pytest.raises(ValueError, match=r"fold 2 test speakers are \['s2'\].*\['zz'\].*'D'"):
        ensemble([a, other_spk], tmp_path / "y")
    relabelled = {k: (v + 1) % 3 if k == 3 else v for k, v in labels.items()}
    other_lab = fake_cv(tmp_path, "E", {k: rand_probs(rng, 12) for k in labels}, relabelled)
    with pytest.raises(ValueError, match="fold 3 test clips or labels differ"):
        ensemble([a, other_lab], tmp_path / "z")


def test_validation_weights_need_validation_predictions(tmp_path, two_members):
    a, b, *_ = two_members
    with pytest.raises(ValueError, match=r"member 'A' .*fold 1 has no validation predictions.*train_on_validation=false"):
        ensemble([a, b], tmp_path / "v", weights="validation")
    with pytest.raises(ValueError, match="weights='best'"):
        ensemble([a, b], tmp_path / "v", weights="best")


def test_validation_weights_follow_the_better_member_on_validation_only(tmp_path):
    rng = np.random.default_rng(2)
    folds = (1, 2)
    labels = {k: rng.integers(0, 3, 20) for k in folds}
    vlab = {k: rng.integers(0, 3, 30) for k in folds}
    good_val = {k: (np.eye(3)[vlab[k]] * 0.8 + 0.1, vlab[k]) for k in folds}  # member A right on validation
    bad_val = {k: (rand_probs(rng, 30), vlab[k]) for k in folds}
    a = fake_cv(tmp_path, "A", {k: rand_probs(rng, 20) for k in folds}, labels, val=good_val)
    b = fake_cv(tmp_path, "B", {k: rand_probs(rng, 20) for k in folds}, labels, val=bad_val)
    out = ensemble_from_args([f"runs=[{a},{b}]", "weights=validation", f"output_dir={tmp_path / 'w'}"])
    manifest = json.loads((out / "ensemble.json").read_text())
    for k in folds:
        w = manifest["folds"][str(k)]["weights"]
        assert w[0] > w[1], w  # chosen on validation clips, where A is perfect
        rows = read_predictions(out / f"fold{k}" / "predictions.csv")
        assert {r["split"] for r in rows} == {"test", "validation"}
    # a tie (both members identical) keeps equal weights
    p = rand_probs(rng, 10)
    y = p.argmax(axis=1)
    np.testing.assert_allclose(validation_weights([p, p], y, LABELS), [0.5, 0.5])


@pytest.mark.slow
def test_fusion_of_two_crossvals_on_a_generated_corpus(tmp_path, monkeypatch):
    """Two classic recipes cross-validated without training on validation, fused with validation weights."""
    from ser_hf.crossval import crossval_recipe

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "ser_hf_cache"))
    base = ["data.synthetic={speakers:4,per_class:2,seed:0}", f"data.cache_dir={tmp_path / 'datasets'}",
            "model.train_on_validation=false"]
    a = crossval_recipe(["recipe=svm_stats_emodb", *base], out_dir=tmp_path / "svm")
    b = crossval_recipe(["recipe=rf_stats_emodb", *base], out_dir=tmp_path / "rf")
    out = ensemble([a, b], tmp_path / "fused", weights="validation")
    runs = [load_run(out / f"fold{k}") for k in (1, 2, 3, 4)]
    assert sorted(s for r in runs for s in r.test_speakers) == sorted(load_run(a / "fold1").metrics["speakers"]["test"]
                                                                    + [s for k in (2, 3, 4) for s in
                                                                       load_run(a / f"fold{k}").test_speakers])
    pooled = json.loads((out / "crossval_summary.json").read_text())["pooled"]["macro_f1"]
    assert pooled > 1.5 / 7  # generated emotions are learnable: well above chance (1/7)
    res = compare(group_runs([a, b, out]), tmp_path / "cmp")
    assert len(res["rows"]) == 3

"""Dimensional (arousal/valence/dominance) run folders read, cross-validated and compared on CCC (issue 14)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ser_hf.compare import compare, holm
from ser_hf.crossval import POOLED_SCATTER_PNG, SUMMARY_JSON, summarize_folds
from ser_hf.ensemble import ensemble
from ser_hf.metrics import ccc as metrics_ccc
from ser_hf.metrics import compute_regression_metrics
from ser_hf.paired_tests import ccc, paired_bootstrap_ccc
from ser_hf.runfolder import load_run, why_incomplete

TARGETS = ["arousal", "valence", "dominance"]
FOLDS = range(1, 6)
CLIPS_PER_FOLD = 40


def truth(fold):
    """Test clips of a fold (two speakers, one female one male) and their true A/V/D (1..5 scale)."""
    rng = np.random.default_rng(100 + fold)
    speakers = [f"{2 * fold - 1:02d}", f"{2 * fold:02d}"]
    files = [f"{speakers[i % 2]}/clip_{fold}_{i:02d}.wav" for i in range(CLIPS_PER_FOLD)]
    return speakers, files, rng.uniform(1, 5, size=(CLIPS_PER_FOLD, len(TARGETS)))


def write_value_run(run_dir: Path, *, fold, speakers, files, true, pred, recipe, task="regression",
                    targets=TARGETS, corpus="iemocap", split="session", validation=None) -> Path:
    """A finished regression (or multitask) run folder per the dim contract."""
    run_dir.mkdir(parents=True, exist_ok=True)
    test = compute_regression_metrics(true, pred, targets)
    labels = ["angry", "happy", "neutral", "sad"]
    metrics = {"recipe": recipe, "corpus": corpus, "split": split, "fold": fold, "seed": 0, "task": task,
               "targets": list(targets), "speakers": {"train": ["99"], "validation": [], "test": speakers},
               "train_seconds": 10.0, "model_family": f"family_{recipe}", "features": {"kind": "stats"},
               "num_parameters": 1000, "label_names": labels if task == "multitask" else [], "test": test}
    if task == "multitask":
        metrics["test"].update(macro_f1=0.5, accuracy=0.5, uar=0.5)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    with (run_dir / "predictions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        label_cols = ["label", "prediction"] if task == "multitask" else []
        w.writerow(["split", "corpus", "file", "speaker_id", "gender", *label_cols,
                    *(f"{p}_{t}" for t in targets for p in ("true", "pred"))])
        for i, (f, t, p) in enumerate(zip(files, true, pred)):
            lab = [labels[i % 4], labels[i % 4]] if task == "multitask" else []
            w.writerow(["test", corpus, f, f.split("/")[0], "female" if int(f[:2]) % 2 else "male", *lab,
                        *(v for j in range(len(targets)) for v in (t[j], p[j]))])
        for f, t, p in zip(*(validation or ((), (), ()))):  # (files, true, pred) of validation speakers
            w.writerow(["validation", corpus, f, f.split("/")[0], "female", *(v for j in range(len(targets))
                                                                              for v in (t[j], p[j]))])
    return run_dir


def make_recipe(root: Path, recipe: str, noise: float, seed: int, val_noise: float | None = None, **kw) -> list[Path]:
    rng = np.random.default_rng(seed)
    dirs = []
    for fold in FOLDS:
        speakers, files, true = truth(fold)
        true = true[:, :len(kw.get("targets", TARGETS))]
        pred = true + rng.normal(0, noise, size=true.shape)
        validation = None
        if val_noise is not None:
            val_true = np.random.default_rng(200 + fold).uniform(1, 5, size=(30, true.shape[1]))
            validation = ([f"99/val_{fold}_{i:02d}.wav" for i in range(30)], val_true,
                          val_true + rng.normal(0, val_noise, size=val_true.shape))
        dirs.append(write_value_run(root / recipe / f"fold{fold}", fold=fold, speakers=speakers, files=files,
                                    true=true, pred=pred, recipe=recipe, validation=validation, **kw))
    return dirs


def test_vectorised_ccc_equals_the_metrics_ccc():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 3))
    p = t + rng.normal(0, 0.7, size=t.shape)
    assert np.allclose(ccc(t, p), [metrics_ccc(t[:, j], p[:, j]) for j in range(3)], atol=1e-12)
    # weights = repeated clips: a resample scored without copying equals scoring the copy
    idx = rng.integers(0, 50, size=50)
    w = np.bincount(idx, minlength=50)
    assert np.allclose(ccc(t, p, w), [metrics_ccc(t[idx, j], p[idx, j]) for j in range(3)], atol=1e-12)
    assert ccc(np.ones((4, 1)), np.ones((4, 1)))[0] == metrics_ccc(np.ones(4), np.ones(4)) == 1.0


def test_run_reader_gives_task_targets_and_values(tmp_path):
    speakers, files, true = truth(1)
    pred = true * 0.5 + 1.5
    run = load_run(write_value_run(tmp_path / "r", fold=1, speakers=speakers, files=files, true=true, pred=pred,
                                   recipe="svr"))
    assert run.task == "regression" and run.targets == tuple(TARGETS) and not run.has_labels
    t, p = run.target_values()
    assert t.shape == (CLIPS_PER_FOLD, 3) and np.allclose(t, true) and np.allclose(p, pred)
    with pytest.raises(ValueError, match="no class labels|is not one of"):
        run.label_indices()
    # a regression run without its CCC or its pred_ column is not finished / malformed, named
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    del metrics["test"]["ccc_mean"]
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert "ccc_mean" in why_incomplete(run.run_dir)
    other = write_value_run(tmp_path / "s", fold=1, speakers=speakers, files=files, true=true, pred=pred, recipe="x")
    text = (other / "predictions.csv").read_text().replace("pred_valence", "pred_val")
    (other / "predictions.csv").write_text(text)
    with pytest.raises(ValueError, match=r"lacks columns \['pred_valence'\]"):
        load_run(other)
    # an empty value is named with its clip
    good = write_value_run(tmp_path / "t", fold=1, speakers=speakers, files=files, true=true, pred=pred, recipe="y")
    lines = (good / "predictions.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[-1] = ""
    lines[3] = ",".join(cells)
    (good / "predictions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"pred_dominance of test clip '01/clip_1_02.wav' is empty"):
        load_run(good).target_values()


def test_crossval_summary_of_regression_folds(tmp_path):
    dirs = make_recipe(tmp_path, "good", noise=0.4, seed=1)
    out = summarize_folds(dirs, tmp_path / "cv")
    d = out["dimensions"]
    per_fold = [load_run(x).metrics["test"] for x in dirs]
    expected = np.asarray([m["ccc_arousal"] for m in per_fold])
    assert [f["ccc_arousal"] for f in d["folds"]] == pytest.approx(expected.tolist())
    assert d["mean"]["ccc_arousal"] == pytest.approx(expected.mean())
    assert d["std"]["ccc_arousal"] == pytest.approx(expected.std(ddof=1))
    true = np.concatenate([load_run(x).target_values()[0] for x in dirs])
    pred = np.concatenate([load_run(x).target_values()[1] for x in dirs])
    assert d["pooled"]["ccc_mean"] == pytest.approx(compute_regression_metrics(true, pred, TARGETS)["ccc_mean"])
    assert 0.8 < d["pooled"]["ccc_mean"] < 0.95  # noise sd 0.4 against a uniform(1, 5) spread
    assert json.loads((tmp_path / "cv" / SUMMARY_JSON).read_text())["task"] == "regression"
    assert (tmp_path / "cv" / POOLED_SCATTER_PNG).stat().st_size > 10_000
    md = (tmp_path / "cv" / "crossval_summary.md").read_text()
    assert f"mean CCC {d['pooled']['ccc_mean']:.3f}" in md and "macro-F1" not in md


def test_compare_finds_a_real_ccc_difference_and_none_between_equals(tmp_path):
    good = make_recipe(tmp_path, "good", noise=0.4, seed=1)
    noisy = make_recipe(tmp_path, "noisy", noise=1.5, seed=2)
    twin = make_recipe(tmp_path, "twin", noise=0.4, seed=1)  # the same predictions as good
    res = compare({"good": good, "noisy": noisy, "twin": twin}, tmp_path / "cmp", n_resamples=1000)
    assert "rows" not in res  # regression only: no class table
    d = res["dimensions"]
    pairs = {(p["recipe_a"], p["recipe_b"]): p for p in d["pairs"]}
    gn = pairs[("good", "noisy")]
    true = np.concatenate([load_run(x).target_values()[0] for x in good])
    pg = np.concatenate([load_run(x).target_values()[1] for x in good])
    pn = np.concatenate([load_run(x).target_values()[1] for x in noisy])
    expected = compute_regression_metrics(true, pg, TARGETS)["ccc_mean"] - \
        compute_regression_metrics(true, pn, TARGETS)["ccc_mean"]
    assert gn["delta_ccc_mean"] == pytest.approx(expected) and gn["delta_ccc_mean"] > 0.3
    assert gn["ci_low"] > 0 and gn["significant"] and gn["bootstrap_p_holm"] <= 3 * 2 / 1001 + 1e-12
    assert all(gn[f"ccc_{t}_significant"] and gn[f"ccc_{t}_delta"] > 0.2 for t in TARGETS)
    assert gn["wilcoxon_p"] == pytest.approx(0.0625)  # 5 folds, all in one direction: the smallest possible p
    gt = pairs[("good", "twin")]
    assert gt["delta_ccc_mean"] == 0 and not gt["significant"] and gt["bootstrap_p"] == 1.0
    # Holm over the three pairs, as for macro-F1
    assert [p["bootstrap_p_holm"] for p in d["pairs"]] == pytest.approx(holm([p["bootstrap_p"] for p in d["pairs"]]))
    # per-gender gap on mean CCC, per recipe and per pair
    row = {r["recipe"]: r for r in d["rows"]}["good"]
    assert row["female_ccc_mean"] is not None and row["gender_gap"] == pytest.approx(
        row["female_ccc_mean"] - row["male_ccc_mean"])
    assert gn["gender_gap_a"] == pytest.approx(row["gender_gap"])
    assert "gap_bootstrap_p" in gn
    files = {Path(v).name for v in res["files"].values()}
    assert {"comparison_ccc.csv", "significance_ccc.csv", "comparison_ccc.png", "comparison.md"} <= files
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "good vs noisy" in md and "significant at 0.05" in md and "Targets that differ significantly: arousal, " \
        "valence, dominance" in md


def test_per_target_difference_is_found_only_where_it_is(tmp_path):
    """B is as good as A on arousal and valence but noisy on dominance: only dominance differs."""
    rng = np.random.default_rng(3)
    a_dirs, b_dirs = [], []
    for fold in FOLDS:
        speakers, files, true = truth(fold)
        base = true + rng.normal(0, 0.4, size=true.shape)
        worse = base.copy()
        worse[:, 2] = true[:, 2] + rng.normal(0, 2.0, size=len(true))
        kw = dict(fold=fold, speakers=speakers, files=files, true=true)
        a_dirs.append(write_value_run(tmp_path / "A" / f"fold{fold}", pred=base, recipe="A", **kw))
        b_dirs.append(write_value_run(tmp_path / "B" / f"fold{fold}", pred=worse, recipe="B", **kw))
    pair = compare({"A": a_dirs, "B": b_dirs}, tmp_path / "cmp", n_resamples=1000)["dimensions"]["pairs"][0]
    assert pair["ccc_arousal_delta"] == 0 and pair["ccc_valence_delta"] == 0
    assert not pair["ccc_arousal_significant"] and not pair["ccc_valence_significant"]
    assert pair["ccc_dominance_significant"] and pair["ccc_dominance_delta"] > 0.3


def test_paired_bootstrap_ccc_is_reproducible():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(80, 2))
    a, b = t + rng.normal(0, 0.5, size=t.shape), t + rng.normal(0, 0.6, size=t.shape)
    r1 = paired_bootstrap_ccc(t, a, b, ["arousal", "valence"], n_resamples=300, seed=7)
    r2 = paired_bootstrap_ccc(t, a, b, ["arousal", "valence"], n_resamples=300, seed=7, chunk=17)
    assert r1 == r2
    assert r1["mean"]["delta"] == pytest.approx(np.mean(ccc(t, a)) - np.mean(ccc(t, b)))


def test_refuses_regression_against_classification_and_other_targets(tmp_path):
    from tests.test_compare import make_recipe as make_class_recipe, good as good_rule

    cls = make_class_recipe(tmp_path / "cls", "cnn", good_rule)
    reg = make_recipe(tmp_path, "svr", noise=0.4, seed=1)
    with pytest.raises(ValueError, match="refusing to compare a classification run with a regression run"):
        compare({"cnn": cls, "svr": reg}, tmp_path / "out")
    two = make_recipe(tmp_path, "two", noise=0.4, seed=1, targets=TARGETS[:2])
    with pytest.raises(ValueError, match="differ in targets"):
        compare({"svr": reg, "two": two}, tmp_path / "out2")
    other = make_recipe(tmp_path, "shifted", noise=0.4, seed=1)
    csv_path = other[0] / "predictions.csv"
    rows = list(csv.reader(csv_path.open()))
    rows[1][rows[0].index("true_valence")] = "9.5"
    with csv_path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(ValueError, match="true_valence values of 1 test clip"):
        compare({"svr": reg, "shifted": other}, tmp_path / "out3")


def test_multitask_runs_compare_on_ccc_with_regression_runs(tmp_path):
    reg = make_recipe(tmp_path, "svr", noise=0.4, seed=1)
    multi = make_recipe(tmp_path, "mt", noise=1.5, seed=2, task="multitask")
    res = compare({"svr": reg, "mt": multi}, tmp_path / "out", n_resamples=500)
    assert "rows" not in res and res["dimensions"]["pairs"][0]["delta_ccc_mean"] > 0.3


def test_ensemble_averages_regression_members_values(tmp_path):
    a = make_recipe(tmp_path, "a", noise=0.6, seed=1, val_noise=0.3)
    b = make_recipe(tmp_path, "b", noise=0.6, seed=2, val_noise=2.0)
    out = ensemble([a[0].parent, b[0].parent], tmp_path / "ens")
    fused = [load_run(out / f"fold{k}") for k in FOLDS]
    assert fused[0].task == "regression" and fused[0].targets == tuple(TARGETS)
    for run, ra, rb in zip(fused, a, b):
        np.testing.assert_allclose(run.target_values()[1],
                                   (load_run(ra).target_values()[1] + load_run(rb).target_values()[1]) / 2)
    summary = json.loads((out / SUMMARY_JSON).read_text())["dimensions"]
    members = [summarize_folds(x, tmp_path / f"cv_{n}")["dimensions"]["pooled"]["ccc_mean"] for n, x in
               (("a", a), ("b", b))]
    assert summary["pooled"]["ccc_mean"] > max(members) + 0.03  # two independent errors averaged: a real gain
    # validation weights go to the member that is better on the validation speakers
    val = ensemble([a[0].parent, b[0].parent], tmp_path / "ens_val", weights="validation")
    weights = json.loads((val / "ensemble.json").read_text())["folds"]["1"]["weights"]
    assert weights[0] >= 0.8
    # and compare reads the fused folds beside the members
    res = compare({"a": a, "fused": [out / f"fold{k}" for k in FOLDS]}, tmp_path / "cmp", n_resamples=300)
    assert res["dimensions"]["pairs"][0]["delta_ccc_mean"] < 0


def test_ensemble_refuses_multitask_and_mixed_members(tmp_path):
    from tests.test_compare import make_recipe as make_class_recipe, good as good_rule

    reg = make_recipe(tmp_path, "a", noise=0.4, seed=1)
    multi = make_recipe(tmp_path, "m", noise=0.4, seed=1, task="multitask")
    with pytest.raises(ValueError, match="multitask members is not implemented"):
        ensemble([reg[0].parent, multi[0].parent], tmp_path / "ens")
    cls = make_class_recipe(tmp_path / "cls", "cnn", good_rule)
    with pytest.raises(ValueError, match="cannot fuse a classification member with a regression member"):
        ensemble([cls[0].parent, reg[0].parent], tmp_path / "ens2")

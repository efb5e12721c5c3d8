"""Comparison of recipes on identical folds: table, plots, paired tests, and refusal of mismatched splits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from ser_hf.compare import (
    COMPARISON_CSV,
    COMPARISON_MD,
    COMPARISON_PNG,
    PER_CLASS_PNG,
    SIGNIFICANCE_CSV,
    _macro_f1_from_cms,
    compare,
    group_runs,
    holm,
    mcnemar_exact,
    paired_bootstrap,
)

from ser_hf.metrics import compute_metrics

LABELS = ["anger", "happiness", "neutral", "sadness"]
FOLDS = range(1, 7)  # 6 folds: enough for the Wilcoxon test to be able to reach p < 0.05
CLIPS_PER_FOLD = 20


def write_run(run_dir: Path, *, fold, test_speakers, files, refs, preds, recipe, corpus="ravdess", split="kfold",
              seed=0) -> Path:
    """A fake finished run folder per the run folder contract (metrics.json + predictions.csv)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    refs, preds = np.asarray(refs), np.asarray(preds)
    metrics = {
        "recipe": recipe, "corpus": corpus, "split": split, "fold": fold, "seed": seed, "leaky": split == "random",
        "speakers": {"train": ["99"], "validation": [], "test": list(test_speakers)},
        "best_epoch": 1, "train_seconds": 60.0, "model_family": f"family_{recipe}", "features": {"kind": "logmel"},
        "num_parameters": 1_500_000, "label_names": LABELS, "validation": {},
        "test": {
            "macro_f1": f1_score(refs, preds, average="macro", zero_division=0),
            "accuracy": accuracy_score(refs, preds),
            "uar": balanced_accuracy_score(refs, preds),
            "confusion_matrix": confusion_matrix(refs, preds, labels=range(len(LABELS))).tolist(),
        },
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    with (run_dir / "predictions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "corpus", "file", "speaker_id", "label", "prediction", *(f"prob_{l}" for l in LABELS)])
        for f, r, p in zip(files, refs, preds):
            w.writerow(["test", corpus, f, f.split("/")[0], LABELS[r], LABELS[p], 0.25, 0.25, 0.25, 0.25])
    return run_dir


def fold_clips(fold):
    """Test clips of a fold: two speakers, labels cycling through the classes."""
    speakers = [f"{2 * fold - 1:02d}", f"{2 * fold:02d}"]
    files = [f"{speakers[i % 2]}/clip_{fold}_{i:02d}.wav" for i in range(CLIPS_PER_FOLD)]
    refs = np.arange(CLIPS_PER_FOLD) % len(LABELS)
    return speakers, files, refs


def make_recipe(root: Path, recipe: str, wrong, **kw) -> list[Path]:
    """Run folders over FOLDS where clip i of a fold is wrong (predicted as the next class) when wrong(fold, i)."""
    dirs = []
    for fold in FOLDS:
        speakers, files, refs = fold_clips(fold)
        preds = np.array([(r + 1) % len(LABELS) if wrong(fold, i) else r for i, r in enumerate(refs)])
        dirs.append(write_run(root / recipe / f"fold_{fold}", fold=fold, test_speakers=speakers, files=files,
                              refs=refs, preds=preds, recipe=recipe, **kw))
    return dirs


def good(fold, i):  # 10% wrong
    return i % 10 == 0


def bad(fold, i):  # 50% wrong
    return i % 2 == 1


def read_csv(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_clearly_better_recipe_is_significant(tmp_path):
    groups = {"A": make_recipe(tmp_path, "A", good), "B": make_recipe(tmp_path, "B", bad)}
    out = tmp_path / "cmp"
    res = compare(groups, out)

    rows = read_csv(out / COMPARISON_CSV)
    assert [r["recipe"] for r in rows] == ["A", "B"]
    assert rows[0]["model_family"] == "family_A" and rows[0]["features"] == "logmel"
    assert rows[0]["n_folds"] == "6" and rows[0]["folds"] == "1 2 3 4 5 6"
    assert float(rows[0]["train_seconds_total"]) == pytest.approx(360.0)
    assert float(rows[0]["accuracy_mean"]) == pytest.approx(0.9)
    assert float(rows[1]["accuracy_mean"]) == pytest.approx(0.5)
    assert float(rows[0]["macro_f1_std"]) == pytest.approx(0.0)  # same errors in every fold
    for png in (COMPARISON_PNG, PER_CLASS_PNG):
        assert (out / png).stat().st_size > 1000

    (pair,) = read_csv(out / SIGNIFICANCE_CSV)
    assert (pair["recipe_a"], pair["recipe_b"]) == ("A", "B")
    assert int(pair["n_clips"]) == 6 * CLIPS_PER_FOLD
    assert float(pair["delta_macro_f1"]) > 0.3
    assert float(pair["ci_low"]) > 0.2
    assert float(pair["bootstrap_p"]) < 0.01
    assert float(pair["mcnemar_p"]) < 1e-6
    # A wrong on clips 0, 10 (B right there); B wrong on the 10 odd clips (A right there)
    assert int(pair["a_right_b_wrong"]) == 6 * 10 and int(pair["a_wrong_b_right"]) == 6 * 2
    assert float(pair["wilcoxon_p"]) == pytest.approx(0.03125)  # all 6 folds favour A: 2 / 2**6
    assert pair["significant"] == "True"
    assert res["pairs"][0]["significant"] is True

    md = (out / COMPARISON_MD).read_text()
    assert "| A | family_A | logmel | 1.5M | 6.0 min |" in md
    assert "kfold" in md and "120 test clips" in md
    assert "A vs B**: ΔF1 = +0." in md and "— significant at 0.05" in md


def test_many_recipes_keep_the_power_to_call_a_clear_difference(tmp_path):
    # 7 recipes = 21 pairs: Holm multiplies the smallest p by 21, so the bootstrap must resample enough
    # (2/(B+1) * 21 < 0.05) for a clear winner to stay significant after the correction.
    groups = {"A": make_recipe(tmp_path, "A", good)}
    groups.update({f"B{k}": make_recipe(tmp_path, f"B{k}", bad) for k in range(6)})
    res = compare(groups, tmp_path / "cmp")
    pairs = {(p["recipe_a"], p["recipe_b"]): p for p in res["pairs"]}
    assert len(pairs) == 21 and all(p["n_resamples"] >= 4 * 21 / 0.05 for p in pairs.values())
    assert all(pairs[("A", f"B{k}")]["significant"] for k in range(6))
    assert all(pairs[("A", f"B{k}")]["bootstrap_p_holm"] < 0.05 for k in range(6))
    assert not pairs[("B0", "B1")]["significant"]  # the same predictions


def test_equal_recipes_are_not_significant(tmp_path):
    # Same number of errors of the same kind per class, on different clips: identical confusion matrices.
    groups = {
        "A": make_recipe(tmp_path, "A", lambda f, i: i in (0, 5, 10, 15)),
        "B": make_recipe(tmp_path, "B", lambda f, i: i in (4, 9, 14, 19)),
        "C": make_recipe(tmp_path, "C", lambda f, i: i in (0, 5, 10, 15)),
    }
    res = compare(groups, tmp_path / "cmp")
    pairs = {(p["recipe_a"], p["recipe_b"]): p for p in res["pairs"]}
    assert set(pairs) == {("A", "B"), ("A", "C"), ("B", "C")}
    ab = pairs[("A", "B")]
    assert ab["delta_macro_f1"] == pytest.approx(0.0)
    assert ab["bootstrap_p"] > 0.5 and ab["mcnemar_p"] == pytest.approx(1.0)
    assert ab["ci_low"] < 0 < ab["ci_high"]
    assert not ab["significant"]
    ac = pairs[("A", "C")]  # identical predictions
    assert ac["bootstrap_p"] == 1.0 and ac["mcnemar_p"] == 1.0 and ac["wilcoxon_p"] == 1.0
    assert "not significant at 0.05" in (tmp_path / "cmp" / COMPARISON_MD).read_text()


def test_single_split_runs_compare_without_wilcoxon(tmp_path):
    speakers, files, refs = fold_clips(1)
    groups = {}
    for name, wrong in (("A", good), ("B", bad)):
        preds = np.array([(r + 1) % 4 if wrong(1, i) else r for i, r in enumerate(refs)])
        groups[name] = [write_run(tmp_path / name, fold=None, split="speaker", test_speakers=speakers, files=files,
                                  refs=refs, preds=preds, recipe=name)]
    res = compare(groups, tmp_path / "cmp")
    assert res["folds"] == [None]
    assert res["pairs"][0]["wilcoxon_p"] is None
    assert res["rows"][0]["macro_f1_std"] is None
    assert read_csv(tmp_path / "cmp" / SIGNIFICANCE_CSV)[0]["wilcoxon_p"] == ""


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(corpus="emodb"), "differ in corpus"),
        (dict(split="loso"), "differ in split"),
    ],
)
def test_refuses_different_corpus_or_split(tmp_path, change, message):
    groups = {"A": make_recipe(tmp_path, "A", good), "B": make_recipe(tmp_path, "B", bad, **change)}
    with pytest.raises(ValueError, match=f"refusing to compare recipe 'A' with recipe 'B': they {message}"):
        compare(groups, tmp_path / "cmp")


def test_refuses_different_test_speakers_clips_or_folds(tmp_path):
    a = make_recipe(tmp_path, "A", good)
    b = make_recipe(tmp_path, "B", bad)

    with pytest.raises(ValueError, match="differ in folds"):
        compare({"A": a, "B": b[:5]}, tmp_path / "cmp")

    metrics = json.loads((b[2] / "metrics.json").read_text())
    metrics["speakers"]["test"] = ["05", "77"]
    (b[2] / "metrics.json").write_text(json.dumps(metrics))
    expected = r"differ in test speakers of fold 3 \('A': \['05', '06'\]; 'B': \['05', '77'\]\)"
    with pytest.raises(ValueError, match=expected):
        compare({"A": a, "B": b}, tmp_path / "cmp")
    metrics["speakers"]["test"] = ["05", "06"]
    (b[2] / "metrics.json").write_text(json.dumps(metrics))

    lines = (b[0] / "predictions.csv").read_text().splitlines()
    (b[0] / "predictions.csv").write_text("\n".join(lines[:-1]) + "\n")  # one test clip fewer
    with pytest.raises(ValueError, match=r"differ in test clips of fold 1 .*'02/clip_1_19.wav'"):
        compare({"A": a, "B": b}, tmp_path / "cmp")

    with pytest.raises(ValueError, match="at least two recipes"):
        compare({"A": a}, tmp_path / "cmp")


def test_group_runs_reads_recipe_names(tmp_path):
    make_recipe(tmp_path, "A", good)
    b = make_recipe(tmp_path, "B", bad)
    groups = group_runs([tmp_path / "A", b[0], b[1]])
    assert list(groups) == ["A", "B"]
    assert len(groups["A"]) == 6 and groups["B"] == b[:2]
    # the same recipe cross-validated twice (different overrides): two entries, named by their folders
    for fold in FOLDS:
        speakers, files, refs = fold_clips(fold)
        write_run(tmp_path / "A_variant" / f"fold_{fold}", fold=fold, test_speakers=speakers, files=files, refs=refs,
                  preds=refs, recipe="A")
    twice = group_runs([tmp_path / "A", tmp_path / "A_variant"])
    assert list(twice) == ["A [A]", "A [A_variant]"]
    assert twice["A [A_variant]"] == sorted((tmp_path / "A_variant").iterdir())
    result = compare(twice, tmp_path / "cmp")
    assert [r["recipe"] for r in result["rows"]] == ["A [A]", "A [A_variant]"]
    assert result["rows"][1]["pooled_macro_f1"] == 1.0


def test_vectorised_macro_f1_matches_compute_metrics():
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(7)]
    for _ in range(20):
        refs = rng.integers(0, 5, 30)
        preds = rng.integers(0, 6, 30)  # predicts class 5, never true; class 6 neither true nor predicted
        cm = confusion_matrix(refs, preds, labels=range(7))
        # classes absent from the references are left out of the mean, as in the project's reporter
        assert _macro_f1_from_cms(cm) == pytest.approx(compute_metrics(refs, preds, names)["macro_f1"])
        assert _macro_f1_from_cms(cm) == pytest.approx(f1_score(refs, preds, labels=np.unique(refs), average="macro"))


def test_paired_bootstrap_is_reproducible_and_tests_are_correct():
    rng = np.random.default_rng(1)
    refs = rng.integers(0, 4, 200)
    a = np.where(rng.random(200) < 0.8, refs, (refs + 1) % 4)
    b = np.where(rng.random(200) < 0.6, refs, (refs + 1) % 4)
    r1 = paired_bootstrap(refs, a, b, 4, n_resamples=500, seed=3)
    assert r1 == paired_bootstrap(refs, a, b, 4, n_resamples=500, seed=3)
    assert r1["delta"] == pytest.approx(f1_score(refs, a, average="macro") - f1_score(refs, b, average="macro"))
    assert r1["ci_low"] < r1["delta"] < r1["ci_high"]

    mc = mcnemar_exact([True] * 8 + [False] * 2, [False] * 8 + [True] * 2)
    assert (mc["a_right_b_wrong"], mc["a_wrong_b_right"]) == (8, 2)
    assert mc["p"] == pytest.approx(0.109375)  # two-sided binomial P(X<=2 or X>=8), n=10
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])

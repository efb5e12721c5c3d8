"""Cross-validation, comparison, cross-corpus and multi-corpus runs end to end on generated corpora."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ser_hf.config import load_config
from ser_hf.data.labels import COMMON_LABELS, RAVDESS_CODES, TO_COMMON

CHEAP = ["trainer.progress_bar=false", "trainer.log_with=null"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "ser_hf_cache"))
    return [f"data.cache_dir={tmp_path / 'datasets'}"]


def test_crossval_runs_every_fold_once_and_resumes(tmp_path, cache, monkeypatch):
    import ser_hf.experiment as experiment
    from ser_hf.crossval import crossval_recipe

    args = ["recipe=svm_stats_emodb", "data.synthetic={speakers:4,per_class:2,seed:0}", *cache, *CHEAP]
    out = crossval_recipe(args, out_dir=tmp_path / "cv")
    summary = json.loads((out / "crossval_summary.json").read_text())
    assert summary["split"] == "loso" and summary["n_folds"] == 4
    tested = [s for f in summary["folds"] for s in f["test_speakers"]]
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 4  # each speaker tested exactly once

    (out / "fold2" / "metrics.json").unlink()  # an interrupted fold
    calls = []
    real_run = experiment.run
    monkeypatch.setattr(experiment, "run", lambda cfg: calls.append(cfg.data.fold) or real_run(cfg))
    crossval_recipe(args, out_dir=tmp_path / "cv")
    assert calls == [2], "only the unfinished fold may run again"


def test_parallel_crossval_equals_sequential_and_logs_each_fold(tmp_path, cache):
    from ser_hf.crossval import crossval_recipe

    args = ["recipe=svm_stats_emodb", "data.synthetic={speakers:4,per_class:2,seed:0}", *cache, *CHEAP]
    seq = json.loads((crossval_recipe(args, out_dir=tmp_path / "seq") / "crossval_summary.json").read_text())
    out = crossval_recipe([*args, "jobs=2", f"output_dir={tmp_path / 'par'}"])
    par = json.loads((out / "crossval_summary.json").read_text())
    assert out == tmp_path / "par" and par["n_folds"] == 4
    assert [f["macro_f1"] for f in par["folds"]] == [f["macro_f1"] for f in seq["folds"]]
    assert all((tmp_path / "par" / f"fold{k}.log").stat().st_size > 0 for k in range(1, 5))


def test_parallel_crossval_reports_the_failed_folds_log(tmp_path, cache):
    from ser_hf.crossval import crossval_recipe

    # A value only the estimator's fit rejects (names and types are checked up front, before any fold).
    args = ["recipe=svm_stats_emodb", "data.synthetic={speakers:4,per_class:2,seed:0}", *cache, *CHEAP,
            "model.C=-1.0"]
    with pytest.raises(RuntimeError, match=r"fold1, see .*fold1\.log") as err:
        crossval_recipe([*args, "jobs=2"], out_dir=tmp_path / "bad")
    assert "'C' parameter" in (tmp_path / "bad" / "fold1.log").read_text()
    assert "fold4, see" in str(err.value), "one failed fold must not stop the others"


def test_compare_two_recipes_on_identical_folds(tmp_path, cache):
    from ser_hf.compare import compare_from_args

    out = compare_from_args(["recipes=[svm_stats_emodb,rf_stats_emodb]",
                             "data.synthetic={speakers:4,per_class:3,seed:0}", *cache, *CHEAP,
                             f"output_dir={tmp_path / 'cmp'}"])
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["recipe"] for r in rows] == ["svm_stats_emodb", "rf_stats_emodb"]
    assert all(0.0 <= float(r["macro_f1_mean"]) <= 1.0 for r in rows)
    sig = list(csv.DictReader(open(out / "significance.csv")))
    assert len(sig) == 1 and {sig[0]["recipe_a"], sig[0]["recipe_b"]} == {"svm_stats_emodb", "rf_stats_emodb"}
    assert 0.0 <= float(sig[0]["bootstrap_p"]) <= 1.0
    assert (out / "comparison.png").stat().st_size > 0 and (out / "comparison.md").is_file()


def test_compare_refuses_runs_on_different_splits(tmp_path, cache):
    from ser_hf.compare import compare_from_args
    from ser_hf.experiment import run

    base = ["data.synthetic={speakers:4,per_class:2,seed:0}", *cache, *CHEAP]
    a = run(load_config(["recipe=svm_stats_emodb", *base, "data.split=speaker", f"output_dir={tmp_path / 'a'}"]))
    b = run(load_config(["recipe=rf_stats_emodb", *base, "data.split=loso", "data.fold=1",
                         f"output_dir={tmp_path / 'b'}"]))
    with pytest.raises(ValueError, match="split|fold"):
        compare_from_args([f"runs=[{a},{b}]", f"output_dir={tmp_path / 'cmp'}"])


def test_cross_corpus_maps_labels_through_the_common_set(tmp_path, cache, generated):
    from ser_hf.experiment import run

    ravdess = generated("ravdess", speakers=4, per_class=2)
    out = run(load_config(["recipe=svm_stats_emodb", "data.synthetic={speakers:4,per_class:2,seed:0}",
                           "data.test_corpus=ravdess", f"data.test_data_dir={ravdess}", *cache, *CHEAP,
                           f"output_dir={tmp_path / 'x'}"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_names"] == COMMON_LABELS
    assert metrics["train_corpus"] == "emodb" and metrics["test_corpus"] == "ravdess"
    rows = [r for r in csv.DictReader(open(out / "predictions.csv")) if r["split"] == "test"]
    assert rows and all(r["corpus"] == "ravdess" for r in rows)
    for r in rows:  # the label is the common name of the emotion coded in the RAVDESS file name
        code = Path(r["file"]).name.split("-")[2]
        assert r["label"] == TO_COMMON["ravdess"][RAVDESS_CODES[code]]
    assert not {"calm", "surprised"} & {r["label"] for r in rows}  # no counterpart: dropped


def test_multi_corpus_reports_each_corpus(tmp_path, cache, generated):
    from ser_hf.experiment import run

    crema = generated("crema_d", speakers=4, per_class=2)
    out = run(load_config(["recipe=svm_stats_emodb", "data.synthetic={speakers:4,per_class:2,seed:0}",
                           f"data.extra_train=[{{corpus:crema_d,data_dir:'{crema}'}}]", *cache, *CHEAP,
                           f"output_dir={tmp_path / 'm'}"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test_per_corpus"]) == {"emodb", "crema_d"}
    assert metrics["test"]["num_examples"] == sum(m["num_examples"] for m in metrics["test_per_corpus"].values())

"""Per-speaker and per-gender results in metrics.json, the classification report and the comparison."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ser_hf.groups import group_metrics, normalise_gender

LABELS = ["anger", "happiness", "sadness"]


def _direct_macro_f1(refs, preds):
    present = sorted(set(refs))  # the reporter's definition: classes present in the references
    return f1_score(refs, preds, labels=present, average="macro", zero_division=0)


def test_group_metrics_equal_a_direct_computation():
    rng = np.random.default_rng(0)
    speakers = np.repeat(["01", "02", "03", "04"], 30)
    genders = np.repeat(["female", "M", "f", "male"], 30)
    refs = rng.integers(0, 3, speakers.size)
    noise = np.where(np.isin(speakers, ["01", "03"]), 0.1, 0.5)  # women's clips are easier here
    preds = np.where(rng.random(speakers.size) < noise, rng.integers(0, 3, speakers.size), refs)
    g = group_metrics(refs, preds, speakers, genders, LABELS)
    for s in ("01", "02", "03", "04"):
        m = speakers == s
        assert g["per_speaker"][s]["macro_f1"] == pytest.approx(_direct_macro_f1(refs[m], preds[m]))
        assert g["per_speaker"][s]["n"] == 30
    female = np.isin(speakers, ["01", "03"])
    assert g["per_gender"]["female"]["macro_f1"] == pytest.approx(_direct_macro_f1(refs[female], preds[female]))
    assert g["per_gender"]["male"]["macro_f1"] == pytest.approx(_direct_macro_f1(refs[~female], preds[~female]))
    assert g["gender_gap"] == pytest.approx(g["per_gender"]["female"]["macro_f1"] - g["per_gender"]["male"]["macro_f1"])
    assert g["gender_gap"] > 0.1
    worst = min(g["per_speaker"], key=lambda s: g["per_speaker"][s]["macro_f1"])
    assert g["worst_speaker"]["speaker"] == worst and worst in ("02", "04")
    assert g["per_speaker"]["02"]["gender"] == "male"


def test_one_gender_or_no_gender_says_n_a():
    refs, preds = [0, 1, 2, 0], [0, 1, 1, 0]
    only_f = group_metrics(refs, preds, ["a", "a", "b", "b"], ["female"] * 4, LABELS)
    assert only_f["gender_gap"] is None and only_f["gender_gap_note"] == "n/a: only female speakers in this split"
    assert list(only_f["per_gender"]) == ["female"]
    unknown = group_metrics(refs, preds, ["a", "a", "b", "b"], ["", "", "?", None], LABELS)
    assert unknown["gender_gap"] is None and "no gender metadata" in unknown["gender_gap_note"]
    assert normalise_gender(" Male ") == "male" and normalise_gender("x") is None


def test_gap_bootstrap_detects_a_gap_difference_and_not_an_equal_one():
    from ser_hf.compare import paired_bootstrap_gap

    rng = np.random.default_rng(1)
    n = 400
    female = np.arange(n) % 2 == 0
    refs = rng.integers(0, 3, n)
    fair = np.where(rng.random(n) < 0.3, rng.integers(0, 3, n), refs)
    # biased: as good as fair on women, much worse on men
    biased = np.where(~female & (rng.random(n) < 0.6), (refs + 1) % 3, fair)
    same = paired_bootstrap_gap(refs, fair, fair, female, ~female, 3, n_resamples=500)
    assert same["delta"] == 0 and same["p"] == 1.0
    diff = paired_bootstrap_gap(refs, biased, fair, female, ~female, 3, n_resamples=500)
    f = _direct_macro_f1(refs[female], biased[female]) - _direct_macro_f1(refs[~female], biased[~female])
    assert diff["gap_a"] == pytest.approx(f)
    assert diff["delta"] > 0.2 and diff["ci_low"] > 0 and diff["p"] < 0.01
    with pytest.raises(ValueError, match="both genders"):
        paired_bootstrap_gap(refs, fair, fair, np.ones(n, bool), np.zeros(n, bool), 3)


def _fake_run(root, recipe, rows, label_names=LABELS):
    from ser_hf.metrics import compute_metrics
    from ser_hf.reporting import write_json, write_predictions

    root.mkdir(parents=True)
    refs = [r["label"] for r in rows]
    preds = [r["prediction"] for r in rows]
    write_json(root / "metrics.json", {"recipe": recipe, "corpus": "emodb", "split": "speaker", "fold": None,
                                       "seed": 0, "leaky": False, "label_names": label_names,
                                       "speakers": {"test": sorted({r["speaker_id"] for r in rows})},
                                       "test": compute_metrics(refs, preds, label_names)})
    write_predictions(root / "predictions.csv", rows, label_names=label_names)
    return root


def test_compare_reports_speakers_gender_gap_and_tests_it(tmp_path):
    from ser_hf.compare import compare

    rng = np.random.default_rng(2)
    # EmoDB speakers 03 (male) and 08 (female): genders come from the corpus documentation here (no column)
    speakers = np.repeat(["03", "08"], 150)
    refs = rng.integers(0, 3, speakers.size)
    fair = np.where(rng.random(speakers.size) < 0.3, rng.integers(0, 3, speakers.size), refs)
    biased = np.where((speakers == "03") & (rng.random(speakers.size) < 0.6), (refs + 1) % 3, fair)

    def rows(preds):
        return [{"split": "test", "corpus": "emodb", "file": f"{s}_{i}.wav", "speaker_id": s, "label": LABELS[r],
                 "prediction": LABELS[p], **{f"prob_{k}": float(k == LABELS[p]) for k in LABELS}}
                for i, (s, r, p) in enumerate(zip(speakers, refs, preds))]

    res = compare({"fair": [_fake_run(tmp_path / "fair", "fair", rows(fair))],
                   "biased": [_fake_run(tmp_path / "biased", "biased", rows(biased))]}, tmp_path / "cmp",
                  n_resamples=500)
    table = {r["recipe"]: r for r in csv.DictReader(open(tmp_path / "cmp" / "comparison.csv"))}
    male = speakers == "03"
    assert float(table["biased"]["male_macro_f1"]) == pytest.approx(_direct_macro_f1(refs[male], biased[male]))
    assert table["biased"]["worst_speaker"] == "03"
    assert float(table["biased"]["gender_gap"]) > float(table["fair"]["gender_gap"]) + 0.2
    sig = list(csv.DictReader(open(tmp_path / "cmp" / "significance.csv")))[0]
    assert float(sig["gap_bootstrap_p"]) < 0.01
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Per speaker and gender" in md and "Female − male gap" in md
    assert res["groups"]["fair"]["per_speaker"]["08"]["gender"] == "female"


def test_demo_run_reports_per_speaker_and_gender(tmp_path, monkeypatch):
    """The demo recipe (generated corpus): metrics.json's per-speaker/per-gender macro-F1 equal a direct
    computation from predictions.csv; the report shows the worst speaker and the gap at the top."""
    from ser_hf.config import load_config
    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    out = run(load_config(["recipe=demo", "data.synthetic={speakers:10,per_class:1,seed:0}", "trainer.max_epochs=1",
                           "trainer.progress_bar=false", "trainer.log_with=null",
                           f"data.cache_dir={tmp_path / 'datasets'}", f"output_dir={tmp_path / 'demo'}"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert next(iter(metrics)) == "speakers_and_gender"
    rows = [r for r in csv.DictReader(open(out / "predictions.csv")) if r["split"] == "test"]
    test = metrics["test"]
    speakers = sorted({r["speaker_id"] for r in rows})
    assert sorted(test["per_speaker"]) == speakers == ["12", "14", "15", "16"]
    for s in speakers:
        mine = [r for r in rows if r["speaker_id"] == s]
        direct = _direct_macro_f1([r["label"] for r in mine], [r["prediction"] for r in mine])
        assert test["per_speaker"][s]["macro_f1"] == pytest.approx(direct)
    genders = {r["gender"] for r in rows}
    assert genders == {"female", "male"}
    for g in genders:
        mine = [r for r in rows if r["gender"] == g]
        assert test["per_gender"][g]["macro_f1"] == pytest.approx(
            _direct_macro_f1([r["label"] for r in mine], [r["prediction"] for r in mine]))
    assert metrics["speakers_and_gender"]["test"]["gender_gap"] == pytest.approx(
        test["per_gender"]["female"]["macro_f1"] - test["per_gender"]["male"]["macro_f1"])
    report = (out / "classification_report.txt").read_text()
    top = report.split("== validation")[0]
    assert f"test: worst speaker {test['worst_speaker']['speaker']}" in top and "female − male gap" in top
    assert "per speaker and gender:" in report

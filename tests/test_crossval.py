"""Fold loop resumes at the first unfinished fold; the summary's numbers match hand computations."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from ser_hf.crossval import (
    POOLED_CM_PNG,
    SUMMARY_JSON,
    SUMMARY_MD,
    load_run,
    run_folds,
    summarize_folds,
    why_incomplete,
)

LABELS = ["anger", "happiness", "neutral", "sadness"]


def write_run(run_dir: Path, *, fold, test_speakers, refs, preds, recipe="cnn2d", corpus="emodb", split="loso",
              seed=0, test_metrics: dict | None = None, leaky=False) -> Path:
    """A fake finished run folder per the run folder contract (metrics.json + predictions.csv)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    refs, preds = np.asarray(refs), np.asarray(preds)
    test = {
        "macro_f1": f1_score(refs, preds, average="macro", zero_division=0),
        "accuracy": accuracy_score(refs, preds),
        "uar": balanced_accuracy_score(refs, preds),
        "confusion_matrix": confusion_matrix(refs, preds, labels=range(len(LABELS))).tolist(),
        "labels": LABELS,
    }
    test.update(test_metrics or {})
    metrics = {
        "recipe": recipe, "corpus": corpus, "split": split, "fold": fold, "seed": seed, "leaky": leaky,
        "speakers": {"train": ["xx"], "validation": [], "test": list(test_speakers)},
        "best_epoch": 3, "train_seconds": 10.0, "model_family": "cnn2d", "features": {"kind": "logmel"},
        "num_parameters": 12345, "label_names": LABELS, "validation": {}, "test": test,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    with (run_dir / "predictions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "corpus", "file", "speaker_id", "label", "prediction", *(f"prob_{l}" for l in LABELS)])
        w.writerow(["validation", corpus, "val_0.wav", "xx", LABELS[0], LABELS[0], 1, 0, 0, 0])
        for i, (r, p) in enumerate(zip(refs, preds)):
            spk = test_speakers[i % len(test_speakers)]
            w.writerow(["test", corpus, f"wav/{spk}_{fold}_{i:03d}.wav", spk, LABELS[r], LABELS[p],
                        0.25, 0.25, 0.25, 0.25])
    return run_dir


def _fold_data(fold: int, n: int = 12):
    rng = np.random.default_rng(fold)
    refs = np.arange(n) % len(LABELS)
    preds = np.where(rng.random(n) < 0.7, refs, (refs + 1) % len(LABELS))
    return refs, preds


def test_run_folds_skips_finished_folds_and_reruns_broken_ones(tmp_path, caplog):
    def fold_dir(k):
        return tmp_path / f"fold_{k}"

    for k in (1, 3):
        write_run(fold_dir(k), fold=k, test_speakers=[f"{k:02d}"], refs=[0, 1], preds=[0, 1])
    fold_dir(2).mkdir()
    (fold_dir(2) / "metrics.json").write_text('{"recipe": "cnn2d", "te')  # interrupted write

    calls = []

    def run_one(k):
        calls.append(k)
        return write_run(fold_dir(k), fold=k, test_speakers=[f"{k:02d}"], refs=[0, 1], preds=[1, 1])

    with caplog.at_level(logging.INFO, logger="ser_hf.crossval"):
        dirs = run_folds(run_one, [1, 2, 3, 4], fold_dir)
    assert calls == [2, 4]
    assert dirs == [fold_dir(k) for k in (1, 2, 3, 4)]
    assert "fold 1 already done" in caplog.text and "fold 3 already done" in caplog.text
    assert "fold 2: re-running" in caplog.text

    calls.clear()
    assert run_folds(run_one, [1, 2, 3, 4], fold_dir) == dirs
    assert calls == []  # a second invocation trains nothing


def test_run_folds_refuses_incomplete_result_and_wrong_fold(tmp_path):
    with pytest.raises(RuntimeError, match="not a finished run folder"):
        run_folds(lambda k: tmp_path / "empty", [1], lambda k: tmp_path / f"f{k}")
    write_run(tmp_path / "shared", fold=1, test_speakers=["01"], refs=[0, 1], preds=[0, 1])
    with pytest.raises(ValueError, match="records fold 1 but fold_dir\\(2\\)"):
        run_folds(lambda k: None, [1, 2], lambda k: tmp_path / "shared")


def test_why_incomplete_reasons(tmp_path):
    assert "does not exist" in why_incomplete(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"recipe": "x"}))
    assert "lacks keys" in why_incomplete(tmp_path)
    write_run(tmp_path, fold=1, test_speakers=["01"], refs=[0, 1], preds=[0, 1])
    assert why_incomplete(tmp_path) is None
    (tmp_path / "predictions.csv").unlink()
    assert "predictions.csv does not exist" in why_incomplete(tmp_path)


def test_summary_mean_std_and_pooled_confusion(tmp_path):
    f1s = [0.5, 0.7, 0.9]
    dirs, cms, all_refs, all_preds = [], [], [], []
    for k, f1 in zip((3, 1, 2), f1s):  # out of order on purpose: the summary sorts by fold
        refs, preds = _fold_data(k)
        all_refs.append(refs)
        all_preds.append(preds)
        cms.append(confusion_matrix(refs, preds, labels=range(len(LABELS))))
        dirs.append(write_run(tmp_path / f"fold_{k}", fold=k, test_speakers=[f"{k:02d}", f"1{k}"], refs=refs,
                              preds=preds, test_metrics={"macro_f1": f1, "accuracy": f1 / 2, "uar": 0.6}))
    out = tmp_path / "summary"
    s = summarize_folds(dirs, out)

    assert [f["fold"] for f in s["folds"]] == [1, 2, 3]
    assert [f["macro_f1"] for f in s["folds"]] == [0.7, 0.9, 0.5]
    assert s["folds"][0]["test_speakers"] == ["01", "11"] and s["folds"][0]["n_test_clips"] == 12
    assert s["mean"]["macro_f1"] == pytest.approx(0.7)
    assert s["std"]["macro_f1"] == pytest.approx(0.2)  # sample std (ddof=1) of 0.5, 0.7, 0.9
    assert s["std"]["accuracy"] == pytest.approx(0.1)
    assert s["std"]["uar"] == pytest.approx(0.0)
    assert s["std_ddof"] == 1
    assert s["pooled"]["confusion_matrix"] == np.sum(cms, axis=0).tolist()
    refs, preds = np.concatenate(all_refs), np.concatenate(all_preds)
    assert s["pooled"]["macro_f1"] == pytest.approx(f1_score(refs, preds, average="macro"))
    assert s["pooled"]["n_clips"] == 36

    assert json.loads((out / SUMMARY_JSON).read_text())["mean"]["macro_f1"] == pytest.approx(0.7)
    md = (out / SUMMARY_MD).read_text()
    assert "0.700 ± 0.200" in md and "ddof=1" in md
    assert (out / POOLED_CM_PNG).stat().st_size > 1000


def test_summary_refuses_mixed_or_overlapping_folds(tmp_path):
    a = write_run(tmp_path / "a", fold=1, test_speakers=["01"], refs=[0, 1], preds=[0, 1])
    b = write_run(tmp_path / "b", fold=2, test_speakers=["02"], refs=[0, 1], preds=[0, 1], seed=1)
    with pytest.raises(ValueError, match="disagree on 'seed'"):
        summarize_folds([a, b], tmp_path / "out")
    c = write_run(tmp_path / "c", fold=2, test_speakers=["01", "02"], refs=[0, 1], preds=[0, 1])
    with pytest.raises(ValueError, match=r"test speakers \['01'\] are in both fold 1"):
        summarize_folds([a, c], tmp_path / "out")
    d = write_run(tmp_path / "d", fold=1, test_speakers=["03"], refs=[0, 1], preds=[0, 1])
    with pytest.raises(ValueError, match=r"fold\(s\) \[1\] given more than once"):
        summarize_folds([a, d], tmp_path / "out")
    e = write_run(tmp_path / "e", fold=2, test_speakers=["02"], refs=[0, 1], preds=[0, 1], corpus="ravdess")
    with pytest.raises(ValueError, match="disagree on 'corpus'"):
        summarize_folds([a, e], tmp_path / "out")


def test_single_run_summary_has_no_std(tmp_path):
    a = write_run(tmp_path / "a", fold=None, split="speaker", test_speakers=["12"], refs=[0, 1, 2], preds=[0, 1, 1])
    s = summarize_folds([a], tmp_path / "out")
    assert s["std"]["macro_f1"] is None and s["n_folds"] == 1


def test_load_run_names_bad_label(tmp_path):
    a = write_run(tmp_path / "a", fold=1, test_speakers=["01"], refs=[0, 1], preds=[0, 1])
    row = "test,emodb,wav/01_1_000.wav,01,"
    text = (a / "predictions.csv").read_text().replace(row + "anger", row + "angry")
    (a / "predictions.csv").write_text(text)
    with pytest.raises(ValueError, match="label 'angry' of file 'wav/01_1_000.wav'"):
        load_run(a).label_indices()

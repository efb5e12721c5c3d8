"""write_report / write_predictions / read_run: files, values, the leaky flag, bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ser_hf.metrics import compute_metrics
from ser_hf.reporting import (LEAKY_WARNING, read_run, write_json, write_predictions, write_report)

NAMES = ["anger", "boredom", "neutral"]


def run_metrics(**overrides):
    m = {
        "recipe": "emodb_cnn2d", "corpus": "emodb", "split": "speaker", "fold": None, "seed": 0, "leaky": False,
        "speakers": {"train": ["03", "08", "09"], "validation": ["10", "13"], "test": ["12", "14", "15", "16"]},
        "best_epoch": 2, "train_seconds": np.float64(1.5), "num_parameters": np.int64(1234), "label_names": NAMES,
        "validation": compute_metrics([0, 1, 2, 2], [0, 1, 2, 0], NAMES),
        "test": compute_metrics([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], NAMES),
    }
    m.update(overrides)
    return m


HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_macro_f1": 0.2 * e, "lr": 1e-3}
           for e in (1, 2, 3)]


def png_ok(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_write_report_files_and_values(tmp_path):
    metrics = run_metrics(extra=float("nan"))
    paths = write_report(tmp_path / "run", metrics, HISTORY)
    assert set(paths) == {"metrics", "classification_report", "confusion_matrix", "curves"}
    stored = json.loads(paths["metrics"].read_text())  # strict JSON: NaN became null
    assert stored["extra"] is None
    assert stored["train_seconds"] == 1.5 and stored["num_parameters"] == 1234
    assert stored["test"]["macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])
    assert stored["speakers"]["test"] == ["12", "14", "15", "16"]
    assert png_ok(paths["confusion_matrix"]) and png_ok(paths["curves"])

    text = paths["classification_report"].read_text()
    assert "LEAKY" not in text
    for needle in ("recipe:         emodb_cnn2d", "corpus:         emodb",
                   "speaker-independent (published speaker split)", "test        (  4): 12 14 15 16",
                   "validation  (  2): 10 13", "== validation (4 clips)", "== test (6 clips)"):
        assert needle in text, needle
    # test: anger P=1/2... per-class rows in sklearn layout; accuracy 4/6, macro avg f1 = macro_f1.
    test_part = text.split("== test")[1].split("macro-F1 ")[0]
    lines = {ln.split()[0] if not ln.strip().startswith(("macro", "weighted")) else " ".join(ln.split()[:2]):
             ln.split() for ln in test_part.splitlines() if ln.strip()}
    assert lines["anger"][1:] == ["0.500", "0.500", "0.500", "2"]
    assert lines["accuracy"] == ["accuracy", "0.667", "6"]
    assert lines["macro avg"][-2] == f"{metrics['test']['macro_f1']:.3f}"
    assert lines["macro avg"][-3] == f"{metrics['test']['uar']:.3f}"
    assert lines["weighted avg"][-2] == f"{metrics['test']['weighted_f1']:.3f}"


def test_leaky_run_is_flagged_loudly(tmp_path):
    paths = write_report(tmp_path, run_metrics(split="random", leaky=True), HISTORY)
    text = paths["classification_report"].read_text()
    assert text.count(LEAKY_WARNING) >= 2  # top and bottom
    assert text.index(LEAKY_WARNING) < text.index("recipe:")
    assert "speaker-independent" not in text.replace(LEAKY_WARNING, "")


def test_no_history_skips_curves_with_note(tmp_path):
    paths = write_report(tmp_path, run_metrics(), history=None)
    assert "curves" not in paths and not (tmp_path / "curves.png").exists()
    assert "no per-epoch training history" in paths["classification_report"].read_text()


def test_bare_compute_metrics_dict_and_absent_class(tmp_path):
    m = compute_metrics([0, 0, 1], [0, 1, 1], NAMES)  # "neutral" absent from the references
    paths = write_report(tmp_path, m)
    text = paths["classification_report"].read_text()
    assert "== evaluation (3 clips)" in text
    assert "no evaluation examples of: neutral" in text
    assert png_ok(paths["confusion_matrix"])


def test_write_json_is_strict_json(tmp_path):
    path = write_json(tmp_path / "x.json", {"a": [np.float32(0.5), float("inf")], "b": tmp_path})
    assert json.loads(path.read_text()) == {"a": [0.5, None], "b": str(tmp_path)}


def rows():
    return [
        {"split": "test", "corpus": "emodb", "file": "wav/12a01Wa.wav", "speaker_id": "12", "label": "anger",
         "prediction": "anger", "prob_anger": np.float32(0.75), "prob_boredom": 0.2, "prob_neutral": 0.05},
        {"split": "validation", "corpus": "emodb", "file": "wav/03a01Nc.wav", "speaker_id": "03",
         "label": "neutral", "prediction": "boredom", "prob_neutral": 0.1, "prob_boredom": 0.6, "prob_anger": 0.3},
    ]


def test_predictions_round_trip_through_read_run(tmp_path):
    write_report(tmp_path, run_metrics(), HISTORY)
    (tmp_path / "history.json").write_text(json.dumps(HISTORY))
    path = write_predictions(tmp_path / "predictions.csv", rows(), label_names=NAMES)
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["split", "corpus", "file", "speaker_id", "label", "prediction",
                      "prob_anger", "prob_boredom", "prob_neutral"]
    run = read_run(tmp_path)
    assert run["run_dir"] == tmp_path
    assert run["metrics"]["test"]["accuracy"] == pytest.approx(4 / 6)
    assert run["history"] == HISTORY
    preds = run["predictions"]
    assert [p["speaker_id"] for p in preds] == ["12", "03"]  # ids stay strings ("03", not 3)
    assert preds[0]["prob_anger"] == pytest.approx(0.75) and isinstance(preds[1]["prob_boredom"], float)
    assert preds[1]["prediction"] == "boredom"


def test_read_run_without_predictions(tmp_path):
    write_report(tmp_path, run_metrics())
    run = read_run(tmp_path)
    assert run["predictions"] is None and run["history"] is None
    assert not math.isnan(run["metrics"]["test"]["uar"])


def test_read_run_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        read_run(tmp_path / "nope")
    (tmp_path / "config.yaml").write_text("x: 1\n")
    with pytest.raises(FileNotFoundError, match=r"metrics\.json not found.*config\.yaml"):
        read_run(tmp_path)
    (tmp_path / "metrics.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_run(tmp_path)


def test_write_predictions_bad_rows(tmp_path):
    bad = rows()
    del bad[1]["speaker_id"]
    with pytest.raises(ValueError, match=r"row 1 lacks \['speaker_id'\]"):
        write_predictions(tmp_path / "p.csv", bad)
    with pytest.raises(ValueError, match="prob_surprise"):
        write_predictions(tmp_path / "p.csv", [{**rows()[0], "prob_surprise": 0.1}], label_names=NAMES)

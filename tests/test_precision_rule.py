"""The one rule for default inference precision (ser_hf/precision.py) and the export's int8 quality check.

Decisions are asserted on recorded checks that pass or fail and on CPU flags; the export test checks that a
real export records the figures and that backend=auto follows them.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from ser_hf.precision import (
    MAX_MACRO_F1_DELTA,
    MIN_TOP1_AGREEMENT,
    check_verdict,
    onnx_default,
    torch_auto_precision,
)

sys.path.insert(0, str(Path(__file__).parent))

VNNI = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}  # this project's Zen 4 EPYC
AVX2_ONLY = {"avx2", "fma", "sse4_2"}                            # an AVX2-only CI runner


def _check(agree=0.99, delta=0.004, vnni=True, **kw) -> dict:
    return {"source": "test split of run r", "clips": 231, "top1_agreement": agree, "max_abs_prob_diff": 0.02,
            "macro_f1_delta": delta, "cpu_int_dot_product": vnni, **kw}


def _export_config(check=None, int8=True) -> dict:
    return {"kind": "transformer", "inputs": ["input_values"],
            "files": {"fp32": "model.onnx", **({"int8": "model.int8.onnx"} if int8 else {})},
            **({"int8_check": check} if check is not None else {})}


def test_thresholds_are_the_issue_bar():
    assert MIN_TOP1_AGREEMENT == 0.98 and MAX_MACRO_F1_DELTA == 0.01


@pytest.mark.parametrize("check, passed, words", [
    (_check(), True, "99.0%"),
    (_check(agree=0.98, delta=-0.01), True, "98.0%"),                     # both exactly at the bar
    (_check(agree=0.939, delta=0.028), False, "93.9% < 98%"),             # the lost session's ORT int8
    (_check(agree=0.9796, delta=0.0), False, "98.0% < 98%"),              # bf16 on the same model: 97.96 %
    (_check(agree=1.0, delta=0.028), False, "+0.028"),
    (_check(agree=1.0, delta=-0.011), False, "-0.011"),
    (_check(agree=1.0, delta=None), False, "no labels"),                  # unlabelled clips: F1 unknown
    (_check(agree=float("nan")), False, "no top-1 agreement"),
    ({"error": "no clips to check int8 on: not a run folder"}, False, "could not run"),
    (None, False, "no quality check recorded"),
    ({}, False, "no quality check recorded"),
])
def test_check_verdict(check, passed, words):
    ok, why = check_verdict(check)
    assert ok is passed
    assert words in why


@pytest.mark.parametrize("config, flags, expected, words", [
    (_export_config(_check()), VNNI, "int8", "recorded check passed"),
    (_export_config(_check(vnni=False)), AVX2_ONLY, "int8", "recorded check passed"),
    (_export_config(_check(agree=0.939, delta=0.028)), VNNI, "fp32", "93.9%"),
    (_export_config(_check(delta=0.03)), VNNI, "fp32", "+0.030"),
    # checked with VNNI, run on an AVX2-only CPU (u8s8 saturation) and the reverse: not vouched for
    (_export_config(_check(vnni=True)), AVX2_ONLY, "fp32", "dot-product"),
    (_export_config(_check(vnni=False)), VNNI, "fp32", "dot-product"),
    (_export_config(), VNNI, "fp32", "no quality check recorded"),        # exported before the gate existed
    ({**_export_config(), "default": "int8"}, VNNI, "fp32", "no quality check"),  # old 'default' key is ignored
    (_export_config(_check(), int8=False), VNNI, "fp32", "no int8 graph"),
])
def test_onnx_default(config, flags, expected, words):
    name, why = onnx_default(config, flags)
    assert name == expected
    assert words in why


@pytest.mark.parametrize("flags, cuda_bf16, check, device, expected", [
    (VNNI, None, None, "cpu", "fp32"),                   # native bf16 but no recorded check: fp32
    (AVX2_ONLY, None, None, "cpu", "fp32"),
    (VNNI, None, _check(), "cpu", "bf16"),               # native and a passing check
    (AVX2_ONLY, None, _check(), "cpu", "fp32"),          # emulated bf16: never, whatever the check says
    ({"avx2", "amx_tile", "amx_bf16"}, None, _check(), "cpu", "bf16"),
    ({"neon", "asimd"}, None, _check(), "cpu", "fp32"),
    (VNNI, None, _check(agree=0.9796), "cpu", "fp32"),   # failing check
    (set(), True, _check(), "cuda", "bf16"),
    (set(), False, _check(), "cuda", "fp32"),
    (set(), True, None, "cuda", "fp32"),
])
def test_torch_auto_precision(flags, cuda_bf16, check, device, expected):
    assert torch_auto_precision("transformer", device, flags, cuda_bf16=cuda_bf16, check=check) == expected
    assert torch_auto_precision("classic", device, flags, cuda_bf16=cuda_bf16, check=check) == "fp32"


def test_torch_folder_auto_runs_fp32_even_with_native_bf16(w2v_dir, monkeypatch):
    from ser_hf import precision
    from ser_hf.inference import load_for_inference

    monkeypatch.setattr(precision, "cpu_flags", lambda: set(VNNI))
    assert precision.cpu_has_bf16()
    assert load_for_inference(w2v_dir, device="cpu", precision="auto").precision == "fp32"


def test_onnx_file_falls_back_to_fp32_with_one_log_line(tmp_path, caplog):
    from ser_hf.onnx_backend import onnx_file

    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "model.int8.onnx").write_bytes(b"x")
    (tmp_path / "onnx_config.json").write_text(json.dumps(_export_config(_check(agree=0.939, delta=0.028))))
    with caplog.at_level(logging.INFO, logger="ser_hf.onnx_backend"):
        assert onnx_file(tmp_path, "auto", VNNI).name == "model.onnx"
    lines = [r.getMessage() for r in caplog.records if r.name == "ser_hf.onnx_backend"]
    assert len(lines) == 1 and "fp32 graph" in lines[0] and "93.9% < 98%" in lines[0]
    assert onnx_file(tmp_path, "int8", VNNI).name == "model.int8.onnx"  # asked for explicitly: runs
    (tmp_path / "onnx_config.json").write_text(json.dumps(_export_config(_check(vnni=True))))
    assert onnx_file(tmp_path, "auto", VNNI).name == "model.int8.onnx"
    assert onnx_file(tmp_path, "auto", AVX2_ONLY).name == "model.onnx"


def _fake_run(tmp_path: Path, model_src: Path, corpus_dir: Path, labels: list[str]) -> Path:
    """A run folder around a saved model: config.yaml naming the corpus and predictions.csv test rows."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(model_src, run / "model")
    (run / "config.yaml").write_text(f"data:\n  corpus: emodb\n  data_dir: {corpus_dir}\n  synthetic: null\n")
    files = sorted((corpus_dir / "wav").glob("*.wav"))
    codes = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness",
             "N": "neutral"}
    with (run / "predictions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "corpus", "file", "speaker_id", "label", "prediction"])
        for i, f in enumerate(files):
            w.writerow(["test" if i % 2 == 0 else "validation", "emodb", f"wav/{f.name}", f.name[:2],
                        codes[f.name[5]], labels[0]])
    return run


def test_export_records_the_int8_check_and_auto_follows_it(tmp_path, generated):
    pytest.importorskip("onnxruntime")
    from tiny_models import tiny_wav2vec2

    from ser_hf.export import export_onnx
    from ser_hf.inference import load_for_inference
    from ser_hf.models import transformer as tf
    from ser_hf.onnx_backend import read_onnx_config

    labels = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
    corpus = generated("emodb", speakers=2, per_class=1)
    model, fe = tf.load_audio_classifier(tiny_wav2vec2(tmp_path / "base"), labels)
    model.save_pretrained(tmp_path / "model")
    fe.save_pretrained(tmp_path / "model")
    run = _fake_run(tmp_path, tmp_path / "model", corpus, labels)
    n_test = sum(1 for r in csv.DictReader((run / "predictions.csv").open()) if r["split"] == "test")

    out = export_onnx(run / "model", tmp_path / "onnx", quantize="int8", int8_scope="ffn", per_channel=True)
    cfg = read_onnx_config(out)
    check = cfg["int8_check"]
    assert check["source"].startswith("test split of run run (emodb")
    assert check["clips"] == n_test > 0
    assert 0.0 <= check["top1_agreement"] <= 1.0 and 0.0 <= check["max_abs_prob_diff"] < 1.0
    assert check["macro_f1_delta"] == pytest.approx(check["macro_f1_int8"] - check["macro_f1_fp32"])
    assert check["passed"] == check_verdict(check)[0]
    assert cfg["int8"] == {"ops": ["MatMul", "Gemm"], "scope": "ffn", "per_channel": True, "nodes": 4}
    assert "default" not in cfg
    expected = onnx_default(cfg)[0]
    assert load_for_inference(out).model.path.name == ("model.int8.onnx" if expected == "int8" else "model.onnx")

    # a recorded failure keeps auto on fp32; a recorded pass (on this CPU's kind) turns int8 on
    for agree, delta, graph in ((0.9, 0.0, "model.onnx"), (1.0, 0.0, "model.int8.onnx")):
        cfg["int8_check"] = {**check, "top1_agreement": agree, "macro_f1_delta": delta}
        (out / "onnx_config.json").write_text(json.dumps(cfg))
        assert load_for_inference(out).model.path.name == graph

    # user clips: a labelled CSV is used and named; a folder of unlabelled clips cannot pass
    listed = tmp_path / "clips.csv"
    wavs = sorted((corpus / "wav").glob("*.wav"))[:4]
    listed.write_text("file,label\n" + "".join(f"{w},anger\n" for w in wavs))
    out2 = export_onnx(tmp_path / "model", tmp_path / "onnx2", quantize="int8", check_audio=listed)
    check2 = read_onnx_config(out2)["int8_check"]
    assert check2["clips"] == 4 and "clips.csv" in check2["source"] and check2["macro_f1_delta"] is not None
    out3 = export_onnx(tmp_path / "model", tmp_path / "onnx3", quantize="int8", check_audio=corpus / "wav")
    check3 = read_onnx_config(out3)["int8_check"]
    assert check3["macro_f1_delta"] is None and not check3["passed"] and "no labels" in check3["verdict"]
    assert load_for_inference(out3).model.path.name == "model.onnx"

    # not in a run folder and no clips: recorded as an error, int8 not the default
    out4 = export_onnx(tmp_path / "model", tmp_path / "onnx4", quantize="int8")
    check4 = read_onnx_config(out4)["int8_check"]
    assert "not the model/ folder of a run" in check4["error"] and "check_audio=" in check4["error"]
    assert load_for_inference(out4).model.path.name == "model.onnx"
    with pytest.raises(ValueError, match="check_audio= .* needs quantize=int8"):
        export_onnx(tmp_path / "model", tmp_path / "onnx5", check_audio=listed)
    with pytest.raises(ValueError, match="int8_scope='attn'"):
        export_onnx(tmp_path / "model", tmp_path / "onnx6", quantize="int8", int8_scope="attn")
    assert np.isfinite(check["max_abs_prob_diff"])

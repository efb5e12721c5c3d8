"""Fault injection: each probe of issue 12 (stale folds, crafted pickles, concurrent runs in one folder,
varied-length audio, ``resume=no``, kill/resume, unclear errors, damaged files) reproduced and refused.

Every test here fails on the code before issue 12 (see the report of that change for how each was checked).
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ser_hf.config import load_config
from ser_hf.runfolder import (RunFolderError, RunLock, atomic_write, parse_bool, verify_checksums,
                              write_checksums)

REPO = Path(__file__).resolve().parents[1]
CHEAP = ["trainer.progress_bar=false", "trainer.log_with=null"]
SVM = ["recipe=svm_stats_emodb", "data.synthetic={speakers:4,per_class:2,seed:0}", *CHEAP]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "ser_hf_cache"))
    return [f"data.cache_dir={tmp_path / 'datasets'}"]


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


class Payload:
    """Unpickling this creates ``marker``: the stand-in for a crafted file running code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def plant(folder: Path, marker: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        with open(folder / name, "wb") as fh:
            pickle.dump(Payload(marker), fh)
        torch.save({"x": Payload(marker)}, folder / (name + ".pt"))  # torch zip-pickle flavour too


# ------------------------------------------------------------------------------------ 1. stale folds


def test_run_folds_reuses_only_matching_finished_folds(tmp_path):
    from ser_hf.crossval import run_folds
    from ser_hf.runfolder import write_fingerprint

    old = load_config(["recipe=svm_stats_emodb"])
    new = load_config(["recipe=svm_stats_emodb", "model.C=0.001"])

    def finished(folder: Path, cfg, fold: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        write_fingerprint(folder, cfg)
        (folder / "metrics.json").write_text(json.dumps({
            "recipe": "svm_stats_emodb", "corpus": "emodb", "split": "loso", "fold": fold, "seed": 0,
            "speakers": {"test": [str(fold)]}, "label_names": ["a"],
            "test": {"macro_f1": 0.5, "accuracy": 0.5, "uar": 0.5}}))
        (folder / "predictions.csv").write_text("split,corpus,file,speaker_id,label,prediction\n")
        return folder

    for k in (1, 2):
        finished(tmp_path / f"fold{k}", old, k)
    ran = []
    run_one = lambda k: ran.append(k) or finished(tmp_path / f"fold{k}", new, k)  # noqa: E731
    with pytest.raises(RunFolderError, match=r"fold 1: .*model\.C: 10\.0 -> 0\.001"):
        run_folds(run_one, [1, 2], lambda k: tmp_path / f"fold{k}", fold_config=lambda k: new)
    assert ran == []
    run_folds(run_one, [1, 2], lambda k: tmp_path / f"fold{k}", fold_config=lambda k: old)
    assert ran == []  # matching folds are reused
    run_folds(run_one, [1, 2], lambda k: tmp_path / f"fold{k}", fold_config=lambda k: new, overwrite=True)
    assert ran == [1, 2]
    assert sorted(p.name.split(".replaced-")[0] for p in tmp_path.iterdir() if ".replaced-" in p.name) == \
        ["fold1", "fold2"]


def test_stale_fold_is_refused_naming_the_key_and_overwrite_moves_it_aside(tmp_path, cache):
    from ser_hf.crossval import crossval_recipe

    SVM = ["recipe=svm_stats_emodb", "data.synthetic={speakers:3,per_class:2,seed:0}", *CHEAP]  # 3 folds

    out = crossval_recipe([*SVM, *cache], out_dir=tmp_path / "cv")
    first = json.loads((out / "crossval_summary.json").read_text())
    # the probe: the same command with another C used to return the C=10 numbers in seconds
    with pytest.raises(RunFolderError, match=r"model\.C: 10\.0 -> 0\.001") as err:
        crossval_recipe([*SVM, *cache, "model.C=0.001"], out_dir=tmp_path / "cv")
    assert "overwrite=true" in str(err.value)
    out = crossval_recipe([*SVM, *cache, "model.C=0.001", "overwrite=true"], out_dir=tmp_path / "cv")
    moved = sorted(p.name for p in out.iterdir() if ".replaced-" in p.name and p.is_dir())
    assert len(moved) == 3 and all(m.startswith(f"fold{k}.replaced-") for k, m in zip(range(1, 4), moved))
    second = json.loads((out / "crossval_summary.json").read_text())
    assert second["n_folds"] == 3  # the moved-aside folders are not counted as folds
    assert [f["macro_f1"] for f in second["folds"]] != [f["macro_f1"] for f in first["folds"]]
    cfg = json.loads((out / "fold1" / "fingerprint.json").read_text())["config_items"]
    assert cfg["model.C"] == 0.001
    # a matching finished fold is still reused
    again = crossval_recipe([*SVM, *cache, "model.C=0.001"], out_dir=tmp_path / "cv")
    assert json.loads((again / "crossval_summary.json").read_text())["folds"] == second["folds"]


def test_default_folders_carry_the_fingerprint_of_overrides():
    plain = load_config(["recipe=demo"]).output_dir
    assert plain == str(Path("runs/demo/emodb-speaker-seed0"))  # today's name for the recipe as written
    same = load_config(["recipe=demo", "resume=true", "trainer.progress_bar=false", "data.cache_dir=/x"])
    assert same.output_dir == plain  # keys that do not change results keep the name
    lr = load_config(["recipe=demo", "trainer.learning_rate=0.1"]).output_dir
    lr2 = load_config(["recipe=demo", "trainer.learning_rate=0.2"]).output_dir
    assert lr.startswith(plain + "-") and len(lr) == len(plain) + 9 and lr != lr2
    assert load_config(["recipe=demo", "seed=3"]).output_dir.endswith("seed3")  # already in the name


# ------------------------------------------------------------------------------------ 2. no pickle


def _tiny_trainer(out: Path, epochs: int):
    from ddp_worker import TinyNet, make_split

    from ser_hf.training import Trainer, TrainerConfig, make_dataloader

    cfg = TrainerConfig(max_epochs=epochs, batch_size=8, eval_batch_size=5, learning_rate=0.01, log_with=None,
                        progress_bar=False, seed=0, scheduler="cosine", optimizer="adamw")
    trainer = Trainer(TinyNet(dropout=0.3, seed=0), cfg, out)
    return trainer, make_dataloader(make_split(36, seed=1), cfg, train=True), \
        make_dataloader(make_split(13, seed=2), cfg, train=False)


def test_resume_and_load_never_unpickle(tmp_path):
    from ddp_worker import Interrupted, make_split

    from ser_hf.training import make_dataloader

    marker = tmp_path / "PWNED"
    full, train, val = _tiny_trainer(tmp_path / "full", 3)
    full_result = full.fit(train, val)
    cut, _, val = _tiny_trainer(tmp_path / "cut", 3)
    with pytest.raises(Interrupted):  # killed when epoch 3 starts: `last` holds epoch 2
        cut.fit(make_dataloader(make_split(36, seed=1, crash_at_epoch=2), cut.cfg, train=True), val)
    ckpt = tmp_path / "cut" / "checkpoints"
    assert not list(ckpt.rglob("*.pkl")) and not list(ckpt.rglob("*.bin"))  # nothing pickled is written
    # every name Accelerate's load_state or torch/transformers loaders would read
    names = ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "pytorch_model.bin",
             "sampler.bin", "scaler.pt", "training_args.bin"]
    plant(ckpt / "last", marker, names)
    plant(ckpt / "best", marker, names)

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed, train, val = _tiny_trainer(tmp_path / "cut", 3)
    result = resumed.fit(train, val, resume=True)
    assert not marker.exists(), "resume unpickled a crafted file"
    # kill/resume equality: the resumed run ends exactly like the uninterrupted one
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(result.history) == strip(full_result.history)
    assert np.array_equal(resumed.predict(val)[1], full.predict(val)[1])

    # a model folder with a crafted pytorch_model.bin beside the safetensors weights
    from ser_hf.features import FeatureConfig
    from ser_hf.inference import load_for_inference
    from ser_hf.models import build_baseline

    model_dir = tmp_path / "model"
    build_baseline("cnn2d", (1, 40, None), id2label=["a", "b", "c"], channels=[4], kernel_sizes=[3],
                   pool_sizes=[2]).save_pretrained(model_dir)
    FeatureConfig.from_dict({"kind": "logmel", "n_mels": 40}).save_pretrained(model_dir)
    plant(model_dir, marker, ["pytorch_model.bin", "training_args.bin", "optimizer.pt"])
    predictor = load_for_inference(model_dir)
    assert predictor.kind == "baseline" and not marker.exists()


def test_old_pickle_format_checkpoint_is_refused_not_loaded(tmp_path):
    trainer, train, val = _tiny_trainer(tmp_path / "r", 1)
    trainer.fit(train, val)
    state_path = tmp_path / "r" / "checkpoints" / "last" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["format"] = 1
    state_path.write_text(json.dumps(state))
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    again, train, val = _tiny_trainer(tmp_path / "r", 2)
    with pytest.raises(RunFolderError, match="pickle"):
        again.fit(train, val, resume=True)


def test_truncated_checkpoint_names_the_file(tmp_path):
    trainer, train, val = _tiny_trainer(tmp_path / "r", 1)
    trainer.fit(train, val)
    weights = tmp_path / "r" / "checkpoints" / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    again, train, val = _tiny_trainer(tmp_path / "r", 2)
    with pytest.raises(RunFolderError, match=r"model\.safetensors is damaged or truncated"):
        again.fit(train, val, resume=True)


# ------------------------------------------------------------------------------------ 3. one owner per folder


def test_a_folder_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, cache):
    from ser_hf.experiment import run

    out = tmp_path / "run"
    args = [*SVM, *cache, "data.split=loso", "data.fold=1", f"output_dir={out}"]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {sleeper.pid}"):
            run(load_config(args))
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder is dead now: its lock is stale and this run takes the folder
    run(load_config(args))
    assert (out / "metrics.json").is_file() and not (out / ".lock").exists()


def test_finished_folder_is_refused_unless_resume_or_overwrite(tmp_path, cache):
    from ser_hf.experiment import run

    out = tmp_path / "run"
    args = [*SVM, *cache, "data.split=loso", "data.fold=1", f"output_dir={out}"]
    run(load_config(args))
    config_before = (out / "config.yaml").read_bytes()
    metrics_before = (out / "metrics.json").read_bytes()
    # another config must not rewrite the finished run's config.yaml (a typo fails earlier, in the spec)
    with pytest.raises(RunFolderError, match=r"model\.C: 10\.0 -> 1\.0"):
        run(load_config([*args, "model.C=1.0"]))
    with pytest.raises(RunFolderError, match="finished run of this config"):
        run(load_config(args))  # the same config again, without resume
    assert (out / "config.yaml").read_bytes() == config_before and (out / "metrics.json").read_bytes() == metrics_before
    run(load_config([*args, "resume=yes"]))
    assert json.loads((out / "metrics.json").read_text())["test"] == json.loads(metrics_before)["test"]
    run(load_config([*args, "model.C=1.0", "overwrite=on"]))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and "C: 10.0" in (aside[0] / "config.yaml").read_text()
    assert "C: 1.0" in (out / "config.yaml").read_text()


def test_run_lock_unit(tmp_path):
    lock = RunLock(tmp_path / "f").acquire()
    other = RunLock(tmp_path / "f")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert json.loads((tmp_path / "f" / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "f" / ".lock").exists()
    (tmp_path / "f" / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    other.acquire()  # stale: taken over
    assert json.loads((tmp_path / "f" / ".lock").read_text())["pid"] == os.getpid()
    other.release()
    (tmp_path / "f" / ".lock").write_text(json.dumps({"pid": dead.pid, "host": "another-host"}))
    with pytest.raises(RunFolderError, match="another-host"):
        RunLock(tmp_path / "f").acquire()  # cannot tell whether a run on another host is alive


# ------------------------------------------------------------------------------------ 4. varied lengths


@pytest.fixture(scope="module")
def varied_corpus(tmp_path_factory):
    """An EmoDB-layout corpus whose clips last 0.5 to 2.3 s (the shared copies are all one length)."""
    import soundfile as sf

    from ser_hf.data.synthetic import generate_corpus

    root = generate_corpus("emodb", tmp_path_factory.mktemp("varied"), speakers=10, per_class=1, seed=0)
    rng = np.random.default_rng(0)
    for f in sorted(Path(root).rglob("*.wav")):
        y, sr = sf.read(f)
        n = int(sr * (0.5 + 1.8 * rng.random()))
        sf.write(f, np.resize(y, n), sr)
    return root


@pytest.mark.parametrize("recipe", ["demo", "cnn2d_logmel_emodb"])
def test_varied_length_clips_train_the_cnn_recipes(recipe, varied_corpus, tmp_path, cache):
    import soundfile as sf

    from ser_hf.experiment import run

    lengths = {round(sf.info(f).duration, 2) for f in Path(varied_corpus).rglob("*.wav")}
    assert len(lengths) > 20
    out = run(load_config([f"recipe={recipe}", "data.synthetic=null", f"data.data_dir={varied_corpus}", *cache,
                           *CHEAP, "trainer.max_epochs=1", "trainer.batch_size=8", f"output_dir={tmp_path / 'r'}"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["num_examples"] == 4 * 7  # test speakers 12, 14, 15, 16; one clip per emotion


def test_a_shape_mismatch_names_the_clip():
    from ser_hf.collate import pad_features

    a, b = torch.zeros(1, 40, 50), torch.zeros(1, 40, 70)
    x, mask = pad_features([a, b], [0, 1], {0: "03a01Fa.wav", 1: "03a02Wb.wav"})
    assert x.shape == (2, 1, 40, 70) and mask.sum(1).tolist() == [50, 70]
    x, mask = pad_features([a, a], [0, 1])
    assert mask is None  # equal lengths batch exactly as before
    with pytest.raises(ValueError, match=r"clip '03a02Wb\.wav' has features of shape \(1, 32, 70\)"):
        pad_features([a, torch.zeros(1, 32, 70)], [0, 1], {0: "03a01Fa.wav", 1: "03a02Wb.wav"})


# ------------------------------------------------------------------------------------ 5. booleans


@pytest.mark.parametrize("text, value", [("true", True), ("No", False), ("OFF", False), ("on", True), ("1", True),
                                         ("0", False), ("yes", True), ("False", False)])
def test_resume_goes_through_the_one_boolean_parser(text, value):
    assert load_config(["recipe=demo", f"resume={text}"]).resume is value
    assert parse_bool(text, "k") is value


def test_a_non_boolean_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match=r"resume='maybe'"):
        load_config(["recipe=demo", "resume=maybe"])
    with pytest.raises(ValueError, match=r"hub\.push='sure'"):
        load_config(["recipe=demo", "hub.push=sure"])
    from ser_hf.training import TrainerConfig

    assert TrainerConfig.from_dict({"progress_bar": "off"}).progress_bar is False
    with pytest.raises(ValueError, match=r"trainer\.progress_bar='nah'"):
        TrainerConfig.from_dict({"progress_bar": "nah"})


# ------------------------------------------------------------------------------------ 7. clear errors


def test_seed_abc_names_the_key():
    with pytest.raises(ValueError, match=r"seed='abc': must be an integer"):
        load_config(["recipe=demo", "seed=abc"])


def test_config_errors_are_one_line_unless_debug(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "scripts" / "finetune.py"), "recipe=demo", "seed=abc"]
    short = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert short.returncode == 2
    assert "Traceback" not in short.stderr
    assert short.stderr.strip().splitlines()[-1] == \
        "error: seed='abc': must be an integer (e.g. seed=0) (debug=true shows the traceback)"
    full = subprocess.run([*cmd, "debug=true"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert full.returncode == 1 and "Traceback" in full.stderr and "seed='abc'" in full.stderr


def test_damaged_skops_file_names_the_file(tmp_path):
    from ser_hf.models.classic import ClassicClassifier

    rng = np.random.default_rng(0)
    clf = ClassicClassifier("svm", id2label=["a", "b"])
    clf.fit(rng.normal(size=(20, 3)), np.arange(20) % 2)
    clf.save_pretrained(tmp_path)
    path = tmp_path / "model.skops"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"model\.skops is damaged or not a skops file \(BadZipFile"):
        ClassicClassifier.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------ 8. durability


def test_checksums_catch_truncated_weights_and_atomic_write_leaves_no_temporaries(tmp_path):
    atomic_write(tmp_path / "model.safetensors", b"x" * 1000)
    atomic_write(tmp_path / "model.safetensors", b"y" * 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    write_checksums(tmp_path)
    verify_checksums(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"y" * 10)
    with pytest.raises(RunFolderError, match=r"model\.safetensors is damaged or truncated"):
        verify_checksums(tmp_path)


def test_run_outputs_list_skipped_clips_and_carry_checksums(tmp_path, cache, generated):
    from ser_hf.experiment import run

    root = generated("emodb", speakers=4, per_class=2)
    bad = Path(root) / "wav" / "03a01Xx.wav"  # an unreadable clip among good ones
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"not a wav")
    short = Path(root) / "wav" / "08b09Wz.wav"  # 20 ms: shorter than one 512-sample analysis frame at 16 kHz
    import soundfile as sf

    sf.write(short, np.zeros(320, dtype=np.float32) + 0.1, 16000)
    try:
        out = run(load_config(["recipe=svm_stats_emodb", f"data.data_dir={root}", *cache, *CHEAP, "data.split=loso",
                               "data.fold=1", f"output_dir={tmp_path / 'r'}"]))
    finally:
        bad.unlink()
        short.unlink()
    report, card = (out / "classification_report.txt").read_text(), (out / "model" / "README.md").read_text()
    assert "03a01Xx.wav" in report and "03a01Xx.wav" in card
    assert "too-short clips (1;" in report and "08b09Wz.wav: too short: 0.020 s < 0.032 s" in report
    assert "08b09Wz.wav" in card
    assert json.loads((out / "metrics.json").read_text())["too_short"][0]["file"].endswith("08b09Wz.wav")
    sums = json.loads((out / "model" / "checksums.json").read_text())
    assert "model.skops" in sums
    verify_checksums(out / "model")
    fp = json.loads((out / "fingerprint.json").read_text())
    assert fp["data"]["corpus"] == "emodb" and fp["data"]["num_files"] == 4 * 7 * 2 + 1

"""Every recipe composes and runs one tiny epoch on a generated corpus of its own layout (the
lightning-hydra-template sweep test), and the recipe loader refuses bad input clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ser_hf.config import available_recipes, default_output_dir, load_config

REPO = Path(__file__).resolve().parents[1]
TRANSFORMER_FAMILIES = ("transformer", "embedding", "probe")  # need a pretrained encoder: tested with tiny ones


def _family(name: str) -> str:
    return load_config([f"recipe={name}"]).model.family


CLASSIC_AND_BASELINE = [r for r in available_recipes() if _family(r) not in TRANSFORMER_FAMILIES]


@pytest.fixture(scope="module")
def gen_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ser_hf_cache")


def tiny_overrides(tmp: Path, cache: Path, recipe: str = "demo") -> list[str]:
    """One epoch on a 4-speaker generated corpus of the recipe's own corpus layout (epochs only for
    families with a training loop: the spec refuses trainer keys a family does not use)."""
    epochs = ["trainer.max_epochs=1"] if _family(recipe) not in ("classic", "embedding") else []
    return [
        "data.synthetic={speakers:4,per_class:2,seed:0}",
        "data.data_dir=null",
        f"data.cache_dir={cache / 'datasets'}",
        *epochs,
        "trainer.progress_bar=false",
        "trainer.log_with=null",
        f"output_dir={tmp / 'run'}",
    ]


@pytest.mark.parametrize("recipe", CLASSIC_AND_BASELINE)
def test_recipe_runs_one_epoch(recipe, tmp_path, gen_cache, monkeypatch):
    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(gen_cache))
    cfg = load_config([f"recipe={recipe}", *tiny_overrides(tmp_path, gen_cache, recipe)])
    out = run(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == recipe
    assert metrics["leaky"] is False
    speakers = metrics["speakers"]
    assert speakers["test"] and not set(speakers["train"]) & set(speakers["test"])
    assert not set(speakers["validation"]) & set(speakers["test"])
    if metrics["task"] == "regression":  # dimensional recipes (demo_dimensional): CCC per target, no classes
        rows = (out / "predictions.csv").read_text().splitlines()
        assert rows[0].startswith("split,corpus,file,speaker_id,true_")
        assert sum(1 for r in rows[1:] if r.startswith("test,")) == metrics["test"]["num_examples"] > 0
        assert {f"ccc_{t}" for t in metrics["targets"]} <= set(metrics["test"])
        assert (out / "scatter.png").is_file() and (out / "model" / "feature_config.json").is_file()
        return
    n_labels = len(metrics["label_names"])
    assert len(metrics["test"]["confusion_matrix"]) == n_labels
    # Scores are per clip: the test confusion matrix counts each test clip once.
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    n_test = sum(1 for r in rows if r.startswith("test,"))
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == n_test == metrics["test"]["num_examples"]
    config = json.loads((out / "model" / "config.json").read_text())
    assert len(config["id2label"]) == n_labels
    assert (out / "model" / "feature_config.json").is_file()
    assert (out / "classification_report.txt").is_file() and (out / "confusion_matrix.png").is_file()


def test_recipe_name_and_default_output_dir():
    cfg = load_config(["recipe=cnn2d_emodb", "data.split=loso", "data.fold=3", "seed=1"])
    assert cfg.recipe_name == "cnn2d_emodb"
    assert Path(cfg.output_dir) == Path("runs/cnn2d_emodb/emodb-loso-fold3-seed1")
    assert default_output_dir(cfg) == Path(cfg.output_dir)
    # Deterministic: every process of a distributed launch computes the same folder.
    assert load_config(["recipe=cnn2d_emodb", "data.split=loso", "data.fold=3", "seed=1"]).output_dir == cfg.output_dir


def test_unknown_recipe_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*demo"):
        load_config(["recipe=nope"])


def test_unknown_trainer_key_is_named(tmp_path):
    from ser_hf.training import TrainerConfig

    cfg = load_config(["recipe=demo", "trainer.max_epoch=2"])  # typo: max_epoch
    with pytest.raises(ValueError, match="max_epoch"):
        TrainerConfig.from_dict(cfg.trainer)


def test_unknown_top_level_key_is_refused():
    with pytest.raises(ValueError, match="unknown top-level config key"):
        load_config(["recipe=demo", "trainr.max_epochs=2"])


def test_missing_data_dir_says_how_to_pass_it(tmp_path, monkeypatch):
    from ser_hf.experiment import run

    monkeypatch.delenv("SER_HF_DATA_EMODB", raising=False)
    cfg = load_config(["recipe=cnn2d_emodb", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(Exception, match=r"data\.data_dir|SER_HF_DATA_EMODB"):
        run(cfg)


@pytest.mark.slow
def test_demo_reaches_its_bar(tmp_path, gen_cache, monkeypatch):
    """The README's main command: test macro-F1 >= 0.9 on held-out speakers of the generated corpus."""
    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(gen_cache))
    out = run(load_config(["recipe=demo", f"output_dir={tmp_path / 'demo'}", "trainer.progress_bar=false",
                           f"data.cache_dir={gen_cache / 'datasets'}"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["macro_f1"] >= 0.9, metrics["test"]


def test_demo_dimensional_reaches_its_bar(tmp_path, gen_cache, monkeypatch):
    """issue 14: ``recipe=demo_dimensional`` (ridge on speaker-normalised statistics, generated IEMOCAP twin,
    about 15 s on 2 cores) reaches a mean test CCC >= 0.5 on the held-out Session 5 speakers, every dimension
    above 0.5 too (measured: arousal 0.969, valence 0.862, dominance 0.981; benchmarks/results/dimensional.md)."""
    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(gen_cache))
    out = run(load_config(["recipe=demo_dimensional", f"output_dir={tmp_path / 'dim'}",
                           f"data.cache_dir={gen_cache / 'datasets'}"]))
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert metrics["speakers"]["test"] == ["Ses05F", "Ses05M"] and not metrics["leaky"]
    assert test["ccc_mean"] >= 0.5, test
    assert min(test[f"ccc_{t}"] for t in ("arousal", "valence", "dominance")) > 0.5, test
    assert "arousal" in (out / "classification_report.txt").read_text()


@pytest.mark.slow
def test_finetune_script_under_two_process_ddp(tmp_path, gen_cache):
    """``accelerate launch --multi_gpu --num_processes 2`` (gloo over CPU processes): one output folder,
    written by the main process only, with the same clip count as a single-process run."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "SER_HF_CACHE": str(gen_cache), "OMP_NUM_THREADS": "1"}
    args = ["recipe=demo", "trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.log_with=null",
            f"data.cache_dir={gen_cache / 'datasets'}"]
    ddp = tmp_path / "ddp"
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    str(REPO / "scripts" / "finetune.py"), *args, f"output_dir={ddp}"],
                   check=True, env=env, cwd=tmp_path, timeout=900)
    single = tmp_path / "single"
    subprocess.run([sys.executable, str(REPO / "scripts" / "finetune.py"), *args, f"output_dir={single}"],
                   check=True, env=env, cwd=tmp_path, timeout=900)
    m_ddp = json.loads((ddp / "metrics.json").read_text())
    m_one = json.loads((single / "metrics.json").read_text())
    assert m_ddp["test"]["num_examples"] == m_one["test"]["num_examples"] == 224
    assert abs(m_ddp["test"]["macro_f1"] - m_one["test"]["macro_f1"]) < 0.25
    assert not list(tmp_path.glob("runs")), "no process may fall back to a default output folder"


def test_resume_ends_like_an_uninterrupted_run(tmp_path, gen_cache, monkeypatch):
    """Stop after 2 of 4 epochs, resume=true: the same history, metrics and predictions as 4 epochs straight."""
    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(gen_cache))
    base = ["recipe=demo", "data.synthetic={speakers:4,per_class:2,seed:0}", f"data.cache_dir={gen_cache / 'datasets'}",
            "trainer.progress_bar=false", "trainer.log_with=null", "trainer.scheduler=plateau"]
    straight = run(load_config([*base, "trainer.max_epochs=4", f"output_dir={tmp_path / 'straight'}"]))
    run(load_config([*base, "trainer.max_epochs=2", f"output_dir={tmp_path / 'resumed'}"]))
    resumed = run(load_config([*base, "trainer.max_epochs=4", "resume=true", f"output_dir={tmp_path / 'resumed'}"]))
    h1 = json.loads((straight / "history.json").read_text())
    h2 = json.loads((resumed / "history.json").read_text())
    assert [e["train_loss"] for e in h1] == [e["train_loss"] for e in h2]
    assert [e["val_macro_f1"] for e in h1] == [e["val_macro_f1"] for e in h2]
    m1 = json.loads((straight / "metrics.json").read_text())
    m2 = json.loads((resumed / "metrics.json").read_text())
    assert m1["test"] == m2["test"] and m1["best_epoch"] == m2["best_epoch"]
    assert (straight / "predictions.csv").read_text() == (resumed / "predictions.csv").read_text()

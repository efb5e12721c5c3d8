"""The transformer recipes as users run them, with model.name_or_path pointing at a tiny local model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ser_hf.config import load_config

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import tiny_wav2vec2  # noqa: E402


@pytest.mark.parametrize("recipe,extra", [("wav2vec2_emodb", []), ("wav2vec2_crema", ["peft.enabled=true"]),
                                          ("wav2vec2_rf_ravdess", [])])
def test_transformer_recipe_runs(recipe, extra, tmp_path, monkeypatch):
    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_wav2vec2(tmp_path / "tiny")
    key = "embeddings.name_or_path" if recipe.endswith("_rf_ravdess") else "model.name_or_path"
    # the embedding family has no training loop: the spec refuses trainer keys there
    training = [] if recipe.endswith("_rf_ravdess") else ["trainer.max_epochs=1", "trainer.batch_size=4",
                                                          "trainer.grad_accum_steps=1"]
    out = run(load_config([f"recipe={recipe}", f"{key}={model_dir}", "data.synthetic={speakers:4,per_class:2,seed:0}",
                           f"data.cache_dir={tmp_path / 'datasets'}", *training, "trainer.progress_bar=false",
                           "trainer.log_with=null", *extra, f"output_dir={tmp_path / 'run'}"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == recipe and metrics["test"]["num_examples"] > 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert len(config["id2label"]) == len(metrics["label_names"])

"""The typed run spec (ser_hf.spec): every section checked before any work, typos named with the closest
valid key, keys a family does not use refused, and nothing read or written before the error."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser_hf.config import available_recipes, load_config, load_spec
from ser_hf.spec import (BASELINE_MODEL_KEYS, FAMILY_SPECS, AugmentConfig, SpecError, TrainerConfig, closest,
                         parse_spec)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", available_recipes())
def test_every_recipe_parses(recipe):
    spec = load_spec([f"recipe={recipe}"])
    assert spec.family in FAMILY_SPECS and spec.recipe_name == recipe
    assert (spec.trainer is None) == ("trainer" not in FAMILY_SPECS[spec.family].sections)


@pytest.mark.parametrize("recipe, override, message", [
    ("demo", "trainer.max_epoch=3", r"'trainer.max_epoch'.*did you mean trainer.max_epochs\?"),
    ("wav2vec2_emodb", "peft.rnak=8", r"'peft.rnak'.*did you mean peft.r\?"),
    ("demo", "features.n_mfc=13", r"'features.n_mfc'.*did you mean features.n_mfcc\?"),
    ("demo", "data.splt=loso", r"'data.splt'.*did you mean data.split\?"),
    ("cnn1d_crema", "augment.nosie={p:1}", r"'augment.nosie'.*did you mean augment.noise\?"),
    ("demo", "augment.spec_augment={time_mask:2}", r"'augment.spec_augment.time_mask'.*time_masks\?"),
    ("wav2vec2_rf_ravdess", "embeddings.layer=3", r"'embeddings.layer'.*did you mean embeddings.layers\?"),
    ("demo", "hub.pus=true", r"'hub.pus'.*did you mean hub.push\?"),
    ("demo", "model.chanels=[8]", r"cnn2d model option 'model.chanels'.*did you mean model.channels\?"),
    ("demo", "trainr.max_epochs=3", r"top-level config key 'trainr'; did you mean trainer\?"),
    # a section (or key) the family does not use is an error too, not silently ignored
    ("svm_stats_emodb", "trainer.max_epochs=3", r"trainer.max_epochs is set, but model.family=classic does not use"),
    ("demo", "peft.enabled=true", r"peft.enabled is set, but model.family=cnn2d"),
    ("svm_stats_emodb", "augment.spec_augment={time_masks:1}", r"spec_augment.*model.family=classic has none"),
    ("wav2vec2_emodb", "features.kind=logmel", r"features.kind is set, but model.family=transformer"),
    ("demo", "model.family=cnn2", r"model.family='cnn2'.*did you mean 'cnn2d'"),
    ("demo", "trainer.optimizer=sgd", r"trainer.optimizer='sgd'"),
    ("demo", "hub.push=true", r"hub.push=true needs hub.repo_id"),
    ("demo", "augment.copies=3", r"augment.copies=3 has no effect without a waveform transform"),
    ("svm_stats_emodb", "model.classifier=no_such_classifier", r"model.classifier='no_such_classifier': choose"),
    ("svm_stats_emodb", "model.kernal=linear", r"svm parameter 'model.kernal'.*did you mean model.kernel\?"),
    ("rf_stats_emodb", "model.n_estimator=10", r"random_forest parameter 'model.n_estimator'.*n_estimators\?"),
])
def test_bad_keys_fail_with_the_closest_valid_key(recipe, override, message):
    with pytest.raises(SpecError, match=message):
        load_spec([f"recipe={recipe}", override])


def test_display_only_trainer_keys_are_accepted_by_every_family():
    spec = load_spec(["recipe=svm_stats_emodb", "trainer.progress_bar=false", "trainer.log_with=null"])
    assert spec.family == "classic" and spec.trainer is None


def test_closest():
    assert closest("max_epoch", ["max_epochs", "batch_size"]) == "max_epochs"
    assert closest("rnak", ["r", "alpha", "dropout"]) == "r"
    assert closest("zzzz", ["r", "alpha"]) is None


def test_spec_values_become_typed_sections():
    spec = load_spec(["recipe=cnn2d_logmel_emodb", "seed=3"])
    assert isinstance(spec.trainer, TrainerConfig) and spec.trainer.seed == 3
    assert spec.features.sampling_rate == spec.data.sampling_rate == 16000
    assert isinstance(spec.augment, AugmentConfig)
    assert dataclasses.asdict(spec.augment.spec_augment) == {"time_masks": 2, "time_width": 20, "freq_masks": 1,
                                                             "freq_width": 6, "mask_value": 0.0}
    crema = load_spec(["recipe=cnn1d_crema"]).augment
    assert set(crema.waveform) >= {"noise", "shift", "copies"}


def test_the_spec_module_is_torch_free():
    """spec: standard library + omegaconf; config (what the scripts import first): no torch & co. either."""
    code = ("import sys, ser_hf.spec; "
            "heavy = [m for m in ('torch', 'numpy', 'datasets', 'transformers', 'librosa') if m in sys.modules]; "
            "assert not heavy, heavy; import ser_hf.config; "
            "heavy = [m for m in ('torch', 'datasets', 'transformers', 'librosa', 'sklearn') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_spec_splits_match_the_splitter():
    from ser_hf.data.splits import SPLITS as SPLITTER
    from ser_hf.spec import SPLITS

    assert tuple(SPLITS) == tuple(SPLITTER)


def test_baseline_model_keys_match_the_model_configs():
    from ser_hf.models.baselines import architecture_fields

    for family, keys in BASELINE_MODEL_KEYS.items():
        assert sorted(keys) == architecture_fields(family), family


def test_classic_params_match_scikit_learn():
    from ser_hf.models.classic import CLASSIFIERS
    from ser_hf.spec import CLASSIC_PARAMS

    assert set(CLASSIC_PARAMS) == set(CLASSIFIERS)
    for name, cls in CLASSIFIERS.items():
        assert sorted(CLASSIC_PARAMS[name]) == sorted(cls().get_params()), name


def test_both_halves_of_the_family_registry_agree():
    from ser_hf.families import REGISTRY

    assert set(REGISTRY) == set(FAMILY_SPECS)


def test_waveform_keys_match_the_augment_module():
    from ser_hf.augment import WAVEFORM_TRANSFORMS
    from ser_hf.spec import WAVEFORM_KEYS

    assert tuple(WAVEFORM_TRANSFORMS) == WAVEFORM_KEYS


# ---------------------------------------------------------------------------------------- no I/O


@pytest.fixture
def no_io(monkeypatch):
    """Any corpus load, corpus generation or builder call fails the test."""
    import ser_hf.data
    import ser_hf.data.corpus
    import ser_hf.experiment

    def boom(*a, **k):
        raise AssertionError("the corpus was touched before the recipe was checked")

    for module in (ser_hf.experiment, ser_hf.data, ser_hf.data.corpus):
        monkeypatch.setattr(module, "load_corpus", boom)
    monkeypatch.setattr(ser_hf.experiment, "generate_corpus", boom)
    monkeypatch.setattr(ser_hf.experiment, "load_data", boom)
    monkeypatch.setattr(ser_hf.data.corpus, "load_builder", boom, raising=False)


@pytest.mark.parametrize("override", ["trainer.max_epoch=3", "features.n_mfc=13", "data.splt=loso",
                                      "augment.nosie={p:1}", "hub.pus=true", "model.chanels=[8]"])
def test_a_typo_fails_before_any_io(no_io, tmp_path, override):
    from ser_hf.experiment import main

    out = tmp_path / "run"
    with pytest.raises(SpecError):
        main(["recipe=demo", override, f"output_dir={out}"])
    assert not out.exists()


def test_a_classifier_parameter_typo_fails_before_any_io(no_io, tmp_path):
    """Estimator parameters are checked when the family is built, still before the corpus."""
    from ser_hf.experiment import run

    out = tmp_path / "run"
    with pytest.raises(SpecError, match=r"svm parameter 'model.kernal'.*did you mean model.kernel\?"):
        run(load_config(["recipe=svm_stats_emodb", "model.kernal=linear", f"output_dir={out}"]))
    with pytest.raises(SpecError, match=r"svm parameter 'model.search.CC'.*did you mean model.search.C\?"):
        run(load_config(["recipe=svm_stats_emodb", "model.search={CC:[1]}", f"output_dir={out}"]))
    assert not out.exists()


def test_crossval_and_compare_check_the_spec_before_any_io(no_io, tmp_path):
    from ser_hf.compare import compare_from_args
    from ser_hf.crossval import crossval_recipe

    with pytest.raises(SpecError, match="trainer.max_epochs is set"):
        crossval_recipe(["recipe=svm_stats_emodb", "trainer.max_epochs=3"], out_dir=tmp_path / "cv")
    with pytest.raises(SpecError, match="did you mean trainer.max_epochs"):
        compare_from_args(["recipes=[demo,svm_stats_emodb]", "trainer.max_epoch=2", f"output_dir={tmp_path / 'c'}"])
    assert not (tmp_path / "cv").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("script, args", [
    ("finetune.py", ["recipe=demo", "trainer.max_epoch=3"]),
    ("crossval.py", ["recipe=svm_stats_emodb", "trainer.max_epochs=3", "jobs=2"]),
    ("compare.py", ["recipes=[demo,svm_stats_emodb]", "peft.rnak=4"]),
])
def test_scripts_refuse_a_bad_recipe_before_importing_torch(tmp_path, script, args):
    """The scripts check the spec first; torch is never imported (python -X importtime lists it otherwise)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "scripts" / script), *args,
                           f"output_dir={tmp_path / 'out'}"], capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr[-2000:]  # a user error: one line, exit 2 (config.run_cli)
    assert any(line.startswith("error: ") and ("did you mean" in line or "is set, but" in line)
               for line in proc.stderr.splitlines())
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "datasets" not in imported
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- learning rates


def test_group_learning_rates_apply_inside_a_family_s_groups(tmp_path):
    """trainer.group_learning_rates works on top of the transformer family's head/encoder groups
    (it used to be replaced by them silently)."""
    import torch

    from ser_hf.training import Trainer

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    base = [{"params": list(model[0].parameters()), "lr": 1e-4, "weight_decay": 0.01, "name": "encoder"},
            {"params": list(model[1].parameters()), "lr": 1e-3, "name": "head"}]
    cfg = TrainerConfig(log_with=None, progress_bar=False, group_learning_rates={"0.bias": 0.5, "1": 0.25})
    trainer = Trainer(model, cfg, tmp_path, param_groups=base)
    lrs = {tuple(id(p) for p in g["params"]): g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs[(id(model[0].weight),)] == 1e-4
    assert lrs[(id(model[0].bias),)] == 0.5
    assert lrs[(id(model[1].weight), id(model[1].bias))] == 0.25
    decay = {g["name"]: g.get("weight_decay") for g in trainer.optimizer.param_groups}
    assert decay["0.bias"] == 0.01  # a prefix group keeps its family group's weight decay
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        Trainer(model, TrainerConfig(log_with=None, group_learning_rates={"2": 0.1}), tmp_path, param_groups=base)


def test_waveform_augmentation_reaches_the_embedding_family(hubert_dir, tmp_path):
    """augment: on the embedding family adds augmented copies of the training clips only."""
    import datasets

    from ser_hf.families import ExperimentData, get_family

    rng = np.random.default_rng(0)
    rows = [{"audio": {"array": (0.3 * rng.standard_normal(4000)).astype(np.float32), "sampling_rate": 16000},
             "label": i % 2, "file": f"c{i}", "speaker_id": f"s{i % 3}"} for i in range(6)]
    ds = datasets.Dataset.from_list(rows)
    data = ExperimentData(train=ds, validation=ds.select([]), tests={"x": ds.select([0, 1])}, label_names=["a", "b"],
                          info={"speakers": {"train": ["s0", "s1", "s2"], "validation": [], "test": ["s0"]}})
    spec = parse_spec({"seed": 0, "output_dir": str(tmp_path / "run"),
                       "model": {"family": "embedding", "classifier": "logistic_regression"},
                       "embeddings": {"name_or_path": str(hubert_dir), "cache": False},
                       "augment": {"noise": {"p": 1.0}, "copies": 1}})
    family = get_family("embedding")(spec)
    family.fit(data, tmp_path / "run")
    train = family._vectors["train"]
    assert len(train) == 12 and sum(train["augmented"]) == 6
    clean = np.asarray(train["embedding"])[~np.asarray(train["augmented"])]
    noisy = np.asarray(train["embedding"])[np.asarray(train["augmented"])]
    assert not np.allclose(clean, noisy)  # the copies really are different audio
    assert len(family.predict({"test": data.tests["x"]})["test"][1]) == 2  # evaluation sets are not augmented


def test_waveform_augmentation_reaches_the_transformer_family(hubert_dir, tmp_path, monkeypatch):
    """augment: on the transformer family trains on the clips plus their augmented copies; evaluation
    loaders get the plain sets."""
    import datasets

    import ser_hf.families.transformer as tfam
    from ser_hf.families import ExperimentData, get_family

    rng = np.random.default_rng(0)
    rows = [{"audio": {"array": (0.3 * rng.standard_normal(4000)).astype(np.float32), "sampling_rate": 16000},
             "label": i % 2, "file": f"c{i}", "speaker_id": f"s{i % 3}"} for i in range(6)]
    ds = datasets.Dataset.from_list(rows)
    data = ExperimentData(train=ds, validation=ds.select([0, 1]), tests={"x": ds.select([2, 3])},
                          label_names=["a", "b"])
    loaders = []
    real = tfam.make_audio_loader
    monkeypatch.setattr(tfam, "make_audio_loader",
                        lambda d, fe, train, **k: loaders.append((train, len(d), d.column_names)) or real(d, fe, train=train, **k))
    spec = parse_spec({"seed": 0, "output_dir": str(tmp_path / "run"),
                       "model": {"family": "transformer", "name_or_path": str(hubert_dir), "max_duration_s": 0.25},
                       "trainer": {"max_epochs": 1, "batch_size": 4, "log_with": None, "progress_bar": False},
                       "augment": {"noise": {"p": 1.0}, "shift": True, "copies": 2}})
    family = get_family("transformer")(spec)
    family.fit(data, tmp_path / "run")
    family.predict(family.reported_sets(data))
    train = [(n, cols) for t, n, cols in loaders if t]
    assert train == [(18, train[0][1])] and "augmented" in train[0][1]  # 6 clips + 2 copies each
    assert sorted(n for t, n, _ in loaders if not t) == [2, 2, 2]  # validation (fit), validation + test (predict)

"""Baselines (PreTrainedModel families) and classic sklearn classifiers: shapes, learning, save/load, errors."""

import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForAudioClassification

import ser_hf.models as models
from ser_hf.models import (
    FAMILIES,
    ClassicClassifier,
    LSTMConfig,
    architecture_fields,
    build_baseline,
    count_parameters,
)

LABELS = ["angry", "happy", "neutral"]
SEQUENCE = ("lstm", "cnn1d", "cnn_lstm")
MAPS = ("cnn2d", "cnn7")

# Tiny versions of each family so every test runs in well under a second per family.
TINY = {
    "lstm": {"hidden_size": 16, "num_layers": 1},
    "cnn1d": {"channels": [8, 16], "kernel_sizes": [3, 3], "pool_sizes": [2, 2]},
    "cnn_lstm": {"channels": [8], "kernel_sizes": [3], "pool_sizes": [2], "hidden_size": 16},
    "cnn2d": {"channels": [8, 16], "kernel_sizes": [3, 3], "pool_sizes": [2, 2]},
    "cnn7": {"channels": [4] * 7, "kernel_sizes": [3] * 7, "pool_sizes": [2, 2, 1, 1, 1, 1, 1]},
}


def example_shape(family: str, frames: int = 24, dim: int = 10, bins: int = 16, channels: int | None = None):
    if family in SEQUENCE:
        return (frames, dim)
    return (channels or (3 if family == "cnn2d" else 1), bins, frames)


def tiny(family: str, shape=None, **kw):
    torch.manual_seed(0)
    return build_baseline(family, shape or example_shape(family), id2label=LABELS, **{**TINY[family], **kw})


def two_class_batch(family: str, n: int = 16, seed: int = 0):
    """Learnable toy problem: class 1 inputs are shifted up by +1 relative to class 0."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.randn(n, *example_shape(family), generator=g)
    x = x + labels.view(-1, *([1] * (x.dim() - 1))).float() * 2.0 - 1.0
    return x, labels


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_forward_shape_loss_and_tuple_output(family):
    model = tiny(family).eval()
    x = torch.randn(4, *example_shape(family))
    labels = torch.tensor([0, 1, 2, 0])
    out = model(input_values=x, labels=labels)
    assert out.logits.shape == (4, 3)
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    assert torch.allclose(out.loss, expected)
    assert model(x).loss is None
    as_tuple = model(x, labels=labels, return_dict=False)
    assert len(as_tuple) == 2 and torch.equal(as_tuple[1], out.logits)
    assert model.main_input_name == "input_values"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_loss_decreases_on_learnable_problem(family):
    model = tiny(family, dropout=0.0)
    x, labels = two_class_batch(family)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(12):
        loss = model(x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).logits.argmax(-1) == labels).float().mean().item()
    assert accuracy >= 0.9


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_save_pretrained_roundtrip_through_auto_class(family, tmp_path):
    model = tiny(family)
    x, labels = two_class_batch(family)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):  # move weights and BatchNorm running stats away from their initial values
        loss = model(x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == FAMILIES[family][0].model_type
    assert saved["id2label"] == {"0": "angry", "1": "happy", "2": "neutral"}

    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is FAMILIES[family][1]
    assert loaded.config.id2label == {0: "angry", 1: "happy", 2: "neutral"}
    assert loaded.config.label2id == {"angry": 0, "happy": 1, "neutral": 2}
    for key, value in TINY[family].items():
        assert getattr(loaded.config, key) == value
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    assert type(AutoConfig.from_pretrained(tmp_path)) is FAMILIES[family][0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_variable_length_inputs(family):
    model = tiny(family).eval()
    for frames in (1, 5, 57):
        x = torch.randn(2, *example_shape(family, frames=frames))
        assert model(x).logits.shape == (2, 3)
    if family in MAPS:  # any number of frequency bins too (global pooling)
        for bins in (3, 40):
            assert model(torch.randn(2, *example_shape(family, bins=bins))).logits.shape == (2, 3)


@pytest.mark.parametrize(
    ("family", "pooling"),
    [(f, p) for f in sorted(FAMILIES) for p in ("mean", "max", "attention") if p != "attention" or "lstm" in f],
)
def test_padding_with_mask_does_not_change_logits(family, pooling):
    key = "pooling" if "lstm" in family else "global_pooling"
    model = tiny(family, **{key: pooling}).eval()
    x = torch.randn(1, *example_shape(family, frames=13))
    pad = 6
    if family in SEQUENCE:
        padded = torch.nn.functional.pad(x, (0, 0, 0, pad), value=3.0)
    else:
        padded = torch.nn.functional.pad(x, (0, pad), value=3.0)
    mask = torch.cat([torch.ones(1, 13), torch.zeros(1, pad)], dim=1).long()
    with torch.no_grad():
        reference = model(x).logits
        masked = model(padded, attention_mask=mask).logits
        unmasked = model(padded).logits
    assert torch.allclose(masked, reference, atol=1e-5)
    assert not torch.allclose(unmasked, reference, atol=1e-5)  # the mask is what makes them equal


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_autocast_with_mask(family):
    model = tiny(family)
    x = torch.randn(2, *example_shape(family, frames=9))
    mask = torch.ones(2, 9)
    mask[1, 6:] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, attention_mask=mask, labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)


def test_hand_edited_bad_config_fails_at_load(tmp_path):
    tiny("lstm").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["pooling"] = "median"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="pooling must be one of"):
        AutoModelForAudioClassification.from_pretrained(tmp_path)


def test_bad_mask_and_bad_input_shape_raise():
    model = tiny("lstm").eval()
    x = torch.randn(2, 8, 10)
    with pytest.raises(ValueError, match="right padding"):
        model(x, attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1]] * 2))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(x, attention_mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match="input_dim=10"):
        model(torch.randn(2, 8, 11))
    with pytest.raises(ValueError, match="in_channels=3"):
        tiny("cnn2d")(torch.randn(2, 1, 16, 16))


def test_build_baseline_errors_name_valid_values():
    with pytest.raises(ValueError, match="valid families.*cnn7"):
        build_baseline("transformer", (10, 4), num_labels=2)
    with pytest.raises(ValueError, match="valid options.*hidden_size"):
        build_baseline("lstm", (10, 4), num_labels=2, hiden_size=4)
    with pytest.raises(ValueError, match=r"\(T, D\)"):
        build_baseline("cnn1d", (3, 16, 16), num_labels=2)
    with pytest.raises(ValueError, match=r"\(C, F, T\)"):
        build_baseline("cnn2d", (16, 16), num_labels=2)
    with pytest.raises(ValueError, match="one entry per conv layer"):
        build_baseline("cnn2d", (3, 16, 16), num_labels=2, channels=[4, 8], kernel_sizes=[3])
    with pytest.raises(ValueError, match="pooling must be one of"):
        build_baseline("lstm", (10, 4), num_labels=2, pooling="median")
    with pytest.raises(ValueError, match="contradicts"):
        build_baseline("lstm", (10, 4), num_labels=2, input_dim=5)
    with pytest.raises(ValueError, match="num_labels=4"):
        build_baseline("lstm", (10, 4), num_labels=4, id2label=LABELS)
    with pytest.raises(ValueError, match="dropout"):
        LSTMConfig(dropout=1.5)


def test_label_maps_and_input_size_from_shape():
    model = build_baseline("cnn1d", (None, 7), num_labels=2)
    assert model.config.input_dim == 7
    assert model.config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    model = build_baseline("cnn7", (2, 64, None), id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1})
    assert model.config.in_channels == 2 and model.config.num_labels == 2
    assert set(architecture_fields("cnn7")) >= {"channels", "kernel_sizes", "pool_sizes", "in_channels", "dropout"}


def test_count_parameters_matches_hand_count():
    model = build_baseline("lstm", (5, 4), num_labels=2, hidden_size=3, num_layers=1, bidirectional=False)
    # LSTM: 4 gates x (W_ih 3x4 + W_hh 3x3 + two 3-biases) = 4 x 27; head: 3x2 + 2
    assert count_parameters(model) == 4 * 27 + 8
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 8
    with pytest.raises(TypeError):
        count_parameters(ClassicClassifier("svm", num_labels=2))


def test_package_exports():
    for name in models.__all__:
        assert hasattr(models, name), name
    assert AutoConfig.for_model("ser_cnn_lstm").model_type == "ser_cnn_lstm"


# ---------------------------------------------------------------------------------------------------------------
# Classic models
# ---------------------------------------------------------------------------------------------------------------


def blobs(n_per_class: int = 20, num_classes: int = 3, seed: int = 0, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    centers = np.eye(num_classes, 6) * 6.0 + offset
    X = np.concatenate([rng.normal(c, 1.0, size=(n_per_class, 6)) for c in centers]) * 10.0  # unscaled on purpose
    y = np.repeat(np.arange(num_classes), n_per_class)
    return X, y


@pytest.mark.parametrize("classifier", ["svm", "random_forest", "logistic_regression"])
def test_classic_fit_predict_save_load(classifier, tmp_path):
    X, y = blobs()
    X_test, y_test = blobs(seed=1)
    kwargs = {"n_estimators": 20} if classifier == "random_forest" else {}
    model = ClassicClassifier(classifier, id2label=LABELS, **kwargs).fit(X, y)
    assert (model.predict(X_test) == y_test).mean() > 0.9
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(proba.argmax(axis=1), model.predict(X_test))
    # the scaler is fitted inside the pipeline on the training data only
    assert np.allclose(model.pipeline.named_steps["scaler"].mean_, X.mean(axis=0))

    (tmp_path / "feature_config.json").write_text("{}")  # save_pretrained must not touch files beside it
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "feature_config.json", "model.skops"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "ser_classic" and config["classifier"] == classifier
    assert config["id2label"] == {"0": "angry", "1": "happy", "2": "neutral"}
    assert config["label2id"] == {"angry": 0, "happy": 1, "neutral": 2}
    assert config["kwargs"] == kwargs

    loaded = ClassicClassifier.from_pretrained(tmp_path)
    assert loaded.id2label == {0: "angry", 1: "happy", 2: "neutral"}
    assert np.array_equal(loaded.predict_proba(X_test), proba)


@pytest.mark.parametrize("classifier", ["svm", "logistic_regression"])
def test_classic_scores_cover_classes_absent_from_training(classifier):
    X, y = blobs(num_classes=2)
    model = ClassicClassifier(classifier, num_labels=4).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 4)
    assert np.all(proba[:, 2:] == 0.0)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert (model.predict(X) == y).mean() > 0.9


def test_classic_errors(tmp_path):
    with pytest.raises(ValueError, match="valid"):
        ClassicClassifier("xgboost")
    with pytest.raises(ValueError, match="bad option"):
        ClassicClassifier("svm", n_trees=3)
    X, y = blobs()
    with pytest.raises(ValueError, match="NaN"):
        ClassicClassifier("svm", num_labels=3).fit(np.where(X > 50, np.nan, X), y)
    with pytest.raises(ValueError, match="0..1"):
        ClassicClassifier("svm", num_labels=2).fit(X, y)
    with pytest.raises(RuntimeError, match="fit"):
        ClassicClassifier("svm", num_labels=3).predict(X)
    with pytest.raises(FileNotFoundError, match="config.json"):
        ClassicClassifier.from_pretrained(tmp_path / "nowhere")

    model = ClassicClassifier("logistic_regression", num_labels=3).fit(X, y)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.skops").unlink()
    with pytest.raises(FileNotFoundError, match="model.skops"):
        ClassicClassifier.from_pretrained(tmp_path)


def test_classic_load_refuses_untrusted_types(tmp_path):
    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    ClassicClassifier("svm", num_labels=3).fit(*blobs()).save_pretrained(tmp_path)
    sio.dump(Pipeline([("f", FunctionTransformer(os.path.basename))]), tmp_path / "model.skops")
    with pytest.raises(ValueError, match="basename"):
        ClassicClassifier.from_pretrained(tmp_path)

"""Model card metadata parsed back with huggingface_hub's own parsers; upload path with the Hub calls intercepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from ser_hf.hub import card_from_run, model_card, push_to_hub
from ser_hf.metrics import compute_metrics
from ser_hf.reporting import LEAKY_WARNING, write_json

NAMES = ["anger", "disgust", "fear", "happy", "neutral", "sad"]


@pytest.fixture(autouse=True)
def _offline(no_network):
    """Every test here fails on any connection attempt (conftest's no_network)."""


def run_metrics(**overrides):
    m = {
        "recipe": "wav2vec2_crema_d", "corpus": "crema_d", "split": "loso", "fold": 3, "seed": 0, "leaky": False,
        "speakers": {"train": ["1001", "1002"], "validation": ["1004"], "test": ["1003"]},
        "best_epoch": 4, "model_family": "transformer", "label_names": NAMES,
        "validation": compute_metrics([0, 1, 2, 3], [0, 1, 2, 2], NAMES),
        "test": compute_metrics([0, 1, 2, 3, 4, 5, 5], [0, 1, 2, 3, 4, 4, 5], NAMES),
    }
    m.update(overrides)
    return m


def test_card_metadata_parses_back(tmp_path):
    metrics = run_metrics()
    card = model_card(metrics, base_model="facebook/wav2vec2-base", repo_id="someone/ser-crema-d")
    path = tmp_path / "README.md"
    card.save(path)

    meta = metadata_load(path)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "audio-classification"
    assert meta["base_model"] == "facebook/wav2vec2-base"
    assert {"speech-emotion-recognition", "ser_hf", "crema_d", "speaker-independent"} <= set(meta["tags"])
    assert meta["language"] == ["en"]

    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "ser-crema-d"
    by = {(r.dataset_split, r.metric_type, r.metric_config): r for r in results}
    test_m, val_m = metrics["test"], metrics["validation"]
    assert by["test", "f1", "macro"].metric_value == pytest.approx(round(test_m["macro_f1"], 4))
    assert by["test", "recall", "macro"].metric_value == pytest.approx(round(test_m["uar"], 4))
    assert by["test", "accuracy", None].metric_value == pytest.approx(round(6 / 7, 4))
    assert by["test", "f1", "weighted"].metric_value == pytest.approx(round(test_m["weighted_f1"], 4))
    assert by["validation", "accuracy", None].metric_value == pytest.approx(0.75)
    assert by["validation", "recall", "macro"].metric_value == pytest.approx(round(val_m["uar"], 4))
    r = by["test", "f1", "macro"]
    assert (r.task_type, r.dataset_type, r.dataset_name, r.dataset_config) == (
        "audio-classification", "crema_d", "CREMA-D", "loso-fold3")
    assert r.dataset_args["speaker_independent"] is True and r.dataset_args["leaky"] is False
    assert r.dataset_args["speakers_test"] == "1003" and r.dataset_args["fold"] == 3
    assert r.dataset_args["labels"].split() == NAMES

    loaded = ModelCard.load(path)  # the Hub's own card parser
    assert loaded.data.eval_results[0].metric_value == results[0].metric_value
    assert loaded.data.model_name == "ser-crema-d"
    text = loaded.text
    assert 'pipeline("audio-classification", model="someone/ser-crema-d")' in text
    assert '"sampling_rate": 16000' in text and "scripts/predict.py" in text
    for i, label in enumerate(NAMES):
        assert f"| {i} | {label} |" in text
    assert "LEAKY" not in text


def test_leaky_card_says_so(tmp_path):
    metrics = run_metrics(split="random", fold=None, leaky=True, corpus="emodb",
                          speakers={"train": ["03"], "validation": ["03"], "test": ["03"]})
    card = model_card(metrics, base_model=None, repo_id=None, dataset_name="EmoDB copy (2 s clips)")
    card.save(tmp_path / "README.md")
    meta = metadata_load(tmp_path / "README.md")
    assert "leaky-split" in meta["tags"] and "speaker-independent" not in meta["tags"]
    assert "base_model" not in meta and meta["language"] == ["de"]
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "ser_hf-wav2vec2_crema_d"
    assert {r.dataset_config for r in results} == {"random-leaky"}
    assert {r.dataset_name for r in results} == {"EmoDB copy (2 s clips)"}
    assert all(r.dataset_args["leaky"] is True for r in results)
    text = ModelCard.load(tmp_path / "README.md").text
    assert LEAKY_WARNING in text
    assert "pipeline(" not in text  # no base model: a ser_hf baseline, the pipeline cannot run it


def test_cross_corpus_card_names_each_corpus():
    metrics = run_metrics(train_corpus="ravdess", test_corpus="crema_d", corpus="ravdess", label_set="common")
    _, results = model_index_to_eval_results(model_card(metrics).data.to_dict()["model-index"])
    assert {(r.dataset_split, r.dataset_type) for r in results} == {("test", "crema_d"), ("validation", "ravdess")}


def test_card_from_run_folder(tmp_path):
    write_json(tmp_path / "metrics.json", run_metrics())
    card = card_from_run(tmp_path, repo_id="someone/x")
    assert card.data.eval_results[0].dataset_split == "test"


def test_card_rejects_metrics_without_results():
    with pytest.raises(ValueError, match="no 'test' or 'validation' results"):
        model_card({"corpus": "emodb"})


def make_model_dir(tmp_path: Path) -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "wav2vec2"}')
    (model_dir / "model.safetensors").write_bytes(b"\0" * 16)
    (model_dir / "preprocessor_config.json").write_text('{"sampling_rate": 16000}')
    return model_dir


def test_push_to_hub_creates_repo_and_uploads_folder(tmp_path, monkeypatch):
    calls = {}

    def fake_create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def fake_upload_folder(self, *, repo_id, folder_path, **kw):
        calls["upload"] = (repo_id, sorted(p.name for p in Path(folder_path).iterdir()), kw)
        calls["readme"] = (Path(folder_path) / "README.md").read_text()
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    model_dir = make_model_dir(tmp_path)
    card = model_card(run_metrics(), base_model="facebook/wav2vec2-base", repo_id="someone/ser")
    out = push_to_hub(model_dir, "someone/ser", card, private=True, token="hf_fake",
                      commit_message="first upload")

    assert out == "commit-info"
    repo_id, kw = calls["create"]
    assert repo_id == "someone/ser"
    assert kw["exist_ok"] is True and kw["private"] is True and kw["token"] == "hf_fake"
    uploaded_repo, files, kw = calls["upload"]
    assert uploaded_repo == "someone/ser"
    assert files == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert kw["commit_message"] == "first upload" and kw["repo_type"] == "model"
    assert "model-index" in calls["readme"] and "someone/ser" in calls["readme"]


def test_push_to_hub_bad_inputs(tmp_path, monkeypatch):
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: pytest.fail("must not reach the Hub"))
    with pytest.raises(FileNotFoundError, match="model folder"):
        push_to_hub(tmp_path / "missing", "someone/ser")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        push_to_hub(empty, "someone/ser")
    model_dir = make_model_dir(tmp_path)
    with pytest.raises(ValueError, match="no card given"):
        push_to_hub(model_dir, "someone/ser")
    with pytest.raises(ValueError, match="repo_id"):
        push_to_hub(model_dir, "a/b/c", ModelCard("---\nlicense: mit\n---\n# x"))

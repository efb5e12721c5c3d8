"""The probe family (learned layer mix over a frozen encoder's pooled states) and speaker-normalised embeddings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

import ser_hf.embeddings as emb
from ser_hf.config import load_config
from ser_hf.models.probe import ProbeConfig, ProbeForAudioClassification

QUIET = ["trainer.progress_bar=false", "trainer.log_with=null"]


def _probe(states=3, dim=4, labels=3, **kw) -> ProbeForAudioClassification:
    torch.manual_seed(0)
    return ProbeForAudioClassification(ProbeConfig(num_states=states, state_dim=dim,
                                                   id2label={i: f"c{i}" for i in range(labels)}, **kw))


def test_layer_weights_sum_to_one_and_inputs_are_checked():
    model = _probe(head="mlp", hidden_size=8).eval()
    w = model.layer_distribution()
    assert w.shape == (3,) and torch.allclose(w.sum(), torch.tensor(1.0)) and torch.allclose(w, torch.full((3,), 1 / 3))
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([3.0, -1.0, 0.5]))
    w = model.layer_distribution()
    assert torch.allclose(w.sum(), torch.tensor(1.0)) and w.argmax() == 0
    x = torch.randn(5, 3, 4)
    with torch.no_grad():
        flat, stacked = model(input_values=x.reshape(5, 12)).logits, model(input_values=x).logits
    assert stacked.shape == (5, 3) and torch.allclose(flat, stacked)
    # only the states with weight enter: a state with ~0 weight can change without changing the output
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([0.0, -50.0, 0.0]))
        y = x.clone()
        y[:, 1] = 100 * torch.randn(5, 4)
        assert torch.allclose(model(input_values=x).logits, model(input_values=y).logits, atol=1e-5)
    with pytest.raises(ValueError, match=r"takes \(B, 3, 4\)"):
        model(input_values=torch.randn(2, 11))
    with pytest.raises(ValueError, match="model.head"):
        ProbeConfig(num_states=2, state_dim=2, head="transformer")


def test_the_mix_finds_the_informative_state(tmp_path):
    """States 0 and 2 are noise, state 1 carries the class: training (the shared Trainer) learns to weight it."""
    from ser_hf.families.probe import embedding_loader as _loader
    from ser_hf.training import Trainer, TrainerConfig

    rng = np.random.default_rng(0)
    n, labels = 240, 3
    y = np.arange(n) % labels
    x = rng.standard_normal((n, 3, 4)).astype(np.float32)
    x[:, 1, :labels] += 2.5 * np.eye(labels, dtype=np.float32)[y]
    ds = datasets.Dataset.from_dict({"embedding": x.reshape(n, -1).tolist(), "label": y.tolist()})
    tcfg = TrainerConfig.from_dict({"max_epochs": 25, "batch_size": 32, "learning_rate": 0.01, "log_with": None,
                                    "progress_bar": False, "optimizer": "adamw"})
    model = _probe(dropout=0.0)
    trainer = Trainer(model, tcfg, tmp_path)
    trainer.fit(_loader(ds.select(range(160)), tcfg, True), _loader(ds.select(range(160, n)), tcfg, False))
    w = trainer.unwrapped_model.layer_distribution().detach()
    assert w.argmax() == 1 and w[1] > 0.5 and torch.allclose(w.sum(), torch.tensor(1.0))
    _, logits, refs = trainer.predict(_loader(ds.select(range(160, n)), tcfg, False))
    assert (logits.argmax(1) == refs).mean() > 0.9


# ------------------------------------------------------------------------------------ end to end


def tiny_short_whisper(out_dir, seconds: int = 4, encoder_layers: int = 2) -> Path:
    """A tiny random Whisper encoder-decoder whose extractor and positions cover ``seconds`` instead of 30 s
    (the cropped geometry: fast on generated 2-3 s clips; log-mel input keeps the generated prosody);
    ``encoder_layers`` as many as the real encoder a recipe's layer candidates name (tiny.en 4, base 6)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(d_model=16, encoder_layers=encoder_layers, encoder_attention_heads=2, decoder_layers=1,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=16,
                           max_source_positions=50 * seconds)
    WhisperModel(config).eval().save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=16, chunk_length=seconds).save_pretrained(out_dir)
    return Path(out_dir)


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """whisper_probe_emodb as a user runs it, with a tiny random Whisper encoder (generated corpus)."""
    from ser_hf.experiment import run

    tmp = tmp_path_factory.mktemp("probe")
    model_dir = tiny_short_whisper(tmp / "encoder")
    mp = pytest.MonkeyPatch()
    mp.setenv("SER_HF_CACHE", str(tmp / "cache"))
    try:
        out = run(load_config(["recipe=whisper_probe_emodb", f"embeddings.name_or_path={model_dir}",
                               "data.synthetic={speakers:6,per_class:4,seed:0}", f"data.cache_dir={tmp / 'ds'}",
                               "trainer.max_epochs=30", *QUIET, f"output_dir={tmp / 'run'}"]))
    finally:
        mp.undo()
    (corpus,) = (tmp / "cache" / "generated").iterdir()
    return out, model_dir, corpus


def test_probe_recipe_learns_generated_emotion(probe_run):
    out, model_dir, _ = probe_run
    metrics = json.loads((out / "metrics.json").read_text())
    chance = 1 / len(metrics["label_names"])
    assert metrics["model_family"] == "probe"
    assert metrics["test"]["macro_f1"] > 2 * chance, metrics["test"]["macro_f1"]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model_type"] == "ser_probe" and config["num_states"] == 3 and config["state_dim"] == 16
    assert config["speaker_norm"] is True and config["encoder_name_or_path"] == str(model_dir)
    assert [config["id2label"][str(i)] for i in range(len(config["id2label"]))] == metrics["label_names"]
    assert (out / "model" / "model.safetensors").is_file()
    assert not list((out / "model").glob("*.bin")) and not list((out / "model").glob("*.pkl"))


def test_saved_probe_round_trip_and_predict_agree(probe_run):
    """from_pretrained gives identical outputs; predict on one speaker's clips reproduces the run's test scores
    (the speaker's clips normalised together are what training-time speaker normalisation saw)."""
    from transformers import AutoModelForAudioClassification

    from ser_hf.inference import load_for_inference

    out, _, corpus = probe_run
    model = AutoModelForAudioClassification.from_pretrained(out / "model").eval()
    assert isinstance(model, ProbeForAudioClassification)
    x = torch.randn(4, model.config.num_states * model.config.state_dim)
    fresh = ProbeForAudioClassification.from_pretrained(out / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_values=x).logits, fresh(input_values=x).logits, rtol=0, atol=0)
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    test = [r for r in rows if r["split"] == "test"]
    speaker = test[0]["speaker_id"]
    mine = [r for r in test if r["speaker_id"] == speaker]
    predictor = load_for_inference(out / "model", device="cpu")
    assert predictor.kind == "probe"
    records = predictor.predict_files([corpus / r["file"] for r in mine])
    assert all(rec.get("error") is None for rec in records)
    names = predictor.label_names
    for r, rec in zip(mine, records):
        expected = np.array([float(r[f"prob_{n}"]) for n in names])
        np.testing.assert_allclose([rec["scores"][n] for n in names], expected, atol=1e-4)
    with pytest.raises(ValueError, match="at least 2 clips"):
        predictor.predict_files([corpus / mine[0]["file"]])


# ------------------------------------------------------------------------------------ embeddings


def _ds(lengths, speakers, seed=0):
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_list([
        {"audio": {"array": (0.1 * rng.standard_normal(n)).astype(np.float32), "sampling_rate": 16000},
         "label": i % 2, "file": f"c{i}.wav", "speaker_id": s}
        for i, (n, s) in enumerate(zip(lengths, speakers))
    ])


def test_all_layers_are_every_state_pooled(hubert_dir, tmp_path):
    ds = _ds([8000, 12000], ["a", "b"])
    every = emb.embedding_matrix(emb.extract_embeddings(ds, hubert_dir, layers="all", cache_dir=tmp_path))
    assert emb.hidden_state_count(hubert_dir) == 3 and every.shape == (2, 3 * 32)
    encoder = emb.load_encoder(str(hubert_dir), "last", "cpu", None)
    for i in range(3):
        direct = np.stack([encoder([np.asarray(a["array"], np.float32)], 16000, i, "mean")[0] for a in ds["audio"]])
        np.testing.assert_allclose(every[:, 32 * i:32 * (i + 1)], direct, atol=1e-5)
        one = emb.embedding_matrix(emb.extract_embeddings(ds, hubert_dir, layers=i, cache_dir=tmp_path))
        np.testing.assert_array_equal(one, every[:, 32 * i:32 * (i + 1)])  # sliced from the cached pass
    both = emb.embedding_matrix(emb.extract_embeddings(ds, hubert_dir, layers=[2, 0], cache_dir=tmp_path))
    np.testing.assert_array_equal(both, np.concatenate([every[:, 64:], every[:, :32]], axis=1))


def test_speaker_norm_zscores_each_speaker(hubert_dir, tmp_path):
    ds = _ds([8000, 9000, 10000, 11000, 12000], ["a", "a", "a", "b", "b"])
    settings = emb.EmbeddingSettings.from_dict({"layers": "last", "speaker_norm": True})
    out = emb.embed_splits({"test": ds}, hubert_dir, settings, cache_dir=tmp_path)["test"]
    assert "audio" not in out.column_names and out["speaker_id"] == ds["speaker_id"]
    X = emb.embedding_matrix(out)
    for spk in ("a", "b"):
        rows = X[[s == spk for s in ds["speaker_id"]]]
        np.testing.assert_allclose(rows.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(rows.std(axis=0), 1, atol=1e-3)
    with pytest.raises(ValueError, match="speaker_norm"):
        emb.EmbeddingSettings.from_dict({"speaker_norm": "maybe"})  # yes/no/true/false... are booleans (issue 12)


def test_selections_of_one_corpus_file_share_one_encoder_pass(hubert_dir, tmp_path, monkeypatch):
    """Folds are selections of one decoded corpus file: the whole file is embedded once, for all of them."""
    _ds([8000, 9000, 10000, 11000], ["a", "a", "b", "b"]).save_to_disk(tmp_path / "ds")
    whole = datasets.load_from_disk(tmp_path / "ds")
    calls = []
    real = emb.load_encoder
    monkeypatch.setattr(emb, "load_encoder", lambda *a: calls.append(a) or real(*a))
    fold1 = emb.extract_embeddings(whole.select([0, 1]), hubert_dir, layers="all")
    fold2 = emb.extract_embeddings(whole.select([3, 2]), hubert_dir, layers="all")
    assert len(calls) == 1
    alone = emb.extract_embeddings(_ds([8000, 9000, 10000, 11000], "aabb"), hubert_dir, layers="all")
    X = emb.embedding_matrix(alone)
    np.testing.assert_allclose(emb.embedding_matrix(fold1), X[[0, 1]], atol=1e-5)
    np.testing.assert_allclose(emb.embedding_matrix(fold2), X[[3, 2]], atol=1e-5)
    assert fold2["file"] == ["c3.wav", "c2.wav"]


def test_probe_config_errors(tmp_path, monkeypatch):
    from ser_hf.experiment import run

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    base = ["recipe=whisper_probe_emodb", "embeddings.name_or_path=x", "data.synthetic={speakers:4,per_class:1,seed:0}",
            f"data.cache_dir={tmp_path / 'ds'}", *QUIET]
    with pytest.raises(ValueError, match="learns its own mix"):
        run(load_config([*base, "embeddings.layers=2", f"output_dir={tmp_path / 'run1'}"]))
    with pytest.raises(ValueError, match=r"unknown key 'model.heads'.*did you mean model.head\?"):
        run(load_config([*base, "model.heads=mlp", f"output_dir={tmp_path / 'run2'}"]))


@pytest.mark.parametrize("recipe,encoder_layers", [("whisper_svm_emodb", 4), ("whisper_base_svm_emodb", 6)])
def test_whisper_svm_recipe_runs_with_speaker_norm_and_predicts(recipe, encoder_layers, tmp_path, monkeypatch):
    """whisper_svm_emodb / whisper_base_svm_emodb as users run them (a tiny Whisper with as many layers as the
    real encoder): every listed candidate scored on the training speakers, the best one saved, speaker
    normalisation on; the saved model predicts one speaker's clips as the run scored them."""
    from ser_hf.experiment import run
    from ser_hf.inference import load_for_inference

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_short_whisper(tmp_path / "encoder", encoder_layers=encoder_layers)
    listed = load_config([f"recipe={recipe}"]).model.search["layers"]
    out = run(load_config([f"recipe={recipe}", f"embeddings.name_or_path={model_dir}",
                           "data.synthetic={speakers:6,per_class:2,seed:0}", f"data.cache_dir={tmp_path / 'ds'}",
                           *QUIET, f"output_dir={tmp_path / 'run'}"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_family"] == "embedding" and metrics["test"]["num_examples"] > 0
    search = json.loads((out / "layer_search.json").read_text())
    assert [c["layers"] for c in search["candidates"]] == [list(c) for c in listed]
    assert max(i for c in listed for i in c) == encoder_layers  # the candidates reach the encoder's last state
    assert search["chosen"]["inner_macro_f1"] == max(c["inner_macro_f1"] for c in search["candidates"])
    saved = json.loads((out / "model" / "embedding_config.json").read_text())
    assert saved["layers"] == search["chosen"]["layers"] and saved["speaker_norm"] is True
    assert saved["max_duration_s"] == 4
    rows = [r for r in csv.DictReader(open(out / "predictions.csv")) if r["split"] == "test"]
    mine = [r for r in rows if r["speaker_id"] == rows[0]["speaker_id"]]
    (corpus,) = (tmp_path / "cache" / "generated").iterdir()
    predictor = load_for_inference(out / "model", device="cpu")
    records = predictor.predict_files([corpus / r["file"] for r in mine])
    for r, rec in zip(mine, records):
        expected = [float(r[f"prob_{n}"]) for n in predictor.label_names]
        np.testing.assert_allclose([rec["scores"][n] for n in predictor.label_names], expected, atol=1e-4)


def test_layer_search_chooses_on_training_speakers_and_equals_the_fixed_choice(tmp_path, monkeypatch):
    """model.search.layers: every candidate scored by the inner speaker-grouped CV on the training speakers; the
    best wins, and the run's test scores equal a run fixed at the chosen layers and C (so the test speaker
    entered nothing but that final scoring). Spec errors name the keys."""
    from ser_hf.experiment import run
    from ser_hf.spec import SpecError

    monkeypatch.setenv("SER_HF_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_short_whisper(tmp_path / "encoder")
    base = ["recipe=whisper_svm_emodb", f"embeddings.name_or_path={model_dir}",
            "data.synthetic={speakers:6,per_class:2,seed:0}", f"data.cache_dir={tmp_path / 'ds'}", *QUIET]
    nested = run(load_config([*base, "embeddings.layers=last", "model.search.layers=[[0],[1],[2],[1,2]]",
                              "model.search.C=[0.1,10]", f"output_dir={tmp_path / 'nested'}"]))
    search = json.loads((nested / "layer_search.json").read_text())
    scores = [c["inner_macro_f1"] for c in search["candidates"]]
    assert [c["layers"] for c in search["candidates"]] == [[0], [1], [2], [1, 2]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    chosen = search["candidates"][int(np.argmax(scores))]  # argmax: the first of equal scores
    assert search["chosen"] == {"layers": chosen["layers"], "inner_macro_f1": max(scores),
                                "best_params": chosen["best_params"]}
    saved = json.loads((nested / "model" / "embedding_config.json").read_text())
    assert saved["layers"] == chosen["layers"]
    assert json.loads((nested / "model" / "config.json").read_text())["best_params"] == chosen["best_params"]
    layers = ",".join(str(i) for i in chosen["layers"])
    fixed = run(load_config([*base, "~model.search.layers", f"embeddings.layers=[{layers}]", f"model.search.C=[{chosen['best_params']['C']}]",
                             f"output_dir={tmp_path / 'fixed'}"]))

    def test_probs(folder):
        rows = [r for r in csv.DictReader(open(folder / "predictions.csv")) if r["split"] == "test"]
        return np.array([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows])

    np.testing.assert_allclose(test_probs(nested), test_probs(fixed), atol=1e-9)

    with pytest.raises(SpecError, match=r"model.search.layers chooses.*embeddings.layers=\[1, 2, 3\] fixes them"):
        run(load_config([*base, "embeddings.layers=[1,2,3]", "model.search.layers=[[1],[2]]",
                         f"output_dir={tmp_path / 'e1'}"]))
    with pytest.raises(SpecError, match=r"model.search.layers: 'mean' is not a candidate"):
        run(load_config([*base, "embeddings.layers=last", "model.search.layers=[mean]", f"output_dir={tmp_path / 'e2'}"]))
    with pytest.raises(SpecError, match=r"model.search.layers"):
        run(load_config(["recipe=svm_stats_emodb", "model.search.layers=[[1]]", f"output_dir={tmp_path / 'e3'}"]))

"""Hidden-state embeddings: shapes, layer choices, masked pooling, datasets caching (tiny random encoders)."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

import ser_hf.embeddings as emb

HIDDEN = 32  # tiny_models hidden_size
LAYERS = 2  # tiny_models num_hidden_layers


def _ds(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_list([
        {"audio": {"array": (0.1 * rng.standard_normal(n)).astype(np.float32), "sampling_rate": 16000},
         "label": i % 2, "file": f"c{i}.wav"}
        for i, n in enumerate(lengths)
    ])


def test_masked_pool_ignores_padding():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
    mask = torch.tensor([[True, True, False]])
    mean = emb.masked_pool(h, mask, "mean")
    assert torch.allclose(mean, torch.tensor([[2.0, 3.0]]))
    ms = emb.masked_pool(h, mask, "mean_std")
    assert torch.allclose(ms, torch.tensor([[2.0, 3.0, 1.0, 1.0]]))
    assert torch.allclose(emb.masked_pool(h[:, :2], None, "mean_std"), ms)


def test_select_layers_choices():
    states = [torch.full((1, 2, 3), float(i)) for i in range(LAYERS + 1)]
    assert emb.select_layers(states, "last")[0][0, 0, 0] == LAYERS
    assert emb.select_layers(states, 0)[0][0, 0, 0] == 0
    assert emb.select_layers(states, "mean")[0][0, 0, 0] == pytest.approx(1.5)  # layers 1..2, not the input
    assert [s[0, 0, 0].item() for s in emb.select_layers(states, [0, -1])] == [0, 2]
    weighted = emb.select_layers(states, "weighted", layer_weights=torch.tensor([0.0, 0.0, 100.0]))
    assert weighted[0][0, 0, 0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="out of range.*0..2"):
        emb.select_layers(states, 5)
    with pytest.raises(ValueError, match="use_weighted_layer_sum"):
        emb.select_layers(states, "weighted")
    with pytest.raises(ValueError, match="layers='top'"):
        emb.select_layers(states, "top")


def test_shapes_dtype_and_layer_options(hubert_dir, tmp_path):
    ds = _ds([8000, 12000, 16000])
    out = emb.extract_embeddings(ds, hubert_dir, layers="last", pooling="mean", cache_dir=tmp_path)
    assert out.column_names == ["audio", "label", "file", "embedding"]
    X = emb.embedding_matrix(out)
    assert X.shape == (3, HIDDEN) and X.dtype == np.float32 and np.isfinite(X).all()
    assert out.features["embedding"].feature.dtype == "float32"
    ms = emb.embedding_matrix(emb.extract_embeddings(ds, hubert_dir, pooling="mean_std", cache_dir=tmp_path))
    assert ms.shape == (3, 2 * HIDDEN)
    np.testing.assert_allclose(ms[:, :HIDDEN], X, atol=1e-5)  # the mean half is the mean pooling
    assert (ms[:, HIDDEN:] >= 0).all()
    cat = emb.embedding_matrix(emb.extract_embeddings(ds, hubert_dir, layers=[0, -1], cache_dir=tmp_path))
    assert cat.shape == (3, 2 * HIDDEN)
    np.testing.assert_allclose(cat[:, HIDDEN:], X, atol=1e-5)  # index -1 is "last"
    mean = emb.embedding_matrix(emb.extract_embeddings(ds, hubert_dir, layers="mean", cache_dir=tmp_path))
    assert mean.shape == (3, HIDDEN) and not np.allclose(mean, X)


def test_embeddings_do_not_depend_on_batch_neighbours(hubert_dir, w2v_dir, tmp_path):
    """Masked pooling (and masks in the encoder) keep padding out; unmasked models batch equal lengths only."""
    ds = _ds([6000, 20000, 6000, 11000])
    for model_dir in (hubert_dir, w2v_dir):
        together = emb.embedding_matrix(emb.extract_embeddings(ds, model_dir, batch_size=4, pooling="mean_std"))
        for i in range(len(ds)):
            alone = emb.embedding_matrix(emb.extract_embeddings(ds.select([i]), model_dir, pooling="mean_std"))
            np.testing.assert_allclose(alone[0], together[i], atol=2e-5)


def test_pooling_without_mask_would_differ(hubert_dir):
    """The masking above is doing work: pooling over the padded frames gives another vector."""
    enc = emb.load_encoder(str(hubert_dir), "last", "cpu", None)
    a = np.random.default_rng(0).standard_normal(6000).astype(np.float32)
    b = np.random.default_rng(1).standard_normal(20000).astype(np.float32)
    masked = enc([a, b], 16000, "last", "mean")[0]
    from ser_hf.models.transformer import featurize

    with torch.inference_mode():
        hidden = enc.model(**featurize(enc.feature_extractor, [a, b], 16000)).last_hidden_state
    unmasked = emb.masked_pool(hidden, None, "mean")[0].numpy()
    alone = enc([a], 16000, "last", "mean")[0]
    np.testing.assert_allclose(masked, alone, atol=2e-5)
    assert np.abs(unmasked - alone).max() > 1e-3


def test_cache_hit_reuses_embeddings(hubert_dir, tmp_path, monkeypatch):
    calls = []
    real = emb.load_encoder

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(emb, "load_encoder", counting)
    ds = _ds([8000, 9000])
    first = emb.extract_embeddings(ds, hubert_dir, layers="last", pooling="mean", cache_dir=tmp_path / "c")
    assert len(calls) == 1
    again = emb.extract_embeddings(ds, hubert_dir, layers="last", pooling="mean", cache_dir=tmp_path / "c")
    assert len(calls) == 1  # served from the cache: the encoder is not even loaded
    np.testing.assert_array_equal(emb.embedding_matrix(first), emb.embedding_matrix(again))
    emb.extract_embeddings(ds, hubert_dir, layers="last", pooling="mean_std", cache_dir=tmp_path / "c")
    assert len(calls) == 2  # another pooling is another cache entry
    emb.extract_embeddings(ds, hubert_dir, layers="last", pooling="mean", cache=False, cache_dir=tmp_path / "c")
    assert len(calls) == 3


def test_cache_lives_beside_an_on_disk_dataset(hubert_dir, tmp_path, monkeypatch):
    _ds([8000, 9000]).save_to_disk(tmp_path / "ds")
    ds = datasets.load_from_disk(tmp_path / "ds")
    calls = []
    real = emb.load_encoder
    monkeypatch.setattr(emb, "load_encoder", lambda *a: calls.append(a) or real(*a))
    emb.extract_embeddings(ds, hubert_dir)
    emb.extract_embeddings(datasets.load_from_disk(tmp_path / "ds"), hubert_dir)
    assert len(calls) == 1


def test_fingerprint_tracks_model_files(hubert_dir, tmp_path):
    import shutil

    ds = _ds([8000])
    copy = shutil.copytree(hubert_dir, tmp_path / "copy")
    a = emb.embeddings_fingerprint(ds, copy, "last", "mean")
    assert a == emb.embeddings_fingerprint(ds, copy, "last", "mean")
    assert a != emb.embeddings_fingerprint(ds, copy, "mean", "mean")
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"hidden_act"', '"hidden_act" '))
    assert a != emb.embeddings_fingerprint(ds, copy, "last", "mean")


def test_weighted_layers_use_the_checkpoint_weights(hubert_dir, tmp_path):
    from ser_hf.models.transformer import load_audio_classifier

    ds = _ds([8000, 12000])
    with pytest.raises(ValueError, match="use_weighted_layer_sum"):
        emb.extract_embeddings(ds, hubert_dir, layers="weighted")
    model, fe = load_audio_classifier(hubert_dir, ["a", "b"], use_weighted_layer_sum=True)
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([-50.0, -50.0, 50.0]))  # all weight on the last layer
    model.save_pretrained(tmp_path / "ft")
    fe.save_pretrained(tmp_path / "ft")
    weighted = emb.embedding_matrix(emb.extract_embeddings(ds, tmp_path / "ft", layers="weighted"))
    last = emb.embedding_matrix(emb.extract_embeddings(ds, tmp_path / "ft", layers="last"))
    np.testing.assert_allclose(weighted, last, atol=1e-5)


def test_bad_arguments_are_explained(hubert_dir):
    ds = _ds([8000])
    with pytest.raises(ValueError, match="pooling='max'"):
        emb.extract_embeddings(ds, hubert_dir, pooling="max")
    with pytest.raises(KeyError, match="no 'audio' column"):
        emb.extract_embeddings(ds.remove_columns("audio"), hubert_dir)
    with pytest.raises(ValueError, match="unknown key.*layer"):
        emb.EmbeddingSettings.from_dict({"layer": 3})
    assert emb.EmbeddingSettings.from_dict({"layers": [1, 2], "pooling": "mean_std"}).layers == [1, 2]

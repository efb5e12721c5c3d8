"""Loading, LoRA, freezing, parameter groups, batching of audio transformers (tiny random models, offline)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ser_hf.models import transformer as tf

LABELS = ["anger", "boredom", "neutral"]


def _row(n, i, label=0, sr=16000, seed=0):
    rng = np.random.default_rng(seed + i)
    return {"audio": {"array": (0.1 * rng.standard_normal(n)).astype(np.float32), "sampling_rate": sr},
            "label": label, "clip_id": i, "file": f"c{i}.wav"}


# ------------------------------------------------------------------------------------------------ loading

def test_load_local_dir_sets_labels_and_freezes_feature_encoder(w2v_dir):
    model, fe = tf.load_audio_classifier(w2v_dir, LABELS)
    assert model.config.id2label == {0: "anger", 1: "boredom", 2: "neutral"}
    assert model.config.label2id == {"anger": 0, "boredom": 1, "neutral": 2}
    assert model.classifier.out_features == 3
    assert fe.sampling_rate == 16000
    assert all(not p.requires_grad for p in model.wav2vec2.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.wav2vec2.encoder.parameters())
    unfrozen, _ = tf.load_audio_classifier(w2v_dir, LABELS, freeze_feature_encoder=False)
    assert all(p.requires_grad for p in unfrozen.wav2vec2.feature_extractor.parameters())


def test_config_overrides_and_unknown_key(hubert_dir):
    model, _ = tf.load_audio_classifier(hubert_dir, LABELS, use_weighted_layer_sum=True, layerdrop=0.0)
    assert model.config.use_weighted_layer_sum is True
    assert "layer_weights" in tf.head_module_names(model)
    with pytest.raises(ValueError, match="unknown model config key.*no_such_option"):
        tf.load_audio_classifier(hubert_dir, LABELS, no_such_option=1)


def test_relabelling_a_finetuned_checkpoint_replaces_the_head(w2v_dir, tmp_path):
    model, fe = tf.load_audio_classifier(w2v_dir, ["a", "b"])
    model.save_pretrained(tmp_path / "ft")
    fe.save_pretrained(tmp_path / "ft")
    again, _ = tf.load_audio_classifier(tmp_path / "ft", LABELS)
    assert again.classifier.out_features == 3 and again.config.id2label[2] == "neutral"
    same_size, _ = tf.load_audio_classifier(tmp_path / "ft", ["c", "d"])  # same count, other classes
    assert not torch.equal(same_size.classifier.weight, model.classifier.weight)
    assert torch.equal(same_size.projector.weight, model.projector.weight)  # not label-specific: kept
    kept, _ = tf.load_audio_classifier(tmp_path / "ft", ["a", "b"])  # same labels: continue from the head
    assert torch.equal(kept.classifier.weight, model.classifier.weight)


def test_missing_local_folder_fails_fast_and_says_how_to_fix(tmp_path):
    start = time.perf_counter()
    with pytest.raises(tf.ModelLoadError) as err:
        tf.load_audio_classifier(tmp_path / "no" / "wav2vec2-base", LABELS)
    assert time.perf_counter() - start < 5
    assert "does not exist" in str(err.value)
    assert "model.name_or_path=/path/to/local/" in str(err.value)
    assert "HF_HUB_OFFLINE=1" in str(err.value)


def test_folder_without_config_is_explained(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(tf.ModelLoadError, match="has no config.json.*weights.bin"):
        tf.load_audio_classifier(tmp_path, LABELS)


def test_hub_name_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    start = time.perf_counter()
    with pytest.raises(tf.ModelLoadError) as err:
        tf.load_audio_classifier("facebook/wav2vec2-base", LABELS)
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert "offline mode is on" in msg
    assert "model.name_or_path=/path/to/local/wav2vec2-base" in msg
    assert "hf download facebook/wav2vec2-base" in msg


def test_hub_name_unreachable_fails_fast(monkeypatch, tmp_path):
    """Online mode, no network: one short probe instead of huggingface_hub's retries with back-off."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv(tf.HUB_PROBE_TIMEOUT_ENV, "2")
    start = time.perf_counter()
    with pytest.raises(tf.ModelLoadError, match="could not be reached.*model.name_or_path="):
        tf.load_audio_classifier("facebook/wav2vec2-base", LABELS)
    assert time.perf_counter() - start < 8


def test_cached_hub_model_loads_quickly_when_the_hub_is_unreachable(monkeypatch, tmp_path, hubert_dir):
    import shutil

    repo = tmp_path / "hub" / "models--someorg--tiny-hubert"
    shutil.copytree(hubert_dir, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv(tf.HUB_PROBE_TIMEOUT_ENV, "2")
    start = time.perf_counter()
    model, fe = tf.load_audio_classifier("someorg/tiny-hubert", LABELS)
    assert time.perf_counter() - start < 8  # no Hub retries (transformers' adapter lookup included)
    assert model.config.id2label[0] == "anger" and fe.return_attention_mask


# --------------------------------------------------------------------------------- head / freezing / groups

def test_head_discovery_and_param_groups(w2v_dir):
    model, _ = tf.load_audio_classifier(w2v_dir, LABELS)
    assert tf.head_module_names(model) == ["projector", "classifier"]
    groups = tf.param_groups(model, head_lr=1e-3, encoder_lr=1e-5, weight_decay=0.01)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 1e-3 and by_name["encoder"]["lr"] == 1e-5
    assert set(by_name["head"]["param_names"]) == {"projector.weight", "classifier.weight"}
    assert set(by_name["head_no_decay"]["param_names"]) == {"projector.bias", "classifier.bias"}
    assert by_name["head_no_decay"]["weight_decay"] == 0.0 and by_name["encoder"]["weight_decay"] == 0.01
    grouped = {n for g in groups for n in g["param_names"]}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert grouped == trainable  # frozen feature encoder excluded, nothing else lost
    assert not any("feature_extractor" in n for n in grouped)
    torch.optim.AdamW([{k: v for k, v in g.items() if k in ("params", "lr", "weight_decay")} for g in groups])


def test_freeze_and_unfreeze_base(w2v_dir):
    model, _ = tf.load_audio_classifier(w2v_dir, LABELS)
    before = {n for n, p in model.named_parameters() if p.requires_grad}
    tf.freeze_base(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "projector.weight", "projector.bias", "classifier.weight", "classifier.bias"}
    # the optimizer built during warm-up still holds the encoder, which starts learning after unfreeze
    grouped = {n for g in tf.param_groups(model, 1e-3, 1e-5) for n in g["param_names"]}
    assert grouped == before
    tf.unfreeze_base(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == before
    with pytest.raises(RuntimeError, match="without freeze_base"):
        tf.unfreeze_base(model)


# ----------------------------------------------------------------------------------------------------- LoRA

def test_lora_trains_adapters_and_the_whole_head(w2v_dir):
    model, _ = tf.load_audio_classifier(w2v_dir, LABELS)
    peft_model = tf.apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    head = [n for n in trainable if "modules_to_save" in n]
    assert sorted(head) == sorted([
        "base_model.model.projector.modules_to_save.default.weight",
        "base_model.model.projector.modules_to_save.default.bias",
        "base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
    ])
    others = [n for n in trainable if n not in head]
    assert others and all(".lora_A." in n or ".lora_B." in n for n in others)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in others}
    assert targets == {"q_proj", "k_proj", "v_proj", "out_proj"}
    groups = {g["name"]: g for g in tf.param_groups(peft_model, 1e-3, 5e-4)}
    assert all("modules_to_save" in n for n in groups["head"]["param_names"] + groups["head_no_decay"]["param_names"])
    assert all(".lora_" in n for n in groups["encoder"]["param_names"])


def test_lora_trains_and_saves_the_weighted_layer_sum(hubert_dir, tmp_path):
    # peft's modules_to_save takes modules only; layer_weights (use_weighted_layer_sum) must still train and
    # travel with the adapter, or the learned layer mix would silently stay uniform
    model, fe = tf.load_audio_classifier(hubert_dir, LABELS, use_weighted_layer_sum=True, layerdrop=0.0)
    peft_model = tf.apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert "base_model.model.layer_weights" in trainable
    groups = {g["name"]: g for g in tf.param_groups(peft_model, 1e-3, 5e-4)}
    assert "base_model.model.layer_weights" in groups["head_no_decay"]["param_names"]
    before = peft_model.get_base_model().layer_weights.detach().clone()
    torch.manual_seed(0)
    x, y = torch.randn(2, 8000), torch.tensor([0, 2])
    peft_model.train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-1)
    for _ in range(3):
        peft_model(input_values=x, labels=y).loss.backward()
        opt.step()
        opt.zero_grad()
    trained = peft_model.get_base_model().layer_weights.detach().clone()
    assert (trained - before).abs().max() > 1e-3
    with torch.no_grad():
        ref = peft_model.eval()(input_values=x).logits
    tf.save_adapter(peft_model, tmp_path / "adapter", fe)
    with safe_open(tmp_path / "adapter" / "head_parameters.safetensors", "pt") as f:
        assert torch.equal(f.get_tensor("layer_weights"), trained)
    reloaded, _ = tf.load_adapter(tmp_path / "adapter")
    assert torch.equal(reloaded.get_base_model().layer_weights, trained)
    with torch.no_grad():
        assert torch.allclose(reloaded(input_values=x).logits, ref, atol=1e-6)
    (tmp_path / "adapter" / "head_parameters.safetensors").unlink()
    with pytest.raises(tf.ModelLoadError, match="head_parameters.safetensors.*layer_weights"):
        tf.load_adapter(tmp_path / "adapter")
    tf.merge_and_save(peft_model, tmp_path / "merged", fe)
    from transformers import AutoModelForAudioClassification

    merged = AutoModelForAudioClassification.from_pretrained(tmp_path / "merged").eval()
    assert torch.equal(merged.layer_weights.detach(), trained)


def _train_steps(model, x, y, steps=3, lr=1e-2):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = model(input_values=x, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def test_adapter_save_load_and_merge_reproduce_outputs(w2v_dir, tmp_path):
    model, fe = tf.load_audio_classifier(w2v_dir, LABELS)
    peft_model = tf.apply_lora(model, r=4, alpha=8, dropout=0.0)
    torch.manual_seed(0)
    x, y = torch.randn(2, 8000), torch.tensor([0, 2])
    _train_steps(peft_model, x, y)
    with torch.no_grad():
        ref = peft_model(input_values=x).logits
    tf.save_adapter(peft_model, tmp_path / "adapter", fe)
    with safe_open(tmp_path / "adapter" / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any("projector" in k for k in keys) and any("classifier" in k for k in keys)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert set(cfg["modules_to_save"]) == {"projector", "classifier"}

    reloaded, fe2 = tf.load_adapter(tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(reloaded(input_values=x).logits, ref, atol=1e-6)
    assert fe2.sampling_rate == 16000

    tf.merge_and_save(peft_model, tmp_path / "merged", fe)
    from transformers import AutoModelForAudioClassification

    merged = AutoModelForAudioClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(merged(input_values=x).logits, ref, atol=1e-5)
    assert merged.config.id2label[1] == "boredom"


def test_peft_settings_reject_unknown_keys():
    assert tf.PeftSettings.from_dict({"enabled": True, "r": 4}).r == 4
    with pytest.raises(ValueError, match="unknown key 'peft.rank'.*did you mean peft.r"):
        tf.PeftSettings.from_dict({"rank": 4})


def test_gradient_checkpointing_trains(w2v_dir):
    model, _ = tf.load_audio_classifier(w2v_dir, LABELS, gradient_checkpointing=True)
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    model.train()
    loss = model(input_values=torch.randn(2, 8000), labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert model.wav2vec2.encoder.layers[0].attention.q_proj.weight.grad is not None


# ------------------------------------------------------------------------------------------------- batching

def test_chunk_clip_covers_the_clip_with_equal_chunks():
    x = np.arange(50_000, dtype=np.float32)
    chunks = tf.chunk_clip(x, 16000, chunk_s=1.0, overlap_s=0.25)
    assert all(len(c) == 16000 for c in chunks)
    assert chunks[0][0] == 0 and chunks[1][0] == 12000 and chunks[-1][-1] == 49_999  # end-aligned tail
    assert len(tf.chunk_clip(x[:16000], 16000, 1.0, 0.25)) == 1
    with pytest.raises(ValueError, match="overlap_s < chunk_s"):
        tf.chunk_clip(x, 16000, 1.0, 1.0)


def test_train_collator_crops_deterministically_per_epoch(w2v_dir):
    fe = tf.load_feature_extractor(w2v_dir)
    rows = [_row(40_000, 0), _row(10_000, 1, label=2)]
    collate = tf.AudioCollator(fe, max_duration_s=1.0, train=True, seed=3)
    b0 = collate(rows)
    assert b0["input_values"].shape == (2, 16000)
    assert "attention_mask" not in b0  # wav2vec2-base-like: no mask, zero padding
    assert torch.all(b0["input_values"][1, 10_000:] == 0)
    assert b0["labels"].tolist() == [0, 2] and b0["clip_id"].tolist() == [0, 1]
    assert torch.equal(collate(rows)["input_values"], b0["input_values"])  # same (seed, epoch): same crop
    assert torch.equal(collate(rows[::-1])["input_values"][1], b0["input_values"][0])  # not batch-order dependent
    collate.set_epoch(1)
    assert not torch.equal(collate(rows)["input_values"][0], b0["input_values"][0])  # new epoch, new crop
    assert torch.equal(collate(rows)["input_values"][1], b0["input_values"][1])  # short clip: whole, unchanged


def test_eval_collator_keeps_whole_clips_and_masks_when_the_model_does(hubert_dir, w2v_dir):
    rows = [_row(40_000, 0), _row(10_000, 1)]
    masked = tf.AudioCollator(tf.load_feature_extractor(hubert_dir), max_duration_s=1.0, train=False)(rows)
    assert masked["input_values"].shape == (2, 40_000)
    assert masked["attention_mask"][1].sum() == 10_000 and masked["attention_mask"][0].sum() == 40_000
    plain = tf.AudioCollator(tf.load_feature_extractor(w2v_dir), train=False)(rows)
    assert "attention_mask" not in plain and plain["input_values"].shape == (2, 40_000)
    # each clip normalised over its own samples, padding exactly zero (not normalised with the padding)
    short = plain["input_values"][1, :10_000]
    assert abs(float(short.mean())) < 1e-4 and abs(float(short.std()) - 1) < 1e-2
    assert torch.all(plain["input_values"][1, 10_000:] == 0)


def test_collator_input_features_extractor():
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=16)
    batch = tf.AudioCollator(fe, train=False)([_row(8000, 0), _row(16000, 1)])
    assert batch["input_features"].shape == (2, 16, 3000)  # Whisper pads to its fixed 30 s
    assert "attention_mask" not in batch and "input_values" not in batch


def test_collator_rejects_wrong_rate(w2v_dir):
    collate = tf.AudioCollator(tf.load_feature_extractor(w2v_dir), train=False)
    with pytest.raises(ValueError, match="expects 16000 Hz.*data.sampling_rate=16000"):
        collate([_row(8000, 0, sr=8000)])


def test_length_grouped_batch_sampler():
    rng = np.random.default_rng(0)
    lengths = rng.integers(8000, 80000, size=200).tolist()
    sampler = tf.LengthGroupedBatchSampler(lengths, batch_size=8, seed=1)
    epoch0 = list(sampler)
    assert sorted(i for b in epoch0 for i in b) == list(range(200)) and len(epoch0) == len(sampler) == 25
    assert list(sampler) == epoch0  # same epoch: same order
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    random_batches = [list(range(200))[i:i + 8] for i in range(0, 200, 8)]
    assert tf.padding_fraction(lengths, epoch0) < 0.5 * tf.padding_fraction(lengths, random_batches)
    assert max(lengths[i] for i in epoch0[0]) == max(lengths)  # longest batch first (OOM shows at once)
    ordered = list(tf.LengthGroupedBatchSampler(lengths, 8, shuffle=False))
    flat = [lengths[i] for b in ordered for i in b]
    assert flat == sorted(lengths, reverse=True)


def test_clip_dataset_chunks_share_clip_id_and_loader_feeds_the_trainer_format(hubert_dir):
    import datasets

    ds = datasets.Dataset.from_list([_row(50_000, 0), _row(12_000, 1, label=1)]).remove_columns("clip_id")
    chunked = tf.ClipDataset(ds, chunk_s=1.0, overlap_s=0.5)
    assert [cid for cid, _, _ in chunked.items] == [0, 0, 0, 0, 0, 0, 1]
    assert chunked.lengths[:6] == [16000] * 6 and chunked.lengths[6] == 12000
    assert tf.audio_lengths(ds).tolist() == [50_000, 12_000]
    fe = tf.load_feature_extractor(hubert_dir)
    loader = tf.make_audio_loader(ds, fe, train=False, batch_size=4, eval_chunk_s=1.0, eval_overlap_s=0.5)
    batches = list(loader)
    assert sum(len(b["clip_id"]) for b in batches) == 7
    assert sorted(torch.cat([b["clip_id"] for b in batches]).tolist()) == [0] * 6 + [1]
    train = tf.make_audio_loader(ds, fe, train=True, batch_size=2, max_duration_s=1.0, seed=0)
    first = next(iter(train))["input_values"]
    assert first.shape == (2, 16000)
    train.dataset.set_epoch(5)  # what the Trainer calls; reaches the collator and the sampler
    assert train.collate_fn.epoch == 5 and train.batch_sampler.epoch == 5


# ------------------------------------------------------------------------------- through the training loop

def _separable_corpus(n_per_class=4, seconds=0.6, sr=16000):
    import datasets

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    rows = []
    for i in range(n_per_class):
        n = len(t) - 800 * i  # varied lengths: padding and length grouping are exercised
        tone = 0.5 * np.sin(2 * np.pi * (150 + 10 * i) * t[:n])
        rows.append({"audio": {"array": tone.astype(np.float32), "sampling_rate": sr}, "label": 0, "file": f"t{i}"})
        noise = 0.5 * rng.standard_normal(n)
        rows.append({"audio": {"array": noise.astype(np.float32), "sampling_rate": sr}, "label": 1, "file": f"n{i}"})
    return datasets.Dataset.from_list(rows)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_finetune_through_trainer_lowers_the_loss(hubert_dir, tmp_path, lora):
    from ser_hf.training import Trainer, TrainerConfig

    ds = _separable_corpus()
    model, fe = tf.load_audio_classifier(hubert_dir, ["tone", "noise"])
    if lora:
        model = tf.apply_lora(model, r=4, alpha=8, dropout=0.0)
    cfg = TrainerConfig(max_epochs=6, batch_size=4, learning_rate=3e-3, optimizer="adamw", log_with=None,
                        progress_bar=False, seed=0)
    groups = tf.param_groups(model, head_lr=1e-2, encoder_lr=2e-3)
    trainer = Trainer(model, cfg, tmp_path / "run", param_groups=[
        {k: g[k] for k in ("params", "lr", "weight_decay")} for g in groups])
    train = tf.make_audio_loader(ds, fe, train=True, batch_size=4, max_duration_s=0.5, seed=0)
    result = trainer.fit(train, None)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0], losses
    clip_ids, logits, labels = trainer.predict(
        tf.make_audio_loader(ds, fe, train=False, batch_size=4, eval_chunk_s=0.3, eval_overlap_s=0.1))
    assert clip_ids.tolist() == list(range(len(ds)))
    assert (logits.argmax(1) == np.asarray(ds["label"])).mean() >= 0.75


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_transformer_family(hubert_dir, tmp_path, lora):
    """What ``ser_hf.experiment`` calls for model.family=transformer: predictions per split, a saved model
    that transformers' pipeline and ser_hf.inference load."""
    from ser_hf.families import ExperimentData, get_family
    from ser_hf.inference import load_for_inference
    from ser_hf.spec import SpecError, parse_spec

    ds = _separable_corpus(n_per_class=3)
    data = ExperimentData(train=ds, validation=ds.select([0, 1]), tests={"gen": ds.select([2, 3, 4, 5])},
                          label_names=["tone", "noise"])
    model_cfg = {"family": "transformer", "name_or_path": str(hubert_dir), "max_duration_s": 0.5,
                 "eval_chunk_s": 0.3, "eval_overlap_s": 0.1, "head_learning_rate": 1e-2, "freeze_base_steps": 1,
                 "layerdrop": 0.0}
    cfg = {
        "seed": 0, "resume": False, "output_dir": str(tmp_path / "run"), "peft": {"enabled": lora, "r": 4, "alpha": 8},
        "trainer": {"max_epochs": 2, "batch_size": 3, "learning_rate": 1e-3, "optimizer": "adamw",
                    "log_with": None, "progress_bar": False},
        "model": model_cfg,
    }
    family = get_family("transformer")(parse_spec(cfg))
    fitted = family.fit(data, tmp_path / "run")
    predictions = family.predict(family.reported_sets(data))
    assert set(predictions) == {"validation", "test"}
    test_ds, probs = predictions["test"]
    assert len(test_ds) == 4 and probs.shape == (4, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert len(fitted.history) == 2 and family.base_model == str(hubert_dir)
    family.save(tmp_path / "model")
    assert (tmp_path / "model" / "adapter" / "adapter_config.json").is_file() == lora
    pred = load_for_inference(tmp_path / "model")
    assert pred.kind == "transformer" and pred.label_names == ["tone", "noise"]
    x = np.asarray(ds[2]["audio"]["array"], dtype=np.float32)
    got = pred.predict_arrays([x], 16000, chunk_s=0.3, overlap_s=0.1)[0]["scores"]
    assert got["noise"] == pytest.approx(float(probs[0, 1]), abs=1e-4)  # same clip, same chunks, same model
    from transformers import pipeline

    pipe = pipeline("audio-classification", model=str(tmp_path / "model"))
    ref = pipe({"raw": x, "sampling_rate": 16000}, top_k=None)
    whole = pred.predict_arrays([x], 16000, chunk_s=None)[0]["scores"]
    assert {d["label"]: d["score"] for d in ref} == pytest.approx(whole, abs=1e-5)
    with pytest.raises(SpecError, match="needs model.name_or_path"):
        parse_spec({**cfg, "model": {"family": "transformer"}})
    # a checkpoint config key that does not exist fails when the family is built, naming the closest one
    with pytest.raises(SpecError, match="model.layerdorp.*did you mean model.layerdrop"):
        get_family("transformer")(parse_spec({**cfg, "model": {**model_cfg, "layerdrop": None, "layerdorp": 0.1}}))
    # the learning-rate story: freezing the base twice is an error, not a silent overwrite
    with pytest.raises(SpecError, match="freeze_base_steps and trainer.freeze_steps"):
        get_family("transformer")(parse_spec({**cfg, "trainer": {**cfg["trainer"], "freeze_steps": 2,
                                                                  "freeze_prefixes": ["hubert"]}}))

"""The SUPERB-style probe family (``model.family: probe``): a frozen speech encoder, a learned layer mix.

The protocol SUPERB and EmoBox use to compare frozen self-supervised encoders: every hidden state of the
encoder named by ``embeddings.name_or_path`` (its input and each layer's output) is pooled over the clip's
real frames and cached once (:func:`ser_hf.embeddings.extract_embeddings` with ``layers="all"``; the
cache is shared by every fold and recipe that reads the same corpus file); a
softmax-weighted sum of those pooled states (one learnable weight per state, starting equal) feeds a small
head (``model.head: linear | mlp``, ``model.hidden_size``), trained with the shared Accelerate loop
(``trainer.*``) and model selection on the validation speakers. Only the mix and the head train, so a
whole leave-one-speaker-out run takes minutes on a CPU once the states are cached.

Pooling before mixing (rather than mixing frames, then pooling) is what makes the cache possible; for
``pooling: mean`` the two are identical because both are linear. ``embeddings.speaker_norm: true``
z-scores every pooled state per speaker (``ser_hf.features.speaker_normalise``) before the mix.

The trained probe is a ``PreTrainedModel`` (``model_type`` ``ser_probe``; safetensors, ``id2label``) whose
config names its encoder, pooling and normalisation, so :mod:`ser_hf.inference` can recompute its input;
the network is :mod:`ser_hf.models.probe`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser_hf.models.probe import ProbeConfig, ProbeForAudioClassification

logger = logging.getLogger(__name__)

# model.* keys the probe family reads (everything else in model: is an error)
MODEL_KEYS = ("family", "head", "hidden_size", "dropout", "normalize_states")

# ------------------------------------------------------------------------------------------ features


def _loader(ds, tcfg, train: bool):
    from ser_hf.training import make_dataloader

    x = torch.from_numpy(np.asarray(ds.with_format("numpy")["embedding"], dtype=np.float32))
    y = torch.as_tensor(np.asarray(ds["label"]), dtype=torch.long)
    rows = [{"input_values": x[i], "labels": y[i], "clip_id": torch.tensor(i)} for i in range(len(ds))]
    return make_dataloader(rows, tcfg, train=train, collate_fn=torch.utils.data.default_collate)


# ------------------------------------------------------------------------------------------ the family


def run_probe(cfg, model_cfg: dict, data, out: Path):
    """Train a probe for ``cfg`` on ``data`` (an ``ExperimentData``); returns the experiment ``Outcome``."""
    from ser_hf.config import section
    from ser_hf.embeddings import EmbeddingSettings, embed_splits, hidden_state_count
    from ser_hf.experiment import Outcome, _eval_sets, _softmax
    from ser_hf.losses import balanced_class_weights
    from ser_hf.models import count_parameters
    from ser_hf.models.ct2_whisper import source_hub_id
    from ser_hf.training import Trainer, TrainerConfig

    raw = dict(section(cfg, "embeddings"))
    if raw.get("layers", "all") != "all":
        raise ValueError(f"embeddings.layers={raw['layers']!r}: the probe family learns its own mix of all hidden "
                         f"states; remove embeddings.layers (or set it to all). To use one fixed layer, use "
                         f"model.family=embedding")
    settings = EmbeddingSettings.from_dict({**raw, "layers": "all"})
    name = settings.name_or_path or model_cfg.pop("name_or_path", None)
    if not name:
        raise ValueError("the probe family needs embeddings.name_or_path (a Hub id or a local encoder folder)")
    unknown = sorted(set(model_cfg) - set(MODEL_KEYS))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown} for model.family=probe; valid: {list(MODEL_KEYS[1:])}")
    sets = {"train": data.train, **_eval_sets(data)}
    feats = embed_splits(sets, name, settings)
    num_states = hidden_state_count(name)
    width = len(feats["train"][0]["embedding"])
    if width % num_states:
        raise RuntimeError(f"{name}: {width} pooled values per clip do not split into {num_states} hidden states")
    config = ProbeConfig(
        num_states=num_states, state_dim=width // num_states,
        id2label=dict(enumerate(data.label_names)), label2id={n: i for i, n in enumerate(data.label_names)},
        encoder_name_or_path=str(name), pooling=settings.pooling, speaker_norm=settings.speaker_norm,
        max_duration_s=settings.max_duration_s,
        **{k: v for k, v in model_cfg.items() if k != "family"},
    )
    model = ProbeForAudioClassification(config)
    tcfg = TrainerConfig.from_dict({"seed": int(cfg.seed), **section(cfg, "trainer")})
    loaders = {split: _loader(ds, tcfg, train=split == "train") for split, ds in feats.items()}
    trainer = Trainer(model, tcfg, out, class_weights=balanced_class_weights(feats["train"]["label"],
                                                                             len(data.label_names)))
    result = trainer.fit(loaders["train"], loaders.get("validation"), resume=bool(cfg.get("resume", False)))
    best = trainer.unwrapped_model
    logger.info("probe layer weights: %s", np.round(best.layer_distribution().detach().cpu().numpy(), 3).tolist())
    predictions = {}
    for split, loader in loaders.items():
        if split == "train":
            continue
        clip_ids, logits, _ = trainer.predict(loader)
        predictions[split] = (sets[split].select(clip_ids.tolist()), _softmax(logits))

    def save(model_dir: Path):
        best.save_pretrained(model_dir)

    return Outcome(predictions, save, history=result.history, best_epoch=result.best_epoch,
                   train_seconds=result.train_seconds, num_parameters=count_parameters(best),
                   base_model=source_hub_id(name))


__all__ = ["MODEL_KEYS", "ProbeConfig", "ProbeForAudioClassification", "run_probe"]

"""The SUPERB-style probe family (``model.family: probe``): a frozen speech encoder, a learned layer mix.

The protocol SUPERB and EmoBox use to compare frozen self-supervised encoders: every hidden state of the
encoder named by ``embeddings.name_or_path`` (its input and each layer's output) is pooled over the clip's
real frames and cached once (:func:`ser_hf.embeddings.extract_embeddings` with ``layers="all"``; the
cache is shared by every fold and recipe that reads the same corpus file); a softmax-weighted sum of those
pooled states (one learnable weight per state, starting equal) feeds a small head (``model.head: linear |
mlp``, ``model.hidden_size``), trained with the shared Accelerate loop (``trainer.*``) and model selection
on the validation speakers. Only the mix and the head train, so a whole leave-one-speaker-out run takes
minutes on a CPU once the states are cached.

Pooling before mixing (rather than mixing frames, then pooling) is what makes the cache possible; for
``pooling: mean`` the two are identical because both are linear. ``embeddings.speaker_norm: true``
z-scores every pooled state per speaker (``ser_hf.features.speaker_normalise``) before the mix.

The trained probe is a ``PreTrainedModel`` (``model_type`` ``ser_probe``; safetensors, ``id2label``) whose
config names its encoder, pooling and normalisation, so :mod:`ser_hf.inference` can recompute its input;
the network is :mod:`ser_hf.models.probe`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from ..embeddings import embed_splits, hidden_state_count
from ..losses import balanced_class_weights
from ..models import count_parameters
from ..models.ct2_whisper import source_hub_id
from ..models.heads import fold_target_scale
from ..models.probe import ProbeConfig, ProbeForAudioClassification
from ..spec import SpecError, TrainerConfig
from ..training import Trainer, make_dataloader
from .base import (ExperimentData, Family, Fitted, Predictions, TargetScale, eval_sets, output_scores, target_matrix,
                   target_scale)

logger = logging.getLogger(__name__)

__all__ = ["ProbeFamily", "embedding_loader"]


def embedding_loader(ds, tcfg: TrainerConfig, train: bool, targets: tuple[str, ...] = (),
                     scale: TargetScale | None = None):
    """Rows with an ``embedding`` vector and a ``label`` -> batches ``{input_values, labels, clip_id}`` (+ the
    ``targets`` columns standardised with ``scale`` as ``targets`` in dimensional runs)."""
    x = torch.from_numpy(np.asarray(ds.with_format("numpy")["embedding"], dtype=np.float32))
    y = torch.as_tensor(np.asarray(ds["label"]), dtype=torch.long)
    rows = [{"input_values": x[i], "labels": y[i], "clip_id": torch.tensor(i)} for i in range(len(ds))]
    if targets:
        values = torch.from_numpy(scale.standardise(target_matrix(ds, targets)))
        for i, row in enumerate(rows):
            row["targets"] = values[i]
    return make_dataloader(rows, tcfg, train=train, collate_fn=torch.utils.data.default_collate)


class ProbeFamily(Family):
    name = "probe"

    def __init__(self, spec):
        super().__init__(spec)
        layers = (spec.raw.get("embeddings") or {}).get("layers", "all")
        if layers != "all":
            raise SpecError(f"embeddings.layers={layers!r}: the probe family learns its own mix of all hidden "
                            f"states; remove embeddings.layers (or set it to all). To use one fixed layer, use "
                            f"model.family=embedding")
        self.settings = dataclasses.replace(spec.embeddings, layers="all")
        self.encoder = self.settings.name_or_path or spec.model.name_or_path
        if not self.encoder:
            raise SpecError("the probe family needs embeddings.name_or_path (a Hub id or a local encoder folder)")
        self.trainer: Trainer | None = None
        self._feats: dict = {}

    def fit(self, data: ExperimentData, out: Path) -> Fitted:
        spec = self.spec
        sets = {"train": data.train, **eval_sets(data)}
        self._feats = embed_splits(sets, self.encoder, self.settings)
        num_states = hidden_state_count(self.encoder)
        width = len(self._feats["train"][0]["embedding"])
        if width % num_states:
            raise RuntimeError(f"{self.encoder}: {width} pooled values per clip do not split into {num_states} "
                               f"hidden states")
        task = self.task = data.task
        names = list(task.output_names) if task.has_values else list(data.label_names)
        extra = {**task.to_config(), **({"problem_type": "regression"} if task.task == "regression" else {})}
        config = ProbeConfig(
            num_states=num_states, state_dim=width // num_states, **extra,
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
            encoder_name_or_path=str(self.encoder), pooling=self.settings.pooling,
            speaker_norm=self.settings.speaker_norm, max_duration_s=self.settings.max_duration_s,
            **spec.model.head_options)
        tcfg = spec.trainer
        weights = balanced_class_weights(self._feats["train"]["label"], len(data.label_names)) if task.has_classes \
            else None
        self.trainer = Trainer(ProbeForAudioClassification(config), tcfg, out, class_weights=weights, task=task)
        self.scale = target_scale(self._feats["train"], task.targets) if task.has_values else None
        kw = {"targets": task.targets, "scale": self.scale}
        validation = self._feats.get("validation")
        result = self.trainer.fit(embedding_loader(self._feats["train"], tcfg, True, **kw),
                                  embedding_loader(validation, tcfg, False, **kw) if validation is not None else None,
                                  resume=spec.resume)
        if self.scale is not None:  # the saved probe outputs ratings, not standardised values
            fold_target_scale(self.trainer.unwrapped_model, len(task.labels) if task.has_classes else 0,
                              self.scale.mean, self.scale.std)
        weights = self.trainer.unwrapped_model.layer_distribution().detach().cpu().numpy()
        logger.info("probe layer weights: %s", np.round(weights, 3).tolist())
        return Fitted(result.train_seconds, history=result.history, best_epoch=result.best_epoch)

    def predict(self, sets: dict) -> Predictions:
        out = {}
        for name, ds in sets.items():
            clip_ids, logits, _ = self.trainer.predict(embedding_loader(self._feats[name], self.spec.trainer, False))
            out[name] = (ds.select(clip_ids.tolist()), output_scores(self.task, logits))
        return out

    def save(self, model_dir: Path) -> None:
        self.trainer.unwrapped_model.save_pretrained(model_dir)

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.trainer.unwrapped_model)

    @property
    def base_model(self) -> str:
        return source_hub_id(self.encoder)

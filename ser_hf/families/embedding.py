"""The embedding family: hidden states of a pretrained speech model, pooled per clip (cached with
datasets), then the classic family's scikit-learn classifier. ``augment:`` waveform transforms add
augmented copies of the training clips before they are embedded, as for the acoustic families."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..embeddings import embed_splits, save_embedding_config
from ..models.ct2_whisper import source_hub_id
from ..spec import SpecError
from .acoustic import augmented_train
from .base import ExperimentData, eval_sets
from .classic import VectorClassifier

__all__ = ["EmbeddingFamily"]


class EmbeddingFamily(VectorClassifier):
    name = "embedding"
    column = "embedding"

    def __init__(self, spec):
        super().__init__(spec)
        self.encoder = spec.embeddings.name_or_path or spec.model.name_or_path
        if not self.encoder:
            raise SpecError("the embedding family needs embeddings.name_or_path (a Hub id or a local model folder)")

    def vectors(self, data: ExperimentData) -> dict[str, Any]:
        sets = {"train": augmented_train(self.spec, data.train), **eval_sets(data)}
        return embed_splits(sets, self.encoder, self.spec.embeddings)  # speaker_norm per split when asked

    def save(self, model_dir: Path) -> None:
        self.clf.save_pretrained(model_dir)
        emb = self.spec.embeddings
        save_embedding_config(model_dir, self.encoder, emb.layers, emb.pooling, emb.max_duration_s, emb.speaker_norm)

    @property
    def base_model(self) -> str:
        return source_hub_id(self.encoder)  # a converted CTranslate2 Whisper names its Hub source

"""The embedding family: hidden states of a pretrained speech model, pooled per clip (cached with
datasets), then the classic family's scikit-learn classifier. ``augment:`` waveform transforms add
augmented copies of the training clips before they are embedded, as for the acoustic families.

``model.search.layers`` (e.g. ``[[1], [2], [3], [1, 2, 3]]``) chooses the hidden states by the same inner
speaker-grouped CV on the training speakers that chooses ``model.search`` 's estimator parameters: every
candidate gets its own grid search, the best inner macro-F1 wins (ties: the first listed), and only then is
the test speaker scored, with the chosen layers (saved in ``embedding_config.json``) and parameters. All
candidates are columns of one cached all-states embedding, so the search costs no extra encoder pass.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import embed_splits, hidden_state_count, save_embedding_config, state_columns
from ..models.classic import ClassicClassifier
from ..models.ct2_whisper import source_hub_id
from ..runfolder import atomic_write
from ..spec import SpecError
from .acoustic import augmented_train
from .base import ExperimentData, eval_sets
from .classic import VectorClassifier, vector_matrix

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingFamily", "LAYER_SEARCH_FILE"]

LAYER_SEARCH_FILE = "layer_search.json"  # in the run folder: every candidate's inner-CV score and the choice


class EmbeddingFamily(VectorClassifier):
    name = "embedding"
    column = "embedding"

    def __init__(self, spec):
        super().__init__(spec)
        self.encoder = spec.embeddings.name_or_path or spec.model.name_or_path
        if not self.encoder:
            raise SpecError("the embedding family needs embeddings.name_or_path (a Hub id or a local model folder)")
        self.layer_search = spec.model.layer_search
        if self.layer_search and spec.embeddings.layers != "last":
            raise SpecError(f"model.search.layers chooses the layers on the training speakers, embeddings.layers="
                            f"{spec.embeddings.layers!r} fixes them: set one of the two (embeddings.layers=last "
                            f"with the search, or drop it with the override ~model.search.layers)")
        self.layers = spec.embeddings.layers  # after fit with a layer search: the chosen candidate
        self._columns: np.ndarray | None = None  # ... and its columns of the all-states vectors
        self._out: Path | None = None

    def vectors(self, data: ExperimentData) -> dict[str, Any]:
        sets = {"train": augmented_train(self.spec, data.train), **eval_sets(data)}
        settings = self.spec.embeddings
        if self.layer_search:
            settings = dataclasses.replace(settings, layers="all")  # every candidate is columns of these
        return embed_splits(sets, self.encoder, settings)  # speaker_norm per split when asked

    def fit(self, data: ExperimentData, out: Path):
        self._out = Path(out)
        return super().fit(data, out)

    def matrix(self, ds) -> np.ndarray:
        X = vector_matrix(ds, self.column)
        return X if self._columns is None else X[:, self._columns]

    def fit_classifier(self, X: np.ndarray, y: np.ndarray, groups, label_names, targets) -> ClassicClassifier:
        if not self.layer_search:
            return super().fit_classifier(X, y, groups, label_names, targets)
        model = self.spec.model
        n = hidden_state_count(self.encoder)
        metric = "macro-F1" if targets is None or label_names is not None else "mean CCC"
        tried = []
        best: tuple[float, Any, np.ndarray, ClassicClassifier] | None = None
        for layers in self.layer_search:
            columns = state_columns(layers, n, X.shape[1], self.encoder)
            clf = ClassicClassifier(model.classifier, id2label=label_names, targets=targets,
                                    search=model.estimator_search, **model.params)
            clf.fit(X[:, columns], y, groups=groups, score=True)
            tried.append({"layers": layers, "inner_macro_f1": clf.best_score, "best_params": clf.best_params})
            logger.info("layer search: layers=%s inner %s %.4f %s", layers, metric, clf.best_score, clf.best_params)
            if best is None or clf.best_score > best[0]:
                best = (clf.best_score, layers, columns, clf)
        score, self.layers, self._columns, clf = best
        logger.info("layer search chose layers=%s (inner %s %.4f)", self.layers, metric, score)
        if self._out is not None:
            atomic_write(self._out / LAYER_SEARCH_FILE, json.dumps(
                {"chosen": {"layers": self.layers, "inner_macro_f1": score, "best_params": clf.best_params},
                 "candidates": tried, "inner_cv": "speaker-grouped, training speakers only",
                 # the key names say macro-F1 (the classification case); a regressor's inner score is mean CCC
                 "inner_metric": metric}, indent=2) + "\n")
        return clf

    def save(self, model_dir: Path) -> None:
        self.clf.save_pretrained(model_dir)
        emb = self.spec.embeddings
        save_embedding_config(model_dir, self.encoder, self.layers, emb.pooling, emb.max_duration_s, emb.speaker_norm)

    @property
    def base_model(self) -> str:
        return source_hub_id(self.encoder)  # a converted CTranslate2 Whisper names its Hub source

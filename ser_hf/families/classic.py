"""The classic family (a scikit-learn classifier on per-clip feature vectors) and what it shares with the
embedding family: fitting on training (+ validation) vectors and scoring every evaluation set."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from datasets import concatenate_datasets

from ..models.classic import REGRESSORS, ClassicClassifier
from ..spec import ClassicModelConfig, SpecError
from .acoustic import feature_sets
from .base import ExperimentData, Family, Fitted, Predictions, eval_sets, target_matrix

logger = logging.getLogger(__name__)

__all__ = ["ClassicFamily", "VectorClassifier", "check_classifier", "vector_matrix"]


def vector_matrix(ds, column: str) -> np.ndarray:
    """A dataset's per-clip vectors as a float32 (n, D) matrix."""
    return np.asarray(ds.with_format("numpy")[column], dtype=np.float32).reshape(len(ds), -1)


def check_classifier(model: ClassicModelConfig) -> None:
    """The estimator accepts the recipe's values (the spec already checked the parameter names)."""
    try:
        ClassicClassifier(model.classifier, search=model.estimator_search,
                          targets=("_",) if model.classifier in REGRESSORS else None, **model.params)
    except ValueError as err:
        raise SpecError(f"model: {err}") from err


class VectorClassifier(Family):
    """A scikit-learn classifier on one vector per clip (column ``self.column`` of :meth:`vectors`).

    ``model.train_on_validation`` (default true): a classic model selects nothing on the validation
    speakers, so by default they join the training data; validation scores are then not reported
    (they would be training scores). Set it false to keep them out and report them.

    task=regression (``data.task``): a regressor (svr, ridge) per target on standardised targets; predictions
    are the targets' values (``ClassicClassifier.predict_outputs``).
    """

    column = "features"

    def __init__(self, spec):
        super().__init__(spec)
        check_classifier(spec.model)
        self.clf: ClassicClassifier | None = None
        self._vectors: dict[str, Any] = {}

    def vectors(self, data: ExperimentData) -> dict[str, Any]:
        """``{"train": ..., <evaluation set>: ...}`` datasets with a vector column."""
        raise NotImplementedError

    def merges_validation(self, data: ExperimentData) -> bool:
        return bool(self.spec.model.train_on_validation) and "validation" in eval_sets(data)

    def reported_sets(self, data: ExperimentData) -> dict[str, Any]:
        sets = eval_sets(data)
        return {k: v for k, v in sets.items() if not (k == "validation" and self.merges_validation(data))}

    def fit(self, data: ExperimentData, out: Path) -> Fitted:
        self._vectors = self.vectors(data)
        merge = self.merges_validation(data)
        task = data.task
        train = concatenate_datasets([self._vectors["train"], self._vectors["validation"]]) if merge \
            else self._vectors["train"]
        y = target_matrix(train, task.targets) if task.task == "regression" else np.asarray(train["label"])
        start = time.perf_counter()
        self.clf = self.fit_classifier(self.matrix(train), y, train["speaker_id"],
                                       None if task.task == "regression" else data.label_names, task.targets)
        seconds = time.perf_counter() - start
        if self.clf.best_params:
            logger.info("inner speaker-grouped CV chose %s", self.clf.best_params)
        speakers = None
        if merge:
            spk = data.info["speakers"]
            speakers = {**spk, "train": sorted(spk["train"] + spk["validation"]), "validation": []}
        return Fitted(seconds, speakers=speakers)

    def matrix(self, ds) -> np.ndarray:
        """The classifier's input matrix of a vectors dataset."""
        return vector_matrix(ds, self.column)

    def fit_classifier(self, X: np.ndarray, y: np.ndarray, groups, label_names, targets) -> ClassicClassifier:
        """The estimator fitted on the training vectors (``model.search`` chosen by the inner speaker-grouped CV);
        ``label_names`` None and ``targets`` the rated dimensions for a regressor."""
        model = self.spec.model
        clf = ClassicClassifier(model.classifier, id2label=label_names, targets=targets,
                                search=model.estimator_search, **model.params)
        return clf.fit(X, y, groups=groups)

    def predict(self, sets: dict) -> Predictions:
        return {name: (ds, self.clf.predict_outputs(self.matrix(self._vectors[name]))) for name, ds in sets.items()}


class ClassicFamily(VectorClassifier):
    """``features.kind`` stats or fft: one acoustic feature vector per clip."""

    name = "classic"
    column = "features"

    def vectors(self, data: ExperimentData) -> dict[str, Any]:
        return feature_sets(self.spec, data.train, eval_sets(data))

    def save(self, model_dir: Path) -> None:
        self.clf.save_pretrained(model_dir)
        self.spec.features.save_pretrained(model_dir)

"""Classic (scikit-learn) SER classifiers on clip-level feature vectors.

A ``Pipeline(StandardScaler, estimator)`` so the scaler is fitted on the training clips only and travels with
the model. Regressors (``svr``, ``ridge``; task=regression) predict every target (arousal, valence, ...) with
one estimator per target on standardised targets: ``TransformedTargetRegressor(MultiOutputRegressor(est),
StandardScaler())``, whose ``predict`` returns the targets' own units. Saved with skops (no pickle: loading cannot execute code) next to a ``config.json`` that carries the
label maps, mirroring the ``save_pretrained`` / ``from_pretrained`` layout of the neural models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.compose import TransformedTargetRegressor
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.multioutput import MultiOutputRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from ..clips import softmax
from ..metrics import ccc
from ..tasks import ModelTask

__all__ = ["CLASSIFIERS", "ClassicClassifier", "MODEL_FILE", "CONFIG_FILE", "MODEL_TYPE"]

MODEL_TYPE = "ser_classic"
MODEL_FILE = "model.skops"
CONFIG_FILE = "config.json"

CLASSIFIERS = {
    "svm": SVC,
    "random_forest": RandomForestClassifier,
    "logistic_regression": LogisticRegression,
    "svr": SVR,  # regressors (task=regression): ClassicClassifier(..., targets=[...])
    "ridge": Ridge,
}
REGRESSORS = ("svr", "ridge")
# Defaults applied unless the recipe overrides them: fixed seeds so reruns give identical models.
_DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    "svm": {},
    "random_forest": {"n_estimators": 300, "random_state": 0, "n_jobs": 1},
    "logistic_regression": {"max_iter": 2000},
    "svr": {},
    "ridge": {},
}
# Types outside skops' built-in safe set that our pipelines legitimately contain. Loading refuses anything else,
# so a tampered model.skops cannot smuggle in arbitrary callables.
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


class ClassicClassifier:
    """StandardScaler + SVC / random forest / logistic regression, with per-class scores for every label.

    Labels are integer ids ``0..num_labels-1``; ``predict_proba`` always returns ``(n, num_labels)`` columns, with
    zeros for classes absent from the training data, so reports and clip averaging never misalign columns.
    For ``svm`` the scores are a softmax over the one-vs-rest decision function (sklearn 1.9 deprecates
    ``SVC(probability=True)``); pass ``probability=True`` explicitly to get Platt-scaled probabilities instead.
    """

    def __init__(
        self,
        classifier: str = "svm",
        id2label: dict[int, str] | list[str] | None = None,
        label2id: dict[str, int] | None = None,
        num_labels: int | None = None,
        search: dict[str, list] | None = None,
        targets: list[str] | tuple[str, ...] | None = None,
        **kwargs: Any,
    ):
        if classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classic classifier {classifier!r}; valid: {sorted(CLASSIFIERS)}")
        self.targets = tuple(targets or ())
        if classifier in REGRESSORS and not self.targets:
            raise ValueError(f"classic regressor {classifier!r} needs targets=[...] (e.g. arousal, valence, dominance)")
        if classifier not in REGRESSORS and self.targets:
            raise ValueError(f"{classifier!r} is a classifier; targets={list(self.targets)} need a regressor "
                             f"({', '.join(REGRESSORS)})")
        if isinstance(id2label, (list, tuple)):
            id2label = dict(enumerate(id2label))
        if id2label is None and num_labels is not None:
            id2label = {i: f"LABEL_{i}" for i in range(int(num_labels))}
        if id2label is not None:
            id2label = {int(i): str(name) for i, name in id2label.items()}
            if sorted(id2label) != list(range(len(id2label))):
                raise ValueError(f"id2label must map ids 0..N-1 to label names, got {id2label}")
            if num_labels is not None and int(num_labels) != len(id2label):
                raise ValueError(f"num_labels={num_labels} but id2label has {len(id2label)} entries")
            expected = {name: i for i, name in id2label.items()}
            if label2id is not None and {str(k): int(v) for k, v in label2id.items()} != expected:
                raise ValueError(f"label2id {label2id} is not the inverse of id2label {id2label}")
        self.classifier = classifier
        self.id2label: dict[int, str] | None = id2label
        self.kwargs = dict(kwargs)
        estimator_kwargs = {**_DEFAULT_KWARGS[classifier], **kwargs}
        try:
            estimator = CLASSIFIERS[classifier](**estimator_kwargs)
        except TypeError as err:
            raise ValueError(f"bad option for classic classifier {classifier!r}: {err}") from err
        if self.is_regressor:
            estimator = TransformedTargetRegressor(MultiOutputRegressor(estimator), transformer=StandardScaler())
        self.pipeline = Pipeline([("scaler", StandardScaler()), ("classifier", estimator)])
        self._base_params = CLASSIFIERS[classifier]().get_params()
        self.search = {str(k): list(v) for k, v in (search or {}).items()}
        for key in self.search:
            if key not in self._base_params:
                raise ValueError(f"search: {classifier!r} has no parameter {key!r}; valid: {sorted(self._base_params)}")
        self.best_params: dict[str, Any] = {}
        self.best_score: float | None = None  # the inner CV's macro-F1 of best_params (a search grid only)
        self._fitted = False

    # ----------------------------------------------------------------------------------------------------------
    @property
    def is_regressor(self) -> bool:
        return self.classifier in REGRESSORS

    @property
    def task(self) -> ModelTask:
        if self.is_regressor:
            return ModelTask("regression", self.targets)
        return ModelTask("classification", (), tuple((self.id2label or {}).values()))

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.id2label is None else {name: i for i, name in self.id2label.items()}

    @property
    def num_labels(self) -> int | None:
        return None if self.id2label is None else len(self.id2label)

    @staticmethod
    def _check_x(X, what: str) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"{what}: X must be a non-empty 2-D array (n_clips, n_features), got shape {X.shape}")
        if not np.isfinite(X).all():
            bad = np.argwhere(~np.isfinite(X))[:3].tolist()
            raise ValueError(f"{what}: X holds NaN/inf values (first at [row, col] {bad}); fix the feature extraction")
        return X

    def fit(self, X, y, groups=None, score: bool = False) -> ClassicClassifier:
        """Fit scaler and classifier on the training clips. ``y``: integer label ids.

        With a ``search`` grid, hyper-parameters are chosen by macro-F1 in an inner cross-validation over
        the training clips grouped by ``groups`` (speaker ids: GroupKFold keeps each speaker in one inner
        fold, so the choice is speaker-independent too), then the best setting is refitted on all of them.
        ``score=True`` runs that inner CV even without a grid, so ``best_score`` rates the fixed setting.
        """
        X = self._check_x(X, "ClassicClassifier.fit")
        if self.is_regressor:
            return self._fit_values(X, y, groups, score)
        y = np.asarray(y)
        if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"ClassicClassifier.fit: y must be {X.shape[0]} integer label ids, got {y.dtype} {y.shape}"
            )
        if self.id2label is None:
            self.id2label = {i: f"LABEL_{i}" for i in range(int(y.max()) + 1)}
        if y.min() < 0 or y.max() >= self.num_labels:
            raise ValueError(
                f"ClassicClassifier.fit: label ids must lie in 0..{self.num_labels - 1}, got {np.unique(y)}"
            )
        if len(np.unique(y)) < 2:
            raise ValueError(f"ClassicClassifier.fit: training data holds a single class ({np.unique(y)}); need >= 2")
        if self.search or score:
            self._search(X, y, groups)
        self.pipeline.fit(X, y)
        self._fitted = True
        return self

    def _fit_values(self, X: np.ndarray, y, groups, score: bool = False) -> ClassicClassifier:
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if y.shape != (X.shape[0], len(self.targets)):
            raise ValueError(f"ClassicClassifier.fit: y must be ({X.shape[0]}, {len(self.targets)}) values for "
                             f"targets {list(self.targets)}, got shape {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError("ClassicClassifier.fit: y holds NaN/inf (skip unrated clips before fitting)")
        if self.search or score:
            self._search(X, y, groups)
        self.pipeline.fit(X, y)
        self._fitted = True
        return self

    def _param(self, key: str) -> str:
        """The pipeline name of an estimator parameter (regressors sit inside the target transformer)."""
        return f"classifier__regressor__estimator__{key}" if self.is_regressor else f"classifier__{key}"

    def _search(self, X, y, groups) -> None:
        if groups is None:
            raise ValueError("ClassicClassifier.fit: a search grid needs groups= (speaker ids) for its inner folds")
        groups = np.asarray(groups)
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            raise ValueError(f"ClassicClassifier.fit: a search grid needs >= 2 speakers, got {n_groups}")
        grid = {self._param(k): v for k, v in self.search.items()}
        cv = GroupKFold(n_splits=min(5, n_groups))
        scoring = make_scorer(mean_ccc) if self.is_regressor else "f1_macro"  # regressors: mean CCC over targets
        search = GridSearchCV(self.pipeline, grid, scoring=scoring, cv=cv, refit=False, n_jobs=1)
        search.fit(X, y, groups=groups)
        self.best_params = {k.rsplit("__", 1)[1]: v for k, v in search.best_params_.items()}
        self.best_score = float(search.best_score_)
        self.pipeline.set_params(**search.best_params_)

    def predict_values(self, X) -> np.ndarray:
        """Regressors: ``(n, len(targets))`` values in the targets' own units."""
        if not self._fitted:
            raise RuntimeError("ClassicClassifier: call fit() or from_pretrained() before predicting")
        if not self.is_regressor:
            raise ValueError(f"{self.classifier!r} is a classifier: use predict_proba")
        X = self._check_x(X, "ClassicClassifier.predict_values")
        return np.asarray(self.pipeline.predict(X), dtype=np.float64).reshape(X.shape[0], len(self.targets))

    def predict_outputs(self, X) -> np.ndarray:
        """The model's output row in :class:`~ser_hf.tasks.ModelTask` layout: class scores or values."""
        return self.predict_values(X) if self.is_regressor else self.predict_proba(X)

    def predict_proba(self, X) -> np.ndarray:
        """Per-class scores ``(n, num_labels)`` (rows sum to 1; 0 for classes unseen in training)."""
        if not self._fitted:
            raise RuntimeError("ClassicClassifier: call fit() or from_pretrained() before predicting")
        if self.is_regressor:
            raise ValueError(f"{self.classifier!r} is a regressor (targets {list(self.targets)}): use predict_values")
        X = self._check_x(X, "ClassicClassifier.predict_proba")
        estimator = self.pipeline.named_steps["classifier"]
        if hasattr(estimator, "predict_proba"):  # SVC exposes it only with probability=True
            seen = self.pipeline.predict_proba(X)
        else:
            decision = self.pipeline.decision_function(X)
            if decision.ndim == 1:  # binary: positive score means classes_[1]
                decision = np.stack([-decision / 2, decision / 2], axis=1)
            seen = softmax(decision)
        scores = np.zeros((X.shape[0], self.num_labels), dtype=np.float64)
        scores[:, estimator.classes_.astype(int)] = seen
        return scores

    def predict(self, X) -> np.ndarray:
        """Label ids; the argmax of ``predict_proba`` so predictions always agree with the reported scores."""
        return self.predict_proba(X).argmax(axis=1)

    # ----------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": MODEL_TYPE,
            "classifier": self.classifier,
            "id2label": {str(i): name for i, name in (self.id2label or {}).items()},
            "label2id": self.label2id or {},
            "kwargs": {**self.kwargs, **self.best_params},
            "search": self.search,
            "best_params": self.best_params,
            **self.task.to_config(),
        }

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``model.skops`` and ``config.json`` into ``save_directory`` (other files there are kept)."""
        if not self._fitted:
            raise RuntimeError("ClassicClassifier.save_pretrained: the model is not fitted yet")
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        sio.dump(self.pipeline, out / MODEL_FILE)
        (out / CONFIG_FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ClassicClassifier:
        """Load a model written by ``save_pretrained``, trusting only the types the pipelines need."""
        directory = Path(directory)
        config_path, model_path = directory / CONFIG_FILE, directory / MODEL_FILE
        for path in (config_path, model_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found: a classic SER model directory holds {CONFIG_FILE} and {MODEL_FILE} "
                    "(written by ClassicClassifier.save_pretrained)"
                )
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path} is not valid JSON: {err}") from err
        if config.get("model_type") != MODEL_TYPE:
            raise ValueError(
                f"{config_path}: model_type is {config.get('model_type')!r}, expected {MODEL_TYPE!r}; "
                "neural models load with AutoModelForAudioClassification.from_pretrained"
            )
        for key in ("classifier", "id2label"):
            if key not in config:
                raise ValueError(f"{config_path}: missing key {key!r}")
        try:
            untrusted = sio.get_untrusted_types(file=model_path)
        except Exception as err:  # BadZipFile, KeyError, JSONDecodeError...: a damaged or foreign file
            raise ValueError(f"{model_path} is damaged or not a skops file ({type(err).__name__}: {err}); "
                             "retrain or restore the model folder") from err
        unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
        if unexpected:
            raise ValueError(
                f"{model_path} contains types outside the trusted list {list(TRUSTED_TYPES)}: {unexpected}. "
                "Refusing to load; inspect the file with skops.io.get_untrusted_types and retrain if unsure."
            )
        pipeline = sio.load(model_path, trusted=list(untrusted))
        task = ModelTask.from_config(config)
        model = cls(config["classifier"], id2label=config["id2label"] or None, label2id=config.get("label2id") or None,
                    targets=task.targets, **config.get("kwargs", {}))
        if not isinstance(pipeline, Pipeline):
            raise ValueError(f"{model_path} holds a {type(pipeline).__name__}, expected a sklearn Pipeline")
        model.pipeline = pipeline
        model._fitted = True
        return model

    def __repr__(self) -> str:
        if self.is_regressor:
            return f"ClassicClassifier({self.classifier!r}, targets={list(self.targets)}, kwargs={self.kwargs})"
        return f"ClassicClassifier({self.classifier!r}, num_labels={self.num_labels}, kwargs={self.kwargs})"


def mean_ccc(y_true, y_pred) -> float:
    """Mean CCC over the columns of (n, targets) arrays: the inner search's score for regressors."""
    t = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    return float(np.mean([ccc(t[:, j], p[:, j]) for j in range(t.shape[1])]))

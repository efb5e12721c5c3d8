"""What every model family shares: the data an experiment sees, the interface a family implements, and
what it hands back to the reporter.

A family is built from the run spec (no I/O: it only checks the keys it reads), then

    fitted = family.fit(data, out)                       # train (or fit a scikit-learn model)
    predictions = family.predict(family.reported_sets(data))  # clip probabilities per evaluation set
    family.save(model_dir)                               # save_pretrained folder + what inference needs

``ser_hf.experiment.run`` drives exactly these calls for every family, so the reporter, the run folder
and the model card never special-case one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..clips import softmax
from ..spec import RunSpec
from ..tasks import ModelTask, TargetScale

__all__ = ["ExperimentData", "Family", "Fitted", "Predictions", "TargetScale", "eval_sets", "output_scores",
           "target_matrix", "target_scale"]

# split name -> (dataset of the scored clips, outputs in the dataset's row order): class probabilities (n, C)
# for classification; in the ModelTask layout otherwise (regression: values (n, T) in the targets' units;
# multitask: [probabilities (C)..., values (T)...]).
Predictions = dict[str, tuple[Any, np.ndarray]]


def target_matrix(ds, targets) -> np.ndarray:
    """The (n, len(targets)) float32 matrix of a dataset's target columns (arousal, valence, ...)."""
    missing = [t for t in targets if t not in ds.column_names]
    if missing:
        raise ValueError(f"the data has no {missing} column(s) (columns: {ds.column_names}); a dimensional run "
                         "needs a corpus with arousal/valence/dominance ratings")
    return np.stack([np.asarray(ds[t], dtype=np.float32) for t in targets], axis=1).reshape(len(ds), len(targets))


def target_scale(ds, targets) -> TargetScale:
    """The :class:`~ser_hf.tasks.TargetScale` of a (training) dataset's target columns."""
    return TargetScale.of(target_matrix(ds, targets))


def output_scores(task: ModelTask, raw: np.ndarray) -> np.ndarray:
    """Clip-level raw outputs of a neural model -> the :data:`Predictions` layout: class logits become
    probabilities (softmax), values stay as they are."""
    if not task.has_values:
        return softmax(raw)
    logits, values = task.split_outputs(raw)
    return values if logits is None else np.concatenate([softmax(logits), values], axis=1)


@dataclass
class ExperimentData:
    """The splits one experiment sees. ``tests`` maps a corpus name to its test set (one entry except
    in multi-corpus runs; cross-corpus runs test on another corpus)."""

    train: Any
    validation: Any
    tests: dict[str, Any]
    label_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # corpus, split, fold, speakers, leaky, skipped
    task: ModelTask = field(default_factory=ModelTask)  # what the model predicts (classes, dimensions, both)


def eval_sets(data: ExperimentData) -> dict[str, Any]:
    """Named evaluation sets: ``validation``, ``test`` (or ``test:<corpus>`` per corpus in multi-corpus runs)."""
    sets = {}
    if len(data.validation):
        sets["validation"] = data.validation
    if len(data.tests) == 1:
        (only,) = data.tests.values()
        if len(only):
            sets["test"] = only
    else:
        sets.update({f"test:{name}": ds for name, ds in data.tests.items() if len(ds)})
    return sets


@dataclass
class Fitted:
    """What training tells the reporter (besides the predictions)."""

    train_seconds: float
    history: list[dict] | None = None
    best_epoch: int | None = None
    # The speakers per split the model actually trained on, when that differs from the data's split
    # (classic models train on train + validation); None: as split.
    speakers: dict[str, list] | None = None


class Family(ABC):
    """One model family. Subclasses set ``name`` and implement :meth:`fit`, :meth:`predict`, :meth:`save`.

    ``__init__`` builds the family from the run spec and checks what only the family can check (a
    scikit-learn estimator's parameters, a checkpoint's config keys) before any corpus is read.
    """

    name: ClassVar[str]

    def __init__(self, spec: RunSpec):
        self.spec = spec

    @abstractmethod
    def fit(self, data: ExperimentData, out: Path) -> Fitted:
        """Train on ``data`` (checkpoints and logs under ``out``)."""

    @abstractmethod
    def predict(self, sets: dict[str, Any]) -> Predictions:
        """Clip-level outputs for each named evaluation set: class probabilities, or the
        :class:`~ser_hf.tasks.ModelTask` layout of a regression/multitask run (see :data:`Predictions`)."""

    @abstractmethod
    def save(self, model_dir: Path) -> None:
        """Write the trained model (``save_pretrained`` layout) into ``model_dir``."""

    def reported_sets(self, data: ExperimentData) -> dict[str, Any]:
        """The evaluation sets whose scores are reported (all of :func:`eval_sets` by default)."""
        return eval_sets(data)

    @property
    def num_parameters(self) -> int | None:
        return None

    @property
    def base_model(self) -> str | None:
        """The pretrained model this one starts from (for the model card), if any."""
        return None

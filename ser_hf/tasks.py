"""What a model predicts: emotion classes, dimensional ratings (arousal / valence / dominance), or both.

One definition shared by training, saving, loading and prediction (issue 14, items 3-4):

* ``classification`` -- the model's output row is one logit per label (every model before issue 14);
* ``regression`` -- one value per target, in the targets' own units (e.g. IEMOCAP's 1..5 ratings);
* ``multitask`` -- both: ``[class logits (len(labels))..., target values (len(targets))...]``.

A saved model's ``config.json`` records the task as ``"ser_hf_task"`` and ``"ser_hf_targets"``
(:meth:`ModelTask.to_config`); a config without them is a classification model, so older models keep
loading (:meth:`ModelTask.from_config`). numpy (and the task names of the torch-free spec) only: this sits at
the bottom of the layering (with clips).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import TASKS, task_has_labels, task_has_values

__all__ = ["ModelTask", "TASKS", "TARGETS_KEY", "TASK_KEY", "TargetScale"]

TASK_KEY = "ser_hf_task"
TARGETS_KEY = "ser_hf_targets"


@dataclass(frozen=True)
class ModelTask:
    """The task of one model: ``task`` (one of :data:`TASKS`), its regression ``targets`` (empty for
    classification) and its class ``labels`` (empty for regression), both in output order."""

    task: str = "classification"
    targets: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
        object.__setattr__(self, "labels", tuple(str(t) for t in self.labels))
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.has_values and not self.targets:
            raise ValueError(f"task={self.task} needs at least one target (e.g. arousal, valence, dominance)")
        if not self.has_values and self.targets:
            raise ValueError(f"task=classification has no targets, got {list(self.targets)}")
        if self.task == "regression" and self.labels:
            raise ValueError(f"task=regression has no class labels, got {list(self.labels)}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets repeat a name: {list(self.targets)}")

    @property
    def has_classes(self) -> bool:
        """True when the model outputs class logits (classification, multitask)."""
        return task_has_labels(self.task)

    @property
    def has_values(self) -> bool:
        """True when the model outputs dimensional values (regression, multitask)."""
        return task_has_values(self.task)

    @property
    def n_outputs(self) -> int:
        """Width of the model's raw output row."""
        return (len(self.labels) if self.has_classes else 0) + (len(self.targets) if self.has_values else 0)

    @classmethod
    def from_config(cls, config: dict) -> "ModelTask":
        """The task of a saved model from its ``config.json`` dict. Labels come from ``id2label`` (ids in
        order); for a regression model ``id2label`` names the targets (HF ``problem_type="regression"``)
        and is not read as labels; a multitask neural model's ``id2label`` names every output (labels, then
        targets: HF sizes the head by it), and the trailing targets are dropped from the labels."""
        task = config.get(TASK_KEY) or "classification"
        targets = tuple(config.get(TARGETS_KEY) or ())
        labels: tuple[str, ...] = ()
        if task != "regression":
            id2label = config.get("id2label") or {}
            labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
            if task == "multitask" and targets and labels[-len(targets):] == targets:
                labels = labels[:-len(targets)]
        return cls(task=task, targets=targets, labels=labels)

    @classmethod
    def of_saved(cls, config: dict, where, need_labels: bool = True, hint: str = "") -> "ModelTask":
        """:meth:`from_config` for a model folder being loaded: an error names ``where`` (the file) when the
        config cannot say what the outputs are, or names no classes for a model that has them."""
        try:
            task = cls.from_config(config)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{where}: cannot tell what the model predicts ({err}){hint}") from err
        if need_labels and task.has_classes and not task.labels:
            raise ValueError(f"{where} has no id2label: cannot name the predicted classes")
        return task

    @property
    def output_names(self) -> tuple[str, ...]:
        """One name per raw output (the ``id2label`` of a neural model): labels, then targets."""
        return (self.labels if self.has_classes else ()) + (self.targets if self.has_values else ())

    def hf_config(self) -> dict:
        """Keys for a transformers config: ``id2label``/``label2id`` over every output, ``num_labels``, the
        task keys, and ``problem_type="regression"`` for regression models."""
        names = self.output_names
        out = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)},
               "num_labels": len(names), **self.to_config()}
        if self.task == "regression":
            out["problem_type"] = "regression"
        return out

    def to_config(self) -> dict:
        """The keys to merge into a saved model's ``config.json``."""
        return {TASK_KEY: self.task, TARGETS_KEY: list(self.targets)}

    def split_outputs(self, outputs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(class_logits | None, values | None)`` from raw outputs (last axis = one model output row)."""
        outputs = np.asarray(outputs)
        width = outputs.shape[-1] if outputs.ndim else 0
        if width != self.n_outputs:
            raise ValueError(f"a {self.task} model with {len(self.labels)} label(s) and {len(self.targets)} "
                             f"target(s) outputs {self.n_outputs} values per row, got {width}")
        if self.task == "classification":
            return outputs, None
        if self.task == "regression":
            return None, outputs
        n = len(self.labels)
        return outputs[..., :n], outputs[..., n:]


@dataclass(frozen=True)
class TargetScale:
    """Training-split mean and standard deviation of each target: neural families train on standardised
    targets (the batches' ``targets``) and fold the scale back into the output layer afterwards
    (``ser_hf.models.heads.fold_target_scale``), so saved models output ratings."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, values) -> "TargetScale":
        """From an (n, targets) matrix of training values (a constant target keeps std 1)."""
        values = np.asarray(values, dtype=np.float64)
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def standardise(self, values) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

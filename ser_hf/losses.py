"""Losses for the training loop: cross-entropy (optionally class-weighted and/or label-smoothed) and focal
loss for classes; 1 - CCC or MSE for dimensional values (:func:`build_regression_loss`).

The loop computes the loss from the model's logits (the models are never handed ``labels``), so
every neural family trains with the same, recipe-selected criterion.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from .spec import LOSSES, REGRESSION_LOSSES


def balanced_class_weights(labels: Sequence[int], num_labels: int) -> torch.Tensor:
    """Per-class weights ``n / (num_labels * count)`` (scikit-learn's "balanced" heuristic).

    Classes absent from ``labels`` get weight 1.0: no training example carries them, so their weight
    never enters the loss, and sklearn's ``compute_class_weight`` would refuse them.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if y.size == 0:
        raise ValueError("balanced_class_weights: no training labels given; class weights need the training labels")
    if y.min() < 0 or y.max() >= num_labels:
        raise ValueError(f"balanced_class_weights: labels must lie in 0..{num_labels - 1}, "
                         f"got values {sorted(set(y[(y < 0) | (y >= num_labels)].tolist()))[:10]}")
    present = np.unique(y)
    weights = np.ones(num_labels, dtype=np.float64)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    # sklearn divides by the number of *present* classes; rescale to all num_labels classes so the
    # formula is n / (num_labels * count) as documented.
    weights[present] *= len(present) / num_labels
    return torch.tensor(weights, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al., 2017): ``-sum_c q_c * alpha_c * (1 - p_c)^gamma * log p_c``.

    ``q`` is the one-hot target, or the smoothed target ``(1 - eps) * onehot + eps / C`` when
    ``label_smoothing = eps > 0`` (with one-hot targets this is the textbook
    ``-alpha_t (1 - p_t)^gamma log p_t``). ``alpha``: None (no weighting), a float (scales every
    class) or one weight per class. Reduction "mean" is the plain mean over examples (not normalised
    by the alpha weights, unlike weighted cross-entropy). Hand-written because torch only ships the
    binary sigmoid version (torchvision.ops.sigmoid_focal_loss).
    """

    def __init__(self, alpha: float | Sequence[float] | torch.Tensor | None = None, gamma: float = 2.0,
                 label_smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"FocalLoss: gamma must be >= 0 (0 gives cross-entropy), got {gamma}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"FocalLoss: label_smoothing must be in [0, 1), got {label_smoothing}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"FocalLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)
        self.reduction = reduction
        if alpha is None:
            self.register_buffer("alpha", None)
        else:
            a = torch.as_tensor(alpha, dtype=torch.float32).reshape(-1)
            if (a < 0).any():
                raise ValueError(f"FocalLoss: alpha weights must be >= 0, got {a.tolist()}")
            self.register_buffer("alpha", a)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[-1]
        log_p = F.log_softmax(logits.float(), dim=-1)
        target = F.one_hot(labels.long(), num_classes).to(log_p.dtype)
        if self.label_smoothing > 0:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        weight = (1.0 - log_p.exp()).clamp(min=0.0).pow(self.gamma)
        if self.alpha is not None:
            if self.alpha.numel() not in (1, num_classes):
                raise ValueError(f"FocalLoss: alpha has {self.alpha.numel()} weights but the model has "
                                 f"{num_classes} classes; give one weight per class or a single float")
            weight = weight * self.alpha.to(log_p.device)
        per_example = -(target * weight * log_p).sum(dim=-1)
        if self.reduction == "mean":
            return per_example.mean()
        if self.reduction == "sum":
            return per_example.sum()
        return per_example


def build_loss(name: str, class_weights: Sequence[float] | torch.Tensor | None = None,
               focal_alpha: float | Sequence[float] | str | None = None, focal_gamma: float = 2.0,
               label_smoothing: float = 0.0) -> nn.Module:
    """The criterion ``(logits, labels) -> scalar`` for a recipe's ``trainer.loss``.

    - "ce": ``nn.CrossEntropyLoss(label_smoothing=...)``.
    - "weighted_ce": same with ``weight=class_weights`` (required; see :func:`balanced_class_weights`).
    - "focal": :class:`FocalLoss`; ``focal_alpha="balanced"`` uses ``class_weights`` as per-class alpha.
    """
    if name not in LOSSES:
        raise ValueError(f"trainer.loss={name!r} is not a known loss; choose one of {list(LOSSES)}")
    weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
    if name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "weighted_ce":
        if weights is None:
            raise ValueError("trainer.loss='weighted_ce' needs class weights: pass class_weights=... to the Trainer "
                             "(e.g. ser_hf.losses.balanced_class_weights(train_labels, num_labels)) or use loss='ce'")
        return nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)
    if isinstance(focal_alpha, str):
        if focal_alpha != "balanced":
            raise ValueError(f"trainer.focal_alpha={focal_alpha!r}: use null, a float, a list with one weight per "
                             "class, or 'balanced'")
        if weights is None:
            raise ValueError("trainer.focal_alpha='balanced' needs class weights: pass class_weights=... to the "
                             "Trainer (e.g. ser_hf.losses.balanced_class_weights(train_labels, num_labels))")
        focal_alpha = weights
    return FocalLoss(alpha=focal_alpha, gamma=focal_gamma, label_smoothing=label_smoothing)


class CCCLoss(nn.Module):
    """``1 - mean_t CCC(values[:, t], targets[:, t])`` over the batch (Lin's concordance correlation, population
    moments, the same formula as :func:`ser_hf.metrics.ccc`). A batch of one row has no variance: its CCC term
    falls back to the squared error, so tiny last batches still give a gradient."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        values, targets = values.float().reshape(len(values), -1), targets.float().reshape(len(targets), -1)
        if values.shape != targets.shape:
            raise ValueError(f"CCCLoss: values {tuple(values.shape)} and targets {tuple(targets.shape)} differ")
        if len(values) < 2:
            return F.mse_loss(values, targets)
        mv, mt = values.mean(0), targets.mean(0)
        cov = ((values - mv) * (targets - mt)).mean(0)
        denom = values.var(0, unbiased=False) + targets.var(0, unbiased=False) + (mv - mt) ** 2
        return 1.0 - (2 * cov / (denom + self.eps)).mean()


def build_regression_loss(name: str) -> nn.Module:
    """The criterion ``(values, targets) -> scalar`` for a recipe's ``trainer.regression_loss``: "ccc"
    (:class:`CCCLoss`) or "mse" (``nn.MSELoss``), both on (n, targets) float tensors."""
    if name not in REGRESSION_LOSSES:
        raise ValueError(f"trainer.regression_loss={name!r} is not a known loss; choose one of {list(REGRESSION_LOSSES)}")
    return CCCLoss() if name == "ccc" else nn.MSELoss()


class TaskLoss(nn.Module):
    """The training criterion of a :class:`~ser_hf.tasks.ModelTask`: ``outputs`` are the model's raw rows
    ([class logits..., values...]); classification: ``class_loss(logits, labels)``; regression:
    ``regression_loss(values, targets)``; multitask: ``class_loss + weight * regression_loss``. ``targets`` are
    the (standardised) target values, (n, len(task.targets))."""

    def __init__(self, task, class_loss: nn.Module | None, regression_loss: nn.Module | None, weight: float = 1.0):
        super().__init__()
        self.task = task
        self.class_loss = class_loss
        self.regression_loss = regression_loss
        self.weight = float(weight)

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        n = len(self.task.labels) if self.task.has_classes else 0
        loss = None
        if self.task.has_classes:
            loss = self.class_loss(outputs[..., :n], labels)
        if self.task.has_values:
            if targets is None:
                raise ValueError(f"task={self.task.task}: batches need a 'targets' entry (the {list(self.task.targets)} "
                                 "values) to compute the regression loss")
            reg = self.regression_loss(outputs[..., n:], targets.to(outputs.dtype))
            loss = reg if loss is None else loss + self.weight * reg
        return loss

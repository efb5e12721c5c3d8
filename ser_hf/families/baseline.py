"""The trained-from-scratch baselines (``lstm``, ``cnn1d``, ``cnn2d``, ``cnn_lstm``, ``cnn7``): acoustic
features cut into windows, the shared Accelerate loop, window logits averaged per clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..augment import spec_augment
from ..collate import pad_features
from ..features import make_windows
from ..losses import balanced_class_weights
from ..models import build_baseline, count_parameters
from ..models.heads import fold_target_scale
from ..spec import SpecAugmentConfig
from ..training import Trainer, TrainerConfig, make_dataloader
from .acoustic import feature_sets
from .base import ExperimentData, Family, Fitted, Predictions, TargetScale, output_scores, target_scale

__all__ = ["BaselineFamily", "window_loader"]


def window_loader(ds, tcfg: TrainerConfig, train: bool, spec: SpecAugmentConfig | None = None,
                  targets: tuple[str, ...] = (), scale: TargetScale | None = None):
    """Window rows -> batches ``{input_values, labels, clip_id[, targets]}``; SpecAugment on training batches only.
    ``targets``: the target columns of a dimensional run, standardised with ``scale``.

    The masks draw from torch's global RNG, which the trainer reseeds from (seed, epoch) at every epoch,
    so a resumed run masks exactly as an uninterrupted one.
    """
    files = dict(zip(ds["clip_id"], ds["file"])) if "file" in ds.column_names else None  # names clips in errors
    ds = ds.with_format("torch", columns=["features", "label", "clip_id", *targets])

    def collate(rows):
        # clips of varied length: right-padded, with a (B, T) attention mask (None when lengths are equal)
        x, mask = pad_features([r["features"] for r in rows], [int(r["clip_id"]) for r in rows], files)
        if train and spec is not None:
            axes = {"time_axis": -1, "freq_axis": -2} if x.ndim == 4 else {"time_axis": 1, "freq_axis": 2}
            x = spec_augment(x, spec.time_masks, spec.time_width, spec.freq_masks, spec.freq_width,
                             generator=None, mask_value=spec.mask_value, **axes)
        batch = {"input_values": x, "labels": torch.stack([r["label"] for r in rows]).long(),
                 "clip_id": torch.stack([r["clip_id"] for r in rows]).long()}
        if targets:
            values = np.stack([[float(r[t]) for t in targets] for r in rows])
            batch["targets"] = torch.from_numpy(scale.standardise(values) if scale is not None else values.astype(np.float32))
        if mask is not None:
            batch["attention_mask"] = mask
        return batch

    return make_dataloader(ds, tcfg, train=train, collate_fn=collate)


class BaselineFamily(Family):
    """A ``ser_hf.models.baselines`` network on windows of acoustic features."""

    name = "baseline"

    def __init__(self, spec):
        super().__init__(spec)
        self.trainer: Trainer | None = None
        self._windows: dict = {}

    def fit(self, data: ExperimentData, out: Path) -> Fitted:
        spec = self.spec
        feats = feature_sets(spec, data.train, self.reported_sets(data))
        self._windows = {name: make_windows(ds, spec.features) for name, ds in feats.items()}
        tcfg = spec.trainer
        task = self.task = data.task
        input_shape = tuple(np.asarray(self._windows["train"].with_format("numpy")[0]["features"]).shape)
        model = build_baseline(spec.family, input_shape, id2label=list(task.output_names) if task.has_values
                               else data.label_names, task=task, **spec.model.architecture)
        self.scale = target_scale(feats["train"], task.targets) if task.has_values else None
        kw = {"targets": task.targets, "scale": self.scale}
        train_loader = window_loader(self._windows["train"], tcfg, train=True, spec=spec.augment.spec_augment, **kw)
        validation = self._windows.get("validation")
        weights = balanced_class_weights(feats["train"]["label"], len(data.label_names)) if task.has_classes else None
        self.trainer = Trainer(model, tcfg, out, class_weights=weights, task=task)
        result = self.trainer.fit(train_loader, window_loader(validation, tcfg, train=False, **kw)
                                  if validation is not None else None, resume=spec.resume)
        if self.scale is not None:  # the saved model outputs ratings, not standardised values
            fold_target_scale(self.trainer.unwrapped_model, len(task.labels) if task.has_classes else 0,
                              self.scale.mean, self.scale.std)
        return Fitted(result.train_seconds, history=result.history, best_epoch=result.best_epoch)

    def predict(self, sets: dict) -> Predictions:
        out = {}
        for name, ds in sets.items():
            clip_ids, logits, _ = self.trainer.predict(window_loader(self._windows[name], self.spec.trainer, train=False))
            out[name] = (ds.select(clip_ids.tolist()), output_scores(self.task, logits))
        return out

    def save(self, model_dir: Path) -> None:
        self.trainer.unwrapped_model.save_pretrained(model_dir)
        self.spec.features.save_pretrained(model_dir)

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.trainer.unwrapped_model)

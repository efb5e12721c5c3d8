"""Acoustic features for the families that read them (baselines, classic): every evaluation set's
features, and the training split's with its augmented copies (evaluation data is never augmented)."""

from __future__ import annotations

from typing import Any

from ..augment import augment_dataset
from ..features import compute_features
from ..spec import RunSpec

__all__ = ["augmented_train", "feature_sets"]


def augmented_train(spec: RunSpec, train):
    """Offline waveform augmentation, as the seed projects did it: ``augment.copies`` augmented copies of
    every training clip join the training split. The training split itself when no transform is on."""
    return augment_dataset(train, spec.augment.waveform, seed=spec.seed)


def feature_sets(spec: RunSpec, train, sets: dict[str, Any]) -> dict[str, Any]:
    """Features (cached by datasets) of the augmented training split and of each evaluation set."""
    num_proc = spec.data.num_proc
    feats = {"train": compute_features(augmented_train(spec, train), spec.features, num_proc=num_proc)}
    for name, ds in sets.items():
        feats[name] = compute_features(ds, spec.features, num_proc=num_proc)
    return feats

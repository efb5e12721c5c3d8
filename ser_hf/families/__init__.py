"""The model families, one module each, registered in one place.

- ``lstm``, ``cnn1d``, ``cnn2d``, ``cnn_lstm``, ``cnn7`` (:mod:`.baseline`): networks on acoustic features;
- ``classic`` (:mod:`.classic`): a scikit-learn classifier on per-clip feature vectors;
- ``transformer`` (:mod:`.transformer`): any ``AutoModelForAudioClassification`` checkpoint, fine-tuned;
- ``embedding`` (:mod:`.embedding`): pooled hidden states of a pretrained speech model + a classifier;
- ``probe`` (:mod:`.probe`): all pooled hidden states of a frozen encoder, a learned layer mix + small head.

Each implements :class:`.base.Family`. Adding a family: a module here, an entry in :data:`REGISTRY`, and
its torch-free half (sections it reads, its ``model:`` keys) in :data:`ser_hf.spec.FAMILY_SPECS`.
"""

from __future__ import annotations

from ..spec import BASELINE_FAMILIES, FAMILY_SPECS, SpecError
from .base import ExperimentData, Family, Fitted, Predictions, eval_sets
from .baseline import BaselineFamily
from .classic import ClassicFamily
from .embedding import EmbeddingFamily
from .probe import ProbeFamily
from .transformer import TransformerFamily

__all__ = ["REGISTRY", "ExperimentData", "Family", "Fitted", "Predictions", "eval_sets", "get_family"]

REGISTRY: dict[str, type[Family]] = {
    **{name: BaselineFamily for name in BASELINE_FAMILIES},
    "classic": ClassicFamily,
    "transformer": TransformerFamily,
    "embedding": EmbeddingFamily,
    "probe": ProbeFamily,
}


def get_family(name: str) -> type[Family]:
    if name not in REGISTRY or name not in FAMILY_SPECS:
        raise SpecError(f"model.family={name!r} is not one of {sorted(REGISTRY)}")
    return REGISTRY[name]

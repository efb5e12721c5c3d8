"""SER models. Importing this package registers the baseline families and the probe with ``AutoConfig`` and
``AutoModelForAudioClassification`` so saved baselines load through the Auto classes."""

from ser_hf.models.baselines import (
    FAMILIES,
    CNN1DConfig,
    CNN1DForAudioClassification,
    CNN2DConfig,
    CNN2DForAudioClassification,
    CNN7Config,
    CNN7ForAudioClassification,
    CNNLSTMConfig,
    CNNLSTMForAudioClassification,
    LSTMConfig,
    LSTMForAudioClassification,
    architecture_fields,
    build_baseline,
    count_parameters,
)
from ser_hf.models.classic import CLASSIFIERS, ClassicClassifier
from ser_hf.models.probe import ProbeConfig, ProbeForAudioClassification

__all__ = [
    "CLASSIFIERS",
    "FAMILIES",
    "CNN1DConfig",
    "CNN1DForAudioClassification",
    "CNN2DConfig",
    "CNN2DForAudioClassification",
    "CNN7Config",
    "CNN7ForAudioClassification",
    "CNNLSTMConfig",
    "CNNLSTMForAudioClassification",
    "ClassicClassifier",
    "LSTMConfig",
    "LSTMForAudioClassification",
    "ProbeConfig",
    "ProbeForAudioClassification",
    "architecture_fields",
    "build_baseline",
    "count_parameters",
]

"""The probe family's network: a learned softmax mix of pooled hidden states + a small head.

``ProbeConfig`` / ``ProbeForAudioClassification`` (``model_type`` ``ser_probe``), registered with the Auto
classes so saved probes load with ``AutoModelForAudioClassification.from_pretrained``. The family runner
(frozen encoder, cached states, training) is :mod:`ser_hf.probe`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForAudioClassification, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "ser_probe"
HEADS = ("linear", "mlp")


class ProbeConfig(PreTrainedConfig):
    """Shape and provenance of a probe: ``num_states`` pooled hidden states of ``state_dim`` values each."""

    model_type = MODEL_TYPE

    num_states: int = 1
    state_dim: int = 1
    head: str = "linear"  # "linear": dropout + linear; "mlp": + one hidden ReLU layer of hidden_size
    hidden_size: int = 256
    dropout: float = 0.1
    # layer-norm each pooled state (no affine) before the mix, so states of different scale mix fairly
    normalize_states: bool = True
    # what inference needs to recompute the input: the encoder, its pooling, per-speaker normalisation
    encoder_name_or_path: str | None = None
    pooling: str = "mean"
    speaker_norm: bool = False
    max_duration_s: float | None = None  # Whisper encoders: the crop (seconds) the states were computed with

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        name = type(self).__name__
        for key in ("num_states", "state_dim", "hidden_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}.{key} must be an int >= 1, got {value!r}")
        if self.head not in HEADS:
            raise ValueError(f"{name}.head (model.head) must be one of {list(HEADS)}, got {self.head!r}")
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0 <= self.dropout < 1:
            raise ValueError(f"{name}.dropout (model.dropout) must be a float in [0, 1), got {self.dropout!r}")
        for key in ("normalize_states", "speaker_norm"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{name}.{key} must be true or false, got {getattr(self, key)!r}")


class ProbeForAudioClassification(PreTrainedModel):
    """softmax(layer_weights)-weighted sum of pooled hidden states -> head -> logits.

    ``input_values``: ``(B, num_states, state_dim)`` or the flat ``(B, num_states * state_dim)`` rows of
    ``extract_embeddings(layers="all")``.
    """

    config_class = ProbeConfig
    base_model_prefix = "probe"
    main_input_name = "input_values"
    input_modalities = ("audio",)

    def __init__(self, config: ProbeConfig):
        super().__init__(config)
        self.layer_weights = nn.Parameter(torch.zeros(config.num_states))  # equal weights at the start
        layers: list[nn.Module] = [nn.Dropout(config.dropout)]
        width = config.state_dim
        if config.head == "mlp":
            layers += [nn.Linear(width, config.hidden_size), nn.ReLU(), nn.Dropout(config.dropout)]
            width = config.hidden_size
        layers.append(nn.Linear(width, config.num_labels))
        self.classifier = nn.Sequential(*layers)
        self.post_init()

    def _init_weights(self, module):
        if module is self:
            init.zeros_(self.layer_weights)
        else:
            super()._init_weights(module)

    def layer_distribution(self) -> torch.Tensor:
        """The mix's weights (softmax of ``layer_weights``): one per hidden state, summing to 1."""
        return torch.softmax(self.layer_weights.float(), dim=-1)

    def forward(self, input_values, labels=None, return_dict=None):
        cfg = self.config
        x = input_values.float()
        if x.ndim == 2 and x.shape[1] == cfg.num_states * cfg.state_dim:
            x = x.view(x.shape[0], cfg.num_states, cfg.state_dim)
        if x.ndim != 3 or tuple(x.shape[1:]) != (cfg.num_states, cfg.state_dim):
            raise ValueError(f"{type(self).__name__} takes (B, {cfg.num_states}, {cfg.state_dim}) pooled hidden "
                             f"states (or their flat rows); got shape {tuple(input_values.shape)}")
        if cfg.normalize_states:
            x = F.layer_norm(x, (cfg.state_dim,))
        mixed = (self.layer_distribution().to(x.dtype)[None, :, None] * x).sum(dim=1)
        logits = self.classifier(mixed)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels.to(device=logits.device, dtype=torch.long))
        return_dict = return_dict if return_dict is not None else cfg.return_dict
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(MODEL_TYPE, ProbeConfig, exist_ok=True)
AutoModelForAudioClassification.register(ProbeConfig, ProbeForAudioClassification, exist_ok=True)


__all__ = ["HEADS", "MODEL_TYPE", "ProbeConfig", "ProbeForAudioClassification"]

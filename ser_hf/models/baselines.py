"""Trained-from-scratch SER baselines as ``transformers`` models.

(Over 500 lines: five config + model pairs that share one encoder/head/pooling scaffold; each pair is
short, and the shared parts would otherwise be private names imported across modules.)

Each family (LSTM, CNN1D, CNN2D, CNN+LSTM, CNN7) is a ``PreTrainedConfig`` + ``PreTrainedModel`` pair so the
same ``save_pretrained`` / ``AutoModelForAudioClassification.from_pretrained`` / safetensors / ``id2label``
machinery serves baselines and fine-tuned transformers alike; the training loop and inference code never
special-case a family.

Input conventions (``input_values``, float32):

- sequence families ``lstm``, ``cnn1d``, ``cnn_lstm``: ``(B, T, D)`` frame features, ``D == config.input_dim``;
  optional ``attention_mask`` ``(B, T)`` (1 = real frame, right padding only).
- 2-D families ``cnn2d``, ``cnn7``: ``(B, C, F, T)``, ``C == config.in_channels``; any ``F`` and ``T`` (global
  pooling makes the head size independent of them); optional ``attention_mask`` ``(B, T)`` over the time axis.

With a mask, padded frames do not change the result in eval mode: padded positions are zeroed after every conv
block, LSTMs run on packed sequences and the final pooling only averages real frames. (In train mode BatchNorm
statistics still see the zeroed padding; batches of equal-length windows, the usual case, are unaffected.)
"""

import dataclasses
from dataclasses import field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForAudioClassification, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from ..tasks import ModelTask

__all__ = [
    "FAMILIES",
    "LSTMConfig",
    "CNN1DConfig",
    "CNN2DConfig",
    "CNNLSTMConfig",
    "CNN7Config",
    "LSTMForAudioClassification",
    "CNN1DForAudioClassification",
    "CNN2DForAudioClassification",
    "CNNLSTMForAudioClassification",
    "CNN7ForAudioClassification",
    "build_baseline",
    "count_parameters",
]

SEQUENCE_POOLING = ("mean", "max", "attention")
GLOBAL_POOLING = ("mean", "max")


# --------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------


def _positive_int_list(config: PreTrainedConfig, name: str, allow_empty: bool = False) -> list[int]:
    value = getattr(config, name)
    if isinstance(value, tuple):
        value = list(value)
        setattr(config, name, value)
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok or (not value and not allow_empty):
        raise ValueError(f"{type(config).__name__}.{name} must be a non-empty list of positive ints, got {value!r}")
    return value


def _check_int(config: PreTrainedConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{type(config).__name__}.{name} must be an int >= {minimum}, got {value!r}")


def _check_choice(config: PreTrainedConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(f"{type(config).__name__}.{name} must be one of {list(choices)}, got {value!r}")


def _check_dropout(config: PreTrainedConfig, name: str = "dropout") -> None:
    value = getattr(config, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{type(config).__name__}.{name} must be a float in [0, 1), got {value!r}")


def _check_same_length(config: PreTrainedConfig, *names: str) -> None:
    lengths = {name: len(getattr(config, name)) for name in names}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"{type(config).__name__}: {', '.join(names)} need one entry per conv layer, got lengths {lengths}"
        )


def _check_conv_stack(config: PreTrainedConfig) -> None:
    """channels / kernel_sizes / pool_sizes: lists of positive ints, one entry per conv layer."""
    for name in ("channels", "kernel_sizes", "pool_sizes"):
        _positive_int_list(config, name)
    _check_same_length(config, "channels", "kernel_sizes", "pool_sizes")


class _BaselineConfig(PreTrainedConfig):
    """Fields every baseline head shares. Validation runs on construction, so a bad recipe value or a
    hand-edited config.json fails at load time with the field name, not deep inside ``forward``."""

    dropout: float = 0.3
    head_hidden_size: int = 0  # 0: dropout + one linear layer; > 0: adds a hidden ReLU layer of that size

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        _check_dropout(self)
        _check_int(self, "head_hidden_size", 0)


class LSTMConfig(_BaselineConfig):
    """(Bi)LSTM over frame features (the RAVDESS LSTM seed: MFCC + deltas + log-mel per frame)."""

    model_type = "ser_lstm"

    input_dim: int = 160
    hidden_size: int = 128
    num_layers: int = 2
    bidirectional: bool = True
    pooling: str = "mean"  # "mean" | "max" | "attention" over the valid frames

    def _check(self) -> None:
        super()._check()
        for name in ("input_dim", "hidden_size", "num_layers"):
            _check_int(self, name, 1)
        _check_choice(self, "pooling", SEQUENCE_POOLING)


class CNN1DConfig(_BaselineConfig):
    """1-D convolutions over time with the feature dimension as channels (RAVDESS / CREMA-D CNN1D seeds)."""

    model_type = "ser_cnn1d"

    input_dim: int = 160
    channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    kernel_sizes: list[int] = field(default_factory=lambda: [5, 5, 3])
    pool_sizes: list[int] = field(default_factory=lambda: [2, 2, 2])  # 1 = no pooling after that layer
    global_pooling: str = "mean"

    def _check(self) -> None:
        super()._check()
        _check_int(self, "input_dim", 1)
        _check_conv_stack(self)
        _check_choice(self, "global_pooling", GLOBAL_POOLING)


class CNN2DConfig(_BaselineConfig):
    """Conv-BN-ReLU-pool blocks on (C, F, T) maps (the EmoDB seed: 3 x 128 x 128 MFCC, delta, delta-delta)."""

    model_type = "ser_cnn2d"

    in_channels: int = 3
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 3, 3, 3])
    pool_sizes: list[int] = field(default_factory=lambda: [2, 2, 2, 2])  # square max-pool; 1 = none
    global_pooling: str = "mean"

    def _check(self) -> None:
        super()._check()
        _check_int(self, "in_channels", 1)
        _check_conv_stack(self)
        _check_choice(self, "global_pooling", GLOBAL_POOLING)


class CNN7Config(CNN2DConfig):
    """Seven conv layers on (1, n_mels, T) log-mel spectrograms (the CREMA-D CNN7 seed)."""

    model_type = "ser_cnn7"

    in_channels: int = 1
    channels: list[int] = field(default_factory=lambda: [16, 32, 32, 64, 64, 128, 128])
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 3, 3, 3, 3, 3, 3])
    pool_sizes: list[int] = field(default_factory=lambda: [2, 2, 2, 2, 2, 1, 1])


class CNNLSTMConfig(_BaselineConfig):
    """1-D conv front end (local spectral-temporal patterns, shorter sequence) feeding an LSTM (RAVDESS seed)."""

    model_type = "ser_cnn_lstm"

    input_dim: int = 160
    channels: list[int] = field(default_factory=lambda: [64, 128])
    kernel_sizes: list[int] = field(default_factory=lambda: [5, 3])
    pool_sizes: list[int] = field(default_factory=lambda: [2, 2])
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    pooling: str = "mean"

    def _check(self) -> None:
        super()._check()
        for name in ("input_dim", "hidden_size", "num_layers"):
            _check_int(self, name, 1)
        _check_conv_stack(self)
        _check_choice(self, "pooling", SEQUENCE_POOLING)


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------


def _check_input(name: str, x: torch.Tensor, rank: int, axis: int, expected: int, layout: str, field_name: str):
    if not torch.is_tensor(x):
        raise TypeError(f"{name}: input_values must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != rank or x.shape[axis] != expected:
        raise ValueError(
            f"{name}: input_values must have shape {layout} with {field_name}={expected} (config.{field_name}), "
            f"got {tuple(x.shape)}. Check that the feature kind matches the model family."
        )


def _check_mask(name: str, mask: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor | None:
    """Validate a (B, T) frame mask and return it as float; right padding only, because packing and
    ceil-mode pooling assume every clip's real frames come first."""
    if mask is None:
        return None
    if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] != frames:
        raise ValueError(f"{name}: attention_mask must have shape (B, T)=({batch}, {frames}), got {tuple(mask.shape)}")
    mask = mask.to(torch.float32)
    lengths = mask.sum(dim=1)
    expected = (torch.arange(frames, device=mask.device)[None, :] < lengths[:, None]).to(mask.dtype)
    if not torch.equal(mask, expected) or bool((lengths < 1).any()):
        raise ValueError(
            f"{name}: attention_mask must mark a non-empty prefix of real frames per row (right padding with 0s)"
        )
    return mask


def _downsample_mask(mask: torch.Tensor | None, pool: int) -> torch.Tensor | None:
    # A pooled position is real when its window holds at least one real frame: the same windows ceil-mode
    # pooling produces on the unpadded clip.
    if mask is None or pool == 1:
        return mask
    return F.max_pool1d(mask[:, None, :], pool, ceil_mode=True)[:, 0, :]


def _zero_padding(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x (B, C, [F,] T) with the padded time steps of ``mask`` (B, T) set to zero."""
    if mask is None:
        return x
    return x * mask.view(mask.shape[0], *([1] * (x.dim() - 2)), mask.shape[1]).to(x.dtype)


class _ConvStack(nn.Module):
    """Conv-BN-ReLU-(MaxPool) blocks over (B, C, T) (``ndim=1``) or (B, C, F, T) (``ndim=2``), keeping padded
    time steps at zero so they look like the convs' own zero padding."""

    def __init__(self, ndim: int, in_channels: int, channels: list[int], kernel_sizes: list[int],
                 pool_sizes: list[int]):
        super().__init__()
        conv, norm = (nn.Conv1d, nn.BatchNorm1d) if ndim == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.max_pool = F.max_pool1d if ndim == 1 else F.max_pool2d
        self.pool_sizes = list(pool_sizes)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for out_channels, kernel in zip(channels, kernel_sizes):
            self.convs.append(conv(in_channels, out_channels, kernel, padding="same", bias=False))
            self.norms.append(norm(out_channels))
            in_channels = out_channels
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = _zero_padding(x, mask)
        for conv, norm, pool in zip(self.convs, self.norms, self.pool_sizes):
            x = _zero_padding(F.relu(norm(conv(x))), mask)
            if pool > 1:
                # ceil_mode keeps maps with fewer than `pool` bins alive, so short clips / few mel bins still run
                x = self.max_pool(x, pool, ceil_mode=True)
                mask = _downsample_mask(mask, pool)
        return x, mask


def _pool_time(x: torch.Tensor, mask: torch.Tensor | None, how: str, attention: nn.Module | None = None):
    """Pool (B, T, H) over valid frames -> (B, H)."""
    if how == "mean":
        if mask is None:
            return x.mean(dim=1)
        return (x * mask[..., None].to(x.dtype)).sum(dim=1) / mask.sum(dim=1, keepdim=True).to(x.dtype)
    if how == "max":
        if mask is None:
            return x.amax(dim=1)
        return x.masked_fill(mask[..., None] == 0, float("-inf")).amax(dim=1)
    scores = attention(x).squeeze(-1)  # (B, T)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    weights = torch.softmax(scores, dim=1)
    return torch.einsum("bt,bth->bh", weights.to(x.dtype), x)


def _pool_map(x: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """Global pooling of (B, C, F, T) over frequency and valid time steps -> (B, C)."""
    if how == "mean":
        if mask is None:
            return x.mean(dim=(2, 3))
        denominator = (mask.sum(dim=1)[:, None] * x.shape[2]).to(x.dtype)
        return (x * mask[:, None, None, :].to(x.dtype)).sum(dim=(2, 3)) / denominator
    if mask is not None:
        x = x.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    return x.amax(dim=(2, 3))


class _Head(nn.Module):
    def __init__(self, in_features: int, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden > 0:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout)]
            in_features = hidden
        layers.append(nn.Linear(in_features, num_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _add_lstm(encoder: nn.Module, input_size: int, config) -> None:
    """Give ``encoder`` the (B)iLSTM of an LSTM/CNN+LSTM config: ``lstm``, ``out_features``, ``pooling``, ``attention``."""
    encoder.lstm = nn.LSTM(
        input_size,
        config.hidden_size,
        num_layers=config.num_layers,
        batch_first=True,
        bidirectional=config.bidirectional,
        dropout=config.dropout if config.num_layers > 1 else 0.0,
    )
    encoder.out_features = config.hidden_size * (2 if config.bidirectional else 1)
    encoder.pooling = config.pooling
    encoder.attention = nn.Linear(encoder.out_features, 1) if config.pooling == "attention" else None


def _run_lstm(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return lstm(x)[0]
    # Packing makes the backward direction start at each clip's last real frame, not at the padding.
    lengths = mask.sum(dim=1).to(torch.int64).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


class SERBaselinePreTrainedModel(PreTrainedModel):
    """Shared loading/initialisation behaviour: everything lives under ``encoder`` + ``classifier``."""

    base_model_prefix = "encoder"
    main_input_name = "input_values"
    input_modalities = ("audio",)

    def _init_weights(self, module):
        # From-scratch CNNs train poorly with transformers' default N(0, 0.02) conv init; He init suits ReLU.
        # transformers.initialization functions skip tensors already loaded from a checkpoint.
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    # Set by each model: the encoder module class, and how forward checks ``input_values``:
    # (rank, channel axis, config field giving its size, layout for messages, time axis).
    encoder_class: type[nn.Module]
    input_spec = (3, 2, "input_dim", "(B, T, D)", 1)

    def __init__(self, config):
        super().__init__(config)
        self.encoder = self.encoder_class(config)
        self.classifier = _Head(self.encoder.out_features, config.head_hidden_size, config.num_labels, config.dropout)
        self.post_init()

    def forward(self, input_values, attention_mask=None, labels=None, return_dict=None):
        rank, axis, field, layout, time_axis = self.input_spec
        name = type(self).__name__
        _check_input(name, input_values, rank, axis, getattr(self.config, field), layout, field)
        mask = _check_mask(name, attention_mask, input_values.shape[0], input_values.shape[time_axis])
        logits = self.classifier(self.encoder(input_values, mask))
        return self._output(logits, labels, return_dict)

    def _output(self, logits: torch.Tensor, labels: torch.Tensor | None, return_dict: bool | None):
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels.to(device=logits.device, dtype=torch.long))
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class _LSTMEncoder(nn.Module):
    def __init__(self, config: LSTMConfig):
        super().__init__()
        _add_lstm(self, config.input_dim, config)

    def forward(self, x, mask):
        return _pool_time(_run_lstm(self.lstm, x, mask), mask, self.pooling, self.attention)


class LSTMForAudioClassification(SERBaselinePreTrainedModel):
    """(B)iLSTM over ``(B, T, input_dim)`` frames, pooled over valid frames, linear head."""

    config_class = LSTMConfig
    encoder_class = _LSTMEncoder


class _CNN1DEncoder(nn.Module):
    def __init__(self, config: CNN1DConfig):
        super().__init__()
        self.convs = _ConvStack(1, config.input_dim, config.channels, config.kernel_sizes, config.pool_sizes)
        self.out_features = self.convs.out_channels
        self.global_pooling = config.global_pooling

    def forward(self, x, mask):
        h, mask = self.convs(x.transpose(1, 2), mask)  # channels = feature dim, convolve over time
        return _pool_time(h.transpose(1, 2), mask, self.global_pooling)


class CNN1DForAudioClassification(SERBaselinePreTrainedModel):
    """Conv1d blocks over time on ``(B, T, input_dim)``, global pooling, linear head."""

    config_class = CNN1DConfig
    encoder_class = _CNN1DEncoder


class _CNNLSTMEncoder(nn.Module):
    def __init__(self, config: CNNLSTMConfig):
        super().__init__()
        self.convs = _ConvStack(1, config.input_dim, config.channels, config.kernel_sizes, config.pool_sizes)
        _add_lstm(self, self.convs.out_channels, config)

    def forward(self, x, mask):
        h, mask = self.convs(x.transpose(1, 2), mask)
        h = _run_lstm(self.lstm, h.transpose(1, 2), mask)
        return _pool_time(h, mask, self.pooling, self.attention)


class CNNLSTMForAudioClassification(SERBaselinePreTrainedModel):
    """Conv1d front end on ``(B, T, input_dim)``, then a (B)iLSTM, pooling and a linear head."""

    config_class = CNNLSTMConfig
    encoder_class = _CNNLSTMEncoder


class _CNN2DEncoder(nn.Module):
    def __init__(self, config: CNN2DConfig):
        super().__init__()
        self.convs = _ConvStack(2, config.in_channels, config.channels, config.kernel_sizes, config.pool_sizes)
        self.out_features = self.convs.out_channels
        self.global_pooling = config.global_pooling

    def forward(self, x, mask):
        h, mask = self.convs(x, mask)
        return _pool_map(h, mask, self.global_pooling)


class CNN2DForAudioClassification(SERBaselinePreTrainedModel):
    """Conv2d blocks on ``(B, in_channels, F, T)``, global pooling (any F, T), linear head."""

    config_class = CNN2DConfig
    encoder_class = _CNN2DEncoder
    input_spec = (4, 1, "in_channels", "(B, C, F, T)", 3)


class CNN7ForAudioClassification(CNN2DForAudioClassification):
    """The CNN2D model with the 7-layer CNN7 defaults, on ``(B, 1, n_mels, T)`` log-mel spectrograms."""

    config_class = CNN7Config


# --------------------------------------------------------------------------------------------------------------
# Registration, factory, helpers
# --------------------------------------------------------------------------------------------------------------

# family -> (config class, model class, input layout)
FAMILIES: dict[str, tuple[type[_BaselineConfig], type[SERBaselinePreTrainedModel], str]] = {
    "lstm": (LSTMConfig, LSTMForAudioClassification, "sequence"),
    "cnn1d": (CNN1DConfig, CNN1DForAudioClassification, "sequence"),
    "cnn2d": (CNN2DConfig, CNN2DForAudioClassification, "map"),
    "cnn_lstm": (CNNLSTMConfig, CNNLSTMForAudioClassification, "sequence"),
    "cnn7": (CNN7Config, CNN7ForAudioClassification, "map"),
}

for _config_cls, _model_cls, _ in FAMILIES.values():
    # exist_ok: re-importing (e.g. importlib.reload in notebooks) must not fail
    AutoConfig.register(_config_cls.model_type, _config_cls, exist_ok=True)
    AutoModelForAudioClassification.register(_config_cls, _model_cls, exist_ok=True)

_GENERIC_FIELDS = {f.name for f in dataclasses.fields(PreTrainedConfig)}


def architecture_fields(family: str) -> list[str]:
    """The hyper-parameters of ``family``'s config that ``build_baseline`` accepts as overrides."""
    config_cls = _family(family)[0]
    return sorted(f.name for f in dataclasses.fields(config_cls) if f.name not in _GENERIC_FIELDS)


def _family(family: str):
    if family not in FAMILIES:
        raise ValueError(f"unknown baseline family {family!r}; valid families: {sorted(FAMILIES)}")
    return FAMILIES[family]


def _label_maps(num_labels, id2label, label2id, min_labels: int = 2) -> tuple[dict[int, str], dict[str, int]]:
    if id2label is None:
        if label2id is not None:
            id2label = {int(i): str(name) for name, i in label2id.items()}
        elif num_labels is None:
            raise ValueError("build_baseline needs num_labels or id2label to size the classifier head")
        else:
            id2label = {i: f"LABEL_{i}" for i in range(int(num_labels))}
    elif isinstance(id2label, (list, tuple)):
        id2label = dict(enumerate(id2label))
    id2label = {int(i): str(name) for i, name in id2label.items()}
    if sorted(id2label) != list(range(len(id2label))) or len(id2label) < min_labels:
        raise ValueError(f"id2label must map ids 0..N-1 (N >= {min_labels}) to label names, got {id2label}")
    if num_labels is not None and int(num_labels) != len(id2label):
        raise ValueError(f"num_labels={num_labels} but id2label has {len(id2label)} entries: {id2label}")
    expected = {name: i for i, name in id2label.items()}
    if label2id is not None and {str(k): int(v) for k, v in label2id.items()} != expected:
        raise ValueError(f"label2id {label2id} is not the inverse of id2label {id2label}")
    return id2label, expected


def build_baseline(
    family: str,
    input_shape,
    num_labels: int | None = None,
    id2label: dict[int, str] | list[str] | None = None,
    label2id: dict[str, int] | None = None,
    task: ModelTask | None = None,
    **overrides: Any,
) -> SERBaselinePreTrainedModel:
    """Freshly initialised baseline of ``family`` for per-example features of ``input_shape``.

    ``input_shape`` is one example's feature shape without the batch axis: ``(T, D)`` for the sequence families
    (``lstm``, ``cnn1d``, ``cnn_lstm``; T may be None) or ``(C, F, T)`` for ``cnn2d`` / ``cnn7`` (F, T may be
    None). ``input_dim`` / ``in_channels`` are taken from it; ``overrides`` set any other config field (see
    ``architecture_fields(family)``). ``task`` (a :class:`~ser_hf.tasks.ModelTask`): a regression/multitask
    model's ``id2label`` names every output (``task.output_names``) and its config carries the task keys.
    """
    config_cls, model_cls, layout = _family(family)
    allowed = architecture_fields(family)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {family} model option(s) {unknown}; valid options: {allowed}")
    shape = tuple(input_shape)
    if layout == "sequence":
        if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
            raise ValueError(
                f"{family} takes frame features of shape (T, D) per example; got input_shape {shape}. "
                "Use a frame-level feature kind (e.g. frame_stack, frame_crema)."
            )
        size_key, size = "input_dim", shape[1]
    else:
        if len(shape) != 3 or not isinstance(shape[0], int) or shape[0] < 1:
            raise ValueError(
                f"{family} takes 2-D feature maps of shape (C, F, T) per example; got input_shape {shape}. "
                "Use a map feature kind (e.g. mfcc_stack, logmel, spectrogram)."
            )
        size_key, size = "in_channels", shape[0]
    if size_key in overrides and overrides[size_key] != size:
        raise ValueError(f"{family}: {size_key}={overrides[size_key]} contradicts input_shape {shape}")
    overrides[size_key] = size
    dims = task is not None and task.has_values
    id2label, label2id = _label_maps(num_labels, id2label, label2id, min_labels=1 if dims else 2)
    extra = {}
    if task is not None:
        if dims and list(id2label.values()) != list(task.output_names):
            raise ValueError(f"id2label {id2label} must name the task's outputs {list(task.output_names)}")
        extra = task.to_config()
        if task.task == "regression":
            extra["problem_type"] = "regression"
    config = config_cls(id2label=id2label, label2id=label2id, **extra, **overrides)
    return model_cls(config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters of a torch model, for ``metrics.json`` and model cards."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters takes a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

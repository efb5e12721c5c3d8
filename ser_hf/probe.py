"""The SUPERB-style probe family (``model.family: probe``): a frozen speech encoder, a learned layer mix.

The protocol SUPERB and EmoBox use to compare frozen self-supervised encoders: every hidden state of the
encoder named by ``embeddings.name_or_path`` (its input and each layer's output) is pooled over the clip's
real frames and cached once (:func:`ser_hf.embeddings.extract_embeddings` with ``layers="all"``; the
cache is shared by every fold and recipe that reads the same corpus file); a
softmax-weighted sum of those pooled states (one learnable weight per state, starting equal) feeds a small
head (``model.head: linear | mlp``, ``model.hidden_size``), trained with the shared Accelerate loop
(``trainer.*``) and model selection on the validation speakers. Only the mix and the head train, so a
whole leave-one-speaker-out run takes minutes on a CPU once the states are cached.

Pooling before mixing (rather than mixing frames, then pooling) is what makes the cache possible; for
``pooling: mean`` the two are identical because both are linear. ``embeddings.speaker_norm: true``
z-scores every pooled state per speaker (``ser_hf.features.speaker_normalise``) before the mix.

The trained probe is a ``PreTrainedModel`` (``model_type`` ``ser_probe``; safetensors, ``id2label``) whose
config names its encoder, pooling and normalisation, so :mod:`ser_hf.inference` can recompute its input.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForAudioClassification, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

logger = logging.getLogger(__name__)

MODEL_TYPE = "ser_probe"
HEADS = ("linear", "mlp")
# model.* keys the probe family reads (everything else in model: is an error)
MODEL_KEYS = ("family", "head", "hidden_size", "dropout", "normalize_states")


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
            from transformers import initialization as init

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


# ------------------------------------------------------------------------------------------ features


def _loader(ds, tcfg, train: bool):
    from ser_hf.training import make_dataloader

    x = torch.from_numpy(np.asarray(ds.with_format("numpy")["embedding"], dtype=np.float32))
    y = torch.as_tensor(np.asarray(ds["label"]), dtype=torch.long)
    rows = [{"input_values": x[i], "labels": y[i], "clip_id": torch.tensor(i)} for i in range(len(ds))]
    return make_dataloader(rows, tcfg, train=train, collate_fn=torch.utils.data.default_collate)


# ------------------------------------------------------------------------------------------ the family


def run_probe(cfg, model_cfg: dict, data, out: Path):
    """Train a probe for ``cfg`` on ``data`` (an ``ExperimentData``); returns the experiment ``Outcome``."""
    from ser_hf.config import section
    from ser_hf.embeddings import EmbeddingSettings, embed_splits, hidden_state_count
    from ser_hf.experiment import Outcome, _eval_sets, _softmax
    from ser_hf.losses import balanced_class_weights
    from ser_hf.models import count_parameters
    from ser_hf.training import Trainer, TrainerConfig

    raw = dict(section(cfg, "embeddings"))
    if raw.get("layers", "all") != "all":
        raise ValueError(f"embeddings.layers={raw['layers']!r}: the probe family learns its own mix of all hidden "
                         f"states; remove embeddings.layers (or set it to all). To use one fixed layer, use "
                         f"model.family=embedding")
    settings = EmbeddingSettings.from_dict({**raw, "layers": "all"})
    name = settings.name_or_path or model_cfg.pop("name_or_path", None)
    if not name:
        raise ValueError("the probe family needs embeddings.name_or_path (a Hub id or a local encoder folder)")
    unknown = sorted(set(model_cfg) - set(MODEL_KEYS))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown} for model.family=probe; valid: {list(MODEL_KEYS[1:])}")
    sets = {"train": data.train, **_eval_sets(data)}
    feats = embed_splits(sets, name, settings)
    num_states = hidden_state_count(name)
    width = len(feats["train"][0]["embedding"])
    if width % num_states:
        raise RuntimeError(f"{name}: {width} pooled values per clip do not split into {num_states} hidden states")
    config = ProbeConfig(
        num_states=num_states, state_dim=width // num_states,
        id2label=dict(enumerate(data.label_names)), label2id={n: i for i, n in enumerate(data.label_names)},
        encoder_name_or_path=str(name), pooling=settings.pooling, speaker_norm=settings.speaker_norm,
        **{k: v for k, v in model_cfg.items() if k != "family"},
    )
    model = ProbeForAudioClassification(config)
    tcfg = TrainerConfig.from_dict({"seed": int(cfg.seed), **section(cfg, "trainer")})
    loaders = {split: _loader(ds, tcfg, train=split == "train") for split, ds in feats.items()}
    trainer = Trainer(model, tcfg, out, class_weights=balanced_class_weights(feats["train"]["label"],
                                                                             len(data.label_names)))
    result = trainer.fit(loaders["train"], loaders.get("validation"), resume=bool(cfg.get("resume", False)))
    best = trainer.unwrapped_model
    logger.info("probe layer weights: %s", np.round(best.layer_distribution().detach().cpu().numpy(), 3).tolist())
    predictions = {}
    for split, loader in loaders.items():
        if split == "train":
            continue
        clip_ids, logits, _ = trainer.predict(loader)
        predictions[split] = (sets[split].select(clip_ids.tolist()), _softmax(logits))

    def save(model_dir: Path):
        best.save_pretrained(model_dir)

    return Outcome(predictions, save, history=result.history, best_epoch=result.best_epoch,
                   train_seconds=result.train_seconds, num_parameters=count_parameters(best), base_model=str(name))


__all__ = ["HEADS", "MODEL_TYPE", "ProbeConfig", "ProbeForAudioClassification", "run_probe"]

"""Head / encoder split of a pretrained audio classifier: which parameters are the task head, frozen-base
warm-up, and the optimizer's head/encoder parameter groups. Found generically (the encoder is the largest
top-level child), so any ``AutoModelForAudioClassification`` checkpoint works, with or without peft."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["encoder_prefix", "fold_target_scale", "freeze_base", "head_module_names", "is_head_parameter",
           "output_layer", "param_groups", "unfreeze_base", "unwrap_peft"]


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def head_module_names(model: nn.Module) -> list[str]:
    """Top-level modules and parameters that are the task head, not the pretrained encoder.

    Found generically: the encoder is the top-level child holding the most parameters (``wav2vec2``,
    ``hubert``, ``wavlm``, ``audio_spectrogram_transformer``, Whisper's ``encoder``); every other child
    (``projector``, ``classifier``, ...) and every direct parameter (``layer_weights``) is head. This is why
    ``projector`` is found even though peft only knows about ``classifier``/``score``.
    """
    model = unwrap_peft(model)
    children = list(model.named_children())
    if not children:
        raise ValueError(f"{type(model).__name__} has no submodules; cannot tell head from encoder")
    sizes = {n: sum(p.numel() for p in c.parameters()) for n, c in children}
    encoder = max(sizes, key=sizes.get)
    heads = [n for n, _ in children if n != encoder]
    heads += [n for n, _ in model.named_parameters(recurse=False)]
    return heads


def _relative_name(model: nn.Module, param_name: str) -> str:
    """Parameter name relative to the transformers model (strips peft's ``base_model.model.`` prefix)."""
    if model is not unwrap_peft(model) and param_name.startswith("base_model.model."):
        return param_name[len("base_model.model."):]
    return param_name


def is_head_parameter(model: nn.Module, param_name: str, heads: Iterable[str] | None = None) -> bool:
    heads = set(heads if heads is not None else head_module_names(model))
    return _relative_name(model, param_name).split(".", 1)[0] in heads


def freeze_base(model: nn.Module) -> None:
    """Train only the head (frozen-base warm-up); remembers what was trainable so unfreeze_base restores it."""
    heads = head_module_names(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if not hasattr(model, "_ser_hf_trainable"):
        model._ser_hf_trainable = trainable
    for name, param in model.named_parameters():
        param.requires_grad = is_head_parameter(model, name, heads) and name in model._ser_hf_trainable


def unfreeze_base(model: nn.Module) -> None:
    """Undo :func:`freeze_base`: exactly the parameters trainable before it (so a frozen feature encoder
    and peft's frozen base weights stay frozen)."""
    trainable = getattr(model, "_ser_hf_trainable", None)
    if trainable is None:
        raise RuntimeError("unfreeze_base() called without freeze_base() on this model")
    for name, param in model.named_parameters():
        param.requires_grad = name in trainable
    del model._ser_hf_trainable


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # biases, norm scales and the layer-sum weights are not weight-decayed (standard practice)
    return param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower()


def param_groups(model: nn.Module, head_lr: float, encoder_lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups: head (classifier/projector/layer weights) and encoder, each with and
    without weight decay. Includes parameters frozen by :func:`freeze_base` (they get no gradient
    until :func:`unfreeze_base`, and torch optimizers skip parameters without gradients), but not ones
    frozen for good (the feature encoder, peft's base weights)."""
    heads = head_module_names(model)
    trainable = getattr(model, "_ser_hf_trainable", None)
    groups: dict[tuple[bool, bool], list] = {(h, d): [] for h in (True, False) for d in (True, False)}
    names: dict[tuple[bool, bool], list] = {k: [] for k in groups}
    for name, param in model.named_parameters():
        if not (param.requires_grad or (trainable is not None and name in trainable)):
            continue
        key = (is_head_parameter(model, name, heads), not _no_decay(name, param))
        groups[key].append(param)
        names[key].append(name)
    out = []
    for (head, decay), params in groups.items():
        if params:
            out.append({
                "params": params,
                "lr": head_lr if head else encoder_lr,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{'head' if head else 'encoder'}{'' if decay else '_no_decay'}",
                "param_names": names[(head, decay)],
            })
    if not out:
        raise ValueError("model has no trainable parameters")
    return out




def encoder_prefix(model: nn.Module) -> str:
    """Parameter-name prefix of the encoder (``wav2vec2``; ``base_model.model.wav2vec2`` under peft)."""
    inner = unwrap_peft(model)
    heads = set(head_module_names(model))
    name = next(n for n, _ in inner.named_children() if n not in heads)
    return f"base_model.model.{name}" if inner is not model else name


def output_layer(model: nn.Module, n_outputs: int) -> nn.Linear:
    """The last ``nn.Linear`` of the model's ``classifier`` (HF audio classifiers, the ser_hf baselines) with
    ``n_outputs`` outputs: the layer whose rows are the model's raw outputs."""
    head = getattr(unwrap_peft(model), "classifier", None)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if isinstance(head, nn.Module) else []
    if not linears or linears[-1].out_features != n_outputs:
        raise ValueError(f"{type(unwrap_peft(model)).__name__}: no 'classifier' ending in a Linear layer with "
                         f"{n_outputs} outputs; cannot fold the target scaling into it")
    return linears[-1]


@torch.no_grad()
def fold_target_scale(model: nn.Module, first: int, mean, std) -> None:
    """Make outputs ``first .. first+len(mean)-1`` (trained on standardised targets ``(y - mean) / std``) return
    the targets' own units: ``W <- W * std``, ``b <- b * std + mean`` on those rows of the output layer, so the
    saved model's raw output IS the rating (window/chunk averaging is linear, so clip averages agree)."""
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    n = first + len(mean)
    layer = output_layer(model, n)
    rows = slice(first, n)
    layer.weight[rows] *= std.to(layer.weight)[:, None]
    if layer.bias is None:
        raise ValueError("the output layer has no bias: cannot add the targets' mean")
    layer.bias[rows] = layer.bias[rows] * std.to(layer.bias) + mean.to(layer.bias)


"""LoRA for pretrained audio classifiers via peft, with the *whole* classification head trained and saved,
and the adapter / merged-model folders that inference loads."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

from ..runfolder import atomic_path, load_safetensors
from ..spec import PeftConfig
from .heads import head_module_names, unwrap_peft
from .loading import ModelLoadError, from_pretrained_checked, load_feature_extractor, resolve_model_source

__all__ = ["HEAD_PARAMETERS_FILE", "PeftSettings", "apply_lora", "default_lora_targets", "head_parameters", "load_adapter",
           "merge_and_save", "save_adapter"]

# The head's bare parameters (``layer_weights``) beside the adapter; peft saves modules only.
HEAD_PARAMETERS_FILE = "head_parameters.safetensors"

# The ``peft:`` section's dataclass lives in the torch-free run spec.
PeftSettings = PeftConfig

# Linear layers LoRA adapts by default, by naming convention of the attention blocks.
_ATTENTION_PROJECTIONS = (
    ("q_proj", "k_proj", "v_proj", "out_proj"),  # wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper, SEW, UniSpeech
    ("query", "key", "value"),  # AST and other ViT-style encoders
)



def default_lora_targets(model: nn.Module) -> list[str]:
    """Attention projection names present in the encoder (q/k/v/out_proj or query/key/value)."""
    heads = set(head_module_names(model))
    leaf_names = {
        name.rsplit(".", 1)[-1]
        for name, module in unwrap_peft(model).named_modules()
        if isinstance(module, nn.Linear) and name.split(".", 1)[0] not in heads
    }
    for candidates in _ATTENTION_PROJECTIONS:
        found = [c for c in candidates if c in leaf_names]
        if found:
            return found
    raise ValueError(f"no attention projections found in {type(unwrap_peft(model)).__name__}; "
                     f"pass peft.target_modules explicitly (Linear layer names: {sorted(leaf_names)[:20]})")


def apply_lora(model: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.05,
               target_modules: Sequence[str] | None = None):
    """Wrap ``model`` with LoRA adapters; the whole head (classifier, projector, ...) is trained in full.

    peft only adds ``classifier``/``score`` to ``modules_to_save`` for text tasks; wav2vec2-style models
    also have a randomly initialised ``projector`` that must be trained and saved with the adapter, so
    the head is discovered with :func:`head_module_names` and listed explicitly. A bare head parameter
    (``layer_weights`` of ``use_weighted_layer_sum``) cannot be a ``modules_to_save`` entry: it is made
    trainable here and saved by :func:`save_adapter` in ``head_parameters.safetensors``.
    """
    heads = head_module_names(model)
    module_heads = [h for h in heads if isinstance(getattr(model, h, None), nn.Module)]
    param_heads = [h for h in heads if h not in module_heads]
    targets = list(target_modules) if target_modules else default_lora_targets(model)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
        modules_to_save=module_heads, bias="none",
    )
    peft_model = get_peft_model(model, config)
    # modules_to_save takes modules only: a bare head parameter (use_weighted_layer_sum's layer_weights)
    # would stay frozen at its uniform init. Train it in full; save_adapter stores it beside the adapter.
    for name in param_heads:
        getattr(unwrap_peft(peft_model), name).requires_grad_(True)
    return peft_model


def head_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The head's bare parameters (``layer_weights``), which peft's adapter file does not hold."""
    inner = unwrap_peft(model)
    return {n: p for n, p in inner.named_parameters(recurse=False) if n in head_module_names(inner)}


def save_adapter(peft_model, output_dir: str | os.PathLike, feature_extractor=None) -> Path:
    """Adapter weights (LoRA + full head) and ``adapter_config.json``, plus the base model's config
    (``ser_hf_base_config.json``: head size, labels, overrides) so inference can rebuild the model."""
    out = Path(output_dir)
    peft_model.save_pretrained(out)
    bare = head_parameters(peft_model)
    if bare:
        with atomic_path(out / HEAD_PARAMETERS_FILE) as tmp:
            save_file({n: p.detach().cpu().contiguous() for n, p in bare.items()}, str(tmp))
    (out / "ser_hf_base_config.json").write_text(json.dumps(unwrap_peft(peft_model).config.to_dict(), indent=2))
    if feature_extractor is not None:
        feature_extractor.save_pretrained(out)
    return out


def merge_and_save(peft_model, output_dir: str | os.PathLike, feature_extractor=None) -> Path:
    """Fold the LoRA weights into the base (in place, as peft does) and save a plain transformers model
    that ``AutoModelForAudioClassification`` and ``pipeline("audio-classification")`` load directly."""
    out = Path(output_dir)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out)
    if feature_extractor is not None:
        feature_extractor.save_pretrained(out)
    return out


def load_adapter(adapter_dir: str | os.PathLike, *, local_files_only: bool | None = None):
    """``(peft_model, feature_extractor)`` from a :func:`save_adapter` folder; the base model named in
    ``adapter_config.json`` must be loadable (local folder or HF cache)."""
    adapter_dir = Path(adapter_dir)
    adapter_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = adapter_cfg.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{adapter_dir / 'adapter_config.json'} names no base_model_name_or_path")
    name, local_only = resolve_model_source(base, local_files_only)
    cfg_path = adapter_dir / "ser_hf_base_config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{adapter_dir} lacks ser_hf_base_config.json; save adapters with ser_hf's save_adapter")
    cfg_dict = json.loads(cfg_path.read_text())
    config = AutoConfig.for_model(**cfg_dict)
    model = from_pretrained_checked(AutoModelForAudioClassification, name, local_only, "base model",
                             config=config, ignore_mismatched_sizes=True)
    peft_model = PeftModel.from_pretrained(model, adapter_dir)
    bare = head_parameters(peft_model)
    if bare:
        path = adapter_dir / HEAD_PARAMETERS_FILE
        if not path.is_file():
            raise ModelLoadError(f"{adapter_dir} lacks {HEAD_PARAMETERS_FILE} (the trained {sorted(bare)}); "
                                 f"save adapters with ser_hf's save_adapter")
        saved = load_safetensors(path)
        if set(saved) != set(bare):
            raise ModelLoadError(f"{path} holds {sorted(saved)}, the model's head parameters are {sorted(bare)}")
        with torch.no_grad():
            for n, p in bare.items():
                p.copy_(saved[n])
    if (adapter_dir / "preprocessor_config.json").is_file():
        feature_extractor = AutoFeatureExtractor.from_pretrained(adapter_dir)
    else:
        feature_extractor = load_feature_extractor(base, local_files_only=local_files_only)
    return peft_model.eval(), feature_extractor



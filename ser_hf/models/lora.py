"""LoRA for pretrained audio classifiers via peft, with the *whole* classification head trained and saved,
and the adapter / merged-model folders that inference loads."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

from ..spec import PeftConfig
from .heads import head_module_names, unwrap_peft
from .loading import ModelLoadError, from_pretrained_checked, load_feature_extractor, resolve_model_source

__all__ = ["PeftSettings", "apply_lora", "default_lora_targets", "load_adapter", "merge_and_save", "save_adapter"]

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
    the head is discovered with :func:`head_module_names` and listed explicitly.
    """
    heads = head_module_names(model)
    module_heads = [h for h in heads if isinstance(getattr(model, h, None), nn.Module)]
    param_heads = [h for h in heads if h not in module_heads]
    if param_heads:
        # modules_to_save takes modules only; a bare head parameter (use_weighted_layer_sum's layer_weights)
        # would stay frozen and unsaved, silently fixed at its uniform init.
        raise ValueError(
            f"LoRA cannot train the head parameter(s) {param_heads} of {type(model).__name__}: set "
            f"model.use_weighted_layer_sum=false with LoRA, or fine-tune the full model"
        )
    targets = list(target_modules) if target_modules else default_lora_targets(model)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
        modules_to_save=module_heads, bias="none",
    )
    return get_peft_model(model, config)


def save_adapter(peft_model, output_dir: str | os.PathLike, feature_extractor=None) -> Path:
    """Adapter weights (LoRA + full head) and ``adapter_config.json``, plus the base model's config
    (``ser_hf_base_config.json``: head size, labels, overrides) so inference can rebuild the model."""
    out = Path(output_dir)
    peft_model.save_pretrained(out)
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
    if (adapter_dir / "preprocessor_config.json").is_file():
        feature_extractor = AutoFeatureExtractor.from_pretrained(adapter_dir)
    else:
        feature_extractor = load_feature_extractor(base, local_files_only=local_files_only)
    return peft_model.eval(), feature_extractor



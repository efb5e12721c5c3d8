"""Pretrained speech transformers for emotion recognition: one import for the parts, which live in

- :mod:`ser_hf.models.loading`: Hub / local-folder loading that fails fast (``load_audio_classifier``);
- :mod:`ser_hf.models.heads`: head / encoder split, frozen-base warm-up, head/encoder parameter groups;
- :mod:`ser_hf.models.lora`: LoRA via peft with the whole head trained, adapter and merged folders;
- :mod:`ser_hf.models.batching`: crops, chunks, padding, length-grouped batches, the audio DataLoader.

The ``model.family=transformer`` runner that wires them into the Trainer is
:mod:`ser_hf.families.transformer`.
"""

from .batching import (AudioCollator, ClipDataset, LengthGroupedBatchSampler, audio_lengths, chunk_bounds,
                       chunk_clip, featurize, is_waveform_extractor, length_sorted_batches, make_audio_loader,
                       padding_fraction, uses_attention_mask)
from .heads import (encoder_prefix, freeze_base, head_module_names, is_head_parameter, param_groups, unfreeze_base,
                    unwrap_peft)
from .loading import (DEFAULT_HUB_PROBE_TIMEOUT_S, HUB_PROBE_TIMEOUT_ENV, ModelLoadError, from_pretrained_checked,
                      hub_offline, load_audio_classifier, load_feature_extractor, resolve_model_source)
from .lora import PeftSettings, apply_lora, default_lora_targets, load_adapter, merge_and_save, save_adapter

__all__ = [
    "apply_lora", "audio_lengths", "AudioCollator", "chunk_bounds", "chunk_clip", "ClipDataset",
    "DEFAULT_HUB_PROBE_TIMEOUT_S", "default_lora_targets", "encoder_prefix", "featurize", "freeze_base",
    "from_pretrained_checked", "head_module_names", "HUB_PROBE_TIMEOUT_ENV", "hub_offline", "is_head_parameter",
    "is_waveform_extractor", "length_sorted_batches", "LengthGroupedBatchSampler", "load_adapter",
    "load_audio_classifier", "load_feature_extractor", "make_audio_loader", "merge_and_save", "ModelLoadError",
    "padding_fraction", "param_groups", "PeftSettings", "resolve_model_source", "save_adapter", "unfreeze_base",
    "unwrap_peft", "uses_attention_mask",
]

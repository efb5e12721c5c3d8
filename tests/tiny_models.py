"""Tiny randomly-initialised speech models saved like Hub checkpoints, for fast offline tests.

They mirror the two families users fine-tune: a wav2vec2-base-like model (group-norm feature
encoder, feature extractor *without* attention masks) and a large-like model (layer-norm feature
encoder + stable layer norm, extractor *with* attention masks, as wav2vec2-large-lv60 / HuBERT-large /
WavLM); plus log-mel models (Whisper encoder, AST) whose extractors pad to a fixed length. The
convolutional front end keeps wav2vec2's real kernels and strides (320 samples per frame
at 16 kHz) with few channels, so frame counts and padding behave as in the real models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForAudioClassification,
)

_TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=48,
    conv_dim=(16, 16, 16, 16, 16, 16, 16),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    classifier_proj_size=16,
    vocab_size=8,
    mask_time_prob=0.0,  # no SpecAugment in tiny tests: keeps train/eval outputs comparable
)


def _geometry(attention_mask: bool) -> dict:
    # wav2vec2-base: group norm, no attention mask; large-lv60 / HuBERT-large / WavLM: layer norm + masks
    if attention_mask:
        return {"feat_extract_norm": "layer", "do_stable_layer_norm": True}
    return {"feat_extract_norm": "group", "do_stable_layer_norm": False}


def _save(model, out_dir: Path, attention_mask: bool) -> Path:
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
        return_attention_mask=attention_mask,
    ).save_pretrained(out_dir)
    return out_dir


def tiny_wav2vec2(out_dir, *, attention_mask: bool = False, seed: int = 0, **overrides) -> Path:
    """A pretrained-style (headless) tiny Wav2Vec2Model + Wav2Vec2FeatureExtractor in ``out_dir``."""
    torch.manual_seed(seed)
    config = Wav2Vec2Config(**{**_TINY, **_geometry(attention_mask), **overrides})
    return _save(Wav2Vec2Model(config).eval(), out_dir, attention_mask)


def tiny_hubert(out_dir, *, attention_mask: bool = True, seed: int = 0, **overrides) -> Path:
    """A pretrained-style (headless) tiny HubertModel + Wav2Vec2FeatureExtractor in ``out_dir``."""
    torch.manual_seed(seed)
    config = HubertConfig(**{**_TINY, **_geometry(attention_mask), **overrides})
    return _save(HubertModel(config).eval(), out_dir, attention_mask)


def tiny_whisper(out_dir, *, seed: int = 0) -> Path:
    """A tiny Whisper-encoder audio classifier (log-mel ``input_features``, fixed 30 s input) + its extractor."""
    torch.manual_seed(seed)
    config = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, decoder_layers=1,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=16,
                           classifier_proj_size=8, num_labels=2)
    out_dir = Path(out_dir)
    WhisperForAudioClassification(config).eval().save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=16).save_pretrained(out_dir)
    return out_dir


def tiny_ast(out_dir, *, seed: int = 0) -> Path:
    """A tiny Audio Spectrogram Transformer classifier (log-mel frames as ``input_values``) + its extractor."""
    torch.manual_seed(seed)
    config = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       num_mel_bins=16, max_length=64, num_labels=2)
    out_dir = Path(out_dir)
    ASTForAudioClassification(config).eval().save_pretrained(out_dir)
    ASTFeatureExtractor(num_mel_bins=16, max_length=64).save_pretrained(out_dir)
    return out_dir

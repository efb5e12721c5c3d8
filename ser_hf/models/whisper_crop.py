"""Whisper encoders cropped to short clips, through standard config only.

transformers' ``WhisperEncoder`` insists on exactly ``2 * max_source_positions`` mel frames (30 s,
3,000 frames for every released checkpoint), so a 2 s EmoDB clip is ~93 % padding. Cropping sets

- ``config.max_source_positions`` = encoder frames of ``seconds`` (50 per second), with the
  encoder's sinusoidal ``embed_positions`` sliced to its first rows (exactly what those frames got
  at 30 s), and
- the ``WhisperFeatureExtractor``'s ``chunk_length`` = ``seconds`` (``n_samples``,
  ``nb_max_frames`` follow), so it pads/truncates every batch to that length,

so a saved cropped model is a plain transformers folder: ``pipeline("audio-classification")``,
:mod:`ser_hf.inference` and ``from_pretrained`` read the same length from ``config.json`` and
``preprocessor_config.json``. ``seconds`` is whole seconds (the extractor computes
``n_samples = chunk_length * sampling_rate`` and needs an integer); a fractional duration is
rounded up.
"""

from __future__ import annotations

import logging
import math

from torch import nn

logger = logging.getLogger(__name__)


def is_whisper(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", None) == "whisper"


def crop_seconds(max_duration_s: float | None) -> int | None:
    """Whole seconds of the cropped input (rounded up), None for no crop."""
    if max_duration_s is None:
        return None
    if max_duration_s <= 0:
        raise ValueError(f"max_duration_s must be > 0 to crop a Whisper encoder, got {max_duration_s}")
    return max(1, math.ceil(float(max_duration_s) - 1e-9))


def _encoder(model: nn.Module):
    """The WhisperEncoder inside a Whisper classifier / seq2seq model / bare encoder (peft-wrapped too)."""
    inner = model
    get_base = getattr(inner, "get_base_model", None)
    if get_base is not None:
        inner = get_base()
    if type(inner).__name__ == "WhisperEncoder":
        return inner
    if hasattr(inner, "get_encoder"):
        return inner.get_encoder()
    return getattr(inner, "encoder")


def encoder_frames(model: nn.Module) -> int:
    """Positions (encoder output frames) the model accepts: 1500 for a 30 s Whisper."""
    return _encoder(model).embed_positions.num_embeddings


def crop_whisper_model(model: nn.Module, seconds: int) -> nn.Module:
    """Crop the Whisper encoder of ``model`` to ``seconds`` of input, in place; returns ``model``.

    A model already at (or below) that length is left as it is.
    """
    encoder = _encoder(model)
    positions = int(seconds) * 50  # 100 mel frames/s, conv2 stride 2
    old = encoder.embed_positions
    if positions >= old.num_embeddings:
        return model
    new = nn.Embedding(positions, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    new.weight.data.copy_(old.weight.data[:positions])
    new.weight.requires_grad_(old.weight.requires_grad)
    encoder.embed_positions = new
    encoder.max_source_positions = positions
    encoder.config.max_source_positions = positions  # the config object shared with the outer model
    outer = getattr(model, "config", None)
    if outer is not None and outer is not encoder.config:
        outer.max_source_positions = positions
    return model


def crop_whisper_extractor(feature_extractor, seconds: int):
    """Make a ``WhisperFeatureExtractor`` pad/truncate to ``seconds`` (in place); returns it."""
    seconds = int(seconds)
    if seconds >= feature_extractor.chunk_length:
        return feature_extractor
    feature_extractor.chunk_length = seconds
    feature_extractor.n_samples = seconds * feature_extractor.sampling_rate
    feature_extractor.nb_max_frames = feature_extractor.n_samples // feature_extractor.hop_length
    return feature_extractor


def crop_whisper(model: nn.Module, feature_extractor, max_duration_s: float | None):
    """``(model, feature_extractor)`` cropped to ``max_duration_s`` (rounded up to whole seconds)
    when ``model`` is a Whisper model; anything else, or ``max_duration_s=None``, passes unchanged."""
    seconds = crop_seconds(max_duration_s)
    if seconds is None or not is_whisper(getattr(_maybe_base(model), "config", None) or model):
        return model, feature_extractor
    before = encoder_frames(model)
    crop_whisper_model(model, seconds)
    crop_whisper_extractor(feature_extractor, seconds)
    if encoder_frames(model) != before:
        logger.info("Whisper encoder cropped to %d s of input (%d -> %d encoder frames)",
                    seconds, before, encoder_frames(model))
    return model, feature_extractor


def fixed_input_chunk_s(feature_extractor, chunk_s: float | None) -> float | None:
    """Chunk length for scoring long clips with a fixed-length Whisper extractor: a chunk longer than
    the extractor's ``chunk_length`` would be truncated to it, so chunks are capped at that length."""
    length = getattr(feature_extractor, "chunk_length", None)
    if type(feature_extractor).__name__ != "WhisperFeatureExtractor" or not length or not chunk_s:
        return chunk_s
    return min(float(chunk_s), float(length))


def _maybe_base(model):
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model


__all__ = ["crop_seconds", "crop_whisper", "crop_whisper_extractor", "crop_whisper_model", "encoder_frames",
           "fixed_input_chunk_s", "is_whisper"]

"""Utterance embeddings from a pretrained speech encoder's hidden states, for classic classifiers.

``extract_embeddings`` adds an ``embedding`` column (float32 vector per clip) to a decoded dataset:
hidden states of the chosen layer(s), pooled over the clip's real frames (padding never enters the
statistics). Results are cached with the datasets cache under a fingerprint of (dataset, model files,
layers, pooling), so several classifiers and folds reuse one pass through the encoder.

The classifier itself (scaler + SVM / random forest / logistic regression in one sklearn Pipeline,
fitted on the training split only) is ``ser_hf.models.classic.ClassicClassifier``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ser_hf.models.whisper_crop import crop_seconds, crop_whisper

logger = logging.getLogger(__name__)

# Bump when the computation changes, so stale cached embeddings are not reused.
EMBEDDINGS_VERSION = 1
LAYER_CHOICES = ("last", "mean", "weighted")
POOLINGS = ("mean", "mean_std")


@dataclass
class EmbeddingSettings:
    """The recipe's ``embeddings:`` section."""

    name_or_path: str | None = None  # Hub id or local folder of the encoder
    layers: Any = "last"  # "last" | "mean" | "weighted" | int | list[int]
    pooling: str = "mean"
    batch_size: int = 8
    cache: bool = True
    max_duration_s: float | None = None  # Whisper: encoder cropped to this many (whole) seconds; longer clips truncated

    @classmethod
    def from_dict(cls, d: dict | None) -> "EmbeddingSettings":
        d = dict(d or {})
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the embeddings section; valid keys: {sorted(valid)}")
        out = cls(**d)
        _check_layers(out.layers)
        _check_pooling(out.pooling)
        return out


def _check_layers(layers) -> None:
    if isinstance(layers, str):
        if layers not in LAYER_CHOICES:
            raise ValueError(f"layers={layers!r}: use one of {LAYER_CHOICES}, a layer index or a list of indices")
    elif isinstance(layers, (list, tuple)):
        if not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            raise ValueError(f"layers={layers!r}: a list of layers must hold layer indices (ints)")
    elif not isinstance(layers, int) or isinstance(layers, bool):
        raise ValueError(f"layers={layers!r}: use one of {LAYER_CHOICES}, a layer index or a list of indices")


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}: use one of {POOLINGS}")


# --------------------------------------------------------------------------------------------------
# Pooling and layer selection (pure tensor functions, tested directly)
# --------------------------------------------------------------------------------------------------

def masked_pool(hidden: torch.Tensor, frame_mask: torch.Tensor | None, pooling: str = "mean") -> torch.Tensor:
    """Pool (B, T, D) frames over the real frames only: mean, or mean ‖ std (population std)."""
    _check_pooling(pooling)
    hidden = hidden.float()
    if frame_mask is None:
        frame_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    m = frame_mask.to(hidden.dtype).unsqueeze(-1)
    count = m.sum(dim=1).clamp_min(1.0)
    mean = (hidden * m).sum(dim=1) / count
    if pooling == "mean":
        return mean
    var = (((hidden - mean.unsqueeze(1)) ** 2) * m).sum(dim=1) / count
    return torch.cat([mean, var.clamp_min(0).sqrt()], dim=-1)


def select_layers(hidden_states: Sequence[torch.Tensor], layers, layer_weights: torch.Tensor | None = None):
    """Frame features from the (L+1) hidden states (index 0 = encoder input, L = last layer).

    Returns a list of (B, T, D) tensors, pooled separately and concatenated (several indices), or one.
    ``"mean"``: average of the L transformer layers. ``"weighted"``: softmax(layer_weights)-weighted sum
    over all L+1 states, exactly as a checkpoint fine-tuned with ``use_weighted_layer_sum=True`` does.
    """
    _check_layers(layers)
    n = len(hidden_states)
    if layers == "last":
        return [hidden_states[-1]]
    if layers == "mean":
        return [torch.stack(list(hidden_states[1:] if n > 1 else hidden_states), dim=0).mean(dim=0)]
    if layers == "weighted":
        if layer_weights is None or layer_weights.numel() != n:
            raise ValueError("layers='weighted' needs a checkpoint fine-tuned with use_weighted_layer_sum=True "
                             "(its learned layer_weights); use layers='mean' for equal weights")
        w = torch.softmax(layer_weights.float(), dim=-1).view(-1, 1, 1, 1)
        return [(torch.stack(list(hidden_states), dim=0).float() * w).sum(dim=0)]
    indices = [layers] if isinstance(layers, int) else list(layers)
    for i in indices:
        if not -n <= i < n:
            raise ValueError(f"layer index {i} out of range: this model has hidden states 0..{n - 1} "
                             f"(0 = encoder input, {n - 1} = last layer)")
    return [hidden_states[i] for i in indices]


# --------------------------------------------------------------------------------------------------
# Encoder loading
# --------------------------------------------------------------------------------------------------

class _Encoder:
    """A pretrained encoder ready for hidden-state extraction (loaded lazily, only on a cache miss)."""

    def __init__(self, name_or_path: str, layers, device: str | None, local_files_only: bool | None,
                 max_duration_s: float | None = None):
        from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification

        from ser_hf.models.transformer import (
            _from_pretrained,
            _is_waveform_extractor,
            head_module_names,
            load_feature_extractor,
            resolve_model_source,
        )

        name, local_only = resolve_model_source(name_or_path, local_files_only)
        self.feature_extractor = load_feature_extractor(name, local_files_only=local_only)
        self.waveform = _is_waveform_extractor(self.feature_extractor)
        self.layer_weights = None
        if layers == "weighted":
            config = _from_pretrained(AutoConfig, name, local_only, "config")
            if not getattr(config, "use_weighted_layer_sum", False):
                raise ValueError(
                    f"layers='weighted' uses the learned layer weights of a checkpoint fine-tuned with "
                    f"use_weighted_layer_sum=True; {name} has none. Use layers='mean' (equal weights) instead"
                )
            clf = _from_pretrained(AutoModelForAudioClassification, name, local_only, "model")
            self.layer_weights = clf.layer_weights.detach().clone()
            encoder_name = [n for n, _ in clf.named_children() if n not in head_module_names(clf)][0]
            model = getattr(clf, encoder_name)
        else:
            model = _from_pretrained(AutoModel, name, local_only, "model")
        if getattr(model.config, "is_encoder_decoder", False):  # Whisper & co: the encoder only
            model = model.get_encoder()
        model, self.feature_extractor = crop_whisper(model, self.feature_extractor, max_duration_s)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        if self.layer_weights is not None:
            self.layer_weights = self.layer_weights.to(self.device)

    def frame_mask(self, num_frames: int, lengths: torch.Tensor, padded_len: int) -> torch.Tensor:
        """Which output frames come from real audio (not padding)."""
        if self.waveform and hasattr(self.model, "_get_feat_extract_output_lengths"):
            frames = self.model._get_feat_extract_output_lengths(lengths).to(torch.long)
        else:
            # spectrogram encoders padded to a fixed input length (Whisper: 30 s -> 1500 frames):
            # frames are evenly spaced in time, so the real ones are the leading share
            frames = torch.ceil(num_frames * lengths.float() / max(padded_len, 1)).to(torch.long)
        frames = frames.clamp(1, num_frames)
        return torch.arange(num_frames, device=frames.device)[None, :] < frames[:, None]

    @torch.inference_mode()
    def __call__(self, arrays: list[np.ndarray], sampling_rate: int, layers, pooling: str) -> np.ndarray:
        from ser_hf.models.transformer import featurize

        batch = featurize(self.feature_extractor, arrays, sampling_rate)
        inputs = {k: v.to(self.device) for k, v in batch.items()}
        out = self.model(**inputs, output_hidden_states=True)
        hidden_states = out.hidden_states
        num_frames = hidden_states[-1].shape[1]
        lengths = torch.tensor([len(a) for a in arrays], device=self.device)
        if self.waveform:
            mask = self.frame_mask(num_frames, lengths, max(len(a) for a in arrays))
        elif getattr(self.feature_extractor, "n_samples", None):  # fixed-length time axis (Whisper)
            mask = self.frame_mask(num_frames, lengths, int(self.feature_extractor.n_samples))
        else:  # patch tokens (AST): no time axis to mask, pool over all tokens
            mask = None
        pooled = [masked_pool(h, mask, pooling) for h in select_layers(hidden_states, layers, self.layer_weights)]
        return torch.cat(pooled, dim=-1).float().cpu().numpy()


def _load_encoder(name_or_path: str, layers, device, local_files_only, max_duration_s=None) -> _Encoder:
    return _Encoder(name_or_path, layers, device, local_files_only, max_duration_s)


# --------------------------------------------------------------------------------------------------
# Cache identity
# --------------------------------------------------------------------------------------------------

def model_identity(name_or_path: str | os.PathLike) -> dict:
    """What makes a model's outputs what they are, cheaply: its folder's files (name, size, mtime) and
    config, or the Hub snapshot (commit) it resolves to in the local cache."""
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if not path.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            if isinstance(cached, str):
                path = Path(cached).parent  # .../snapshots/<commit>
        except ValueError:
            pass
    if not path.is_dir():
        return {"name": name}
    files = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in path.iterdir()
        if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".pt"}
    )
    config = (path / "config.json").read_text() if (path / "config.json").is_file() else ""
    return {"path": str(path.resolve()), "files": files, "config": config}


def embeddings_fingerprint(ds, model_name_or_path, layers, pooling, max_duration_s=None) -> str:
    from datasets.fingerprint import Hasher

    layers_key = list(layers) if isinstance(layers, (list, tuple)) else layers
    crop = {"crop_s": crop_seconds(max_duration_s)} if max_duration_s is not None else {}  # old keys unchanged
    return Hasher.hash({**crop,
        "dataset": ds._fingerprint,
        "model": model_identity(model_name_or_path),
        "layers": layers_key,
        "pooling": pooling,
        "version": EMBEDDINGS_VERSION,
    })


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------

def extract_embeddings(
    ds,
    model_name_or_path: str | os.PathLike,
    layers="last",
    pooling: str = "mean",
    batch_size: int = 8,
    cache: bool = True,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    local_files_only: bool | None = None,
    column: str = "audio",
    max_duration_s: float | None = None,
):
    """``ds`` plus an ``embedding`` column (float32 vector per clip).

    ``layers``: ``"last"``, a hidden-state index (0 = encoder input), a list of indices (pooled
    vectors concatenated), ``"mean"`` (average of all transformer layers) or ``"weighted"`` (learned
    layer weights of a checkpoint fine-tuned with ``use_weighted_layer_sum=True``). ``pooling``:
    ``"mean"`` or ``"mean_std"`` (mean ‖ std), over real frames only. ``max_duration_s``: a Whisper
    encoder runs on that many (whole) seconds instead of 30 (:mod:`ser_hf.models.whisper_crop`);
    longer clips are truncated to it.

    Embeddings do not depend on which other clips share a batch: models with attention masks get
    masked batches; models without (wav2vec2-base) only batch clips of identical length, since zero
    padding would change their outputs. Caching: datasets' own cache, under
    :func:`embeddings_fingerprint`; a dataset held only in memory has no cache folder, so pass
    ``cache_dir`` to cache it there.
    """
    import datasets

    from ser_hf.models.transformer import length_sorted_batches

    _check_layers(layers)
    _check_pooling(pooling)
    if column not in ds.column_names:
        raise KeyError(f"dataset has no {column!r} column (columns: {ds.column_names}); "
                       f"load it with ser_hf.data.load_corpus, which decodes the audio")
    if "embedding" in ds.column_names:
        raise ValueError("dataset already has an 'embedding' column; remove it first "
                         "(ds.remove_columns('embedding'))")
    fingerprint = embeddings_fingerprint(ds, model_name_or_path, layers, pooling, max_duration_s)
    cache_file_name = None
    if cache and not ds.cache_files:
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            cache_file_name = str(Path(cache_dir) / f"embeddings-{fingerprint}.arrow")
        else:
            logger.info("dataset is in memory and no cache_dir was given: embeddings are not cached")

    state: dict[str, _Encoder] = {}

    def embed(audios: list[dict]) -> dict[str, list]:
        if "encoder" not in state:
            state["encoder"] = _load_encoder(os.fspath(model_name_or_path), layers, device, local_files_only,
                                             max_duration_s)
        encoder = state["encoder"]
        rates = {int(a["sampling_rate"]) for a in audios}
        if len(rates) != 1:
            raise ValueError(f"mixed sampling rates {sorted(rates)} in the dataset; resample to one rate")
        rate = rates.pop()
        arrays = [np.asarray(a["array"], dtype=np.float32) for a in audios]
        exact = encoder.waveform and not getattr(encoder.feature_extractor, "return_attention_mask", False)
        out: list[np.ndarray | None] = [None] * len(arrays)
        for group in length_sorted_batches([len(a) for a in arrays], batch_size, exact_lengths=exact):
            vectors = encoder([arrays[i] for i in group], rate, layers, pooling)
            for i, v in zip(group, vectors):
                out[i] = v.astype(np.float32)
        return {"embedding": out}

    features = datasets.Features({"embedding": datasets.List(datasets.Value("float32"))})
    embedded = ds.map(
        embed,
        batched=True,
        batch_size=max(batch_size * 8, 64),  # rows per map call, sorted by length inside
        input_columns=[column],
        remove_columns=ds.column_names,  # the cache holds the embeddings only, not another copy of the audio
        features=features,
        new_fingerprint=fingerprint,
        load_from_cache_file=cache,
        cache_file_name=cache_file_name,
        desc=f"embeddings ({Path(os.fspath(model_name_or_path)).name}, layers={layers}, {pooling})",
    )
    return datasets.concatenate_datasets([ds, embedded], axis=1)


def embedding_matrix(ds) -> np.ndarray:
    """The ``embedding`` column as a (N, D) float32 array for sklearn."""
    return np.asarray(ds.with_format("numpy")["embedding"], dtype=np.float32)


def save_embedding_config(output_dir: str | os.PathLike, model_name_or_path, layers, pooling) -> Path:
    """``embedding_config.json`` beside a classic model, so inference recomputes the same features."""
    path = Path(output_dir) / "embedding_config.json"
    path.write_text(json.dumps({
        "name_or_path": os.fspath(model_name_or_path),
        "layers": list(layers) if isinstance(layers, (list, tuple)) else layers,
        "pooling": pooling,
    }, indent=2))
    return path


__all__ = [
    "EMBEDDINGS_VERSION", "EmbeddingSettings", "embedding_matrix", "embeddings_fingerprint",
    "extract_embeddings", "masked_pool", "model_identity", "save_embedding_config", "select_layers",
]

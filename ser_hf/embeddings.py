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
from pathlib import Path
from typing import Any, Sequence

import datasets
import numpy as np
import torch
from datasets.fingerprint import Hasher
from huggingface_hub import try_to_load_from_cache
from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification

from .features import speaker_normalise
from .models.batching import featurize, is_waveform_extractor, length_sorted_batches
from .models.heads import head_module_names
from .models.loading import from_pretrained_checked, load_feature_extractor, resolve_model_source
from .models.whisper_crop import crop_seconds, crop_whisper

from .spec import (EMBEDDING_LAYER_CHOICES, EMBEDDING_POOLINGS, EmbeddingConfig, check_embedding_layers,
                   check_embedding_pooling)


logger = logging.getLogger(__name__)

# Bump when the computation changes, so stale cached embeddings are not reused.
EMBEDDINGS_VERSION = 1
LAYER_CHOICES = EMBEDDING_LAYER_CHOICES
POOLINGS = EMBEDDING_POOLINGS


# The ``embeddings:`` section's dataclass lives in the torch-free run spec.
EmbeddingSettings = EmbeddingConfig


# --------------------------------------------------------------------------------------------------
# Pooling and layer selection (pure tensor functions, tested directly)
# --------------------------------------------------------------------------------------------------

def masked_pool(hidden: torch.Tensor, frame_mask: torch.Tensor | None, pooling: str = "mean") -> torch.Tensor:
    """Pool (B, T, D) frames over the real frames only: mean, or mean ‖ std (population std)."""
    check_embedding_pooling(pooling)
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
    ``"all"``: every state, each pooled separately (the input of the probe family's learned layer sum).
    """
    check_embedding_layers(layers)
    n = len(hidden_states)
    if layers == "all":
        return list(hidden_states)
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

class Encoder:
    """A pretrained encoder ready for hidden-state extraction (loaded lazily, only on a cache miss)."""

    def __init__(self, name_or_path: str, layers, device: str | None, local_files_only: bool | None,
                 max_duration_s: float | None = None):
        name, local_only = resolve_model_source(name_or_path, local_files_only)
        self.feature_extractor = load_feature_extractor(name, local_files_only=local_only)
        self.waveform = is_waveform_extractor(self.feature_extractor)
        self.layer_weights = None
        if layers == "weighted":
            config = from_pretrained_checked(AutoConfig, name, local_only, "config")
            if not getattr(config, "use_weighted_layer_sum", False):
                raise ValueError(
                    f"layers='weighted' uses the learned layer weights of a checkpoint fine-tuned with "
                    f"use_weighted_layer_sum=True; {name} has none. Use layers='mean' (equal weights) instead"
                )
            clf = from_pretrained_checked(AutoModelForAudioClassification, name, local_only, "model")
            self.layer_weights = clf.layer_weights.detach().clone()
            encoder_name = [n for n, _ in clf.named_children() if n not in head_module_names(clf)][0]
            model = getattr(clf, encoder_name)
        else:
            model = from_pretrained_checked(AutoModel, name, local_only, "model")
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


def hidden_state_count(name_or_path: str | os.PathLike, local_files_only: bool | None = None) -> int:
    """How many hidden states (encoder input + one per layer) the encoder returns: the rows of ``layers="all"``."""
    name, local_only = resolve_model_source(name_or_path, local_files_only)
    config = from_pretrained_checked(AutoConfig, name, local_only, "config")
    layers = config.encoder_layers if getattr(config, "is_encoder_decoder", False) else config.num_hidden_layers
    return int(layers) + 1


def load_encoder(name_or_path: str, layers, device, local_files_only, max_duration_s=None) -> Encoder:
    return Encoder(name_or_path, layers, device, local_files_only, max_duration_s)


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
    check_embedding_layers(layers)
    check_embedding_pooling(pooling)
    if column not in ds.column_names:
        raise KeyError(f"dataset has no {column!r} column (columns: {ds.column_names}); "
                       f"load it with ser_hf.data.load_corpus, which decodes the audio")
    if "embedding" in ds.column_names:
        raise ValueError("dataset already has an 'embedding' column; remove it first "
                         "(ds.remove_columns('embedding'))")
    if layers == "last" or not isinstance(layers, str):
        # single states (and lists of them) are rows of the all-states embedding: one cached encoder pass
        # then serves every layer choice, the probe family and every fold
        return _states_of_all(ds, model_name_or_path, layers, pooling, batch_size, cache, cache_dir=cache_dir,
                              device=device, local_files_only=local_files_only, column=column,
                              max_duration_s=max_duration_s)
    source = _selection_source(ds, column) if cache else None
    if source is not None:
        # ds is a selection (a split, a fold) of an on-disk corpus: embed the whole corpus file once and
        # take this selection's rows, so every fold and recipe shares one encoder pass.
        whole, rows = source
        embedded = extract_embeddings(whole, model_name_or_path, layers, pooling, batch_size, cache,
                                      device=device, local_files_only=local_files_only, column=column,
                                      max_duration_s=max_duration_s)
        picked = embedded.select_columns(["embedding"]).select(rows).flatten_indices()
        return datasets.concatenate_datasets([ds, picked], axis=1)
    fingerprint = embeddings_fingerprint(ds, model_name_or_path, layers, pooling, max_duration_s)
    cache_file_name = None
    if cache and not ds.cache_files:
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            cache_file_name = str(Path(cache_dir) / f"embeddings-{fingerprint}.arrow")
        else:
            logger.info("dataset is in memory and no cache_dir was given: embeddings are not cached")

    state: dict[str, Encoder] = {}

    def embed(audios: list[dict]) -> dict[str, list]:
        if "encoder" not in state:
            state["encoder"] = load_encoder(os.fspath(model_name_or_path), layers, device, local_files_only,
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


def _states_of_all(ds, model_name_or_path, layers, pooling, batch_size, cache, **kwargs):
    """``extract_embeddings`` for ``"last"``, an index or a list of indices, sliced from ``layers="all"``."""
    full = extract_embeddings(ds, model_name_or_path, "all", pooling, batch_size, cache, **kwargs)
    n = hidden_state_count(model_name_or_path, kwargs.get("local_files_only"))
    X = embedding_matrix(full)
    X = X[:, state_columns(layers, n, X.shape[1], model_name_or_path)]
    return full.remove_columns("embedding").add_column(
        "embedding", list(X), feature=datasets.List(datasets.Value("float32")))


def state_columns(layers, num_states: int, width: int, model_name: Any = "the encoder") -> np.ndarray:
    """Columns of an all-states embedding (``layers="all"``: ``num_states`` pooled vectors side by side,
    ``width`` values in all) that hold ``layers`` (``"last"``, an index or a list of indices), in order."""
    indices = [num_states - 1] if layers == "last" else [layers] if isinstance(layers, int) else list(layers)
    for i in indices:
        if not -num_states <= i < num_states:
            raise ValueError(f"layer index {i} out of range: this model has hidden states 0..{num_states - 1} "
                             f"(0 = encoder input, {num_states - 1} = last layer)")
    if width % num_states:
        raise RuntimeError(f"{model_name}: {width} pooled values per clip are not {num_states} hidden states")
    per_state = width // num_states
    return np.concatenate([np.arange(per_state) + (i % num_states) * per_state for i in indices])


def embed_splits(sets: dict[str, Any], name_or_path, settings, **kwargs) -> dict[str, Any]:
    """``extract_embeddings`` for each split with ``settings`` (an ``EmbeddingSettings``), the audio
    dropped, and ``settings.speaker_norm`` applied per split (each speaker's statistics from its own
    clips, never labels). Shared by the embedding and probe families."""
    out = {}
    for split, ds in sets.items():
        emb = extract_embeddings(ds, name_or_path, settings.layers, settings.pooling, settings.batch_size,
                                 settings.cache, max_duration_s=settings.max_duration_s, **kwargs)
        emb = emb.remove_columns([c for c in ("audio",) if c in emb.column_names])
        if settings.speaker_norm:
            emb = speaker_normalise(emb, column="embedding")
        out[split] = emb
    return out


def _selection_source(ds, column: str):
    """``(whole, rows)`` when ``ds`` holds rows of one on-disk dataset file ``whole`` (what ``load_corpus``
    splits are: selections of the decoded corpus), with ``whole[rows[i]]`` the clip of ``ds[i]``; else None.

    Rows are matched by the unique ``file`` column, never by position, and one clip's audio length is
    checked, so a ds whose audio differs from its file (a transform in memory) is embedded as itself.
    ``Dataset.from_file`` gives the file a fingerprint of its own, identical for every selection of it.
    """
    files = ds.cache_files
    if len(files) != 1 or "file" not in ds.column_names or len(ds) == 0:
        return None
    try:
        whole = datasets.Dataset.from_file(files[0]["filename"])
    except (OSError, ValueError):
        return None
    if len(whole) == len(ds) and ds._indices is None:
        return None  # ds is the whole file already
    if column not in whole.column_names or "file" not in whole.column_names:
        return None
    names = whole["file"]
    position = {name: i for i, name in enumerate(names)}
    if len(position) != len(names):
        return None
    try:
        rows = [position[name] for name in ds["file"]]
    except KeyError:
        return None
    try:
        if len(ds[0][column]["array"]) != len(whole[rows[0]][column]["array"]):
            return None
    except (KeyError, TypeError):
        return None
    return whole, rows


def embedding_matrix(ds) -> np.ndarray:
    """The ``embedding`` column as a (N, D) float32 array for sklearn."""
    return np.asarray(ds.with_format("numpy")["embedding"], dtype=np.float32)


def save_embedding_config(output_dir: str | os.PathLike, model_name_or_path, layers, pooling,
                          max_duration_s: float | None = None, speaker_norm: bool = False) -> Path:
    """``embedding_config.json`` beside a classic model, so inference recomputes the same features."""
    path = Path(output_dir) / "embedding_config.json"
    crop = {"max_duration_s": max_duration_s} if max_duration_s is not None else {}
    crop.update({"speaker_norm": True} if speaker_norm else {})
    path.write_text(json.dumps({
        "name_or_path": os.fspath(model_name_or_path),
        "layers": list(layers) if isinstance(layers, (list, tuple)) else layers,
        "pooling": pooling,
        **crop,
    }, indent=2))
    return path


__all__ = [
    "EMBEDDINGS_VERSION", "EmbeddingSettings", "Encoder", "embed_splits", "embedding_matrix", "embeddings_fingerprint",
    "extract_embeddings", "hidden_state_count", "load_encoder", "masked_pool", "model_identity", "save_embedding_config",
    "select_layers", "state_columns",
]

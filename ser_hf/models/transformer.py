"""Pretrained speech transformers (wav2vec2, HuBERT, WavLM, AST, Whisper encoder, ...) for emotion recognition.

Everything goes through ``AutoFeatureExtractor`` + ``AutoModelForAudioClassification`` so any audio
classification checkpoint works, and loading is exactly what a user would type::

    AutoModelForAudioClassification.from_pretrained("facebook/wav2vec2-base", num_labels=7,
                                                    id2label=..., label2id=...)

Also here: LoRA via peft (with the *whole* classification head trained and saved), optimizer parameter
groups (head vs encoder learning rates), frozen-base warm-up, the collate function that turns decoded
clips into model inputs (random crops for training, whole clips or overlapping chunks for evaluation),
a length-grouped batch sampler, and ``run_finetune``, the ``model.family=transformer`` entry point of
``ser_hf.experiment`` that wires them into the shared Trainer.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ser_hf.models.ct2_whisper import source_hub_id
from ser_hf.models.whisper_crop import crop_whisper

logger = logging.getLogger(__name__)

# Seconds to wait for the Hub before declaring it unreachable. huggingface_hub itself retries failed
# connections 5 times with exponential back-off (about 25 s with DNS failing fast, minutes behind a
# firewall that drops packets); a training run should say "no network" in seconds instead.
HUB_PROBE_TIMEOUT_ENV = "SER_HF_HUB_PROBE_TIMEOUT"
DEFAULT_HUB_PROBE_TIMEOUT_S = 5.0

# Linear layers LoRA adapts by default, by naming convention of the attention blocks.
_ATTENTION_PROJECTIONS = (
    ("q_proj", "k_proj", "v_proj", "out_proj"),  # wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper, SEW, UniSpeech
    ("query", "key", "value"),  # AST and other ViT-style encoders
)


class ModelLoadError(OSError):
    """A model (or its feature extractor) could not be loaded; the message says how to fix it."""


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Offline mode as the user set it, read now (huggingface_hub reads its env vars once, at import)."""
    from huggingface_hub import constants

    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def _looks_like_path(name: str) -> bool:
    """A string a user meant as a folder, not a Hub id (``org/name`` is ambiguous and treated as a Hub id)."""
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name.count("/") > 1
        or (len(name) > 1 and name[1] == ":")  # Windows drive
        or os.sep != "/" and os.sep in name
    )


def _how_to_fix(name: str) -> str:
    local = f"/path/to/local/{name.rstrip('/').split('/')[-1] or 'model'}"
    return (
        f"To run without the Hub: on a machine with internet run `hf download {name} --local-dir {local}` "
        f"(or `AutoModelForAudioClassification.from_pretrained('{name}').save_pretrained('{local}')` plus the "
        f"same for AutoFeatureExtractor), copy that folder here and pass it as `model.name_or_path={local}`; "
        f"set HF_HUB_OFFLINE=1 so nothing waits on the network."
    )


def _hub_reachable(timeout_s: float) -> bool:
    """One HEAD request to the Hub endpoint, in a daemon thread so even a hanging DNS lookup cannot block us."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    outcome: dict[str, bool] = {}

    def probe() -> None:
        try:
            get_session().head(constants.ENDPOINT, timeout=timeout_s)
            outcome["ok"] = True
        except Exception:  # any failure to talk to the Hub means: unreachable
            outcome["ok"] = False

    thread = threading.Thread(target=probe, daemon=True, name="ser_hf-hub-probe")
    thread.start()
    thread.join(timeout_s + 1.0)
    return outcome.get("ok", False)


def resolve_model_source(name_or_path: str | os.PathLike, local_files_only: bool | None = None) -> tuple[str, bool]:
    """Decide where ``name_or_path`` loads from, failing fast with a helpful error when it cannot load.

    Returns ``(name_or_path, local_files_only)`` to pass to ``from_pretrained``. A folder must hold a
    ``config.json``; a Hub id is taken from the local HF cache when there, otherwise the Hub must be
    reachable (probed once, ``$SER_HF_HUB_PROBE_TIMEOUT`` seconds, default 5) and offline mode off.
    """
    from huggingface_hub import try_to_load_from_cache

    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            found = sorted(p.name for p in path.iterdir())[:10]
            raise ModelLoadError(
                f"model folder {path} has no config.json (found: {found or 'nothing'}); it must be a folder written "
                f"by save_pretrained (config.json, model.safetensors, preprocessor_config.json). "
                + _how_to_fix("facebook/wav2vec2-base")
            )
        return str(path), True
    if _looks_like_path(name) or path.exists():
        raise ModelLoadError(f"model folder {name} does not exist. " + _how_to_fix("facebook/wav2vec2-base"))

    offline = hub_offline() if local_files_only is None else (local_files_only or hub_offline())
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError as err:  # HFValidationError: not a valid repo id either
        raise ModelLoadError(f"{name!r} is neither an existing model folder nor a valid Hub model id ({err}). "
                             + _how_to_fix("facebook/wav2vec2-base")) from err
    timeout = float(os.environ.get(HUB_PROBE_TIMEOUT_ENV, DEFAULT_HUB_PROBE_TIMEOUT_S))
    if isinstance(cached, str):  # in the HF cache: refreshed from the Hub when reachable, else used as is
        if offline:
            return name, True
        if not _hub_reachable(timeout):
            logger.warning("the Hub is unreachable; using the cached copy of %s (set HF_HUB_OFFLINE=1 to skip "
                           "this check)", name)
            return name, True
        return name, False
    if offline:
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and offline mode is on "
            f"(HF_HUB_OFFLINE=1 or local_files_only=True). " + _how_to_fix(name)
        )
    if not _hub_reachable(timeout):
        from huggingface_hub import constants

        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and the Hub ({constants.ENDPOINT}) could not "
            f"be reached (probe timeout {timeout:g} s; no network?). " + _how_to_fix(name)
        )
    return name, False


def _from_pretrained(loader, name: str, local_only: bool, what: str, **kwargs):
    if local_only and hasattr(loader, "_model_mapping"):
        # transformers' Auto model classes look for adapter_config.json without passing local_files_only on
        # (5.24: adapter_kwargs lacks it), so a cached Hub model would wait out the Hub's retries (~25 s)
        kwargs.setdefault("adapter_kwargs", {"local_files_only": True})
    try:
        return loader.from_pretrained(name, local_files_only=local_only, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load the {what} of {name!r}: {err}. " + _how_to_fix(name)) from err


def load_feature_extractor(name_or_path: str | os.PathLike, *, local_files_only: bool | None = None):
    """The checkpoint's feature extractor (``AutoFeatureExtractor``), failing fast like the model loader."""
    from transformers import AutoFeatureExtractor

    name, local_only = resolve_model_source(name_or_path, local_files_only)
    return _from_pretrained(AutoFeatureExtractor, name, local_only, "feature extractor (preprocessor_config.json)")


def load_audio_classifier(
    name_or_path: str | os.PathLike,
    label_names: Sequence[str],
    *,
    freeze_feature_encoder: bool = True,
    gradient_checkpointing: bool = False,
    local_files_only: bool | None = None,
    **config_overrides: Any,
):
    """``(model, feature_extractor)`` for fine-tuning ``name_or_path`` on ``label_names``.

    The head is sized and labelled from the dataset's labels (``id2label``/``label2id``), so saved models
    and ``pipeline("audio-classification")`` report label names. A head of another size in the checkpoint
    (e.g. a model fine-tuned on other emotions) is replaced, with a warning. ``config_overrides`` set
    config attributes (``mask_time_prob``, ``layerdrop``, ``final_dropout``, ``use_weighted_layer_sum``,
    ...); an unknown one is an error. A name that cannot be loaded fails in seconds with a
    :class:`ModelLoadError` saying how to use a local folder.
    """
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

    label_names = [str(n) for n in label_names]
    if len(label_names) < 2 or len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be >= 2 distinct names, got {label_names}")
    name, local_only = resolve_model_source(name_or_path, local_files_only)
    feature_extractor = _from_pretrained(AutoFeatureExtractor, name, local_only,
                                         "feature extractor (preprocessor_config.json)")
    config = _from_pretrained(AutoConfig, name, local_only, "config")
    unknown = sorted(k for k in config_overrides if not hasattr(config, k))
    if unknown:
        raise ValueError(
            f"unknown model config key(s) {unknown} for {type(config).__name__} ({name}); "
            f"valid keys include: {', '.join(sorted(k for k in config.to_dict() if not k.startswith('_'))[:60])}"
        )
    previous = [(getattr(config, "id2label", None) or {})[k] for k in sorted(getattr(config, "id2label", None) or {})]
    id2label = dict(enumerate(label_names))
    relabel = previous != label_names and any(
        a.endswith(("ForSequenceClassification", "ForAudioClassification")) for a in (config.architectures or []))
    model = _from_pretrained(
        AutoModelForAudioClassification, name, local_only, "model",
        num_labels=len(label_names), id2label=id2label, label2id={n: i for i, n in id2label.items()},
        ignore_mismatched_sizes=True, **config_overrides,
    )
    if relabel:
        # ignore_mismatched_sizes re-initialises the output layer only when the class count changes; with the
        # same count the old weights would silently score other classes, so reset it here too
        logger.warning("%s has a classification head for %s; its output layer is re-initialised for %s",
                       name, previous, label_names)
        for head in head_module_names(model):
            module = getattr(model, head)
            for layer in module.modules() if isinstance(module, nn.Module) else ():
                if isinstance(layer, nn.Linear) and layer.out_features == len(label_names):
                    layer.reset_parameters()
    if freeze_feature_encoder:
        if hasattr(model, "freeze_feature_encoder"):
            model.freeze_feature_encoder()
        else:
            logger.info("%s has no convolutional feature encoder to freeze; freeze_feature_encoder ignored",
                        type(model).__name__)
    if gradient_checkpointing:
        if not model.supports_gradient_checkpointing:
            raise ValueError(f"{type(model).__name__} does not support gradient checkpointing; "
                             f"set model.gradient_checkpointing=false")
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, feature_extractor


# --------------------------------------------------------------------------------------------------
# Head / encoder split, freezing, parameter groups
# --------------------------------------------------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
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
    model = _unwrap(model)
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
    if model is not _unwrap(model) and param_name.startswith("base_model.model."):
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


# --------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------

@dataclass
class PeftSettings:
    """The recipe's ``peft:`` section."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the attention projections (see default_lora_targets)

    @classmethod
    def from_dict(cls, d: dict | None) -> "PeftSettings":
        d = dict(d or {})
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the peft section; valid keys: {sorted(valid)}")
        return cls(**d)


def default_lora_targets(model: nn.Module) -> list[str]:
    """Attention projection names present in the encoder (q/k/v/out_proj or query/key/value)."""
    heads = set(head_module_names(model))
    leaf_names = {
        name.rsplit(".", 1)[-1]
        for name, module in _unwrap(model).named_modules()
        if isinstance(module, nn.Linear) and name.split(".", 1)[0] not in heads
    }
    for candidates in _ATTENTION_PROJECTIONS:
        found = [c for c in candidates if c in leaf_names]
        if found:
            return found
    raise ValueError(f"no attention projections found in {type(_unwrap(model)).__name__}; "
                     f"pass peft.target_modules explicitly (Linear layer names: {sorted(leaf_names)[:20]})")


def apply_lora(model: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.05,
               target_modules: Sequence[str] | None = None):
    """Wrap ``model`` with LoRA adapters; the whole head (classifier, projector, ...) is trained in full.

    peft only adds ``classifier``/``score`` to ``modules_to_save`` for text tasks; wav2vec2-style models
    also have a randomly initialised ``projector`` that must be trained and saved with the adapter, so
    the head is discovered with :func:`head_module_names` and listed explicitly.
    """
    from peft import LoraConfig, get_peft_model

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
    import json

    out = Path(output_dir)
    peft_model.save_pretrained(out)
    (out / "ser_hf_base_config.json").write_text(json.dumps(_unwrap(peft_model).config.to_dict(), indent=2))
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
    import json

    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForAudioClassification

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
    model = _from_pretrained(AutoModelForAudioClassification, name, local_only, "base model",
                             config=config, ignore_mismatched_sizes=True)
    peft_model = PeftModel.from_pretrained(model, adapter_dir)
    if (adapter_dir / "preprocessor_config.json").is_file():
        from transformers import AutoFeatureExtractor

        feature_extractor = AutoFeatureExtractor.from_pretrained(adapter_dir)
    else:
        feature_extractor = load_feature_extractor(base, local_files_only=local_files_only)
    return peft_model.eval(), feature_extractor


# --------------------------------------------------------------------------------------------------
# Batching: crops, chunks, padding, length grouping
# --------------------------------------------------------------------------------------------------

def chunk_bounds(num_samples: int, sampling_rate: int, chunk_s: float, overlap_s: float = 0.0) -> list[tuple[int, int]]:
    """(start, stop) sample bounds of :func:`chunk_clip`'s chunks."""
    if chunk_s <= 0 or not 0 <= overlap_s < chunk_s:
        raise ValueError(f"need chunk_s > 0 and 0 <= overlap_s < chunk_s, got chunk_s={chunk_s}, overlap_s={overlap_s}")
    size = int(round(chunk_s * sampling_rate))
    if num_samples <= size:
        return [(0, num_samples)]
    hop = max(1, size - int(round(overlap_s * sampling_rate)))
    starts = list(range(0, num_samples - size + 1, hop))
    if starts[-1] + size < num_samples:
        starts.append(num_samples - size)
    return [(s, s + size) for s in starts]


def chunk_clip(array: np.ndarray, sampling_rate: int, chunk_s: float, overlap_s: float = 0.0) -> list[np.ndarray]:
    """Split a long clip into ``chunk_s`` windows overlapping by ``overlap_s``, for evaluation/inference
    (the caller averages the chunks' logits). The last window is aligned to the clip's end, so every
    chunk has the full length (equal lengths batch without padding) and the tail is covered. A clip no
    longer than ``chunk_s`` comes back whole. Views, not copies."""
    return [array[a:b] for a, b in chunk_bounds(len(array), sampling_rate, chunk_s, overlap_s)]


def uses_attention_mask(feature_extractor) -> bool:
    """Whether the checkpoint expects an attention mask (wav2vec2-base: no; large-lv60, HuBERT-large, WavLM: yes)."""
    return bool(getattr(feature_extractor, "return_attention_mask", False))


def _is_waveform_extractor(feature_extractor) -> bool:
    from transformers import Wav2Vec2FeatureExtractor

    return isinstance(feature_extractor, Wav2Vec2FeatureExtractor)


def featurize(feature_extractor, arrays: Sequence[np.ndarray], sampling_rate: int) -> dict[str, torch.Tensor]:
    """Model inputs for a batch of mono clips at the extractor's rate.

    Waveform models (wav2vec2 family): per-clip zero-mean/unit-variance normalisation over the real
    samples, zero padding to the longest clip, and an ``attention_mask`` only when the checkpoint uses
    one. (Calling the extractor with ``padding=True`` but no mask, as its defaults do for wav2vec2-base,
    would normalise over the padding too; asking for the mask and dropping it afterwards avoids that.)
    Spectrogram models (Whisper: ``input_features``; AST: ``input_values`` of frames): the extractor's
    own fixed-length padding/truncation, mask only when the checkpoint uses one.
    """
    expected = feature_extractor.sampling_rate
    if sampling_rate != expected:
        raise ValueError(f"audio at {sampling_rate} Hz but the model expects {expected} Hz; load the corpus "
                         f"with data.sampling_rate={expected}")
    arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
    if _is_waveform_extractor(feature_extractor):
        out = feature_extractor(arrays, sampling_rate=expected, padding="longest", return_attention_mask=True,
                                return_tensors="pt")
    else:
        out = feature_extractor(arrays, sampling_rate=expected, return_tensors="pt")
    batch = dict(out)
    if not uses_attention_mask(feature_extractor):
        batch.pop("attention_mask", None)
    return batch


def _crop_key(row: dict, position: int) -> Any:
    for key in ("clip_id", "file"):
        if key in row and row[key] is not None:
            return row[key]
    audio = row.get("audio") or {}
    if audio.get("path"):
        return audio["path"]
    raise KeyError(f"batch row {position} has no 'clip_id', 'file' or audio 'path' to seed its random crop; "
                   f"keys: {sorted(row)}")


class AudioCollator:
    """Collate decoded rows (``audio`` = {"array", "sampling_rate"}, ``label``, ``clip_id``) into model inputs.

    - ``train=True``: one random ``max_duration_s`` crop per clip (shorter clips whole). The crop start
      depends only on (seed, epoch, clip id), not on batch order or DataLoader workers, so runs and
      resumed runs see the same crops. Call :meth:`set_epoch` before each epoch; :class:`ClipDataset`
      forwards the Trainer's ``dataset.set_epoch`` here. Workers pick the epoch up because they are
      re-created every epoch (``persistent_workers=False``, the default).
    - ``train=False``: whole clips (split long clips beforehand with ``ClipDataset(chunk_s=...)``, so each
      chunk is a row and the row count stays what the evaluation loop expects).

    Batches: ``input_values`` (waveforms, AST frames) or ``input_features`` (Whisper), ``attention_mask``
    only for checkpoints that use it (see :func:`featurize`), ``labels`` (int64) when rows have a label,
    ``clip_id`` (int64) when rows have one.
    """

    def __init__(self, feature_extractor, max_duration_s: float | None = None, train: bool = False, seed: int = 0,
                 *, label_column: str = "label"):
        if train and not max_duration_s:
            raise ValueError("AudioCollator(train=True) needs max_duration_s (the random crop length)")
        if max_duration_s is not None and max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be > 0, got {max_duration_s}")
        self.feature_extractor = feature_extractor
        self.max_duration_s = max_duration_s
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        self.label_column = label_column

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def crop(self, array: np.ndarray, sampling_rate: int, key: Any) -> np.ndarray:
        """This epoch's crop of one clip (the clip itself when it is short enough)."""
        size = int(round(self.max_duration_s * sampling_rate))
        if len(array) <= size:
            return array
        rng = np.random.default_rng((self.seed, self.epoch, zlib.crc32(str(key).encode("utf-8"))))
        start = int(rng.integers(0, len(array) - size + 1))
        return array[start:start + size]

    def __call__(self, rows: Sequence[dict]) -> dict[str, Any]:
        if not rows:
            raise ValueError("AudioCollator got an empty batch")
        arrays, labels, clip_ids = [], [], []
        sr = None
        for i, row in enumerate(rows):
            audio = row.get("audio")
            if not isinstance(audio, dict) or "array" not in audio:
                raise KeyError(f"batch row {i} has no decoded 'audio' {{'array', 'sampling_rate'}}; load the corpus "
                               f"with ser_hf.data.load_corpus (it decodes) before batching")
            array = np.asarray(audio["array"], dtype=np.float32)
            rate = int(audio["sampling_rate"])
            if sr is not None and rate != sr:
                raise ValueError(f"mixed sampling rates in one batch ({sr} and {rate} Hz)")
            sr = rate
            if self.train:
                array = self.crop(array, rate, _crop_key(row, i))
            arrays.append(array)
            if row.get(self.label_column) is not None:
                labels.append(int(row[self.label_column]))
            if row.get("clip_id") is not None:
                clip_ids.append(int(row["clip_id"]))
        batch = featurize(self.feature_extractor, arrays, sr)
        if labels:
            if len(labels) != len(rows):
                raise ValueError(f"some rows of the batch lack '{self.label_column}'")
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        if clip_ids:
            if len(clip_ids) != len(rows):
                raise ValueError("some rows of the batch lack 'clip_id'")
            batch["clip_id"] = torch.tensor(clip_ids, dtype=torch.long)
        return batch


class ClipDataset(torch.utils.data.Dataset):
    """A decoded corpus split as a torch dataset of clips, or of overlapping chunks of long clips.

    Each item is the source row plus ``clip_id`` = the row's index in ``ds`` (chunks of one clip share it,
    so the evaluation loop averages their logits per clip, and ``ds.select(clip_ids)`` finds the clips).
    With ``chunk_s``, clips longer than that become several items (:func:`chunk_clip`); the item list is
    computed from Arrow lengths, without reading audio. ``lengths`` (samples per item) feeds
    :class:`LengthGroupedBatchSampler`. ``set_epoch`` (called by the Trainer on the dataset) is forwarded
    to every object in ``epoch_aware`` (the collator's crops, the sampler's order).
    """

    def __init__(self, ds, *, chunk_s: float | None = None, overlap_s: float = 0.0,
                 epoch_aware: Sequence[Any] = (), column: str = "audio"):
        self.column = column
        self.chunk_s = chunk_s
        self.overlap_s = overlap_s
        self.epoch_aware = list(epoch_aware)
        # numpy format: the audio array arrives as an ndarray, not a Python list of floats
        self.ds = ds.with_format("numpy")
        clip_lengths = audio_lengths(ds, column).tolist()
        items: list[tuple[int, int, int]] = []  # (row, start, stop)
        if chunk_s is None:
            items = [(row, 0, n) for row, n in enumerate(clip_lengths)]
        elif len(ds):
            sr = int(self.ds[0][column]["sampling_rate"])
            for row, n in enumerate(clip_lengths):
                items.extend((row, a, b) for a, b in chunk_bounds(n, sr, chunk_s, overlap_s))
        self.items = items
        self.lengths = [stop - start for _, start, stop in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        row, start, stop = self.items[index]
        item = dict(self.ds[row])
        audio = dict(item[self.column])
        audio["array"] = np.asarray(audio["array"], dtype=np.float32)[start:stop]
        item[self.column] = audio
        item["clip_id"] = row
        return item

    def set_epoch(self, epoch: int) -> None:
        for obj in self.epoch_aware:
            obj.set_epoch(epoch)


def audio_lengths(ds, column: str = "audio") -> np.ndarray:
    """Samples per clip of a decoded dataset, read from Arrow list lengths (no audio copied to Python)."""
    import pyarrow.compute as pc

    if column not in ds.column_names:
        raise KeyError(f"dataset has no {column!r} column (columns: {ds.column_names})")
    out = []
    for table in ds.select_columns([column]).with_format("arrow").iter(batch_size=4096):
        audio = table.column(column).combine_chunks()
        out.append(pc.list_value_length(audio.field("array")).to_numpy(zero_copy_only=False))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of similar-length clips, to waste little compute on padding (pass as ``batch_sampler=``).

    Training order comes from transformers' ``get_length_grouped_indices`` (random mega-batches, sorted
    inside, longest batch first so an out-of-memory error shows at once). We wrap it rather than use
    ``transformers.trainer_pt_utils.LengthGroupedSampler`` as is because that class yields single indices
    (DataLoader must then also get batch_size) and draws its order from a generator whose state runs on
    across epochs, so epoch k's order cannot be rebuilt on resume; here the order is a function of
    (seed, epoch), set with :meth:`set_epoch`. Evaluation (``shuffle=False``): sorted longest first.
    For training pass the cropped lengths (``np.minimum(lengths, max_duration_s * sr)``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return sorted(range(len(self.lengths)), key=lambda i: (-self.lengths[i], i))
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, exact_lengths: bool = False) -> list[list[int]]:
    """Indices in batches of similar length, longest first (for inference, where order is free).

    ``exact_lengths``: only inputs of identical length share a batch. Needed for checkpoints without
    attention masks (wav2vec2-base): zero padding changes their outputs (group norm over time,
    attention over padded frames), so a clip's prediction would depend on its batch neighbours.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (
            not exact_lengths or lengths[batches[-1][0]] == lengths[i]
        ):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def padding_fraction(lengths: Sequence[int], batches: Iterable[Sequence[int]]) -> float:
    """Share of padded samples over all batches (0 = no waste); for logging the sampler's effect."""
    lengths = np.asarray(lengths)
    padded = real = 0
    for b in batches:
        ls = lengths[list(b)]
        padded += int(ls.max()) * len(ls)
        real += int(ls.sum())
    return 0.0 if padded == 0 else 1.0 - real / padded


def make_audio_loader(ds, feature_extractor, *, train: bool, batch_size: int, max_duration_s: float | None = None,
                      seed: int = 0, eval_chunk_s: float | None = None, eval_overlap_s: float = 0.0,
                      num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader wired the way the Trainer expects for audio transformers.

    Training: random ``max_duration_s`` crops, length-grouped shuffled batches, both re-drawn from
    (seed, epoch) when the Trainer calls ``dataset.set_epoch``. Evaluation: clips (or ``eval_chunk_s``
    chunks with ``eval_overlap_s`` overlap, sharing their clip's ``clip_id``) in length order, longest first.
    """
    from ser_hf.training import seed_worker

    collator = AudioCollator(feature_extractor, max_duration_s, train=train, seed=seed)
    if train:
        dataset = ClipDataset(ds)
        sr = int(feature_extractor.sampling_rate)
        lengths = np.minimum(dataset.lengths, int(round(max_duration_s * sr))).tolist()
        sampler = LengthGroupedBatchSampler(lengths, batch_size, shuffle=True, seed=seed)
        dataset.epoch_aware = [collator, sampler]
    else:
        dataset = ClipDataset(ds, chunk_s=eval_chunk_s, overlap_s=eval_overlap_s)
        sampler = LengthGroupedBatchSampler(dataset.lengths, batch_size, shuffle=False)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
    )


# --------------------------------------------------------------------------------------------------
# The recipe entry point (called by ser_hf.experiment for model.family=transformer)
# --------------------------------------------------------------------------------------------------

@dataclass
class FinetuneSettings:
    """The recipe's ``model:`` section for ``family: transformer``; other keys are config overrides
    of the checkpoint (``mask_time_prob``, ``layerdrop``, ``use_weighted_layer_sum``, ...)."""

    name_or_path: str | None = None  # Hub id or local folder, e.g. facebook/wav2vec2-base
    max_duration_s: float = 6.0  # random training crop per clip and epoch
    eval_chunk_s: float | None = None  # None: whole clips; else chunks whose logits are averaged
    eval_overlap_s: float = 1.0
    freeze_feature_encoder: bool = True
    gradient_checkpointing: bool = False
    head_learning_rate: float | None = None  # None: trainer.learning_rate (the encoder's)
    freeze_base_steps: int = 0  # optimizer steps training only the head before the encoder joins
    local_files_only: bool | None = None
    whisper_crop: bool = True  # Whisper: encoder + extractor cropped to max_duration_s (ser_hf.models.whisper_crop)

    @classmethod
    def split(cls, d: dict) -> tuple["FinetuneSettings", dict]:
        known = {f.name for f in fields(cls)}
        settings = cls(**{k: v for k, v in d.items() if k in known})
        if not settings.name_or_path:
            raise ValueError("model.family=transformer needs model.name_or_path (a Hub id such as "
                             "facebook/wav2vec2-base, or a local folder: "
                             "model.name_or_path=/path/to/local/wav2vec2-base)")
        return settings, {k: v for k, v in d.items() if k not in known}


def encoder_prefix(model: nn.Module) -> str:
    """Parameter-name prefix of the encoder (``wav2vec2``; ``base_model.model.wav2vec2`` under peft)."""
    inner = _unwrap(model)
    heads = set(head_module_names(model))
    name = next(n for n, _ in inner.named_children() if n not in heads)
    return f"base_model.model.{name}" if inner is not model else name


def run_finetune(cfg, model_cfg: dict, data, out: Path):
    """Fine-tune ``model.name_or_path`` on ``data`` with the shared Trainer; returns the experiment Outcome.

    Full fine-tuning, or LoRA when ``peft.enabled``. Training batches are random crops grouped by length;
    evaluation averages chunk logits per clip. The saved model is a plain transformers folder (LoRA merged),
    which ``pipeline("audio-classification")`` and :mod:`ser_hf.inference` load directly.
    """
    from ser_hf.config import parse_bool, section
    from ser_hf.experiment import Outcome, _eval_sets
    from ser_hf.losses import balanced_class_weights
    from ser_hf.clips import softmax
    from ser_hf.training import Trainer, TrainerConfig

    settings, overrides = FinetuneSettings.split(dict(model_cfg))
    peft_cfg = PeftSettings.from_dict(section(cfg, "peft"))
    seed = int(cfg.seed)
    model, fe = load_audio_classifier(
        settings.name_or_path, data.label_names, freeze_feature_encoder=settings.freeze_feature_encoder,
        gradient_checkpointing=settings.gradient_checkpointing, local_files_only=settings.local_files_only,
        **overrides,
    )
    if settings.whisper_crop:  # no-op for non-Whisper models
        model, fe = crop_whisper(model, fe, settings.max_duration_s)
    if peft_cfg.enabled:
        model = apply_lora(model, peft_cfg.r, peft_cfg.alpha, peft_cfg.dropout, peft_cfg.target_modules)
    trainer_dict = {"seed": seed, **section(cfg, "trainer")}
    if settings.freeze_base_steps:
        trainer_dict.update(freeze_steps=int(settings.freeze_base_steps), freeze_prefixes=[encoder_prefix(model)])
    tcfg = TrainerConfig.from_dict(trainer_dict)
    groups = param_groups(model, head_lr=settings.head_learning_rate or tcfg.learning_rate,
                          encoder_lr=tcfg.learning_rate, weight_decay=tcfg.weight_decay)
    trainer = Trainer(model, tcfg, out,
                      class_weights=balanced_class_weights(data.train["label"], len(data.label_names)),
                      param_groups=[{k: g[k] for k in ("params", "lr", "weight_decay")} for g in groups])
    loader = lambda ds, train: make_audio_loader(  # noqa: E731
        ds, fe, train=train, batch_size=tcfg.batch_size if train else tcfg.eval_batch,
        max_duration_s=settings.max_duration_s, seed=seed, eval_chunk_s=settings.eval_chunk_s,
        eval_overlap_s=settings.eval_overlap_s, num_workers=tcfg.num_workers)
    sets = _eval_sets(data)
    result = trainer.fit(loader(data.train, True), loader(sets["validation"], False) if "validation" in sets else None,
                         resume=parse_bool(cfg.get("resume", False), "resume"))
    predictions = {}
    for name, ds in sets.items():
        clip_ids, logits, _ = trainer.predict(loader(ds, False))
        predictions[name] = (ds.select(clip_ids.tolist()), softmax(np.asarray(logits, dtype=np.float64)))
    best = trainer.unwrapped_model
    num_parameters = sum(p.numel() for p in best.parameters())

    def save(model_dir: Path):
        if peft_cfg.enabled:
            save_adapter(best, Path(model_dir) / "adapter", fe)
            merge_and_save(best, model_dir, fe)
        else:
            best.save_pretrained(model_dir)
            fe.save_pretrained(model_dir)

    return Outcome(predictions, save, history=result.history, best_epoch=result.best_epoch,
                   train_seconds=result.train_seconds, num_parameters=num_parameters,
                   base_model=source_hub_id(settings.name_or_path))


__all__ = [
    "apply_lora", "audio_lengths", "AudioCollator", "chunk_bounds", "chunk_clip", "ClipDataset",
    "default_lora_targets", "encoder_prefix", "featurize", "FinetuneSettings", "freeze_base",
    "head_module_names", "hub_offline", "is_head_parameter", "length_sorted_batches",
    "LengthGroupedBatchSampler", "load_adapter", "load_audio_classifier", "load_feature_extractor",
    "make_audio_loader", "merge_and_save", "ModelLoadError", "padding_fraction", "param_groups",
    "PeftSettings", "resolve_model_source", "run_finetune", "save_adapter", "unfreeze_base",
    "uses_attention_mask",
]

"""Loading pretrained speech transformers (wav2vec2, HuBERT, WavLM, AST, Whisper encoder, ...) for emotion
recognition, failing fast with the way to use a local folder when the Hub cannot be reached.

Everything goes through ``AutoFeatureExtractor`` + ``AutoModelForAudioClassification`` so any audio
classification checkpoint works, and loading is exactly what a user would type::

    AutoModelForAudioClassification.from_pretrained("facebook/wav2vec2-base", num_labels=7,
                                                    id2label=..., label2id=...)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.utils import get_session
from torch import nn
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

from ..tasks import ModelTask
from .heads import head_module_names

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_HUB_PROBE_TIMEOUT_S", "HUB_PROBE_TIMEOUT_ENV", "ModelLoadError", "from_pretrained_checked",
           "hub_offline", "load_audio_classifier", "load_feature_extractor", "resolve_model_source"]

# Seconds to wait for the Hub before declaring it unreachable. huggingface_hub itself retries failed
# connections 5 times with exponential back-off (about 25 s with DNS failing fast, minutes behind a
# firewall that drops packets); a training run should say "no network" in seconds instead.
HUB_PROBE_TIMEOUT_ENV = "SER_HF_HUB_PROBE_TIMEOUT"
DEFAULT_HUB_PROBE_TIMEOUT_S = 5.0


class ModelLoadError(OSError):
    """A model (or its feature extractor) could not be loaded; the message says how to fix it."""



def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Offline mode as the user set it, read now (huggingface_hub reads its env vars once, at import)."""
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
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and the Hub ({constants.ENDPOINT}) could not "
            f"be reached (probe timeout {timeout:g} s; no network?). " + _how_to_fix(name)
        )
    return name, False


def from_pretrained_checked(loader, name: str, local_only: bool, what: str, **kwargs):
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
    name, local_only = resolve_model_source(name_or_path, local_files_only)
    return from_pretrained_checked(AutoFeatureExtractor, name, local_only, "feature extractor (preprocessor_config.json)")


def load_audio_classifier(
    name_or_path: str | os.PathLike,
    label_names: Sequence[str],
    *,
    freeze_feature_encoder: bool = True,
    gradient_checkpointing: bool = False,
    local_files_only: bool | None = None,
    task: ModelTask | None = None,
    **config_overrides: Any,
):
    """``(model, feature_extractor)`` for fine-tuning ``name_or_path`` on ``label_names``.

    ``task`` (a :class:`~ser_hf.tasks.ModelTask`): a regression/multitask model's ``label_names`` are its
    outputs (``task.output_names``: labels then targets; one target is enough), its config gets the task
    keys and, for regression, HF ``problem_type="regression"``.

    The head is sized and labelled from the dataset's labels (``id2label``/``label2id``), so saved models
    and ``pipeline("audio-classification")`` report label names. A head of another size in the checkpoint
    (e.g. a model fine-tuned on other emotions) is replaced, with a warning. ``config_overrides`` set
    config attributes (``mask_time_prob``, ``layerdrop``, ``final_dropout``, ``use_weighted_layer_sum``,
    ...); an unknown one is an error. A name that cannot be loaded fails in seconds with a
    :class:`ModelLoadError` saying how to use a local folder.
    """
    label_names = [str(n) for n in label_names]
    dims = task is not None and task.has_values
    if dims and label_names != list(task.output_names):
        raise ValueError(f"label_names {label_names} must be the task's outputs {list(task.output_names)}")
    if len(label_names) < (1 if dims else 2) or len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be >= 2 distinct names, got {label_names}")
    name, local_only = resolve_model_source(name_or_path, local_files_only)
    feature_extractor = from_pretrained_checked(AutoFeatureExtractor, name, local_only,
                                         "feature extractor (preprocessor_config.json)")
    config = from_pretrained_checked(AutoConfig, name, local_only, "config")
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
    model = from_pretrained_checked(
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
    if task is not None:
        for key, value in task.to_config().items():
            setattr(model.config, key, value)
        if task.task == "regression":
            model.config.problem_type = "regression"
    return model, feature_extractor



"""Run an exported ser_hf model folder (``scripts/export.py format=onnx``) with onnxruntime.

An export folder holds ``model.onnx`` (fp32), optionally ``model.int8.onnx`` (dynamic int8), the model's
``config.json`` (``id2label``; a dimensional model's ``ser_hf_task``/``ser_hf_targets``, read with
:meth:`ser_hf.tasks.ModelTask.from_config` so its graph output splits into class logits and values), its ``preprocessor_config.json`` (transformers) or ``feature_config.json``
(ser_hf baselines), and ``onnx_config.json`` saying which family it is and which inputs the graph takes.

:class:`OnnxModel` is a drop-in for the torch model inside :class:`ser_hf.inference.Predictor`: called with
the same keyword tensors it returns an object with ``.logits``, so feature extraction, chunking, length
bucketing and batching stay the ones the PyTorch path uses (one door), and only the forward pass moves to
onnxruntime. torch remains installed (featurisation builds torch tensors); it is just not in the forward.

Session settings: graph optimisation ``ORT_ENABLE_ALL`` (constant folding, node fusions such as attention,
GELU, layer norm, MatMul+Add); ``intra_op_num_threads`` = ``threads`` or onnxruntime's default (one per
physical core); sequential execution. See benchmarks/results/inference.md for what each setting gave.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import AutoFeatureExtractor

from ser_hf.precision import onnx_default
from ser_hf.spec import FeatureConfig
from ser_hf.tasks import ModelTask

logger = logging.getLogger(__name__)

ONNX_CONFIG = "onnx_config.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
ONNX_PRECISIONS = ("auto", "fp32", "int8")
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
                "tensor(bool)": np.bool_, "tensor(double)": np.float64}


def is_onnx_export(model_dir: str | os.PathLike) -> bool:
    """Whether ``model_dir`` is a folder written by :func:`ser_hf.export.export_onnx`."""
    return (Path(model_dir) / ONNX_CONFIG).is_file()


def read_onnx_config(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / ONNX_CONFIG
    if not path.is_file():
        found = sorted(p.name for p in Path(model_dir).iterdir()) if Path(model_dir).is_dir() else "no such folder"
        raise FileNotFoundError(f"{model_dir} has no {ONNX_CONFIG} (found: {found}); backend=onnx runs folders "
                                f"written by `scripts/export.py model=DIR format=onnx output_dir=OUT`")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    for key in ("kind", "inputs", "files"):
        if key not in cfg:
            raise ValueError(f"{path} lacks {key!r}; re-export the model with scripts/export.py")
    return cfg


def onnx_file(model_dir: str | os.PathLike, precision: str = "auto", flags: set[str] | None = None) -> Path:
    """The graph to run: ``fp32`` -> model.onnx, ``int8`` -> model.int8.onnx, ``auto`` -> what
    :func:`ser_hf.precision.onnx_default` allows: int8 only when the export's recorded int8 quality check
    passed (and this CPU does int8 arithmetic as the check's CPU did), else fp32 with one log line saying
    why. ``flags``: CPU flags to decide for (default: this machine's)."""
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"precision={precision!r} with backend=onnx: use one of {ONNX_PRECISIONS} (bf16 is a "
                         f"PyTorch-backend setting)")
    cfg = read_onnx_config(model_dir)
    name = precision
    if precision == "auto":
        name, why = onnx_default(cfg, flags)
        if name == "fp32" and "int8" in cfg["files"]:
            logger.warning("%s: running the fp32 graph; %s", model_dir, why)
        else:
            logger.info("%s: running the %s graph; %s", model_dir, name, why)
    file = cfg["files"].get(name)
    if not file:
        raise FileNotFoundError(f"{model_dir} has no {name} graph (has: {sorted(cfg['files'])}); export with "
                                f"quantize=int8 to add one")
    path = Path(model_dir) / file
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (named in {Path(model_dir) / ONNX_CONFIG})")
    return path


def _ort():
    try:  # optional dependency (the [onnx] extra): imported only when an ONNX model is used
        import onnxruntime
    except ImportError as err:
        raise ImportError("backend=onnx needs onnxruntime: pip install 'ser_hf[onnx]' (or onnxruntime)") from err
    return onnxruntime


def session_options(threads: int | None = None, optimization: str = "all"):
    ort = _ort()

    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise ValueError(f"optimization={optimization!r}: use one of {sorted(levels)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[optimization]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: the CPU provider's per-node placement notes are noise here
    return so


class OnnxModel:
    """An onnxruntime session that quacks like an ``AutoModelForAudioClassification`` for inference."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, optimization: str = "all"):
        ort = _ort()

        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), session_options(threads, optimization),
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        # the graph's declared dtype per input ("tensor(float)", "tensor(int64)", ...)
        self._dtypes = {i.name: _NUMPY_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}

    def __repr__(self) -> str:
        return f"OnnxModel('{self.path}', inputs={self.input_names})"

    def __call__(self, **inputs: Any) -> SimpleNamespace:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"{self.path.name} needs inputs {self.input_names}; missing {missing}")
        feeds = {}
        for name in self.input_names:
            value = inputs[name]
            value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            feeds[name] = value.astype(self._dtypes[name], copy=False)
        (logits,) = self.session.run(["logits"], feeds)
        return SimpleNamespace(logits=torch.from_numpy(logits))

    # the bits of nn.Module the Predictor touches
    def to(self, *args, **kwargs) -> OnnxModel:
        return self

    def eval(self) -> OnnxModel:
        return self


def load_onnx_parts(model_dir: str | os.PathLike, *, precision: str = "auto", threads: int | None = None,
                    optimization: str = "all") -> dict:
    """What :class:`ser_hf.inference.Predictor` needs for an export folder: kind, model, labels, task, rate
    and the feature extractor (transformers) or feature config (baselines)."""
    model_dir = Path(model_dir).expanduser()
    cfg = read_onnx_config(model_dir)
    model = OnnxModel(onnx_file(model_dir, precision), threads=threads, optimization=optimization)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json (the labels); re-export the model")
    task = ModelTask.of_saved(json.loads(config_path.read_text()), config_path, hint="; re-export the model")
    parts = {"kind": cfg["kind"], "model": model, "labels": list(task.labels), "task": task,
             "feature_extractor": None, "feature_config": None}
    if cfg["kind"] == "transformer":
        fe = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
        parts.update(feature_extractor=fe, sampling_rate=fe.sampling_rate)
    elif cfg["kind"] == "baseline":
        path = model_dir / "feature_config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{model_dir} has no feature_config.json; re-export the model")
        fcfg = FeatureConfig.from_dict(json.loads(path.read_text()))
        parts.update(feature_config=fcfg, sampling_rate=fcfg.sampling_rate)
    else:
        raise ValueError(f"{model_dir / ONNX_CONFIG}: unknown kind {cfg['kind']!r} (transformer or baseline)")
    return parts


__all__ = ["FP32_FILE", "INT8_FILE", "ONNX_CONFIG", "ONNX_PRECISIONS", "OnnxModel", "is_onnx_export",
           "load_onnx_parts", "onnx_file", "read_onnx_config", "session_options"]

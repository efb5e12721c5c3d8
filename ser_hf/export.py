"""Export a saved ser_hf neural model folder to ONNX (``scripts/export.py model=DIR format=onnx output_dir=OUT``).

Covers every neural family :func:`ser_hf.inference.load_for_inference` loads: the ser_hf baselines (CNN 1-D/2-D,
7-layer CNN, LSTM, CNN+LSTM) and transformers audio classifiers (wav2vec2 / HuBERT / WavLM, Whisper-encoder and
AST classifiers, LoRA adapters - merged into plain weights first). Classic sklearn models are refused with a
clear message (they are not graphs of tensors; ``predict.py`` runs them as they are).

The output folder holds ``model.onnx`` (fp32), with ``quantize=int8`` also ``model.int8.onnx`` (onnxruntime
dynamic quantisation: int8 weights, activations quantised per batch at run time, no calibration data), the
model's ``config.json`` (``id2label``; a dimensional model's task keys ``ser_hf_task``/``ser_hf_targets`` kept, so
the exported graph's outputs are read as values), ``preprocessor_config.json`` (transformers) or ``feature_config.json``
(baselines), and ``onnx_config.json`` (family, graph inputs, files, exporter, parity check at export time).
``predict.py model=OUT backend=onnx`` runs it with onnxruntime (:mod:`ser_hf.onnx_backend`).

Exporter: **torch.onnx** (the TorchScript tracer, ``dynamo=False``), not optimum. optimum >= 2 moved its ONNX
exporters into the separate ``optimum-onnx`` package, whose only releases (<= 0.1.0) pin
``transformers < 4.58``; this project runs transformers 5, so optimum's exporters cannot be installed beside
it, and they would not cover the ser_hf baselines anyway. torch's dynamo exporter needs ``onnxscript`` (not a
dependency here) and is not needed: the traced graphs of these models match PyTorch to ~1e-6 (checked at
export, on a second input shape, so a shape frozen by tracing fails the export instead of a later prediction).
Batch and time axes are dynamic (time only where the model accepts any length: waveform transformers,
frame-sequence baselines; Whisper and AST take their extractor's fixed length).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ser_hf.features import window_array
from ser_hf.inference import load_torch_predictor
from ser_hf.models.batching import featurize, is_waveform_extractor
from ser_hf.onnx_backend import FP32_FILE, INT8_FILE, ONNX_CONFIG, OnnxModel

logger = logging.getLogger(__name__)

FORMATS = ("onnx",)
QUANTIZE = (None, "int8")
DEFAULT_OPSET = 17
# Max |logit| difference between PyTorch and the exported fp32 graph above which export fails (a real
# mismatch - a shape frozen by the tracer, an unsupported op - is orders of magnitude larger).
EXPORT_TOLERANCE = 1e-3
# Weight-carrying ops quantised by the int8 export. Conv stays fp32: onnxruntime's ConvInteger has no fast
# CPU kernel and made wav2vec2's convolutional front end slower, not faster (benchmarks/results/inference.md).
INT8_OPS = ("MatMul", "Gemm")


class _Logits(torch.nn.Module):
    """The model with positional inputs and the logits as its only output (what the ONNX graph holds)."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args)), return_dict=True).logits


def _example_inputs(predictor, rng: np.random.Generator) -> tuple[list[dict], dict[str, dict[int, str]]]:
    """Two example batches of model inputs of different batch size (and length where it may vary), plus
    the dynamic axes of each input."""
    sr = predictor.sampling_rate
    clips = [[rng.standard_normal(int(sr * s)).astype(np.float32) * 0.1 for s in (2.0, 2.0)],
             [rng.standard_normal(int(sr * s)).astype(np.float32) * 0.1 for s in (1.3, 1.3, 1.3)]]
    if predictor.kind in ("transformer", "adapter"):
        fe = predictor.feature_extractor
        batches = [featurize(fe, c, sr) for c in clips]
        time_axis = {"input_values": 1, "attention_mask": 1} if is_waveform_extractor(fe) else {}
        if not is_waveform_extractor(fe) and "attention_mask" in batches[0]:
            time_axis["attention_mask"] = 1
    else:
        batches = []
        for c in clips:
            windows = [w for a in c for w in window_array(predictor.features(a), predictor.feature_config)]
            shapes = {w.shape for w in windows}
            if len(shapes) > 1:  # unwindowed frame sequences of different lengths: one length per batch
                windows = windows[:1]
            batches.append({"input_values": torch.from_numpy(np.stack(windows))})
        varies = batches[0]["input_values"].shape[1:] != batches[1]["input_values"].shape[1:]
        time_axis = {"input_values": predictor.model.input_spec[4]} if varies else {}
    names = list(batches[0])
    axes = {n: {0: "batch", **({time_axis[n]: "time"} if n in time_axis else {})} for n in names}
    return batches, axes


def _torch_model(model_dir: Path):
    """The PyTorch predictor of ``model_dir``, with eager attention (the tracer records plain ops)."""
    predictor = load_torch_predictor(model_dir, device="cpu", local_files_only=True)
    if predictor.kind == "classic":
        raise ValueError(f"{model_dir} is a classic scikit-learn model (model_type 'ser_classic'): export.py "
                         f"format=onnx converts the neural families only (CNN/LSTM baselines, transformers); "
                         f"run classic models with scripts/predict.py as they are")
    model = predictor.model
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except (ValueError, AttributeError) as err:
            logger.info("keeping %s's attention implementation: %s", type(model).__name__, err)
    return predictor


def export_onnx(model_dir: str | os.PathLike, output_dir: str | os.PathLike, *, quantize: str | None = None,
                opset: int = DEFAULT_OPSET, overwrite: bool = False) -> Path:
    """Write ``output_dir`` (see the module docstring) from the saved model folder ``model_dir``."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r}: use one of {[q for q in QUANTIZE if q]} or leave it out")
    model_dir = Path(model_dir).expanduser()
    output_dir = Path(output_dir).expanduser()
    if output_dir.resolve() == model_dir.resolve():
        raise ValueError(f"output_dir {output_dir} is the model folder itself; export into a new folder")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"output_dir {output_dir} exists and is not empty; pass overwrite=true or another "
                              f"folder (nothing was written)")
    predictor = _torch_model(model_dir)
    model = predictor.model.eval()
    batches, axes = _example_inputs(predictor, np.random.default_rng(0))
    names = list(batches[0])
    output_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = output_dir / FP32_FILE
    wrapper = _Logits(model, names).eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks (constant per trace)
        torch.onnx.export(wrapper, tuple(batches[0][n] for n in names), str(onnx_path), input_names=names,
                          output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    # parity on the second (differently shaped) batch: a traced-in shape or a wrong op fails here
    with torch.no_grad():
        reference = wrapper(*(batches[1][n] for n in names)).float().numpy()
    got = OnnxModel(onnx_path)(**batches[1]).logits.numpy()
    diff = float(np.abs(got - reference).max())
    if not np.isfinite(diff) or diff > EXPORT_TOLERANCE:
        onnx_path.unlink(missing_ok=True)
        raise RuntimeError(f"exported graph of {model_dir} differs from PyTorch by {diff:.2e} (> "
                           f"{EXPORT_TOLERANCE}) on an input of shape "
                           f"{ {n: tuple(batches[1][n].shape) for n in names} }; nothing was kept")
    files = {"fp32": FP32_FILE}
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic  # optional dependency ([onnx] extra)

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its "consider pre-processing" hint concerns static (calibrated) quantisation
        try:
            quantize_dynamic(str(onnx_path), str(output_dir / INT8_FILE), weight_type=QuantType.QInt8,
                             op_types_to_quantize=list(INT8_OPS))
        finally:
            root.setLevel(level)
        files["int8"] = INT8_FILE
    _write_side_files(predictor, model_dir, output_dir)
    config = {
        "format": "onnx", "kind": "transformer" if predictor.kind in ("transformer", "adapter") else "baseline",
        "source_kind": predictor.kind, "architecture": type(model).__name__, "inputs": names,
        "dynamic_axes": axes, "outputs": ["logits"], "files": files, "default": "int8" if quantize else "fp32",
        "int8_ops": list(INT8_OPS) if quantize else None, "opset": opset,
        "exporter": f"torch.onnx.export (TorchScript tracer, dynamo=False), torch {torch.__version__}",
        "sampling_rate": predictor.sampling_rate, "export_max_abs_logit_diff": diff,
        "task": predictor.task.task, "targets": list(predictor.task.targets),
    }
    (output_dir / ONNX_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    logger.info("exported %s -> %s (%s; max |logit diff| vs PyTorch %.1e)", model_dir, output_dir,
                ", ".join(files.values()), diff)
    return output_dir


def _write_side_files(predictor, model_dir: Path, output_dir: Path) -> None:
    """Labels (config.json) and the input pipeline's settings beside the graph."""
    predictor.model.config.to_json_file(str(output_dir / "config.json"))
    # the task keys as the source folder saved them (ModelTask.to_config), whatever the config class keeps
    path = output_dir / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **predictor.task.to_config()}, indent=2,
                               sort_keys=True) + "\n")
    if predictor.feature_extractor is not None:
        predictor.feature_extractor.save_pretrained(output_dir)
    for name in ("feature_config.json", "README.md"):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, output_dir / name)


__all__ = ["DEFAULT_OPSET", "FORMATS", "INT8_OPS", "QUANTIZE", "export_onnx"]

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

int8 quality gate: with ``quantize=int8`` the export scores labelled clips with the fp32 and the int8 graph
and records top-1 agreement, max |prob diff| and the macro-F1 change in ``onnx_config.json``
(``int8_check``). The clips: ``check_audio=`` when given (a CSV with ``file`` and ``label`` columns, paths
relative to the CSV; or a folder / files, unlabelled, which cannot pass the macro-F1 condition), else the
test split of the run folder the model was saved in (``<run>/predictions.csv`` test rows, read from the
run's ``data.data_dir``). Whether ``precision=auto`` then runs int8 is :mod:`ser_hf.precision`'s rule.

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

import csv
import json
import logging
import os
import platform
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from omegaconf import OmegaConf
from sklearn.metrics import f1_score

from ser_hf.features import window_array
from ser_hf.inference import audio_paths, load_for_inference, load_torch_predictor
from ser_hf.models.batching import featurize, is_waveform_extractor
from ser_hf.onnx_backend import FP32_FILE, INT8_FILE, ONNX_CONFIG, OnnxModel
from ser_hf.precision import (
    MAX_MACRO_F1_DELTA,
    MIN_TOP1_AGREEMENT,
    check_verdict,
    cpu_flags,
    cpu_has_int_dot,
)
from ser_hf.runfolder import atomic_write, read_predictions

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
# Which of those nodes the int8 graph quantises: "all" (every Linear layer: feature projection, attention
# projections, feed-forward, head; onnxruntime's dynamic quantisation leaves attention's activation x activation
# products in fp32 by itself) or "ffn" (only the transformer feed-forward Linear layers; attention, the
# feature encoder/projection and the head stay fp32).
INT8_SCOPES = ("all", "ffn")
FFN_MARKERS = ("/feed_forward/", "/fc1/", "/fc2/", "/mlp/", "/intermediate/", "/output/dense/")  # + not attention
DEFAULT_INT8_SCOPE = "all"
DEFAULT_PER_CHANNEL = False


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

def _is_ffn(name: str) -> bool:
    """A feed-forward Linear layer's node (wav2vec2/HuBERT/WavLM ``feed_forward``, Whisper ``fc1``/``fc2``,
    AST ``intermediate``/``output.dense``), never one inside attention."""
    return "/attention/" not in name and "/self_attn/" not in name and any(m in name for m in FFN_MARKERS)


def int8_nodes(fp32_path: str | os.PathLike, scope: str = DEFAULT_INT8_SCOPE) -> list[str] | None:
    """Names of the MatMul/Gemm nodes ``scope`` quantises (None: all of :data:`INT8_OPS`)."""
    if scope not in INT8_SCOPES:
        raise ValueError(f"int8_scope={scope!r}: use one of {INT8_SCOPES}")
    if scope == "all":
        return None
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type in INT8_OPS and any(x in weights for x in n.input)
            and _is_ffn(n.name)]


def quantize_int8_graph(fp32_path: str | os.PathLike, out_path: str | os.PathLike, *,
                        scope: str = DEFAULT_INT8_SCOPE, per_channel: bool = DEFAULT_PER_CHANNEL) -> dict:
    """onnxruntime dynamic int8 quantisation of ``fp32_path`` into ``out_path``; what was quantised."""
    from onnxruntime.quantization import (  # optional dependency ([onnx] extra)
        QuantType,
        quantize_dynamic,
    )

    nodes = int8_nodes(fp32_path, scope)
    if nodes == []:
        raise ValueError(f"int8_scope={scope!r} selects no node of {fp32_path}; use int8_scope=all")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" hint concerns static (calibrated) quantisation
    try:
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=list(INT8_OPS), nodes_to_quantize=nodes)
    finally:
        root.setLevel(level)
    return {"ops": list(INT8_OPS), "scope": scope, "per_channel": per_channel,
            "nodes": None if nodes is None else len(nodes)}


def run_folder_clips(model_dir: str | os.PathLike) -> tuple[list[Path], list[str], str]:
    """The test clips of the run folder ``model_dir`` was saved in: (paths, labels, description), or a
    ValueError saying why there are none (not in a run folder, no data_dir, files moved)."""
    model_dir = Path(model_dir).resolve()
    run_dir = model_dir.parent
    predictions, config = run_dir / "predictions.csv", run_dir / "config.yaml"
    if not predictions.is_file() or not config.is_file():
        raise ValueError(f"{model_dir} is not the model/ folder of a run (no predictions.csv and config.yaml "
                         f"beside it)")
    data = OmegaConf.to_container(OmegaConf.load(config)).get("data") or {}
    if data.get("synthetic") is not None or not data.get("data_dir"):
        raise ValueError(f"{config} names no data.data_dir (synthetic or missing data)")
    root = Path(str(data["data_dir"])).expanduser()
    rows = [r for r in read_predictions(predictions) if r["split"] == "test" and r["corpus"] == data.get("corpus")]
    if not rows:
        raise ValueError(f"{predictions} has no test rows of corpus {data.get('corpus')!r}")
    paths = [root / r["file"] for r in rows]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} of {len(paths)} test clips of {predictions} are not under {root} "
                         f"(e.g. {missing[0]})")
    speakers = sorted({r["speaker_id"] for r in rows})
    return paths, [r["label"] for r in rows], (f"test split of run {run_dir.name} ({data.get('corpus')}, "
                                                f"speakers {', '.join(speakers)})")


def user_clips(spec: str | os.PathLike) -> tuple[list[Path], list[str] | None, str]:
    """``check_audio=``: a CSV with ``file`` and ``label`` columns (paths relative to the CSV), or audio
    files / a folder / a glob (unlabelled)."""
    path = Path(str(spec)).expanduser()
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise FileNotFoundError(f"check_audio={spec}: no such CSV file")
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or not {"file", "label"} <= set(rows[0]):
            raise ValueError(f"check_audio={spec}: the CSV needs 'file' and 'label' columns and at least one row "
                             f"(has {sorted(rows[0]) if rows else 'no rows'})")
        paths = [(path.parent / r["file"]) for r in rows]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"check_audio={spec}: {len(missing)} listed files do not exist (e.g. "
                                    f"{missing[0]})")
        return paths, [r["label"] for r in rows], f"clips listed in {path.name} (check_audio=, labelled)"
    paths = audio_paths(spec)
    if not paths:
        raise FileNotFoundError(f"check_audio={spec}: no audio files found")
    return paths, None, f"clips passed with check_audio= ({path.name}, unlabelled)"


def int8_quality_check(export_dir: str | os.PathLike, clips: list[Path], labels: list[str] | None, source: str,
                       batch_size: int = 16) -> dict:
    """Score ``clips`` with the export's fp32 and int8 graphs; the figures :func:`ser_hf.precision.check_verdict`
    judges (recorded as ``int8_check``)."""
    fp32 = load_for_inference(export_dir, backend="onnx", precision="fp32")
    int8 = load_for_inference(export_dir, backend="onnx", precision="int8")
    a = fp32.predict_files(clips, batch_size=batch_size)
    b = int8.predict_files(clips, batch_size=batch_size)
    keep = [i for i, (x, y) in enumerate(zip(a, b)) if x.get("scores") and y.get("scores")]
    if not keep:
        return {"source": source, "clips": 0, "error": "no clip could be scored"}
    names = fp32.label_names
    pa = np.array([[a[i]["scores"][k] for k in names] for i in keep])
    pb = np.array([[b[i]["scores"][k] for k in names] for i in keep])
    top_a, top_b = [names[j] for j in pa.argmax(1)], [names[j] for j in pb.argmax(1)]
    check = {"source": source, "clips": len(keep), "top1_agreement": float(np.mean(np.equal(top_a, top_b))),
             "max_abs_prob_diff": float(np.abs(pa - pb).max()), "macro_f1_fp32": None, "macro_f1_int8": None,
             "macro_f1_delta": None}
    if labels is not None:
        truth = [labels[i] for i in keep]
        f1 = [float(f1_score(truth, t, labels=sorted(set(truth)), average="macro", zero_division=0))
              for t in (top_a, top_b)]
        check.update(macro_f1_fp32=f1[0], macro_f1_int8=f1[1], macro_f1_delta=f1[1] - f1[0])
    flags = cpu_flags()
    check.update(thresholds={"min_top1_agreement": MIN_TOP1_AGREEMENT, "max_abs_macro_f1_delta": MAX_MACRO_F1_DELTA},
                 cpu=platform.processor() or platform.machine(), cpu_int_dot_product=cpu_has_int_dot(flags))
    check["passed"], check["verdict"] = check_verdict(check)
    return check


def export_onnx(model_dir: str | os.PathLike, output_dir: str | os.PathLike, *, quantize: str | None = None,
                opset: int = DEFAULT_OPSET, overwrite: bool = False, check_audio: str | os.PathLike | None = None,
                int8_scope: str = DEFAULT_INT8_SCOPE, per_channel: bool = DEFAULT_PER_CHANNEL) -> Path:
    """Write ``output_dir`` (see the module docstring) from the saved model folder ``model_dir``; with
    ``quantize="int8"`` also the int8 graph (``int8_scope``, ``per_channel``: see :data:`INT8_SCOPES`) and
    its quality check on ``check_audio`` or the run folder's test split."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r}: use one of {[q for q in QUANTIZE if q]} or leave it out")
    if int8_scope not in INT8_SCOPES:
        raise ValueError(f"int8_scope={int8_scope!r}: use one of {INT8_SCOPES}")
    if check_audio is not None and quantize != "int8":
        raise ValueError("check_audio= is the int8 quality check's clips; it needs quantize=int8")
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
    int8 = None
    if quantize == "int8":
        int8 = quantize_int8_graph(onnx_path, output_dir / INT8_FILE, scope=int8_scope, per_channel=per_channel)
        files["int8"] = INT8_FILE
    _write_side_files(predictor, model_dir, output_dir)
    config = {
        "format": "onnx", "kind": "transformer" if predictor.kind in ("transformer", "adapter") else "baseline",
        "source_kind": predictor.kind, "architecture": type(model).__name__, "inputs": names,
        "dynamic_axes": axes, "outputs": ["logits"], "files": files,
        "int8": int8, "opset": opset,
        "exporter": f"torch.onnx.export (TorchScript tracer, dynamo=False), torch {torch.__version__}",
        "sampling_rate": predictor.sampling_rate, "export_max_abs_logit_diff": diff,
        "task": predictor.task.task, "targets": list(predictor.task.targets),
    }
    atomic_write(output_dir / ONNX_CONFIG, json.dumps(config, indent=2) + "\n")
    if quantize == "int8":
        try:
            clips, labels, source = user_clips(check_audio) if check_audio is not None else run_folder_clips(model_dir)
        except ValueError as err:
            check = {"error": f"no clips to check int8 on: {err}; pass check_audio=CSV_OR_FOLDER"}
        else:
            logger.info("int8 quality check on %d clips: %s", len(clips), source)
            check = int8_quality_check(output_dir, clips, labels, source)
        config["int8_check"] = check
        atomic_write(output_dir / ONNX_CONFIG, json.dumps(config, indent=2) + "\n")
        logger.info("int8 check: %s", check_verdict(check)[1])
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


__all__ = ["DEFAULT_INT8_SCOPE", "DEFAULT_OPSET", "DEFAULT_PER_CHANNEL", "FORMATS", "INT8_OPS", "INT8_SCOPES", "QUANTIZE",
           "export_onnx", "int8_nodes", "int8_quality_check", "quantize_int8_graph", "run_folder_clips", "user_clips"]

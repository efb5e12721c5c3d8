"""Predict emotions for audio files or arrays with any saved ser_hf model.

(Over 500 lines: one Predictor class serving every model kind, precision and backend.)

``load_for_inference(model_dir)`` recognises what a folder holds:

- a transformers audio classifier (``preprocessor_config.json`` beside ``config.json``), e.g. a fine-tuned
  wav2vec2 / HuBERT / WavLM / AST / Whisper-encoder model, or a merged LoRA model;
- a LoRA adapter folder (``adapter_config.json``, written by ``ser_hf.models.transformer.save_adapter``);
- a ser_hf baseline network (``config.json`` with ``model_type`` ``ser_*``) + ``feature_config.json``;
- a classic sklearn model (``model_type`` ``ser_classic``) + ``feature_config.json`` (acoustic features) or
  ``embedding_config.json`` (pooled hidden states of a speech encoder);
- a probe (``model_type`` ``ser_probe``): a learned mix of a frozen encoder's pooled hidden states, the
  encoder named in its config.

Models trained on speaker-normalised features (``features.speaker_norm``: frame features such as log-mel, or
per-clip vectors such as ``stats``/openSMILE functionals) or embeddings (``embeddings.speaker_norm``) z-score the
inputs of one call together, as one speaker's clips, with statistics pooled over their frames exactly as
training pooled each speaker's (``ser_hf.features.pooled_statistics``, the per-speaker statistics of
``speaker_normalise``): pass one speaker's clips per call. Clip vectors need at least 2 inputs (one vector has no
spread: an error); frame features of a single input use its own frames (logged). ``predict_files`` then scores
all files of the call as one block, and a recording's segments are scored in one call.

``predict_files`` / ``predict_arrays`` return one record per input, in input order::

    {"file": "a.wav", "label": "anger", "scores": {"anger": 0.71, "boredom": 0.02, ...}}

A dimensional model (config.json ``ser_hf_task: regression``, read with :meth:`ser_hf.tasks.ModelTask.from_config`)
gives its ratings, in the targets' own units, instead of a label and probabilities; a multitask model both::

    {"file": "a.wav", "values": {"arousal": 3.8, "valence": 2.1, "dominance": 3.4}}
    {"file": "a.wav", "label": "anger", "scores": {...}, "values": {"arousal": 3.8, ...}}

A file that cannot be decoded gives ``{"file", "label": None, "scores": None, "error": "..."}`` (and
``"values": None`` for a dimensional model) and the rest go on; a silence-only input ``{"file", "label":
"no speech", "scores": None}`` (likewise); an input shorter than
``MIN_CLIP_S`` (or the model's minimum, to which it is zero-padded) carries a ``"warning"``. Long inputs are
cut into overlapping chunks (every family: ``chunk_s``/``overlap_s``) whose raw outputs (logits, and values
of a dimensional model) are averaged per input with :func:`ser_hf.clips.aggregate_clips`, the function evaluation
uses too, before the softmax of the class part; inputs are sorted by
length and batched, which is what makes this faster than a per-file ``pipeline("audio-classification")``
loop (see benchmarks/results/inference.md).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.ao.quantization import quantize_dynamic
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

import ser_hf.models  # noqa: F401  registers the baseline and probe configs/models with the Auto classes
from ser_hf.clips import NO_SPEECH, aggregate_clips, is_silent, log_probabilities, min_clip_samples, softmax
from ser_hf.data.audio import AudioDecodeError, decode_audio, resample
from ser_hf.embeddings import load_encoder
from ser_hf.features import FeatureConfig, extract, is_vector_kind, normalise_with, pooled_statistics, window_array
from ser_hf.models.classic import ClassicClassifier
from ser_hf.models.transformer import (chunk_clip, featurize, is_waveform_extractor, length_sorted_batches,
                                       load_adapter, load_feature_extractor, uses_attention_mask)
from ser_hf.models.whisper_crop import fixed_input_chunk_s
from ser_hf.onnx_backend import is_onnx_export, load_onnx_parts
from ser_hf.precision import cpu_has_bf16, torch_auto_precision
from ser_hf.runfolder import verify_checksums
from ser_hf.tasks import ModelTask

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_S = 10.0
DEFAULT_OVERLAP_S = 1.0
# Below this an emotion label means little: such clips are scored (padded to the model's minimum where
# needed) with a warning in the log and in the record.
MIN_CLIP_S = 0.25
KINDS = ("transformer", "adapter", "baseline", "classic", "probe")
PRECISIONS = ("fp32", "bf16", "int8", "auto")
BACKENDS = ("auto", "torch", "onnx")
SPEAKER_NORM_EPS = 1e-6  # ser_hf.features.speaker_normalise's: a dimension with a smaller std is only centred  # auto: onnx for folders written by scripts/export.py, else torch


class Predictor:
    """A loaded model plus what it needs to turn waveforms into class scores and/or dimension values.

    Use :func:`load_for_inference` to build one; call :meth:`predict_files` / :meth:`predict_arrays`.
    ``task`` (:class:`ser_hf.tasks.ModelTask`; default: classification over ``label_names``) says how a raw
    output row splits into class logits and target values.
    """

    def __init__(self, kind: str, model: Any, label_names: list[str], sampling_rate: int, model_dir: Path, *,
                 feature_extractor=None, feature_config=None, embedding_config: dict | None = None,
                 device: torch.device | None = None, task: ModelTask | None = None):
        self.kind = kind
        self.model = model
        self.task = task if task is not None else ModelTask(labels=tuple(label_names))
        if list(self.task.labels) != list(label_names):
            raise ValueError(f"{model_dir}: labels {list(label_names)} differ from the task's {list(self.task.labels)}")
        self.label_names = list(label_names)
        self.sampling_rate = int(sampling_rate)
        self.model_dir = model_dir
        self.feature_extractor = feature_extractor
        self.feature_config = feature_config
        self.embedding_config = embedding_config
        self.device = device or torch.device("cpu")
        self.precision = "fp32"
        self._encoder = None
        self._warned_speaker_norm = False

    def __repr__(self) -> str:
        return (f"Predictor(kind={self.kind!r}, model_dir='{self.model_dir}', task={self.task.task!r}, "
                f"labels={self.label_names}, targets={list(self.task.targets)}, sampling_rate={self.sampling_rate}, "
                f"precision={self.precision!r})")

    @property
    def targets(self) -> list[str]:
        """The dimensions a regression/multitask model rates (empty for a classifier)."""
        return list(self.task.targets)

    def _forward(self, **inputs):
        """The model's logits as float32 numpy, under bf16 autocast when precision='bf16'."""
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.model(**inputs).logits.float().cpu().numpy()
        return self.model(**inputs).logits.float().cpu().numpy()

    # ---------------------------------------------------------------------------------------------- scoring

    @property
    def uses_attention_mask(self) -> bool:
        return self.feature_extractor is not None and uses_attention_mask(self.feature_extractor)

    @torch.inference_mode()
    def _transformer_outputs(self, arrays: list[np.ndarray], batch_size: int, chunk_s: float | None,
                             overlap_s: float, allow_padding: bool | None) -> np.ndarray:
        chunk_s = fixed_input_chunk_s(self.feature_extractor, chunk_s)  # cropped Whisper: chunks it can see whole
        chunks, owner = [], []
        for i, a in enumerate(arrays):
            pieces = chunk_clip(a, self.sampling_rate, chunk_s, overlap_s) if chunk_s else [a]
            chunks.extend(pieces)
            owner.extend([i] * len(pieces))
        if allow_padding is None:
            # exact per-clip results: pad only where the checkpoint masks padding (or pads to a fixed length)
            allow_padding = self.uses_attention_mask or not is_waveform_extractor(self.feature_extractor)
        logits = np.zeros((len(chunks), self.task.n_outputs), dtype=np.float64)
        for batch in length_sorted_batches([len(c) for c in chunks], batch_size, exact_lengths=not allow_padding):
            logits[batch] = self._forward(**featurize(self.feature_extractor, [chunks[j] for j in batch],
                                                      self.sampling_rate))
        return aggregate_clips(owner, logits)[1]

    @property
    def normalises_over_call(self) -> bool:
        """True when the inputs of one call are z-scored together as one speaker's clips (a model trained on
        speaker-normalised features or embeddings)."""
        if self.embedding_config is not None:
            return bool(self.embedding_config.get("speaker_norm"))
        return bool(getattr(self.feature_config, "speaker_norm", False))

    def _normalise_together(self, feats: list[np.ndarray], what: str, vectors: bool) -> list[np.ndarray]:
        """Z-score the call's inputs with statistics pooled over all of them (and their frames), as training
        z-scored each speaker's clips with ``ser_hf.features.speaker_normalise``."""
        if vectors and len(feats) < 2:
            raise ValueError(f"{self.model_dir} was trained on speaker-normalised {what}: pass at least 2 clips of "
                             f"the speaker in one call (they are z-scored together, as one speaker's clips); got "
                             f"{len(feats)}")
        if not self._warned_speaker_norm:
            logger.warning("%s was trained on speaker-normalised %s: the %d input(s) of this call are normalised "
                           "together as one speaker's clips%s", self.model_dir, what, len(feats),
                           "" if len(feats) > 1 else " (one input: with its own frames' statistics)")
            self._warned_speaker_norm = True
        mean, std = pooled_statistics(feats)
        return [normalise_with(f, mean, std, SPEAKER_NORM_EPS) for f in feats]

    def _piece_features(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        """Features of every piece of the call, normalised together when the model was trained so."""
        feats = [self.features(p) for p in pieces]
        if self.normalises_over_call:
            vectors = is_vector_kind(self.feature_config)
            feats = self._normalise_together(feats, "feature vectors" if vectors else "features", vectors)
        return feats

    def features(self, array: np.ndarray) -> np.ndarray:
        """One input's features as extracted (a speaker-normalised model's are normalised over the call,
        :meth:`_piece_features`)."""
        return extract(array, self.sampling_rate, self.feature_config)

    # --- chunked scoring of baseline and classic models (issue 12 predict) -------------------------------

    def _pieces(self, array: np.ndarray, chunk_s: float | None, overlap_s: float) -> list[np.ndarray]:
        """The chunks a baseline/classic model scores a clip as: ``chunk_s`` windows overlapping by
        ``overlap_s``; a model trained on a fixed ``duration_s`` gets chunks of that length (a longer chunk
        would be cropped to its start). No ``chunk_s``: the clip whole (as before)."""
        chunk_s, overlap_s = self.chunking(chunk_s, overlap_s)
        if not chunk_s or len(array) <= chunk_s * self.sampling_rate:
            return [array]
        return chunk_clip(array, self.sampling_rate, chunk_s, overlap_s)

    def chunking(self, chunk_s: float | None, overlap_s: float) -> tuple[float | None, float]:
        """The (chunk_s, overlap_s) this model scores long inputs with: as given, except that a baseline or
        classic model trained on a fixed ``duration_s`` uses chunks of that length."""
        duration = getattr(self.feature_config, "duration_s", None)
        if chunk_s and duration:
            chunk_s = min(float(chunk_s), float(duration))
        if chunk_s and overlap_s >= chunk_s:
            overlap_s = chunk_s / 2
        return chunk_s, overlap_s

    @torch.inference_mode()
    def _baseline_outputs(self, arrays: list[np.ndarray], batch_size: int, chunk_s: float | None = None,
                          overlap_s: float = 0.0) -> np.ndarray:
        owner: list[int] = []
        logits: list[np.ndarray] = []
        pending: dict[tuple, list[tuple[int, np.ndarray]]] = {}  # windows of one shape, batched

        def flush(shape):
            rows = pending.pop(shape)
            logits.append(self._forward(input_values=torch.from_numpy(np.stack([w for _, w in rows]))))
            owner.extend(i for i, _ in rows)

        pieces = [(i, piece) for i, a in enumerate(arrays) for piece in self._pieces(a, chunk_s, overlap_s)]
        # features normalised over the call need every piece first; others are computed as they go
        feats = (self._piece_features([p for _, p in pieces]) if self.normalises_over_call
                 else (self.features(p) for _, p in pieces))
        for (i, _), x in zip(pieces, feats):
            for w in window_array(x, self.feature_config):
                pending.setdefault(w.shape, []).append((i, w))
                if len(pending[w.shape]) >= batch_size:
                    flush(w.shape)
        for shape in list(pending):
            flush(shape)
        return aggregate_clips(owner, np.concatenate(logits))[1]

    def _classic_outputs(self, arrays: list[np.ndarray], batch_size: int, chunk_s: float | None = None,
                         overlap_s: float = 0.0) -> np.ndarray:
        owner: list[int] = []
        pieces: list[np.ndarray] = []
        for i, a in enumerate(arrays):
            p = self._pieces(a, chunk_s, overlap_s)
            pieces.extend(p)
            owner.extend([i] * len(p))
        if self.embedding_config is not None:
            X = self._embedding_rows(pieces, batch_size)
        else:
            X = np.stack([f.reshape(-1) for f in self._piece_features(pieces)])
        if self.task.has_values:  # a regressor: its predictions are the values, averaged over a clip's pieces
            raw = np.asarray(self.model.predict_values(X), dtype=np.float64).reshape(len(X), -1)
        else:  # probabilities averaged as log-probabilities (a normalised geometric mean), see ser_hf.clips
            raw = log_probabilities(self.model.predict_proba(X))
        return aggregate_clips(owner, raw)[1]

    @property
    def min_samples(self) -> int:
        """The shortest input the model reads meaningfully (shorter ones are zero-padded to it):
        :func:`ser_hf.clips.min_clip_samples`, the definition training uses to list too-short clips."""
        return min_clip_samples(self.feature_config, self.sampling_rate)

    def _check_length(self, name: str, array: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Warn about clips shorter than MIN_CLIP_S or the model's minimum; pad those below the minimum."""
        soft = max(self.min_samples, int(MIN_CLIP_S * self.sampling_rate))
        if len(array) >= soft:
            return array, None
        note = (f"{name}: {len(array) / self.sampling_rate:.3f} s is shorter than "
                f"{soft / self.sampling_rate:.3f} s (the model's minimum or {MIN_CLIP_S} s): the label is unreliable")
        if len(array) < self.min_samples:
            array = np.pad(array, (0, self.min_samples - len(array)))
            note += f"; zero-padded to {self.min_samples} samples"
        logger.warning("%s", note)
        return array, note

    def _score_records(self, names: list[str], arrays: list[np.ndarray], batch_size: int, chunk_s, overlap_s,
                       allow_padding) -> list[dict]:
        """Records for prepared arrays at the model's rate: "no speech" for silent ones, warnings for short ones."""
        records: list[dict | None] = [None] * len(arrays)
        todo, prepared, notes = [], [], []
        for i, (name, a) in enumerate(zip(names, arrays)):
            if is_silent(a, self.sampling_rate):
                records[i] = self.blank_record(name, NO_SPEECH)
                continue
            a, note = self._check_length(name, a)
            todo.append(i)
            prepared.append(a)
            notes.append(note)
        outputs = self.outputs(prepared, batch_size=batch_size, chunk_s=chunk_s, overlap_s=overlap_s,
                               allow_padding=allow_padding)
        for i, p, note in zip(todo, outputs, notes):
            records[i] = self._record(names[i], p)
            if note:
                records[i]["warning"] = note
        return records

    # --- end of chunked scoring ---------------------------------------------------------------------------

    def _embedding_rows(self, arrays: list[np.ndarray], batch_size: int) -> np.ndarray:
        """Pooled encoder states per input; speaker-normalised over the call's inputs when trained so."""
        X = self._embed(arrays, batch_size)
        if not self.embedding_config.get("speaker_norm"):
            return X
        return np.stack(self._normalise_together(list(X), "embeddings", vectors=True))

    @torch.inference_mode()
    def _probe_outputs(self, arrays: list[np.ndarray], batch_size: int) -> np.ndarray:
        X = self._embedding_rows(arrays, batch_size)
        return np.concatenate([self._forward(input_values=torch.from_numpy(X[i:i + batch_size]))
                               for i in range(0, len(X), batch_size)])

    def _embed(self, arrays: list[np.ndarray], batch_size: int) -> np.ndarray:
        cfg = self.embedding_config
        if self._encoder is None:
            self._encoder = load_encoder(cfg["name_or_path"], cfg["layers"], str(self.device), None,
                                          cfg.get("max_duration_s"))
        enc = self._encoder
        exact = enc.waveform and not uses_attention_mask(enc.feature_extractor)
        out: list[np.ndarray | None] = [None] * len(arrays)
        for group in length_sorted_batches([len(a) for a in arrays], batch_size, exact_lengths=exact):
            vectors = enc([arrays[i] for i in group], self.sampling_rate, cfg["layers"], cfg["pooling"])
            for i, v in zip(group, vectors):
                out[i] = v
        return np.stack(out)

    def outputs(self, arrays: list[np.ndarray], *, batch_size: int = 8, chunk_s: float | None = DEFAULT_CHUNK_S,
                overlap_s: float = DEFAULT_OVERLAP_S, allow_padding: bool | None = None) -> np.ndarray:
        """Raw outputs per input, ``(len(arrays), task.n_outputs)``, for mono float arrays already at
        :attr:`sampling_rate`: class logits (log-probabilities of a classic classifier) and/or target values,
        each averaged over the input's chunks/windows (:func:`ser_hf.clips.aggregate_clips`)."""
        if not arrays:
            return np.zeros((0, self.task.n_outputs), dtype=np.float32)
        if self.kind in ("transformer", "adapter"):
            out = self._transformer_outputs(arrays, batch_size, chunk_s, overlap_s, allow_padding)
        elif self.kind == "baseline":
            out = self._baseline_outputs(arrays, batch_size, chunk_s, overlap_s)
        elif self.kind == "probe":
            out = self._probe_outputs(arrays, batch_size)
        else:
            out = self._classic_outputs(arrays, batch_size, chunk_s, overlap_s)
        if out.shape != (len(arrays), self.task.n_outputs):
            raise ValueError(f"{self.model_dir}: the model gave outputs of shape {out.shape} for {len(arrays)} inputs; "
                             f"its config ({self.task.task}, {len(self.task.labels)} label(s), "
                             f"{len(self.task.targets)} target(s)) says {self.task.n_outputs} per input")
        return out

    def scores(self, arrays: list[np.ndarray], **kwargs) -> list[np.ndarray]:
        """Class probabilities for mono float arrays already at :attr:`sampling_rate` (the softmax of the class
        part of :meth:`outputs`); a regression model has none (use :meth:`values`)."""
        if not self.task.has_classes:
            raise ValueError(f"{self.model_dir} is a regression model ({', '.join(self.targets)}): it has no class "
                             "scores; use Predictor.values or predict_files/predict_arrays")
        logits, _ = self.task.split_outputs(self.outputs(arrays, **kwargs))
        return list(softmax(np.asarray(logits, dtype=np.float64)))

    def values(self, arrays: list[np.ndarray], **kwargs) -> np.ndarray:
        """Dimension values ``(len(arrays), len(targets))`` of a regression/multitask model, in the targets' units."""
        if not self.task.has_values:
            raise ValueError(f"{self.model_dir} is a classification model: it predicts no dimension values")
        return self.task.split_outputs(self.outputs(arrays, **kwargs))[1]

    def blank_record(self, name: str, label: str | None, **extra) -> dict:
        """The record of an input that was not scored (no speech, or an error in ``extra``)."""
        record = {"file": name, "label": label, "scores": None}
        if self.task.has_values:
            record["values"] = None
        return {**record, **extra}

    def _record(self, name: str, output: np.ndarray) -> dict:
        """The record of one input from its raw output row (:meth:`outputs`)."""
        logits, values = self.task.split_outputs(np.asarray(output))
        record: dict = {"file": name}
        if logits is not None:
            probs = softmax(np.asarray(logits, dtype=np.float64))
            record["label"] = self.label_names[int(np.argmax(probs))]
            record["scores"] = {label: float(p) for label, p in zip(self.label_names, probs)}
        if values is not None:
            record["values"] = {t: float(v) for t, v in zip(self.task.targets, values)}
        return record

    # ------------------------------------------------------------------------------------------ public API

    def predict_arrays(self, arrays: Sequence[np.ndarray], sampling_rate: int, *, names: Sequence[str] | None = None,
                       batch_size: int = 8, chunk_s: float | None = DEFAULT_CHUNK_S,
                       overlap_s: float = DEFAULT_OVERLAP_S, allow_padding: bool | None = None) -> list[dict]:
        """Records for mono arrays at ``sampling_rate`` (resampled to the model's rate when different)."""
        names = list(names) if names is not None else [f"<array {i}>" for i in range(len(arrays))]
        if len(names) != len(arrays):
            raise ValueError(f"{len(names)} names for {len(arrays)} arrays")
        prepared = []
        for name, a in zip(names, arrays):
            a = np.asarray(a, dtype=np.float32)
            if a.ndim != 1 or a.size == 0:
                raise ValueError(f"{name}: expected a non-empty mono 1-D array, got shape {a.shape}")
            prepared.append(resample(a, int(sampling_rate), self.sampling_rate))
        return self._score_records(names, prepared, batch_size, chunk_s, overlap_s, allow_padding)

    def predict_files(self, paths: Iterable[str | os.PathLike], *, batch_size: int = 8,
                      chunk_s: float | None = DEFAULT_CHUNK_S, overlap_s: float = DEFAULT_OVERLAP_S,
                      allow_padding: bool | None = None, block_files: int = 256) -> list[dict]:
        """Records for audio files, decoded with soundfile and resampled to the model's rate.

        Files are processed ``block_files`` at a time (bounded memory), length-sorted and batched inside
        a block. An undecodable file yields an ``error`` record and is skipped.
        """
        paths = [os.fspath(p) for p in paths]
        if self.normalises_over_call:  # the call's files are one speaker's clips: normalised as one block
            block_files = max(block_files, len(paths))
        records: list[dict | None] = [None] * len(paths)
        for start in range(0, len(paths), block_files):
            block = range(start, min(start + block_files, len(paths)))
            ok, arrays = [], []
            for i in block:
                try:
                    arrays.append(decode_audio(paths[i], self.sampling_rate))
                    ok.append(i)
                except (AudioDecodeError, OSError) as err:
                    logger.warning("skipping %s: %s", paths[i], err)
                    records[i] = self.blank_record(paths[i], None, error=str(err))
            scored = self._score_records([paths[i] for i in ok], arrays, batch_size, chunk_s, overlap_s, allow_padding)
            for i, record in zip(ok, scored):
                records[i] = record
        return records


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of the Linear layers (weights int8, activations quantised on the fly),
    for CPU inference. Uses ``torch.ao.quantization.quantize_dynamic``, deprecated by torch in favour of
    torchao but still shipped; see benchmarks/results/inference.md for its speed and agreement."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def load_for_inference(model_dir: str | os.PathLike, *, device: str | None = None,
                       local_files_only: bool | None = None, precision: str | None = None,
                       backend: str = "auto", threads: int | None = None) -> Predictor:
    """Load any saved ser_hf model folder (see the module docstring for what is recognised).

    ``precision`` (neural models): ``"fp32"`` (default: identical to ``pipeline("audio-classification")``),
    ``"bf16"`` (bfloat16 autocast: about 2x faster on CPUs with native bf16 such as AVX512-BF16 / AMX, and
    on GPUs; slow where bf16 is emulated), ``"int8"`` (:func:`quantize_int8`, CPU only) or ``"auto"``: what
    :mod:`ser_hf.precision` allows without a word from the user - fp32 for torch folders (they carry no
    recorded quality check; bf16 and int8 change top-1 labels on a few % of clips of a trained
    wav2vec2-base), the export's int8 graph for ONNX folders only where its recorded check passed.

    ``backend``: ``"torch"``, ``"onnx"`` (a folder written by ``scripts/export.py``, run with onnxruntime;
    ``precision`` then picks its graph: ``"fp32"``, ``"int8"``, or by default the export's own choice) or
    ``"auto"`` (onnx for export folders, else torch). ``threads``: intra-op threads (onnxruntime session or
    ``torch.set_num_threads``); default: the library's own choice.
    """
    # --- ONNX backend hook (issue 15): export folders run with onnxruntime, see ser_hf/onnx_backend.py
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use one of {BACKENDS}")
    if backend == "onnx" or (backend == "auto" and is_onnx_export(model_dir)):
        if device not in (None, "cpu"):
            raise ValueError(f"backend=onnx runs on the CPU; device={device!r} is not supported")
        parts = load_onnx_parts(model_dir, precision=precision or "auto", threads=threads)
        predictor = Predictor(parts["kind"], parts["model"], parts["labels"], parts["sampling_rate"],
                              Path(model_dir), feature_extractor=parts["feature_extractor"],
                              feature_config=parts["feature_config"], device=torch.device("cpu"), task=parts["task"])
        predictor.precision = f"onnx-{parts['model'].path.name}"
        return predictor
    if threads:
        torch.set_num_threads(int(threads))
    # --- end of hook
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {PRECISIONS}")
    if Path(model_dir).is_dir():  # sha256 of the weights as saved (ser_hf.runfolder): damage is named, not loaded
        verify_checksums(model_dir)
    predictor = load_torch_predictor(model_dir, device=device, local_files_only=local_files_only)
    if precision == "auto":
        precision = torch_auto_precision(predictor.kind, predictor.device.type)
        logger.info("precision=auto: %s (ser_hf.precision: a torch folder has no recorded bf16/int8 quality "
                    "check)", precision)
    if precision != "fp32" and predictor.kind == "classic":
        raise ValueError(f"precision={precision!r} applies to neural models; {model_dir} is a classic sklearn model")
    if precision == "int8":
        if predictor.device.type != "cpu":
            raise ValueError("int8 dynamic quantisation runs on CPU only; pass device='cpu'")
        predictor.model = quantize_int8(predictor.model)
    if precision == "bf16" and predictor.device.type == "cpu" and not cpu_has_bf16():
        logger.warning("precision='bf16' on a CPU without native bfloat16 (AVX512-BF16/AMX) is emulated and "
                       "usually slower than fp32")
    predictor.precision = precision
    return predictor


def load_torch_predictor(model_dir: str | os.PathLike, *, device: str | None = None,
                         local_files_only: bool | None = None) -> Predictor:
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} does not exist (pass the folder written by "
                                f"save_pretrained, e.g. runs/<recipe>/<run>/model)")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    found = sorted(p.name for p in model_dir.iterdir())

    if (model_dir / "adapter_config.json").is_file():
        model, fe = load_adapter(model_dir, local_files_only=local_files_only)
        model = model.merge_and_unload()  # plain weights: no LoRA branch to run per forward
        task = ModelTask.of_saved(model.config.to_dict(), model_dir / "adapter_config.json")
        return Predictor("adapter", model.to(dev).eval(), list(task.labels), fe.sampling_rate, model_dir,
                         feature_extractor=fe, device=dev, task=task)

    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json (found: {found}); expected a folder written by "
                                f"save_pretrained (transformers, ser_hf baseline or classic model)")
    config = _read_json(config_path)
    model_type = str(config.get("model_type", ""))
    task = ModelTask.of_saved(config, config_path, need_labels=False)  # checked once the kind is known
    labels = list(task.labels)

    if model_type == "ser_classic":
        clf = ClassicClassifier.from_pretrained(model_dir)
        ModelTask.of_saved(config, config_path)
        if (model_dir / "embedding_config.json").is_file():
            emb = _read_json(model_dir / "embedding_config.json")
            name = emb.get("name_or_path") or emb.get("model_name_or_path")
            if not name:
                raise ValueError(f"{model_dir / 'embedding_config.json'} names no name_or_path (the encoder)")
            emb = {"name_or_path": name, "layers": emb.get("layers", "last"), "pooling": emb.get("pooling", "mean"),
                   "max_duration_s": emb.get("max_duration_s"), "speaker_norm": bool(emb.get("speaker_norm", False))}
            fe = load_feature_extractor(name, local_files_only=local_files_only)
            return Predictor("classic", clf, labels, fe.sampling_rate, model_dir, embedding_config=emb, device=dev,
                             task=task)
        fcfg = _feature_config(model_dir, found)
        return Predictor("classic", clf, labels, fcfg.sampling_rate, model_dir, feature_config=fcfg, device=dev,
                         task=task)

    if model_type == "ser_probe":
        model = AutoModelForAudioClassification.from_pretrained(model_dir, local_files_only=True)
        if not model.config.encoder_name_or_path:
            raise ValueError(f"{config_path} names no encoder_name_or_path (the frozen encoder of this probe)")
        emb = {"name_or_path": model.config.encoder_name_or_path, "layers": "all", "pooling": model.config.pooling,
               "speaker_norm": model.config.speaker_norm, "max_duration_s": model.config.max_duration_s}
        fe = load_feature_extractor(emb["name_or_path"], local_files_only=local_files_only)
        return Predictor("probe", model.to(dev).eval(), labels, fe.sampling_rate, model_dir, embedding_config=emb,
                         device=dev, task=task)

    if model_type.startswith("ser_"):
        fcfg = _feature_config(model_dir, found)
        model = AutoModelForAudioClassification.from_pretrained(model_dir, local_files_only=True)
        return Predictor("baseline", model.to(dev).eval(), labels, fcfg.sampling_rate, model_dir,
                         feature_config=fcfg, device=dev, task=task)

    if (model_dir / "preprocessor_config.json").is_file():
        fe = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForAudioClassification.from_pretrained(model_dir, local_files_only=True)
        return Predictor("transformer", model.to(dev).eval(), labels, fe.sampling_rate, model_dir,
                         feature_extractor=fe, device=dev, task=task)

    raise ValueError(
        f"{model_dir}: cannot tell what model this is (config model_type={model_type!r}; found {found}). "
        f"Expected preprocessor_config.json (transformers model), adapter_config.json (LoRA adapter), or "
        f"model_type 'ser_*' with feature_config.json (ser_hf baseline / classic model)"
    )


def _feature_config(model_dir: Path, found: list[str]):
    path = model_dir / "feature_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no feature_config.json (found: {found}); ser_hf baseline and "
                                f"classic models keep the features they were trained on there")
    return FeatureConfig.from_dict(_read_json(path))


# What soundfile (libsndfile >= 1.1) decodes from its wheel alone.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".w64")


def audio_paths(spec: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Audio files named by ``spec``: a file, a folder (searched recursively, sorted), a glob pattern
    (``clips/*.wav``), a comma-separated list of those, or an iterable of them."""
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        items = [t for t in text.split(",") if t] if "," in text and not Path(text).exists() else [text]
    else:
        items = [os.fspath(x) for x in spec]
    out: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under folder {path}")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"the pattern {item!r} matches no files")
            out.extend(found)
        else:
            raise FileNotFoundError(f"audio path {path} does not exist (pass a file, a folder or a glob pattern)")
    return out


def _predictor(model: Predictor | str | os.PathLike, device: str | None, precision: str | None,
               backend: str = "auto", threads: int | None = None) -> Predictor:
    if isinstance(model, Predictor):
        return model
    return load_for_inference(model, device=device, precision=precision, backend=backend, threads=threads)


def predict_files(paths: Iterable[str | os.PathLike], model: Predictor | str | os.PathLike, *,
                  device: str | None = None, precision: str | None = None, backend: str = "auto",
                  threads: int | None = None, **kwargs) -> list[dict]:
    """:meth:`Predictor.predict_files` with a model folder (loaded with ``device``, ``precision``, ``backend``
    and ``threads``) or a loaded :class:`Predictor`."""
    return _predictor(model, device, precision, backend, threads).predict_files(paths, **kwargs)


def predict_arrays(arrays: Sequence[np.ndarray], sampling_rate: int, model: Predictor | str | os.PathLike, *,
                   device: str | None = None, precision: str | None = None, backend: str = "auto",
                   threads: int | None = None, **kwargs) -> list[dict]:
    """:meth:`Predictor.predict_arrays` with a model folder or a loaded :class:`Predictor`."""
    return _predictor(model, device, precision, backend, threads).predict_arrays(arrays, sampling_rate, **kwargs)


__all__ = ["AUDIO_EXTENSIONS", "BACKENDS", "DEFAULT_CHUNK_S", "DEFAULT_OVERLAP_S", "PRECISIONS", "Predictor", "audio_paths",
           "load_for_inference", "predict_arrays", "predict_files", "quantize_int8"]

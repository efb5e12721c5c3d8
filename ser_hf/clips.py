"""Clip-level scores from window/chunk scores: the one averaging function of evaluation and prediction.

Every model family scores a clip as several pieces (feature windows of the baseline CNNs, waveform
chunks of the transformers, chunks of a long file for the classic models at prediction time) and
averages the pieces' logits per clip, then applies a softmax. :func:`aggregate_clips` does the
averaging (the trainer's evaluation and :mod:`ser_hf.inference` both call it), :func:`softmax` the
normalisation, :func:`clip_probabilities` both. numpy only: this sits at the bottom of the layering
(with metrics / features).

Classic (sklearn) models give probabilities, not logits: their pieces are averaged as log-probabilities
(:func:`log_probabilities`), i.e. a normalised geometric mean, which for a single piece returns the
model's probabilities unchanged.

:func:`is_silent` is the energy test behind the "no speech" record of a silence-only file, and
:func:`min_clip_samples` the one definition of a too-short clip (listed by training, padded by prediction).
"""

from __future__ import annotations

import numpy as np

# Loudest 25 ms frame quieter than this (dB relative to full scale) = no speech in the file.
SILENCE_DBFS = -55.0
NO_SPEECH = "no speech"
ENCODER_MIN_S = 0.025  # a speech encoder's first frame


def min_clip_samples(feature_config, sampling_rate: int) -> int:
    """The shortest input a model reads meaningfully: one analysis frame (``feature_config.n_fft`` samples)
    for feature models, 25 ms (a speech encoder's first frame) when ``feature_config`` is None. Training lists
    shorter clips as too short (``experiment.min_clip_s``); prediction warns and zero-pads them."""
    if feature_config is not None:
        return max(1, int(feature_config.n_fft))
    return max(1, int(ENCODER_MIN_S * sampling_rate))


def softmax(logits) -> np.ndarray:
    """Softmax over the last axis, in the input's float precision (float32 stays float32)."""
    x = np.asarray(logits)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def aggregate_clips(clip_ids, logits, labels=None):
    """Average window logits per clip. Returns ``(clip_ids, mean_logits, clip_labels)`` ordered by
    clip id (``clip_labels`` is None when ``labels`` is). Windows of one clip must share a label."""
    ids = np.asarray(clip_ids).reshape(-1).astype(np.int64)
    values = np.asarray(logits, dtype=np.float64)
    if values.ndim != 2 or len(values) != len(ids):
        raise ValueError(f"aggregate_clips: logits must be (rows, classes) with one row per clip_id; got logits "
                         f"shape {values.shape} for {len(ids)} clip ids")
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    sums = np.zeros((len(uniq), values.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, values)
    mean = (sums / counts[:, None]).astype(np.float32)
    if labels is None:
        return uniq, mean, None
    labs = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labs) != len(ids):
        raise ValueError(f"aggregate_clips: {len(labs)} labels for {len(ids)} clip ids")
    clip_labels = np.empty(len(uniq), dtype=np.int64)
    clip_labels[inverse] = labs
    mixed = np.unique(ids[clip_labels[inverse] != labs])
    if mixed.size:
        raise ValueError(f"aggregate_clips: windows of clip(s) {mixed[:10].tolist()} carry different labels; "
                         "every window of a clip must have the clip's label")
    return uniq, mean, clip_labels


def clip_probabilities(clip_ids, logits) -> tuple[np.ndarray, np.ndarray]:
    """``(clip_ids, probabilities)``: :func:`aggregate_clips` then :func:`softmax` (in float64)."""
    uniq, mean, _ = aggregate_clips(clip_ids, logits)
    return uniq, softmax(mean.astype(np.float64))


def log_probabilities(probabilities, floor: float = 1e-12) -> np.ndarray:
    """Log of model probabilities (floored: random forests give exact zeros), to average as logits."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), floor))


def is_silent(array: np.ndarray, sampling_rate: int, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True when no 25 ms frame of ``array`` is louder than ``threshold_dbfs`` (RMS, dB re full scale)."""
    x = np.asarray(array, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return True
    frame = max(1, int(0.025 * sampling_rate))
    n = x.size // frame
    if n == 0:
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    else:
        frames = x[: n * frame].reshape(n, frame).astype(np.float64)
        rms = float(np.sqrt(np.mean(frames * frames, axis=1)).max())
        if x.size > n * frame:
            rms = max(rms, float(np.sqrt(np.mean(np.square(x[n * frame:], dtype=np.float64)))))
    return rms <= 10.0 ** (threshold_dbfs / 20.0)


__all__ = ["NO_SPEECH", "SILENCE_DBFS", "aggregate_clips", "clip_probabilities", "is_silent", "log_probabilities",
           "softmax"]

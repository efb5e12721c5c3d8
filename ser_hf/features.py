"""Acoustic features for the baseline and classic models, computed once and cached with ``datasets``.

(Over 500 lines: the extractors share one spectrum cache (_Spectra) and the caching map; FeatureConfig
lives in ser_hf.spec.)

Pipeline per clip (``preprocess`` then one extractor per ``FeatureConfig.kind``)::

    mono -> resample (soxr HQ, as load_corpus) -> trim (top_db) -> peak normalise -> pad/crop -> features

Output layout per kind (F = feature bins, T = frames, D = per-frame / per-clip dimension):

=============  ======================  ===================================================================
kind           shape                   content
=============  ======================  ===================================================================
mfcc_stack     (3, n_mfcc, T)          MFCC, delta, delta-delta as channels (2-D CNNs)
logmel         (1, n_mels, T)          log-mel power spectrogram in dB
spectrogram    (1, n_fft//2+1, T)      log linear power spectrogram in dB
frame_stack    (T, 3*n_mfcc + n_mels)  per frame: MFCC, delta, delta-delta, log-mel (LSTM / 1-D CNN)
frame_crema    (T, 3 + n_chroma + n_mfcc)  per frame: ZCR, energy, RMS, chroma-STFT, MFCC
fft            (n_fft//2+1,)           clip vector: dB of the mean STFT magnitude (FFT-magnitude SVM)
stats          (K * len(stats) [+1],)  clip vector: statistics of MFCC, delta-MFCC, log-RMS, ZCR,
                                       spectral centroid/rolloff/flatness [, F0 + voiced fraction]
opensmile      (D,) or (T, D)          openSMILE ``feature_set`` at ``level`` functionals (vector) or lld
                                       (frames): see ser_hf.features_opensmile
=============  ======================  ===================================================================

``compute_features`` reads decoded rows (``audio`` = {"array", "sampling_rate", "path"}, what ``load_corpus``
returns) or file rows (``audio`` = ``Audio(decode=False)`` / {"path"}, what the corpus builders return): file
rows are decoded with ``ser_hf.data.audio.decode_audio`` inside the feature map, so no decoded-audio cache is
written at all (the fastest cold path, see benchmarks/results/features.md). Both give identical features.

Storage in a ``datasets.Dataset`` (column ``features``, float32): ``Array2D``/``Array3D`` when every clip has
the same shape and that is known before computing (vector kinds; ``duration_s`` set; or equal clip lengths
without trimming), otherwise nested ``List`` columns (the time axis varies). Either way
``ds.with_format("numpy")[i]["features"]`` is an array of the shape above; windows made by ``make_windows``
always have a fixed shape (fast ``"torch"`` formatting for the trainer).

Rules the rest of the project relies on:
- Windows are cut by ``make_windows`` on each split *after* splitting; evaluation averages window logits per
  ``clip_id`` (never scores windows).
- ``speaker_normalise`` uses each speaker's own features, never labels (see its docstring).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import datasets
import librosa
import numpy as np
import pyarrow.compute as pc
import scipy.fft
import scipy.stats
from threadpoolctl import threadpool_limits
import soundfile as sf

from ser_hf.data import audio as audio_io
from ser_hf.features_opensmile import extract_batch as opensmile_extract_batch
from ser_hf.features_opensmile import feature_names as opensmile_names
from ser_hf.features_opensmile import feature_shape as opensmile_shape
from ser_hf.spec import (  # noqa: F401 (re-exported)
                         FEATURE_CONFIG_NAME, FEATURES_ALGORITHM_VERSION, FRAME_KINDS, IMAGE_KINDS, KINDS, STATS,
                         STATS_DESCRIPTORS, VECTOR_KINDS, WINDOW_PADS, FeatureConfig)

__all__ = [
    "FEATURE_CONFIG_NAME",
    "KINDS",
    "FeatureConfig",
    "compute_features",
    "extract",
    "extract_windows",
    "feature_names",
    "feature_shape",
    "make_windows",
    "num_frames",
    "preprocess",
    "resampled_length",
    "speaker_normalise",
    "is_vector_kind",
    "normalise_with",
    "pooled_statistics",
    "speaker_statistics",
    "window_array",
]

N_CONTRAST = 7  # librosa.feature.spectral_contrast: 6 bands + the residual
_AMIN = 1e-10  # power floor before log (librosa's power_to_db default)
_F0_GATE_DB = 30.0  # frames within this many dB of the loudest frame count as voiced for F0 statistics


# ----------------------------------------------------------------------------------------------------------
# Shapes


def _is_vector(cfg: FeatureConfig) -> bool:
    """One vector per clip: the vector kinds and openSMILE functionals."""
    return cfg.kind in VECTOR_KINDS or (cfg.kind == "opensmile" and cfg.level == "functionals")


is_vector_kind = _is_vector  # public name (inference: clip vectors are speaker-normalised over a call)


def num_frames(num_samples: int, cfg: FeatureConfig) -> int:
    """Frames of a centred STFT (librosa's ``center=True``) over ``num_samples`` samples."""
    return 1 + (num_samples + 2 * (cfg.n_fft // 2) - cfg.n_fft) // cfg.hop_length


def _descriptor_sizes(cfg: FeatureConfig) -> dict[str, int]:
    """Rows each stats descriptor contributes."""
    return {"mfcc": cfg.n_mfcc, "delta_mfcc": cfg.n_mfcc, "rms": 1, "zcr": 1, "centroid": 1, "rolloff": 1,
            "flatness": 1, "logmel": cfg.n_mels, "bandwidth": 1, "contrast": N_CONTRAST}


def _num_stats_descriptors(cfg: FeatureConfig) -> int:
    sizes = _descriptor_sizes(cfg)
    return sum(sizes[d] for d in cfg.stats_descriptors) + (1 if cfg.f0 else 0)


def feature_shape(cfg: FeatureConfig, num_samples: int | None = None, windowed: bool = False) -> tuple[int, ...]:
    """Shape of one clip's features (or of one window when ``windowed``).

    ``num_samples`` is the clip length after preprocessing; not needed for vector kinds, with ``duration_s``,
    or for windows.
    """
    f_bins = cfg.n_fft // 2 + 1
    if cfg.kind == "opensmile":
        return opensmile_shape(cfg, num_samples, windowed)
    if cfg.kind == "fft":
        return (f_bins,)
    if cfg.kind == "stats":
        return (_num_stats_descriptors(cfg) * len(cfg.stats) + (1 if cfg.f0 else 0),)
    if windowed and cfg.window_frames is not None:
        t = cfg.window_frames
    elif cfg.duration_s is not None:
        t = num_frames(round(cfg.duration_s * cfg.sampling_rate), cfg)
    elif num_samples is not None:
        t = num_frames(num_samples, cfg)
    else:
        raise ValueError(f"kind={cfg.kind!r} has a time axis: pass num_samples, or set duration_s or window_frames")
    if cfg.kind == "mfcc_stack":
        return (3, cfg.n_mfcc, t)
    if cfg.kind == "logmel":
        return (1, cfg.n_mels, t)
    if cfg.kind == "spectrogram":
        return (1, f_bins, t)
    if cfg.kind == "frame_stack":
        return (t, 3 * cfg.n_mfcc + cfg.n_mels)
    return (t, 3 + cfg.n_chroma + cfg.n_mfcc)  # frame_crema


def feature_names(cfg: FeatureConfig) -> list[str]:
    """Names along the feature axis D of frame and vector kinds (e.g. for classic-model reports)."""
    if cfg.kind == "opensmile":
        return opensmile_names(cfg)
    mfcc = [f"mfcc{i}" for i in range(cfg.n_mfcc)]
    if cfg.kind == "frame_stack":
        return mfcc + [f"d_{m}" for m in mfcc] + [f"dd_{m}" for m in mfcc] + [f"mel{i}" for i in range(cfg.n_mels)]
    if cfg.kind == "frame_crema":
        return ["zcr", "energy", "rms"] + [f"chroma{i}" for i in range(cfg.n_chroma)] + mfcc
    if cfg.kind == "fft":
        freqs = librosa.fft_frequencies(sr=cfg.sampling_rate, n_fft=cfg.n_fft)
        return [f"fft_{f:.1f}Hz" for f in freqs]
    if cfg.kind == "stats":
        names = [f"{d}_{s}" for d in _stats_descriptor_names(cfg) for s in cfg.stats]
        return names + (["voiced_fraction"] if cfg.f0 else [])
    raise ValueError(f"kind={cfg.kind!r} is a (C, F, T) image: feature_names is for {FRAME_KINDS + VECTOR_KINDS}")


def _stats_descriptor_names(cfg: FeatureConfig) -> list[str]:
    many = {"mfcc": [f"mfcc{i}" for i in range(cfg.n_mfcc)], "delta_mfcc": [f"d_mfcc{i}" for i in range(cfg.n_mfcc)],
            "rms": ["rms_db"], "logmel": [f"mel{i}" for i in range(cfg.n_mels)],
            "contrast": [f"contrast{i}" for i in range(N_CONTRAST)]}
    names = [n for d in cfg.stats_descriptors for n in many.get(d, [d])]
    return names + (["f0"] if cfg.f0 else [])


# ----------------------------------------------------------------------------------------------------------
# One clip


def preprocess(array: Any, sampling_rate: int, cfg: FeatureConfig, name: str = "<array>") -> np.ndarray:
    """Mono float32 at ``cfg.sampling_rate``, trimmed / peak-normalised / padded as configured."""
    y = np.asarray(array, dtype=np.float32)
    if y.ndim == 2:  # soundfile gives (n, channels), librosa (channels, n): the short axis is the channels
        y = y.mean(axis=int(np.argmin(y.shape)))
    if y.ndim != 1:
        raise ValueError(f"{name}: audio must be 1-D (or 2-D multichannel), got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name}: audio is empty; drop the clip or check its decoding")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name}: audio holds NaN/inf samples; check its decoding")
    if not sampling_rate or sampling_rate <= 0:
        raise ValueError(f"{name}: sampling_rate={sampling_rate!r} must be a positive integer")
    if int(sampling_rate) != cfg.sampling_rate:
        # the soxr call load_corpus decodes with, so training and inference resample identically; the length
        # is pinned so it can be known from file headers before decoding (see _fixed_shape)
        y = librosa.util.fix_length(audio_io.resample(y, int(sampling_rate), cfg.sampling_rate),
                                    size=resampled_length(y.size, int(sampling_rate), cfg.sampling_rate))
    if cfg.trim_db is not None:
        trimmed, _ = librosa.effects.trim(y, top_db=cfg.trim_db)
        if trimmed.size:  # an all-silent clip is kept whole rather than emptied
            y = trimmed
    if cfg.peak_normalise:
        peak = float(np.max(np.abs(y)))
        if peak > 0:
            y = y / peak
    if cfg.duration_s is not None:
        y = librosa.util.fix_length(y, size=round(cfg.duration_s * cfg.sampling_rate))
    return np.ascontiguousarray(y, dtype=np.float32)


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples after resampling: round(n * target / orig), at least 1 (soxr's own rounding)."""
    return max(1, int(math.floor(num_samples * target_sr / orig_sr + 0.5)))


def extract(array: Any, sampling_rate: int, cfg: FeatureConfig) -> np.ndarray:
    """Features of one clip (used by inference and by on-the-fly training augmentation)."""
    return _extract_batch(preprocess(array, sampling_rate, cfg)[None, :], cfg)[0]


def extract_windows(array: Any, sampling_rate: int, cfg: FeatureConfig) -> np.ndarray:
    """Windows of one clip, shape (n_windows, *window shape); vector kinds give (1, D)."""
    return window_array(extract(array, sampling_rate, cfg), cfg)


# ----------------------------------------------------------------------------------------------------------
# A batch of equal-length clips, vectorised: one FFT call for all frames of all clips, one GEMM for the mel
# filterbank (librosa.feature.mfcc rebuilds the filterbank on every call and runs one clip at a time), dB
# floors taken per clip so a clip's features never depend on the batch it was computed in. Internally frames
# come first, (B, T, F): the mel GEMM and the DCT then run over contiguous memory.


@lru_cache(maxsize=16)
def _mel_basis_t(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """librosa's Slaney mel filterbank, transposed to (F, n_mels)."""
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float32)
    return np.ascontiguousarray(basis.T)


@lru_cache(maxsize=16)
def _window(n_fft: int, win_length: int | None) -> np.ndarray:
    """Periodic Hann window centred in n_fft samples, as librosa.stft builds it."""
    win = librosa.filters.get_window("hann", win_length or n_fft, fftbins=True)
    return librosa.util.pad_center(win, size=n_fft).astype(np.float32)


def _power_to_db(power: np.ndarray, top_db: float | None) -> np.ndarray:
    """librosa.power_to_db(ref=1) with the top_db floor taken per clip (axis 0 = batch), not per batch."""
    db = np.log10(np.maximum(power, _AMIN))
    db *= 10.0
    if top_db is not None:
        axes = tuple(range(1, db.ndim))
        np.maximum(db, db.max(axis=axes, keepdims=True) - top_db, out=db)
    return db.astype(np.float32, copy=False)


@lru_cache(maxsize=32)
def _delta_operator(width: int, order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """librosa.feature.delta (Savitzky-Golay, mode="interp") as a linear map: (left edge, centre, right edge).

    librosa's delta runs scipy's savgol_filter, whose "interp" edges fit a polynomial per row and take ~1 ms
    per clip; the filter is linear in the data, so applying it once to an identity matrix gives its weights
    and the batch needs only small matrix products (exactly the same outputs).
    """
    k = librosa.feature.delta(np.eye(width), width=width, order=order, axis=0)  # out[i] = k[i] @ x[:width]
    half = width // 2
    return (np.ascontiguousarray(k[:half].T, dtype=np.float32), k[half].astype(np.float32),
            np.ascontiguousarray(k[half + 1:].T, dtype=np.float32))


def _delta(x: np.ndarray, order: int, width: int, axis: int) -> np.ndarray:
    """librosa.feature.delta along ``axis`` (time), shrinking the window for clips shorter than ``width``."""
    x = np.moveaxis(x, axis, -1)
    t = x.shape[-1]
    width = min(width, t if t % 2 else t - 1)
    if width < 3:
        return np.moveaxis(np.zeros_like(x), -1, axis)
    left, centre, right = _delta_operator(width, order)
    interior = np.lib.stride_tricks.sliding_window_view(x, width, axis=-1) @ centre
    out = np.concatenate([x[..., :width] @ left, interior, x[..., -width:] @ right], axis=-1)
    return np.moveaxis(out.astype(np.float32, copy=False), -1, axis)


def _to_ft(x: np.ndarray) -> np.ndarray:
    """(B, T, F) -> (B, F, T), the layout librosa's feature functions and the image kinds use."""
    return x.transpose(0, 2, 1)


_CACHE_BYTES = 2 << 20  # windowed frames per FFT call in _Spectra.power


class _Spectra:
    """Lazily computed spectra of a (B, n) batch, frames first: (B, T, F)."""

    def __init__(self, y: np.ndarray, cfg: FeatureConfig):
        self.y, self.cfg = y, cfg
        self._power = self._logmel = self._mfcc = self._rms = None

    @property
    def power(self) -> np.ndarray:  # |STFT|^2, (B, T, n_fft//2+1); equals librosa.stft(center=True) squared
        if self._power is None:
            c = self.cfg
            # Hand-framed instead of librosa.stft: same frames and window, ~2x faster on batches because
            # librosa loops over blocks and returns (B, F, T) with strides the mel product then copies.
            padded = np.pad(self.y, ((0, 0), (c.n_fft // 2, c.n_fft // 2)))
            frames = np.lib.stride_tricks.sliding_window_view(padded, c.n_fft, axis=-1)[:, :: c.hop_length]
            window = _window(c.n_fft, c.win_length)
            power = np.empty(frames.shape[:2] + (c.n_fft // 2 + 1,), dtype=np.float32)
            # A few clips at a time: the windowed frames and their spectrum then stay in cache, ~1.5x faster
            # than one pass over a 64-clip batch (measured; a 64-clip temporary is ~45 MB).
            step = max(1, _CACHE_BYTES // max(1, frames.shape[1] * c.n_fft * 4))
            for start in range(0, len(frames), step):
                block = slice(start, start + step)
                # abs then square in place: 4x faster than real**2 + imag**2
                np.abs(scipy.fft.rfft(frames[block] * window, axis=-1), out=power[block])
            self._power = np.multiply(power, power, out=power)
        return self._power

    @property
    def magnitude(self) -> np.ndarray:  # (B, F, T)
        return _to_ft(np.sqrt(self.power))

    @property
    def logmel(self) -> np.ndarray:  # (B, T, n_mels), dB
        if self._logmel is None:
            c = self.cfg
            b, t, f = self.power.shape
            mel = self.power.reshape(b * t, f) @ _mel_basis_t(c.sampling_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
            self._logmel = _power_to_db(mel.reshape(b, t, -1), c.top_db)
        return self._logmel

    @property
    def mfcc(self) -> np.ndarray:  # (B, T, n_mfcc); equals librosa.feature.mfcc (DCT-II, ortho) transposed
        if self._mfcc is None:
            self._mfcc = scipy.fft.dct(self.logmel, type=2, axis=-1, norm="ortho")[..., : self.cfg.n_mfcc]
        return self._mfcc

    @property
    def rms(self) -> np.ndarray:  # (B, 1, T)
        if self._rms is None:
            c = self.cfg
            self._rms = librosa.feature.rms(y=self.y, frame_length=c.n_fft, hop_length=c.hop_length, center=True)
        return self._rms

    def zcr(self) -> np.ndarray:  # (B, 1, T)
        c = self.cfg
        return librosa.feature.zero_crossing_rate(self.y, frame_length=c.n_fft, hop_length=c.hop_length, center=True)


def _extract_batch(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Features of a (B, n) batch of preprocessed equal-length clips -> (B, *feature_shape)."""
    if cfg.kind == "opensmile":
        return opensmile_extract_batch(y, cfg)
    sp = _Spectra(y, cfg)
    kind, width = cfg.kind, cfg.delta_width
    if kind == "mfcc_stack":
        m = _to_ft(sp.mfcc)
        out = np.stack([m, _delta(m, 1, width, -1), _delta(m, 2, width, -1)], axis=1)
    elif kind == "logmel":
        out = _to_ft(sp.logmel)[:, None]
    elif kind == "spectrogram":
        out = _to_ft(_power_to_db(sp.power, cfg.top_db))[:, None]
    elif kind == "frame_stack":
        m = sp.mfcc
        out = np.concatenate([m, _delta(m, 1, width, 1), _delta(m, 2, width, 1), sp.logmel], axis=-1)
    elif kind == "frame_crema":
        # chroma with tuning=0: librosa's default estimates tuning per call, which is slow and batch-dependent.
        chroma = librosa.feature.chroma_stft(S=_to_ft(sp.power), sr=cfg.sampling_rate, n_fft=cfg.n_fft,
                                             tuning=0.0, n_chroma=cfg.n_chroma)
        energy = np.square(sp.rms) * cfg.n_fft  # sum of squares over the frame
        per_frame = np.concatenate([sp.zcr(), energy, sp.rms, chroma], axis=1)
        out = np.concatenate([_to_ft(per_frame), sp.mfcc], axis=-1)
    elif kind == "fft":
        mean_mag = np.sqrt(sp.power).mean(axis=1)
        out = 20.0 * np.log10(np.maximum(mean_mag, 1e-5))
    else:
        out = _stats_batch(sp, cfg)
    return np.ascontiguousarray(out, dtype=np.float32)


def _functionals(x: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
    """Statistics over the last (time) axis of ``x``: one array of x.shape[:-1] per name."""
    percentiles = {"median": 50, "p5": 5, "p25": 25, "p75": 75, "p95": 95}
    out = []
    for name in names:
        if name in percentiles:
            out.append(np.percentile(x, percentiles[name], axis=-1))
        elif name == "skew":
            out.append(np.nan_to_num(scipy.stats.skew(x, axis=-1)))
        elif name == "kurtosis":
            out.append(np.nan_to_num(scipy.stats.kurtosis(x, axis=-1)))
        elif name in ("delta_mean", "delta_std"):
            d = np.diff(x, axis=-1) if x.shape[-1] > 1 else np.zeros_like(x)
            out.append(d.mean(axis=-1) if name == "delta_mean" else d.std(axis=-1))
        else:
            out.append({"mean": np.mean, "std": np.std, "min": np.min, "max": np.max}[name](x, axis=-1))
    return out


def _stats_batch(sp: _Spectra, cfg: FeatureConfig) -> np.ndarray:
    """Per-clip statistics of frame descriptors (+ F0 over energy-gated frames) -> (B, D)."""
    sr = cfg.sampling_rate
    rms_db = 20.0 * np.log10(np.maximum(sp.rms, 1e-5))
    mag = sp.magnitude
    mfcc = _to_ft(sp.mfcc) if {"mfcc", "delta_mfcc"} & set(cfg.stats_descriptors) else None
    make = {
        "mfcc": lambda: mfcc,
        "delta_mfcc": lambda: _delta(mfcc, 1, cfg.delta_width, -1),
        "rms": lambda: rms_db,
        "zcr": sp.zcr,
        "centroid": lambda: librosa.feature.spectral_centroid(S=mag, sr=sr, n_fft=cfg.n_fft),
        "rolloff": lambda: librosa.feature.spectral_rolloff(S=mag, sr=sr, n_fft=cfg.n_fft),
        "flatness": lambda: librosa.feature.spectral_flatness(S=mag),
        "logmel": lambda: _to_ft(sp.logmel),
        "bandwidth": lambda: librosa.feature.spectral_bandwidth(S=mag, sr=sr, n_fft=cfg.n_fft),
        "contrast": lambda: librosa.feature.spectral_contrast(S=mag, sr=sr, n_fft=cfg.n_fft),
    }
    desc = np.concatenate([make[d]() for d in cfg.stats_descriptors], axis=1).astype(np.float64)  # (B, K, T)
    parts = _functionals(desc, cfg.stats)  # each (B, K)
    if not cfg.f0:
        return np.stack(parts, axis=-1).reshape(len(desc), -1)
    # librosa.yin (not pyin: pyin is ~50x slower) with an energy gate as the voicing decision.
    f0 = librosa.yin(sp.y, fmin=cfg.f0_min, fmax=cfg.f0_max, sr=sr, frame_length=cfg.n_fft,
                     hop_length=cfg.hop_length, center=True)  # (B, T)
    level = rms_db[:, 0]
    voiced = level >= level.max(axis=-1, keepdims=True) - _F0_GATE_DB
    f0_stats = np.zeros((len(desc), len(cfg.stats)))
    for i in range(len(desc)):  # one small loop over clips (the voiced frame count differs per clip)
        v = f0[i][voiced[i]]
        if v.size:
            f0_stats[i] = [float(f) for f in _functionals(v, cfg.stats)]
    stats = np.concatenate([np.stack(parts, axis=-1), f0_stats[:, None, :]], axis=1).reshape(len(desc), -1)
    return np.concatenate([stats, voiced.mean(axis=-1, keepdims=True)], axis=1)


def _extract_many(waves: Sequence[np.ndarray], cfg: FeatureConfig) -> list[np.ndarray]:
    """Features of clips of any lengths: equal lengths are computed as one batch, order is kept."""
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_length.setdefault(len(w), []).append(i)
    out: list[np.ndarray | None] = [None] * len(waves)
    for idx in by_length.values():
        feats = _extract_batch(np.stack([waves[i] for i in idx]), cfg)
        for i, f in zip(idx, feats):
            out[i] = f
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------
# Datasets


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _array_feature(shape: tuple[int, ...]) -> datasets.features.FeatureType:
    if len(shape) == 1:
        return datasets.List(datasets.Value("float32"), length=shape[0])
    if len(shape) == 2:
        return datasets.Array2D(shape, "float32")
    return datasets.Array3D(shape, "float32")


def _nested_list_feature(ndim: int) -> datasets.features.FeatureType:
    feat: Any = datasets.Value("float32")
    for _ in range(ndim):
        feat = datasets.List(feat)
    return feat


def _audio_kind(ds: datasets.Dataset) -> str:
    """"decoded" ({"array", "sampling_rate"} rows, as load_corpus returns) or "files" ({"path"} rows, e.g. the
    builders' ``Audio(decode=False)``: decoded inside the feature map, so no decoded-audio cache is written)."""
    audio = ds.features.get("audio")
    if isinstance(audio, dict) and "array" in audio and "sampling_rate" in audio:
        return "decoded"
    if isinstance(audio, datasets.Audio) and not audio.decode:
        return "files"
    if isinstance(audio, dict) and "path" in audio:
        return "files"
    raise ValueError(f"compute_features needs an 'audio' column of decoded clips ({{'array', 'sampling_rate', "
                     f"'path'}}, as ser_hf.data.load_corpus returns) or of file paths (Audio(decode=False) or "
                     f"{{'path'}}); got columns {ds.column_names} with audio={audio!r}")


def _file_headers(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(frames, sampling rate) per file from the headers alone (no decoding)."""
    frames, srs = np.empty(len(paths), dtype=np.int64), np.empty(len(paths), dtype=np.int64)
    for i, path in enumerate(paths):
        try:
            info = sf.info(path)
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise audio_io.AudioDecodeError(path, f"unreadable header ({err})") from err
        frames[i], srs[i] = info.frames, info.samplerate
    return frames, srs


def _fixed_shape(ds: datasets.Dataset, cfg: FeatureConfig,
                 source: str) -> tuple[tuple[int, ...] | None, int | None]:
    """(the one output shape, the one clip length in samples) when known before computing, else None."""
    if _is_vector(cfg) or cfg.duration_s is not None:
        return feature_shape(cfg), None
    if cfg.trim_db is not None or len(ds) == 0:
        return None, None
    audio = ds.data.column("audio")
    rows = ds._indices.column(0).to_numpy() if ds._indices is not None else slice(None)
    if source == "files" and {"file_frames", "file_sampling_rate"} <= set(ds.column_names):
        # the corpus builders recorded every file's header when they scanned the corpus
        n = ds.data.column("file_frames").to_numpy()[rows]
        srs = ds.data.column("file_sampling_rate").to_numpy()[rows]
    elif source == "files":
        paths = np.asarray(pc.struct_field(audio, "path").to_numpy(zero_copy_only=False), dtype=object)[rows]
        if any(p is None for p in paths):
            return None, None
        n, srs = _file_headers(list(paths))
    else:  # clip lengths from the Arrow metadata, without touching the samples
        n = pc.list_value_length(pc.struct_field(audio, "array")).to_numpy()[rows]
        srs = pc.struct_field(audio, "sampling_rate").to_numpy()[rows]
    lengths = np.unique([m if sr == cfg.sampling_rate else resampled_length(int(m), int(sr), cfg.sampling_rate)
                         for m, sr in zip(n, srs)])
    if len(lengths) != 1:
        return None, None
    return feature_shape(cfg, int(lengths[0])), int(lengths[0])


def _clip_waveform(item: dict, cfg: FeatureConfig, length: int | None) -> np.ndarray:
    """One row's preprocessed waveform; ``length`` (fixed-shape outputs) pins the resampled length, which
    soxr may round one sample differently from the header-based prediction."""
    name = str(item.get("path") or "<array>")
    if item.get("array") is not None:
        array, sr = np.asarray(item["array"], dtype=np.float32), int(item["sampling_rate"])
    elif item.get("path"):
        # the same decode + soxr resampling as load_corpus, so both routes give identical features
        array, sr = audio_io.decode_audio(item["path"], cfg.sampling_rate), cfg.sampling_rate
    else:
        raise ValueError("an audio row has neither 'array' nor 'path': decode it first (ser_hf.data.load_corpus)")
    y = preprocess(array, sr, cfg, name=name)
    return y if length is None or len(y) == length else librosa.util.fix_length(y, size=length)


def _map_compute(audio: list[dict], cfg_dict: dict, fixed_length: int | None, fixed: bool, threads: int = 1) -> dict:
    cfg = FeatureConfig.from_dict(cfg_dict)

    def part(rows) -> list[np.ndarray]:
        return _extract_many([_clip_waveform(a, cfg, fixed_length) for a in rows], cfg)

    if threads > 1 and len(audio) > 1:
        # Threads over sub-batches, BLAS held to one thread each: decoding (libsndfile), soxr, the FFT and
        # the numpy/GEMM steps release the GIL, so the cores work in parallel without the start-up cost of
        # datasets' worker processes (num_proc), which is larger than a small corpus's whole computation.
        # 4 chunks per thread: one thread's decoding (which holds the GIL) overlaps another's FFTs.
        bounds = np.linspace(0, len(audio), min(4 * threads, len(audio)) + 1).astype(int)
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(part, [audio[a:b] for a, b in zip(bounds[:-1], bounds[1:])]))
        feats = [f for p in parts for f in p]
    else:
        feats = part(audio)
    return {"features": np.stack(feats) if fixed and feats else feats}


def _threads_per_process(num_proc: int | None) -> int:
    """CPU cores this process may use for feature threads: its share when ``num_proc`` processes run."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, num_proc or 1))


def _auto_batch_size(length: int | None) -> int:
    """Clips per map batch: ~32 MiB of waveform (so each thread's chunk holds a few dozen clips, which the
    threaded map needs to pay off), between 16 and 256; 64 when clip lengths vary."""
    if length is None:
        return 64
    return int(min(256, max(16, (32 << 20) // (4 * max(1, length)))))


def compute_features(ds: datasets.Dataset, cfg: FeatureConfig, num_proc: int | None = None,
                     batch_size: int | None = None, keep_audio: bool = False) -> datasets.Dataset:
    """Add a float32 ``features`` column computed from ``audio`` with one batched, cached ``datasets.map``.

    The map's fingerprint is derived from the input's fingerprint and ``cfg.cache_key()``: calling again with
    the same data and config loads the cached Arrow file; any feature-changing field recomputes. (In-memory
    datasets, e.g. ``Dataset.from_dict``, have no cache files, so datasets recomputes them.) With
    ``cfg.speaker_norm`` the result is passed through ``speaker_normalise`` (statistics from the speakers in
    ``ds``). Every column but ``audio`` is kept; ``keep_audio=True`` keeps the waveforms too, at the cost of
    writing a second copy of them into the feature cache (nothing downstream of features reads them: training
    reads windows, waveform augmentation reads the decoded corpus, inference decodes files itself).
    ``batch_size`` (clips per map batch) defaults to about 32 MiB of audio (:func:`_auto_batch_size`).
    """
    if not isinstance(cfg, FeatureConfig):
        raise TypeError(f"cfg must be a FeatureConfig (use FeatureConfig.from_dict), got {type(cfg).__name__}")
    source = _audio_kind(ds)
    if "features" in ds.column_names:
        raise ValueError("dataset already has a 'features' column: compute features from the audio dataset")
    shape, length = _fixed_shape(ds, cfg, source)
    if batch_size is None:
        batch_size = _auto_batch_size(length)
    ndim = len(feature_shape(cfg, 0))
    feat_type = _array_feature(shape) if shape is not None else _nested_list_feature(ndim)
    features = datasets.Features({**ds.features, "features": feat_type})
    remove = None if keep_audio else ["audio"]
    if remove:
        del features["audio"]
    if len(ds) == 0:  # datasets.map returns an empty input unchanged; keep the output schema instead
        return datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    fmt = ds.format
    out = ds.with_format("numpy", columns=["audio"], output_all_columns=True).map(
        _map_compute,
        batched=True,
        batch_size=batch_size,
        input_columns=["audio"],
        fn_kwargs={"cfg_dict": cfg.to_dict(), "fixed_length": length, "fixed": shape is not None,
                   "threads": _threads_per_process(num_proc)},
        features=features,
        remove_columns=remove,
        num_proc=num_proc,
        new_fingerprint=_fingerprint(ds._fingerprint, "features", cfg.cache_key(), str(keep_audio)),
        desc=f"features ({cfg.kind})",
    )
    out = out.with_format(fmt["type"], **fmt["format_kwargs"])
    if cfg.speaker_norm:
        out = speaker_normalise(out, num_proc=num_proc)
    return out


# ----------------------------------------------------------------------------------------------------------
# Windows


def window_array(features: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Cut one clip's features into windows along time -> (n_windows, *window shape).

    Windows start every ``window_hop_frames`` frames; when the hop leaves a tail uncovered one more window is
    aligned to the clip's end, so every frame is seen. A clip shorter than one window gives one window padded
    per ``window_pad``. Vector kinds and ``window_frames=None`` give the whole clip as one window.
    """
    x = np.asarray(features, dtype=np.float32)
    if _is_vector(cfg) or cfg.window_frames is None:
        return x[None]
    t_axis = -1 if cfg.kind in IMAGE_KINDS else 0
    w = cfg.window_frames
    hop = cfg.window_hop_frames or w
    t = x.shape[t_axis]
    if t < w:
        pad = [(0, 0)] * x.ndim
        pad[t_axis] = (0, w - t)
        mode = {"zeros": "constant", "wrap": "wrap", "edge": "edge"}[cfg.window_pad]
        return np.pad(x, pad, mode=mode)[None]
    starts = list(range(0, t - w + 1, hop))
    if starts[-1] + w < t:
        starts.append(t - w)
    views = np.lib.stride_tricks.sliding_window_view(x, w, axis=t_axis)  # window axis appended last
    if t_axis == -1:
        return np.ascontiguousarray(np.moveaxis(views[..., starts, :], -2, 0))
    return np.ascontiguousarray(np.moveaxis(views[starts], -1, 1))


def _map_windows(batch: dict, indices: list[int], cfg_dict: dict, keep: list[str]) -> dict:
    cfg = FeatureConfig.from_dict(cfg_dict)
    windows = [window_array(f, cfg) for f in batch["features"]]
    counts = [len(w) for w in windows]
    out = {c: np.repeat(np.asarray(batch[c]), counts, axis=0) for c in keep}
    out["clip_id"] = np.repeat(np.asarray(indices, dtype=np.int64), counts)
    if _is_vector(cfg) or cfg.window_frames is None:
        out["features"] = [w[0] for w in windows]  # one row per clip; shapes may differ
    else:
        out["features"] = np.concatenate(windows) if windows else np.zeros((0, *feature_shape(cfg, windowed=True)))
    return out


def make_windows(ds: datasets.Dataset, cfg: FeatureConfig, num_proc: int | None = None) -> datasets.Dataset:
    """One row per window with ``clip_id`` (row index of the source clip in ``ds``); drops ``audio``.

    Call on each split after splitting, so no window mixes train and test clips; every other column
    (``label``, ``speaker_id``, ``file``, ...) is copied to the clip's windows. Windowed ``features`` have a
    fixed shape (``Array2D``/``Array3D``). With ``window_frames=None`` (or a vector kind) rows stay one per
    clip. Cached like ``compute_features``.
    """
    if "features" not in ds.column_names:
        raise ValueError(f"make_windows needs a 'features' column (run compute_features first); got {ds.column_names}")
    if "clip_id" in ds.column_names:
        raise ValueError("dataset already has a 'clip_id' column: windows are cut from clip-level features")
    keep = [c for c in ds.column_names if c not in ("audio", "features")]
    feats = datasets.Features({c: ds.features[c] for c in keep})
    feats["clip_id"] = datasets.Value("int64")
    windowed = not _is_vector(cfg) and cfg.window_frames is not None
    feats["features"] = _array_feature(feature_shape(cfg, windowed=True)) if windowed else ds.features["features"]
    if len(ds) == 0:
        return datasets.Dataset.from_dict({k: [] for k in feats}, features=feats)
    fmt = ds.format
    out = ds.with_format("numpy", columns=keep + ["features"]).map(
        _map_windows,
        batched=True,
        batch_size=64,
        with_indices=True,
        fn_kwargs={"cfg_dict": cfg.to_dict(), "keep": keep},
        remove_columns=ds.column_names,
        features=feats,
        num_proc=num_proc,
        new_fingerprint=_fingerprint(ds._fingerprint, "windows", cfg.kind, str(cfg.window_frames),
                                     str(cfg.window_hop_frames), cfg.window_pad, FEATURES_ALGORITHM_VERSION),
        desc="windows",
    )
    return out.with_format(fmt["type"], **fmt["format_kwargs"])


# ----------------------------------------------------------------------------------------------------------
# Per-speaker normalisation


def _as_frames(x: np.ndarray) -> np.ndarray:
    """Rows = observations, columns = feature dims, for this module's layouts (see module docstring)."""
    if x.ndim == 1:
        return x[None, :]
    if x.ndim == 2:  # (T, D)
        return x
    return x.reshape(-1, x.shape[-1]).T  # (C, F, T) -> (T, C*F)


def _stat_shape(x: np.ndarray) -> tuple[int, ...]:
    if x.ndim == 1:
        return x.shape
    if x.ndim == 2:
        return (1, x.shape[1])
    return (*x.shape[:-1], 1)


def speaker_statistics(ds: datasets.Dataset, column: str = "features",
                       speaker_column: str = "speaker_id") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-speaker mean and std of each feature dim, pooled over that speaker's clips (and frames).

    Reads only ``column`` and ``speaker_column``: labels never enter. Shapes broadcast against one clip's
    features: (D,) for vectors, (1, D) for (T, D), (C, F, 1) for (C, F, T).
    """
    for c in (column, speaker_column):
        if c not in ds.column_names:
            raise ValueError(f"speaker normalisation needs column {c!r}; dataset has {ds.column_names}")
    acc: dict[str, list] = {}
    if len(ds) == 0:
        return {}
    view = ds.with_format("numpy", columns=[column, speaker_column])
    for batch in view.iter(batch_size=64):
        for x, spk in zip(batch[column], batch[speaker_column]):
            _accumulate(acc, str(spk), x)
    return {spk: _moments(a) for spk, a in acc.items()}


def _accumulate(acc: dict, key: str, x) -> None:
    """Add one clip's frames (or its vector) to ``acc[key]`` = [count, sum, sum of squares, stats shape]."""
    x = np.asarray(x, dtype=np.float64)
    frames = _as_frames(x)
    a = acc.setdefault(key, [0, 0.0, 0.0, _stat_shape(x)])
    a[0] += frames.shape[0]
    a[1] = a[1] + frames.sum(axis=0)
    a[2] = a[2] + np.square(frames).sum(axis=0)


def _moments(a: list) -> tuple[np.ndarray, np.ndarray]:
    n, s, sq, shape = a
    mean = s / n
    std = np.sqrt(np.maximum(sq / n - np.square(mean), 0.0))
    if len(shape) == 3:  # frames were (T, C*F)
        mean, std = mean.reshape(shape[:-1])[..., None], std.reshape(shape[:-1])[..., None]
    return mean.reshape(shape).astype(np.float32), std.reshape(shape).astype(np.float32)


def pooled_statistics(features: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of one speaker's clips given as arrays (pooled over clips and frames): what
    ``speaker_statistics`` computes per speaker of a dataset, for prediction (``ser_hf.inference``)."""
    acc: dict[str, list] = {}
    for x in features:
        _accumulate(acc, "", x)
    if not acc:
        raise ValueError("pooled_statistics of no clips")
    return _moments(acc[""])


def normalise_with(x, mean: np.ndarray, std: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Z-score ``x`` with a speaker's (mean, std); a dim with std <= eps is only centred."""
    return ((np.asarray(x, np.float32) - mean) / np.where(std > eps, std, 1.0)).astype(np.float32)


def _map_normalise(feats: list, speakers: list, column: str, stats: dict, eps: float) -> dict:
    out = [normalise_with(x, *stats[str(spk)], eps=eps) for x, spk in zip(feats, speakers)]
    return {column: np.stack(out) if out and all(o.shape == out[0].shape for o in out) else out}


def speaker_normalise(ds: datasets.Dataset, column: str = "features", speaker_column: str = "speaker_id",
                      eps: float = 1e-6, num_proc: int | None = None) -> datasets.Dataset:
    """Z-score each clip's features with its own speaker's mean/std (computed by ``speaker_statistics``).

    Statistics come from the features of the speaker's clips in ``ds`` and never from labels. For test
    speakers this is transductive but unsupervised (it needs a batch of the speaker's unlabeled speech), the
    standard speaker normalisation of SER papers. Call it on each split separately, or let
    ``compute_features`` do it (``cfg.speaker_norm``); single-file inference of an unseen speaker needs that
    speaker's statistics from other clips (``speaker_statistics`` on a dataset of them). A dim that is
    constant for a speaker (std <= eps) is only centred.
    """
    stats = speaker_statistics(ds, column, speaker_column)
    if not stats:  # empty split (e.g. no validation speakers)
        return ds
    fmt = ds.format
    out = ds.with_format("numpy", columns=[column, speaker_column], output_all_columns=True).map(
        _map_normalise,
        batched=True,
        batch_size=64,
        input_columns=[column, speaker_column],
        fn_kwargs={"column": column, "stats": stats, "eps": eps},
        features=ds.features,
        num_proc=num_proc,
        # the statistics are a function of the input's content, so its fingerprint identifies them
        new_fingerprint=_fingerprint(ds._fingerprint, "speaker_norm", column, speaker_column, str(eps),
                                     FEATURES_ALGORITHM_VERSION),
        desc="speaker normalisation",
    )
    return out.with_format(fmt["type"], **fmt["format_kwargs"])

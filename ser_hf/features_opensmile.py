"""openSMILE feature sets (eGeMAPS, ComParE 2016, ...) as ``features.kind=opensmile``.

The field's standard acoustic baselines, computed by audEERING's ``opensmile`` package (it bundles
SMILExtract, no system install) from the *same* preprocessed arrays as every other feature kind:
``ser_hf.features`` decodes, resamples (soxr) and trims a clip exactly as for ``stats`` and hands the array
at ``cfg.sampling_rate`` to :func:`extract_batch`, which calls ``Smile.process_signal(array, sampling_rate)``.
There is no second decoding path, and the results are cached by ``compute_features`` like any other kind.

``level``:

- ``functionals``: one vector per clip, e.g. 88 for eGeMAPSv02, 6373 for ComParE_2016 (classic family);
- ``lld``: low-level descriptors per 10 ms frame, shape (T, D), e.g. D = 25 for eGeMAPSv02, 65 for
  ComParE_2016 (sequence baselines: LSTM, 1-D CNN);
- ``lld_deltas``: the deltas of those descriptors that the feature set defines (not every set has them).

Column names come from ``Smile.feature_names`` (:func:`feature_names`), so a classic model's inputs are
named. Hand-written code is limited to shape bookkeeping; the features themselves are openSMILE's.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from functools import cache, lru_cache
from types import SimpleNamespace
from typing import Any

import numpy as np

from ser_hf.spec import OPENSMILE_DELTA_SETS, opensmile_problems

__all__ = ["FEATURE_SETS", "LEVELS", "check_config", "clear_memo", "extract_batch", "feature_names", "feature_shape",
           "is_vector"]

# ``level`` values of the recipe and the opensmile.FeatureLevel member each selects.
LEVELS = {"functionals": "Functionals", "lld": "LowLevelDescriptors", "lld_deltas": "LowLevelDescriptors_Deltas"}


def _feature_sets() -> tuple[str, ...]:
    import opensmile  # lazy, here and in _smile: only features.kind=opensmile needs it (~0.15 s of imports)

    return tuple(m.name for m in opensmile.FeatureSet)


FEATURE_SETS = ("eGeMAPSv02", "ComParE_2016")  # the documented ones; any opensmile.FeatureSet name works
DELTA_SETS = OPENSMILE_DELTA_SETS  # sets that define LLD deltas (ser_hf.spec)


def check_config(cfg: Any) -> list[str]:
    """Problems of an ``opensmile`` feature config (empty when fine): the run spec's check."""
    return opensmile_problems(cfg)


def is_vector(cfg: Any) -> bool:
    """True when the config gives one vector per clip (functionals)."""
    return cfg.level == "functionals"


@cache
def _smile(feature_set: str, level: str, thread: int):
    """One ``opensmile.Smile`` per (set, level, thread): the feature map runs clips on several threads."""
    import opensmile

    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=getattr(opensmile.FeatureLevel, LEVELS[level]))


def _process(y: np.ndarray, cfg: Any) -> np.ndarray:
    smile = _smile(cfg.feature_set, cfg.level, threading.get_ident())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Segment too short": reported below with the length
        values = smile.process_signal(np.asarray(y, dtype=np.float32), cfg.sampling_rate).to_numpy(np.float32)
    return values


def feature_names(cfg: Any) -> list[str]:
    """openSMILE's names of the feature columns (functionals) or per-frame descriptors (LLD levels)."""
    return list(_smile(cfg.feature_set, cfg.level, threading.get_ident()).feature_names)


@lru_cache(maxsize=256)
def _frames(feature_set: str, level: str, sampling_rate: int, num_samples: int) -> int:
    """Frames openSMILE gives for a clip of ``num_samples`` (a function of the length only: measured on
    silence of that length rather than re-deriving each set's frame sizes)."""
    cfg = SimpleNamespace(feature_set=feature_set, level=level, sampling_rate=sampling_rate)
    return int(_process(np.zeros(num_samples, np.float32), cfg).shape[0])


def feature_shape(cfg: Any, num_samples: int | None, windowed: bool = False) -> tuple[int, ...]:
    """(D,) for functionals; (T, D) for LLD levels (T from ``num_samples``, or ``window_frames``)."""
    d = len(feature_names(cfg))
    if is_vector(cfg):
        return (d,)
    if windowed and cfg.window_frames is not None:
        return (cfg.window_frames, d)
    if cfg.duration_s is not None:
        num_samples = round(cfg.duration_s * cfg.sampling_rate)
    if num_samples is None:
        raise ValueError("kind='opensmile' with an LLD level has a time axis: pass num_samples, or set "
                         "duration_s or window_frames")
    return (_frames(cfg.feature_set, cfg.level, cfg.sampling_rate, int(num_samples)), d)


# In-process memo of functionals by clip content. datasets caches a feature map per input fingerprint, and
# every cross-validation fold selects the corpus's clips into new splits, so each fold would run openSMILE
# (~0.2 s a clip, 10-50x the stats kind) on every clip again; crossval runs its folds in one process, so
# this memo makes folds 2..k free. Keyed by the preprocessed samples and every field openSMILE sees; openSMILE
# is deterministic (tests/test_features_opensmile.py checks cached == fresh), so it changes no number.
_MEMO: dict[bytes, np.ndarray] = {}
_MEMO_MAX_BYTES = 512 << 20
_memo_bytes = 0
_memo_lock = threading.Lock()


def _memo_key(clip: np.ndarray, cfg: Any) -> bytes:
    h = hashlib.blake2b(np.ascontiguousarray(clip, dtype=np.float32).tobytes(), digest_size=20)
    h.update(f"{cfg.feature_set}|{cfg.level}|{cfg.sampling_rate}".encode())
    return h.digest()


def _cached_process(clip: np.ndarray, cfg: Any) -> np.ndarray:
    global _memo_bytes
    key = _memo_key(clip, cfg)
    hit = _MEMO.get(key)
    if hit is not None:
        return hit
    values = _process(clip, cfg)
    with _memo_lock:
        if _memo_bytes + values.nbytes <= _MEMO_MAX_BYTES:
            _MEMO[key] = values
            _memo_bytes += values.nbytes
    return values


def clear_memo() -> None:
    """Forget memoised features (tests use it to compare with a truly fresh extraction)."""
    global _memo_bytes
    with _memo_lock:
        _MEMO.clear()
        _memo_bytes = 0


def extract_batch(y: np.ndarray, cfg: Any) -> np.ndarray:
    """Features of a (B, n) batch of preprocessed equal-length clips -> (B, D) or (B, T, D), float32."""
    out = []
    for clip in y:
        values = _cached_process(clip, cfg)
        if not np.isfinite(values).all():
            raise ValueError(
                f"openSMILE {cfg.feature_set} ({cfg.level}) returned NaN/inf for a clip of {len(clip)} samples "
                f"({len(clip) / cfg.sampling_rate:.3f} s at {cfg.sampling_rate} Hz): the clip is too short for this "
                "feature set; drop it, or pad clips with features.duration_s")
        out.append(values[0] if is_vector(cfg) else values)
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)

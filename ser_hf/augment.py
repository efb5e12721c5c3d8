"""Training-time augmentation: waveform transforms (audiomentations) and SpecAugment masks (torch).

Train split only: nothing here knows about splits, so the caller decides. The trainer applies these in the
collate function of the *training* loader (or ``augment_dataset`` on the training split before
``compute_features``); validation and test data are never augmented.

Seeded: a ``WaveformAugment`` owns its random streams (audiomentations draws from the global ``random`` and
``numpy.random`` modules, so each call swaps our states in and out), and ``spec_augment`` draws from a
``torch.Generator``. Passing ``key=`` (e.g. ``(epoch, clip_index)``) makes one call independent of call order,
DataLoader workers and ``num_proc``.

Recipe section (each transform ``null``/absent = off; sub-keys are the audiomentations parameter names)::

    augment:
      noise: {p: 0.5, min_snr_db: 10, max_snr_db: 30}          # AddGaussianSNR
      shift: {p: 0.5, min_shift: -0.2, max_shift: 0.2}         # Shift (fraction of the clip, rolled over)
      pitch_shift: {p: 0.3, min_semitones: -2, max_semitones: 2}   # PitchShift
      time_stretch: {p: 0.3, min_rate: 0.9, max_rate: 1.1}     # TimeStretch (length kept)
      spec_augment: {time_masks: 2, time_width: 20, freq_masks: 2, freq_width: 8}
      copies: 1                                                # augment_dataset: augmented copies per clip
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

import audiomentations as A
import datasets
import numpy as np
import torch

from .spec import AugmentConfig, SpecAugmentConfig, build, plain, unknown_key_error

__all__ = [
    "AUGMENT_KEYS",
    "SPEC_KEYS",
    "SpecAugment",
    "WaveformAugment",
    "augment_dataset",
    "build_spec_augment",
    "build_waveform_augment",
    "spec_augment",
    "spec_augment_masks",
]

# recipe key -> (audiomentations class, defaults we set)
WAVEFORM_TRANSFORMS: dict[str, tuple[type, dict[str, Any]]] = {
    "noise": (A.AddGaussianSNR, {"min_snr_db": 10.0, "max_snr_db": 30.0, "p": 0.5}),
    "shift": (A.Shift, {"min_shift": -0.2, "max_shift": 0.2, "shift_unit": "fraction", "rollover": True, "p": 0.5}),
    # phase vocoder: the signalsmith default needs the optional python-stretch package
    "pitch_shift": (A.PitchShift, {"min_semitones": -2.0, "max_semitones": 2.0,
                                   "method": "librosa_phase_vocoder", "p": 0.3}),
    "time_stretch": (A.TimeStretch, {"min_rate": 0.9, "max_rate": 1.1, "leave_length_unchanged": True,
                                     "method": "librosa_phase_vocoder", "p": 0.3}),
}
# The recipe keys and the SpecAugment defaults are the run spec's (ser_hf.spec.AugmentConfig).
SPEC_KEYS = tuple(f.name for f in dataclasses.fields(SpecAugmentConfig))
AUGMENT_KEYS = tuple(f.name for f in dataclasses.fields(AugmentConfig))


def _check_section(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = dict(plain(cfg) or {})
    for key in cfg:
        if key not in AUGMENT_KEYS:
            raise unknown_key_error("augment", key, AUGMENT_KEYS)
    return cfg


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class WaveformAugment:
    """audiomentations ``Compose`` with its own seeded random streams.

    ``aug(samples, sample_rate)`` continues this object's stream; ``aug(samples, sample_rate, key=(epoch, i))``
    uses a stream derived from (seed, key) only. Not thread-safe (the global states are swapped during a
    call); DataLoader workers are processes, so call ``reseed(seed + worker_id)`` in ``worker_init_fn`` or
    use ``key=``.
    """

    def __init__(self, transforms: list, seed: int, config: dict[str, Any]):
        self.compose = A.Compose(transforms, shuffle=False)
        self.config = config
        self._warm_up()
        self.reseed(seed)

    def _warm_up(self) -> None:
        """Run every transform once on a dummy clip: first calls import modules lazily (librosa, scipy), and
        an import that draws from the global random state would otherwise shift our stream on call one only."""
        saved_py, saved_np = random.getstate(), np.random.get_state()
        saved_p = [t.p for t in self.compose.transforms]
        try:
            for t in self.compose.transforms:
                t.p = 1.0
            dummy = np.random.RandomState(0).uniform(-0.1, 0.1, 8000).astype(np.float32)
            self.compose(samples=dummy, sample_rate=16000)
        finally:
            for t, p in zip(self.compose.transforms, saved_p):
                t.p = p
            random.setstate(saved_py)
            np.random.set_state(saved_np)

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)
        self._py = random.Random(self.seed)
        self._np = np.random.RandomState(_derive_seed(self.seed))

    def __call__(self, samples: np.ndarray, sample_rate: int, key: int | Sequence[int] | None = None) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if samples.ndim != 1 or samples.size == 0:
            raise ValueError(f"waveform augmentation needs a non-empty 1-D array, got shape {samples.shape}")
        if key is None:
            py, npr = self._py, self._np
        else:
            parts = [key] if isinstance(key, (int, np.integer)) else list(key)
            s = _derive_seed(self.seed, *parts)
            py, npr = random.Random(s), np.random.RandomState(_derive_seed(s))
        saved_py, saved_np = random.getstate(), np.random.get_state()
        try:
            random.setstate(py.getstate())
            np.random.set_state(npr.get_state())
            out = self.compose(samples=samples, sample_rate=int(sample_rate))
            py.setstate(random.getstate())
            npr.set_state(np.random.get_state())
        finally:
            random.setstate(saved_py)
            np.random.set_state(saved_np)
        return np.asarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"WaveformAugment(seed={self.seed}, {self.config})"


def build_waveform_augment(cfg_dict: Mapping[str, Any] | None, seed: int) -> WaveformAugment | None:
    """The waveform transforms named in an ``augment:`` section, or None when none is on."""
    cfg = _check_section(cfg_dict)
    transforms, used = [], {}
    for name, (cls, defaults) in WAVEFORM_TRANSFORMS.items():
        sub = cfg.get(name)
        if sub is None or sub is False:
            continue
        sub = {} if sub is True else dict(sub)
        valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
        bad = sorted(set(sub) - valid)
        if bad:
            raise ValueError(f"augment.{name}: unknown key(s) {bad}; {cls.__name__} takes {sorted(valid)}")
        kwargs = {**defaults, **sub}
        try:
            transforms.append(cls(**kwargs))
        except (ValueError, TypeError, AssertionError) as err:
            raise ValueError(f"augment.{name}: invalid parameters {kwargs}: {err}") from err
        used[name] = kwargs
    return WaveformAugment(transforms, seed, used) if transforms else None


# ----------------------------------------------------------------------------------------------------------
# SpecAugment. Hand-written with torch: torchaudio (which has TimeMasking/FrequencyMasking) is not a
# dependency, and transformers' _compute_mask_indices is wav2vec2's time-span masking inside the model
# (numpy RNG, mask probability rather than a count of masks, no frequency masks on feature tensors).


def _draw_masks(batch: int, length: int, n_masks: int, width: int, generator: torch.Generator | None,
                device: torch.device) -> torch.Tensor:
    """(batch, length) bool: n_masks spans per row, each of width ~ U{0..width} at a uniform start."""
    if n_masks <= 0 or width <= 0 or length <= 0:
        return torch.zeros(batch, length, dtype=torch.bool, device=device)
    width = min(width, length)
    widths = torch.randint(0, width + 1, (batch, n_masks, 1), generator=generator)
    starts = (torch.rand(batch, n_masks, 1, generator=generator) * (length - widths + 1)).long()
    pos = torch.arange(length).view(1, 1, -1)
    return ((pos >= starts) & (pos < starts + widths)).any(dim=1).to(device)


def spec_augment_masks(batch: int, n_time: int, n_freq: int, time_masks: int, time_width: int, freq_masks: int,
                       freq_width: int, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The masks ``spec_augment`` applies: ((B, n_time), (B, n_freq)) bool, True = zeroed."""
    device = torch.device(device)
    return (_draw_masks(batch, n_time, time_masks, time_width, generator, device),
            _draw_masks(batch, n_freq, freq_masks, freq_width, generator, device))


def spec_augment(x: torch.Tensor, time_masks: int, time_width: int, freq_masks: int, freq_width: int,
                 generator: torch.Generator | None = None, time_axis: int = -1, freq_axis: int = -2,
                 mask_value: float = 0.0) -> torch.Tensor:
    """SpecAugment time and frequency masks on a batch; returns a new tensor.

    Dim 0 is the batch: each item gets its own masks, shared across its channels (MFCC, delta, delta-delta stay
    aligned). Defaults fit (B, C, F, T) images; sequence inputs (B, T, D) use ``time_axis=1, freq_axis=2``.
    Mask widths are drawn uniformly from 0..width (Park et al. 2019); with features z-scored, the default
    mask value 0 is the mean.
    """
    x = torch.as_tensor(x)
    if x.ndim < 3:
        raise ValueError(f"spec_augment needs a batch (B, ..., F, T) or (B, T, D), got shape {tuple(x.shape)}")
    t_ax, f_ax = time_axis % x.ndim, freq_axis % x.ndim
    if 0 in (t_ax, f_ax) or t_ax == f_ax:
        raise ValueError(f"time_axis={time_axis} and freq_axis={freq_axis} must be two different non-batch axes")
    tmask, fmask = spec_augment_masks(x.shape[0], x.shape[t_ax], x.shape[f_ax], time_masks, time_width,
                                      freq_masks, freq_width, generator, x.device)
    shape_t = [x.shape[0]] + [1] * (x.ndim - 1)
    shape_f = list(shape_t)
    shape_t[t_ax], shape_f[f_ax] = x.shape[t_ax], x.shape[f_ax]
    mask = tmask.view(shape_t) | fmask.view(shape_f)
    return x.masked_fill(mask, mask_value)


class SpecAugment:
    """``spec_augment`` with fixed parameters and its own seeded ``torch.Generator``."""

    def __init__(self, time_masks: int = SpecAugmentConfig.time_masks, time_width: int = SpecAugmentConfig.time_width,
                 freq_masks: int = SpecAugmentConfig.freq_masks, freq_width: int = SpecAugmentConfig.freq_width,
                 mask_value: float = SpecAugmentConfig.mask_value, seed: int = 0):
        for name, v in (("time_masks", time_masks), ("time_width", time_width), ("freq_masks", freq_masks),
                        ("freq_width", freq_width)):
            if not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"augment.spec_augment.{name}={v!r} must be an integer >= 0")
        self.time_masks, self.time_width = int(time_masks), int(time_width)
        self.freq_masks, self.freq_width = int(freq_masks), int(freq_width)
        self.mask_value = float(mask_value)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, x: torch.Tensor, time_axis: int = -1, freq_axis: int = -2) -> torch.Tensor:
        return spec_augment(x, self.time_masks, self.time_width, self.freq_masks, self.freq_width,
                            self.generator, time_axis, freq_axis, self.mask_value)


def build_spec_augment(cfg_dict: Mapping[str, Any] | None, seed: int) -> SpecAugment | None:
    """The ``spec_augment`` entry of an ``augment:`` section, or None when absent."""
    sub = _check_section(cfg_dict).get("spec_augment")
    if sub is None or sub is False:
        return None
    sub = build(SpecAugmentConfig, {} if sub is True else sub, "augment.spec_augment")
    return SpecAugment(**dataclasses.asdict(sub), seed=seed)


# ----------------------------------------------------------------------------------------------------------
# Offline augmentation of the training split (augmented copies are decoded once, then cached features).


def _map_augment(batch: dict, indices: list[int], cfg_dict: dict, seed: int, copies: int) -> dict:
    aug = build_waveform_augment(cfg_dict, seed)
    out: dict[str, list] = {k: [] for k in batch}
    out["augmented"] = []
    for row, idx in enumerate(indices):
        for copy in range(copies + 1):
            for k in batch:
                out[k].append(batch[k][row])
            if copy:
                audio = dict(batch["audio"][row])
                audio["array"] = aug(audio["array"], audio["sampling_rate"], key=(copy, idx))
                out["audio"][-1] = audio
            out["augmented"].append(copy > 0)
    return out


def augment_dataset(ds: datasets.Dataset, cfg_dict: Mapping[str, Any] | None, seed: int,
                    copies: int | None = None, num_proc: int | None = None) -> datasets.Dataset:
    """Training split -> each clip followed by ``copies`` augmented copies (column ``augmented``: bool).

    Copy ``c`` of row ``i`` is seeded from (seed, c, i) only, so the result does not depend on batching or
    ``num_proc``, and is cached by datasets (fingerprint from the input, the config and the seed).
    """
    cfg = _check_section(cfg_dict)
    copies = int(cfg.get("copies", 1) if copies is None else copies)
    if copies < 0:
        raise ValueError(f"augment.copies={copies} must be >= 0")
    if build_waveform_augment(cfg, seed) is None or copies == 0:
        return ds
    audio = ds.features.get("audio")
    if not isinstance(audio, dict) or "array" not in audio:
        raise ValueError(f"augment_dataset needs decoded audio ({{'array', 'sampling_rate'}} rows, as "
                         f"ser_hf.data.load_corpus returns); got columns {ds.column_names} with audio={audio!r}")
    features = datasets.Features({**ds.features, "augmented": datasets.Value("bool")})
    key = json.dumps({k: v for k, v in cfg.items() if k != "spec_augment"}, sort_keys=True, default=str)
    fmt = ds.format
    out = ds.with_format("numpy").map(
        _map_augment,
        batched=True,
        batch_size=16,
        with_indices=True,
        fn_kwargs={"cfg_dict": cfg, "seed": seed, "copies": copies},
        remove_columns=ds.column_names,
        features=features,
        num_proc=num_proc,
        new_fingerprint=hashlib.sha256(f"{ds._fingerprint}|augment|{key}|{seed}|{copies}".encode()).hexdigest()[:32],
        desc="augmenting (train split)",
    )
    return out.with_format(fmt["type"], **fmt["format_kwargs"])

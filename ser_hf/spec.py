"""The typed run spec: every section of a composed recipe parsed and checked once, before any work.

``parse_spec(cfg)`` turns the config that :func:`ser_hf.config.load_config` composed into a
:class:`RunSpec` of one dataclass per section (``data``, ``features``, ``augment``, ``model``,
``trainer``, ``peft``, ``embeddings``, ``hub``). A key no section knows fails here, naming the
section, the key and the closest valid key (``trainer.max_epoch`` -> "did you mean max_epochs?"),
and so does a section the chosen model family does not use (``trainer.max_epochs=3`` on a classic
recipe): nothing has been read, decoded or written yet.

This module is the bottom layer of the package: standard library and omegaconf only (no torch,
numpy, datasets or transformers), so scripts validate a recipe in well under a second before they
import the heavy modules. The stages that consume a section (``features.compute_features``, the
Trainer, ...) take these dataclasses; defaults live here, the YAML recipes hold overrides only.

One mechanism builds every section: :func:`build` (dataclass from a mapping; unknown keys are errors
with a suggestion). Values are checked in each dataclass's ``__post_init__``.

(Over 500 lines on purpose: every section's dataclass and check in one torch-free module, the one place
to read what a recipe may say.)

The learning-rate story, for every trainable family (baselines and transformers):

- ``trainer.learning_rate``: the base rate of every parameter not named below;
- ``trainer.group_learning_rates: {prefix: lr}``: per-parameter-prefix rates (whole dotted components);
- ``model.head_learning_rate`` (transformer only): the rate of the task head, found generically
  (classifier, projector, layer weights); prefixes in ``group_learning_rates`` still win inside it;
- ``trainer.warmup_ratio`` / ``trainer.warmup_steps``: linear warm-up (scheduler cosine or linear);
- ``trainer.freeze_steps`` + ``trainer.freeze_prefixes``: keep those parameters frozen for the first
  optimizer steps; ``model.freeze_base_steps`` (transformer only) is the same with the encoder as the
  prefix, and setting both is an error rather than one silently replacing the other.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class SpecError(ValueError):
    """A recipe key or value that cannot work; raised before any I/O."""


def closest(key: str, valid) -> str | None:
    """The valid key closest to ``key`` (difflib ratio >= 0.6, else >= 0.4: ``rnak`` -> ``r``), or None."""
    for cutoff in (0.6, 0.4):
        hits = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=cutoff)
        if hits:
            return hits[0]
    return None


def unknown_key_error(section: str | None, key: str, valid, what: str = "key") -> SpecError:
    """``unknown key 'trainer.max_epoch' ... did you mean trainer.max_epochs?`` with the valid keys
    (``section`` None: a top-level key)."""
    hint = closest(key, valid)
    if section is None:
        return SpecError(f"unknown top-level config key {key!r}" + (f"; did you mean {hint}?" if hint else "")
                         + f" (valid keys: {', '.join(sorted(valid))})")
    hint = f"; did you mean {section}.{hint}?" if hint else ""
    return SpecError(f"unknown {what} '{section}.{key}' in the '{section}' section of the recipe{hint} "
                     f"(valid keys: {', '.join(sorted(valid))})")


def plain(d: Any) -> Any:
    """A DictConfig/ListConfig as plain Python containers (anything else unchanged)."""
    if isinstance(d, (DictConfig,)) or OmegaConf.is_config(d):
        return OmegaConf.to_container(d, resolve=True)
    return d


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def parse_bool(value: Any, key: str | None = None) -> bool:
    """``true/false/yes/no/on/off/1/0`` (any case) or a real bool -> bool; anything else is an error naming
    ``key`` (``bool("no")`` would be True, which is how ``resume=no`` used to resume). The one boolean
    parser of the package (ser_hf.runfolder and ser_hf.config re-export it)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    low = str(value).strip().lower() if value is not None else ""
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    where = f"{key}={value!r}" if key else repr(value)
    raise SpecError(f"{where}: expected a boolean, one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}")


def _is_bool_field(f) -> bool:
    return f.type in (bool, "bool", "bool | None")


def build(cls, d: Mapping | None, section: str):
    """Dataclass ``cls`` from the mapping ``d`` (dict or DictConfig; None = all defaults). A key that is
    not a field of ``cls`` is a :class:`SpecError` naming the section, the key and the closest field."""
    d = plain(d)
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise SpecError(f"the '{section}' section must be a mapping of options, got {type(d).__name__} {d!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in known:
            raise unknown_key_error(section, key, known)
    d = dict(d)
    for f in dataclasses.fields(cls):  # booleans through the one parser: `cache=no` must not mean True
        if _is_bool_field(f) and d.get(f.name) is not None:
            d[f.name] = parse_bool(d[f.name], f"{section}.{f.name}")
    return cls(**d)


# ============================================================================================== data

SPLITS = ("speaker", "loso", "kfold", "session", "manifest", "random")  # = ser_hf.data.splits.SPLITS (tested)
LABEL_SETS = ("corpus", "common")


@dataclass
class DataConfig:
    """The ``data:`` section: which corpus, where it lives, how it is split."""

    corpus: str = "emodb"
    data_dir: str | None = None  # or $SER_HF_DATA_<CORPUS>
    split: str = "speaker"  # speaker | loso | kfold | random
    fold: int | None = None
    sampling_rate: int = 16000
    label_set: str = "corpus"  # corpus | common
    cache_dir: str | None = None
    num_proc: int | None = None
    builder: dict = field(default_factory=dict)  # extra builder options, e.g. {label_source: voice}
    synthetic: dict | None = None  # {speakers, per_class, seed}: generate the corpus instead of reading one
    test_corpus: str | None = None  # cross-corpus: train on `corpus`, test on this one (common labels)
    test_data_dir: str | None = None
    extra_train: list = field(default_factory=list)  # multi-corpus: [{corpus, data_dir}, ...] added to training
    # Your own data (issue 14): corpus=manifest reads this CSV/TSV; corpus=folder takes speakers from this regex
    # on file names; labels fixes the class order (default: sorted) for manifest and folder corpora.
    manifest: str | None = None
    speaker_regex: str | None = None
    labels: list | None = None

    def corpus_options(self) -> dict:
        """Builder options of the manifest/folder keys that are set (an error for a corpus without them)."""
        keys = ("manifest", "speaker_regex", "labels")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def __post_init__(self):
        if self.split not in SPLITS:
            raise SpecError(f"data.split={self.split!r}: choose one of {list(SPLITS)}")
        if self.label_set not in LABEL_SETS:
            raise SpecError(f"data.label_set={self.label_set!r}: choose one of {list(LABEL_SETS)}")
        if self.fold is not None and (not isinstance(self.fold, int) or isinstance(self.fold, bool) or self.fold < 1):
            raise SpecError(f"data.fold={self.fold!r}: a 1-based fold number, or null")
        if not isinstance(self.sampling_rate, int) or isinstance(self.sampling_rate, bool) or self.sampling_rate <= 0:
            raise SpecError(f"data.sampling_rate={self.sampling_rate!r}: a positive integer (Hz)")
        for i, extra in enumerate(self.extra_train):
            if not isinstance(extra, Mapping) or "corpus" not in extra:
                raise SpecError(f"data.extra_train[{i}]={extra!r}: each entry needs at least a 'corpus' key")

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "DataConfig":
        return build(cls, d, "data")


# ========================================================================================== features

FEATURE_CONFIG_NAME = "feature_config.json"
KINDS = ("mfcc_stack", "logmel", "spectrogram", "frame_stack", "frame_crema", "fft", "stats", "opensmile")
# opensmile kind: ``level`` values (the keys of ser_hf.features_opensmile.LEVELS), and the feature sets that
# define LLD deltas (opensmile 2.6: asking the (e)GeMAPS sets for them crashes the process with a
# segmentation fault inside SMILExtract, so the config refuses them up front).
OPENSMILE_LEVELS = ("functionals", "lld", "lld_deltas")
OPENSMILE_DELTA_SETS = ("ComParE_2016", "emobase", "IS09", "IS10", "IS13")


def opensmile_problems(cfg) -> list[str]:
    """Problems of an ``opensmile`` feature config (empty when fine). opensmile is imported here, lazily, only
    for this kind: the spec, which the scripts import first, stays light (standard library + omegaconf)."""
    import opensmile

    problems = []
    valid = tuple(m.name for m in opensmile.FeatureSet)
    if cfg.feature_set not in valid:
        problems.append(f"feature_set={cfg.feature_set!r} is not an openSMILE feature set; valid: {list(valid)}")
    if cfg.level not in OPENSMILE_LEVELS:
        problems.append(f"level={cfg.level!r} is not one of {list(OPENSMILE_LEVELS)}")
    if not problems and cfg.level == "lld_deltas" and cfg.feature_set not in OPENSMILE_DELTA_SETS:
        problems.append(f"feature_set={cfg.feature_set!r} has no level=lld_deltas; sets with deltas: "
                        f"{list(OPENSMILE_DELTA_SETS)}")
    if cfg.window_frames is not None and cfg.level == "functionals":
        problems.append("level=functionals gives one vector per clip: set window_frames to null")
    return problems
IMAGE_KINDS = ("mfcc_stack", "logmel", "spectrogram")  # (C, F, T): time is the last axis
FRAME_KINDS = ("frame_stack", "frame_crema")  # (T, D): time is the first axis
VECTOR_KINDS = ("fft", "stats")  # (D,): one vector per clip, no windows
STATS = ("mean", "std", "min", "max", "median", "p5", "p25", "p75", "p95", "skew", "kurtosis",
         "delta_mean", "delta_std")
# Frame descriptors the stats kind can summarise; the default set is the first seven.
STATS_DESCRIPTORS = ("mfcc", "delta_mfcc", "rms", "zcr", "centroid", "rolloff", "flatness",
                     "logmel", "bandwidth", "contrast")
WINDOW_PADS = ("zeros", "wrap", "edge")
# Bump when the extraction code (ser_hf.features) changes its output, so cached features are recomputed.
FEATURES_ALGORITHM_VERSION = "1"


@dataclasses.dataclass
class FeatureConfig:
    """Everything that decides the features; saved as ``feature_config.json`` next to a trained model.

    Window fields (``window_frames``, ``window_hop_frames``, ``window_pad``) only affect ``make_windows``,
    so changing them does not recompute the cached clip features.
    """

    kind: str = "mfcc_stack"
    sampling_rate: int = 16000
    trim_db: float | None = None  # librosa.effects.trim top_db; None keeps silences
    peak_normalise: bool = False  # scale so max |x| = 1
    duration_s: float | None = None  # pad (zeros at the end) / crop (keep the start) to this length
    n_fft: int = 2048
    win_length: int | None = None
    hop_length: int = 512
    n_mels: int = 128
    n_mfcc: int = 40
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float | None = 80.0  # per-clip dynamic-range floor of dB spectra (librosa's default)
    delta_width: int = 9
    n_chroma: int = 12
    stats: tuple[str, ...] = ("mean", "std", "min", "max")
    # stats kind: which frame descriptors are summarised (a subset of STATS_DESCRIPTORS, in that order)
    stats_descriptors: tuple[str, ...] = ("mfcc", "delta_mfcc", "rms", "zcr", "centroid", "rolloff", "flatness")
    # stats kind: add F0 statistics (librosa.yin) and the voiced fraction. Off by default: on the EmoDB copy it
    # triples the extraction time and leaves LOSO SVM macro-F1 unchanged (benchmarks/results/features.md)
    f0: bool = False
    f0_min: float = 65.0
    f0_max: float = 500.0
    window_frames: int | None = None  # frames per window; None = one row per clip
    window_hop_frames: int | None = None  # None = window_frames (no overlap)
    window_pad: str = "zeros"  # how a clip shorter than one window is padded: zeros | wrap | edge
    speaker_norm: bool = False  # compute_features ends with speaker_normalise
    # opensmile kind (ser_hf.features_opensmile): an opensmile.FeatureSet name; functionals | lld | lld_deltas
    feature_set: str = "eGeMAPSv02"
    level: str = "functionals"

    def __post_init__(self) -> None:
        if isinstance(self.stats, str):
            self.stats = (self.stats,)
        self.stats = tuple(self.stats)
        if isinstance(self.stats_descriptors, str):
            self.stats_descriptors = (self.stats_descriptors,)
        self.stats_descriptors = tuple(self.stats_descriptors)
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind={self.kind!r} is not one of {KINDS}")
        for name in ("sampling_rate", "n_fft", "hop_length", "n_mels", "n_mfcc", "n_chroma"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name}={value!r} must be a positive integer")
        if not problems:
            if self.hop_length > self.n_fft:
                problems.append(f"hop_length={self.hop_length} must be <= n_fft={self.n_fft}")
            if self.win_length is not None and not 0 < self.win_length <= self.n_fft:
                problems.append(f"win_length={self.win_length} must be in 1..n_fft={self.n_fft}")
            if self.n_mfcc > self.n_mels:
                problems.append(f"n_mfcc={self.n_mfcc} must be <= n_mels={self.n_mels}")
            nyquist = self.sampling_rate / 2
            if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
                problems.append(f"fmax={self.fmax} must be in (fmin, sampling_rate/2={nyquist}]")
            if self.kind == "stats" and self.f0:
                if not 0 < self.f0_min < self.f0_max <= nyquist:
                    problems.append(f"need 0 < f0_min < f0_max <= sampling_rate/2={nyquist} "
                                    f"(got f0_min={self.f0_min}, f0_max={self.f0_max})")
                elif self.sampling_rate / self.f0_min >= self.n_fft - 1:  # librosa.yin: one period per frame
                    need = math.ceil(self.sampling_rate / self.f0_min) + 1
                    problems.append(f"f0_min={self.f0_min} needs n_fft > {need} at {self.sampling_rate} Hz "
                                    f"(got n_fft={self.n_fft}); raise either")
        if self.delta_width < 3 or self.delta_width % 2 == 0:
            problems.append(f"delta_width={self.delta_width} must be odd and >= 3")
        if self.trim_db is not None and self.trim_db <= 0:
            problems.append(f"trim_db={self.trim_db} must be > 0 (or null to keep silences)")
        if self.top_db is not None and self.top_db <= 0:
            problems.append(f"top_db={self.top_db} must be > 0 (or null for no floor)")
        if self.duration_s is not None and self.duration_s <= 0:
            problems.append(f"duration_s={self.duration_s} must be > 0 (or null to keep clip lengths)")
        bad_stats = [s for s in self.stats if s not in STATS]
        if bad_stats or not self.stats:
            problems.append(f"stats={list(self.stats)} must be a non-empty subset of {STATS}")
        bad_desc = [d for d in self.stats_descriptors if d not in STATS_DESCRIPTORS]
        if bad_desc or not self.stats_descriptors:
            problems.append(f"stats_descriptors={list(self.stats_descriptors)} must be a non-empty subset of "
                            f"{STATS_DESCRIPTORS}")
        if self.window_pad not in WINDOW_PADS:
            problems.append(f"window_pad={self.window_pad!r} is not one of {WINDOW_PADS}")
        if self.window_frames is not None:
            if self.window_frames <= 0:
                problems.append(f"window_frames={self.window_frames} must be > 0")
            if self.kind in VECTOR_KINDS:
                problems.append(f"kind={self.kind!r} gives one vector per clip: set window_frames to null")
        if self.window_hop_frames is not None:
            if self.window_frames is None:
                problems.append("window_hop_frames needs window_frames")
            elif not 0 < self.window_hop_frames:
                problems.append(f"window_hop_frames={self.window_hop_frames} must be > 0")
        if self.kind == "opensmile":
            problems += opensmile_problems(self)
        if problems:
            raise SpecError("invalid feature config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> FeatureConfig:
        """Build from a recipe's ``features:`` section (plain dict or OmegaConf); unknown keys are errors."""
        return build(cls, d, "features")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); ``from_dict(to_dict())`` round-trips."""
        d = dataclasses.asdict(self)
        d["stats"] = list(self.stats)
        return d

    def cache_key(self) -> str:
        """Hash of every field that changes the per-clip features (window fields excluded)."""
        d = self.to_dict()
        for name in ("window_frames", "window_hop_frames", "window_pad"):
            d.pop(name)
        if self.kind != "opensmile":  # keeps the cache keys of the other kinds as they were
            d.pop("feature_set"), d.pop("level")
        d["_algorithm_version"] = FEATURES_ALGORITHM_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``feature_config.json`` into ``directory`` (next to a saved model)."""
        path = Path(directory) / FEATURE_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> FeatureConfig:
        """Read ``feature_config.json`` from a model directory (or the file itself)."""
        path = Path(directory)
        if path.is_dir():
            path = path / FEATURE_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a model trained on ser_hf features keeps its "
                                    f"{FEATURE_CONFIG_NAME} next to config.json")
        return cls.from_dict(json.loads(path.read_text()))




# =========================================================================================== augment

WAVEFORM_KEYS = ("noise", "shift", "pitch_shift", "time_stretch")  # audiomentations transforms (ser_hf.augment)


@dataclass
class SpecAugmentConfig:
    """``augment.spec_augment``: SpecAugment masks on training feature batches (the one set of defaults)."""

    time_masks: int = 2
    time_width: int = 20
    freq_masks: int = 2
    freq_width: int = 8
    mask_value: float = 0.0

    def __post_init__(self):
        for name in ("time_masks", "time_width", "freq_masks", "freq_width"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
                raise SpecError(f"augment.spec_augment.{name}={v!r} must be an integer >= 0")


@dataclass
class AugmentConfig:
    """The ``augment:`` section. Waveform transforms (``noise``, ``shift``, ``pitch_shift``,
    ``time_stretch``: null/absent = off, true = defaults, or a mapping of audiomentations parameters)
    make ``copies`` augmented copies of every training clip; ``spec_augment`` masks training feature
    batches (baseline families only). Evaluation data is never augmented."""

    noise: Any = None
    shift: Any = None
    pitch_shift: Any = None
    time_stretch: Any = None
    spec_augment: Any = None
    copies: int = 1

    def __post_init__(self):
        for name in WAVEFORM_KEYS:
            v = getattr(self, name)
            if not (v is None or isinstance(v, (bool, Mapping))):
                raise SpecError(f"augment.{name}={v!r}: null, true, or a mapping of the transform's parameters")
        if not isinstance(self.copies, int) or isinstance(self.copies, bool) or self.copies < 0:
            raise SpecError(f"augment.copies={self.copies!r} must be an integer >= 0")
        if self.copies != 1 and not any(getattr(self, k) not in (None, False) for k in WAVEFORM_KEYS):
            raise SpecError(f"augment.copies={self.copies} has no effect without a waveform transform "
                            f"({', '.join('augment.' + k for k in WAVEFORM_KEYS)})")
        sa = self.spec_augment
        if sa is not None and sa is not False:
            self.spec_augment = build(SpecAugmentConfig, {} if sa is True else sa, "augment.spec_augment")
        else:
            self.spec_augment = None

    @property
    def waveform(self) -> dict:
        """The waveform part as the mapping ``ser_hf.augment`` takes (transforms that are on, and copies)."""
        out = {k: dict(v) if isinstance(v, Mapping) else v for k in WAVEFORM_KEYS
               if (v := getattr(self, k)) is not None and v is not False}
        if out:
            out["copies"] = self.copies
        return out

    @property
    def active(self) -> bool:
        return bool(self.waveform) or self.spec_augment is not None

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "AugmentConfig":
        return build(cls, d, "augment")


# =========================================================================================== trainer

OPTIMIZERS = ("adam", "adamw", "rmsprop")
SCHEDULERS = ("plateau", "cosine", "linear", "none")
PLATEAU_MONITORS = ("val_loss", "val_macro_f1")
MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb")
LOSSES = ("ce", "weighted_ce", "focal")
REGRESSION_LOSSES = ("ccc", "mse")  # task=regression|multitask: 1 - CCC (mean over targets) | mean squared error


@dataclass
class TrainerConfig:
    """The recipe's ``trainer:`` section. Build with :meth:`from_dict` (unknown keys are errors)."""

    max_epochs: int = 30
    batch_size: int = 32
    eval_batch_size: int | None = None  # None: batch_size
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | rmsprop (torch.optim; weight_decay as torch defines it)
    weight_decay: float = 0.0
    l1: float = 0.0  # coefficient of sum|W| over weight matrices/kernels (params with ndim >= 2)
    scheduler: str = "none"  # plateau (per epoch) | cosine | linear (per optimizer step, with warm-up) | none
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    plateau_monitor: str = "val_loss"  # val_loss | val_macro_f1 (= mean CCC in regression runs; train loss without validation)
    warmup_ratio: float = 0.0  # cosine/linear only: fraction of all optimizer steps spent warming up
    warmup_steps: int = 0  # cosine/linear only: overrides warmup_ratio when > 0
    loss: str = "ce"  # ce | weighted_ce | focal
    focal_alpha: Any = None  # None | float | [one weight per class] | "balanced" (uses class_weights)
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    grad_accum_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16 (Accelerate autocast)
    early_stopping_patience: int | None = None  # epochs without a better val macro-F1; None/0: off
    max_grad_norm: float | None = None
    log_with: str | None = "tensorboard"  # tensorboard | wandb | None
    num_workers: int = 0  # used by make_dataloader
    seed: int = 0
    # Separate learning rates: {parameter-name prefix: lr}, e.g. {"classifier": 1e-3, "projector": 1e-3}
    # while the rest (the encoder) uses learning_rate. A prefix matches whole dotted components.
    group_learning_rates: dict = field(default_factory=dict)
    # Parameters under these prefixes stay frozen for the first freeze_steps optimizer steps
    # (e.g. train the new head before touching a pre-trained encoder).
    freeze_steps: int = 0
    freeze_prefixes: list = field(default_factory=list)
    progress_bar: bool = True  # tqdm on the main process
    # task=regression|multitask (issue 14): the loss on the dimensional values (computed on standardised
    # targets), and in multitask runs its weight: loss = class loss + regression_weight * regression loss
    regression_loss: str = "ccc"  # ccc | mse
    regression_weight: float = 1.0

    def __post_init__(self):
        def bad(key, problem):
            raise SpecError(f"trainer.{key}={getattr(self, key)!r}: {problem}")

        def choice(key, options):
            if getattr(self, key) not in options:
                bad(key, f"choose one of {list(options)}")

        if self.scheduler is None:
            self.scheduler = "none"
        if isinstance(self.log_with, str) and self.log_with.lower() in ("none", "null", ""):
            self.log_with = None
        if self.early_stopping_patience == 0:
            self.early_stopping_patience = None
        choice("optimizer", OPTIMIZERS)
        choice("scheduler", SCHEDULERS)
        choice("plateau_monitor", PLATEAU_MONITORS)
        choice("loss", LOSSES)
        choice("regression_loss", REGRESSION_LOSSES)
        choice("mixed_precision", MIXED_PRECISION)
        if self.log_with is not None:
            choice("log_with", TRACKERS)
        for key in ("max_epochs", "batch_size", "grad_accum_steps"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                bad(key, "must be an integer >= 1")
        if self.eval_batch_size is not None and (not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1):
            bad("eval_batch_size", "must be an integer >= 1 or null (= batch_size)")
        if isinstance(self.regression_weight, bool) or not isinstance(self.regression_weight, (int, float)) \
                or not self.regression_weight > 0:
            bad("regression_weight", "must be a number > 0")
        for key in ("learning_rate", "weight_decay", "l1", "focal_gamma", "warmup_ratio", "label_smoothing"):
            if not isinstance(getattr(self, key), (int, float)) or getattr(self, key) < 0:
                bad(key, "must be a number >= 0")
        if not self.label_smoothing < 1:
            bad("label_smoothing", "must be < 1")
        if not self.warmup_ratio < 1:
            bad("warmup_ratio", "must be < 1 (a fraction of all optimizer steps)")
        if not 0 < self.plateau_factor < 1:
            bad("plateau_factor", "must lie strictly between 0 and 1")
        for key in ("plateau_patience", "warmup_steps", "num_workers", "freeze_steps"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                bad(key, "must be an integer >= 0")
        if self.early_stopping_patience is not None and (
                not isinstance(self.early_stopping_patience, int) or self.early_stopping_patience < 0):
            bad("early_stopping_patience", "must be an integer >= 1, or null/0 to disable early stopping")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            bad("max_grad_norm", "must be > 0 or null (no clipping)")
        if (self.warmup_ratio > 0 or self.warmup_steps > 0) and self.scheduler not in ("cosine", "linear"):
            bad("scheduler", "warmup_ratio/warmup_steps only apply to scheduler 'cosine' or 'linear'; "
                             "set the scheduler or drop the warm-up")
        if not isinstance(self.group_learning_rates, Mapping) or not all(
                isinstance(v, (int, float)) and v >= 0 for v in self.group_learning_rates.values()):
            bad("group_learning_rates", "must map parameter-name prefixes to learning rates >= 0")
        self.group_learning_rates = {str(k): float(v) for k, v in self.group_learning_rates.items()}
        if isinstance(self.freeze_prefixes, str):
            self.freeze_prefixes = [self.freeze_prefixes]
        self.freeze_prefixes = [str(p) for p in self.freeze_prefixes]
        if self.freeze_steps > 0 and not self.freeze_prefixes:
            bad("freeze_steps", "needs freeze_prefixes (which parameters to keep frozen for the first steps)")
        if self.freeze_prefixes and self.freeze_steps == 0:
            bad("freeze_prefixes", "has no effect with freeze_steps=0; set freeze_steps (permanent freezing "
                                   "belongs to the model, e.g. requires_grad=False)")

    @property
    def eval_batch(self) -> int:
        return self.eval_batch_size or self.batch_size

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "TrainerConfig":
        """Build from a mapping (plain dict or OmegaConf DictConfig); unknown keys raise ValueError."""
        return build(cls, d, "trainer")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)




# ====================================================================================== peft, embeddings, hub

@dataclass
class PeftConfig:
    """The ``peft:`` section (transformer family): LoRA adapters, the whole head trained in full."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the attention projections (see models.lora.default_lora_targets)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "PeftConfig":
        return build(cls, d, "peft")


EMBEDDING_LAYER_CHOICES = ("last", "mean", "weighted", "all")
EMBEDDING_POOLINGS = ("mean", "mean_std")


def check_embedding_layers(layers) -> None:
    if isinstance(layers, str):
        if layers not in EMBEDDING_LAYER_CHOICES:
            raise SpecError(f"layers={layers!r}: use one of {EMBEDDING_LAYER_CHOICES}, a layer index or a list of indices")
    elif isinstance(layers, (list, tuple)):
        if not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            raise SpecError(f"layers={layers!r}: a list of layers must hold layer indices (ints)")
    elif not isinstance(layers, int) or isinstance(layers, bool):
        raise SpecError(f"layers={layers!r}: use one of {EMBEDDING_LAYER_CHOICES}, a layer index or a list of indices")


def check_embedding_pooling(pooling: str) -> None:
    if pooling not in EMBEDDING_POOLINGS:
        raise SpecError(f"pooling={pooling!r}: use one of {EMBEDDING_POOLINGS}")


@dataclass
class EmbeddingConfig:
    """The ``embeddings:`` section (embedding family)."""

    name_or_path: str | None = None  # Hub id or local folder of the encoder
    layers: Any = "last"  # "last" | "mean" | "weighted" | int | list[int]
    pooling: str = "mean"
    batch_size: int = 8
    cache: bool = True
    max_duration_s: float | None = None  # Whisper: encoder cropped to this many (whole) seconds; longer clips truncated
    # z-score each clip's embedding with its own speaker's statistics (ser_hf.features.speaker_normalise,
    # per split, from unlabelled clips); applied by the embedding and probe families, not by extract_embeddings
    speaker_norm: bool = False

    def __post_init__(self):
        check_embedding_layers(self.layers)
        if self.max_duration_s is not None and not self.max_duration_s > 0:
            raise SpecError(f"embeddings.max_duration_s={self.max_duration_s!r} must be > 0 (or null: no crop)")
        check_embedding_pooling(self.pooling)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "EmbeddingConfig":
        return build(cls, d, "embeddings")


@dataclass
class HubConfig:
    """The ``hub:`` section: push the trained model to the Hugging Face Hub at the end of a run."""

    push: bool = False
    repo_id: str | None = None
    private: bool = False

    def __post_init__(self):
        if self.push and not self.repo_id:
            raise SpecError("hub.push=true needs hub.repo_id=ORG/NAME")


# ============================================================================================ models

# Architecture fields of each baseline family's config (ser_hf.models.baselines.architecture_fields,
# listed here so the spec needs no torch; tests/test_spec.py checks the two agree).
BASELINE_MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "lstm": ("bidirectional", "dropout", "head_hidden_size", "hidden_size", "input_dim", "num_layers", "pooling"),
    "cnn1d": ("channels", "dropout", "global_pooling", "head_hidden_size", "input_dim", "kernel_sizes", "pool_sizes"),
    "cnn2d": ("channels", "dropout", "global_pooling", "head_hidden_size", "in_channels", "kernel_sizes", "pool_sizes"),
    "cnn_lstm": ("bidirectional", "channels", "dropout", "head_hidden_size", "hidden_size", "input_dim",
                 "kernel_sizes", "num_layers", "pool_sizes", "pooling"),
    "cnn7": ("channels", "dropout", "global_pooling", "head_hidden_size", "in_channels", "kernel_sizes", "pool_sizes"),
}
# Parameters of each classic classifier's scikit-learn estimator (SVC, RandomForestClassifier,
# LogisticRegression ``get_params()``), listed so the spec checks them without importing scikit-learn;
# tests/test_spec.py checks them against the installed scikit-learn.
CLASSIC_PARAMS: dict[str, tuple[str, ...]] = {
    "svm": ("C", "break_ties", "cache_size", "class_weight", "coef0", "decision_function_shape", "degree", "gamma",
            "kernel", "max_iter", "probability", "random_state", "shrinking", "tol", "verbose"),
    "random_forest": ("bootstrap", "ccp_alpha", "class_weight", "criterion", "max_depth", "max_features",
                      "max_leaf_nodes", "max_samples", "min_impurity_decrease", "min_samples_leaf",
                      "min_samples_split", "min_weight_fraction_leaf", "monotonic_cst", "n_estimators", "n_jobs",
                      "oob_score", "random_state", "verbose", "warm_start"),
    "logistic_regression": ("C", "class_weight", "dual", "fit_intercept", "intercept_scaling", "l1_ratio",
                            "max_iter", "n_jobs", "penalty", "random_state", "solver", "tol", "verbose",
                            "warm_start"),
}
# Regressors of the classic / embedding families (task=regression): SVR, Ridge (one per target, on
# standardised targets: ser_hf.models.classic).
CLASSIC_PARAMS.update({
    "svr": ("C", "cache_size", "coef0", "degree", "epsilon", "gamma", "kernel", "max_iter", "shrinking", "tol",
            "verbose"),
    "ridge": ("alpha", "copy_X", "fit_intercept", "max_iter", "positive", "random_state", "solver", "tol"),
})
CLASSIC_REGRESSORS = ("svr", "ridge")
CLASSIC_CLASSIFIERS = tuple(CLASSIC_PARAMS)


@dataclass
class BaselineModelConfig:
    """``model:`` of a baseline family: overrides of its config's architecture fields."""

    family: str
    architecture: dict = field(default_factory=dict)


@dataclass
class ClassicModelConfig:
    """``model:`` of the classic and embedding families: a scikit-learn classifier. Keys other than
    these are the estimator's parameters (``C``, ``kernel``, ``n_estimators``, ...), checked against
    the estimator when the family is built, still before any I/O."""

    family: str = "classic"
    classifier: str = "svm"
    train_on_validation: bool = True  # classic models select nothing on validation speakers: train on them
    search: dict | None = None  # {param: [values]}: chosen by macro-F1 in a speaker-grouped inner CV
    name_or_path: str | None = None  # embedding family only: the encoder (embeddings.name_or_path wins)
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.classifier not in CLASSIC_CLASSIFIERS:
            hint = closest(self.classifier, CLASSIC_CLASSIFIERS)
            raise SpecError(f"model.classifier={self.classifier!r}: choose one of {list(CLASSIC_CLASSIFIERS)}"
                            + (f" (did you mean {hint!r}?)" if hint else ""))
        if self.name_or_path is not None and self.family != "embedding":
            raise SpecError("model.name_or_path is not used by the classic family (it reads acoustic features)")
        valid = CLASSIC_PARAMS[self.classifier]
        own = [f.name for f in dataclasses.fields(self) if f.name not in ("family", "params")]
        for key in self.params:
            if key not in valid:
                raise unknown_key_error("model", key, [*valid, *own], what=f"{self.classifier} parameter")
        if self.search is not None and not isinstance(self.search, Mapping):
            raise SpecError(f"model.search={self.search!r}: a mapping {{parameter: [values]}}")
        searchable = (*valid, "layers") if self.family == "embedding" else valid
        for key, values in (self.search or {}).items():
            if key not in searchable:
                raise unknown_key_error("model.search", key, searchable, what=f"{self.classifier} parameter")
            if not isinstance(values, (list, tuple)) or not values:
                raise SpecError(f"model.search.{key}={values!r}: a non-empty list of values to try")
        for layers in (self.search or {}).get("layers", ()):
            check_search_layers(layers)

    @property
    def layer_search(self) -> list | None:
        """Embedding family: the ``model.search.layers`` candidates (hidden-state index or list of them), or None."""
        return list(self.search["layers"]) if self.search and "layers" in self.search else None

    @property
    def estimator_search(self) -> dict | None:
        """``model.search`` without ``layers``: the estimator's grid."""
        grid = {k: v for k, v in (self.search or {}).items() if k != "layers"}
        return grid or None


def check_search_layers(layers) -> None:
    """One ``model.search.layers`` candidate: a hidden-state index, a list of them, or ``last`` (the states
    every candidate slices from one cached all-states embedding; ``mean``/``weighted``/``all`` are not choices)."""
    try:
        check_embedding_layers(layers)
    except SpecError as err:
        raise SpecError(f"model.search.layers: {err}") from None
    if isinstance(layers, str) and layers != "last":
        raise SpecError(f"model.search.layers: {layers!r} is not a candidate; give hidden-state indices "
                        f"(e.g. [[1], [2], [1, 2, 3]]) or 'last'")


@dataclass
class TransformerModelConfig:
    """``model:`` of the transformer family. Keys other than these set attributes of the checkpoint's
    config (``mask_time_prob``, ``layerdrop``, ``use_weighted_layer_sum``, ...); they are checked
    against the checkpoint's config.json when the family is built, before the corpus is read."""

    family: str = "transformer"
    name_or_path: str | None = None  # Hub id or local folder, e.g. facebook/wav2vec2-base
    max_duration_s: float = 6.0  # random training crop per clip and epoch
    eval_chunk_s: float | None = None  # None: whole clips; else chunks whose logits are averaged
    eval_overlap_s: float = 1.0
    freeze_feature_encoder: bool = True
    gradient_checkpointing: bool = False
    head_learning_rate: float | None = None  # None: trainer.learning_rate (see the learning-rate story above)
    freeze_base_steps: int = 0  # optimizer steps training only the head before the encoder joins
    local_files_only: bool | None = None
    whisper_crop: bool = True  # Whisper: encoder + extractor cropped to max_duration_s (ser_hf.models.whisper_crop)
    config_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.name_or_path:
            raise SpecError("model.family=transformer needs model.name_or_path (a Hub id such as "
                            "facebook/wav2vec2-base, or a local folder: model.name_or_path=/path/to/local/wav2vec2-base)")
        if not self.max_duration_s or self.max_duration_s <= 0:
            raise SpecError(f"model.max_duration_s={self.max_duration_s!r} must be > 0 (the training crop in seconds)")
        if self.eval_chunk_s is not None and not 0 <= self.eval_overlap_s < self.eval_chunk_s:
            raise SpecError(f"need 0 <= model.eval_overlap_s < model.eval_chunk_s, got {self.eval_overlap_s} "
                            f"and {self.eval_chunk_s}")
        if not isinstance(self.freeze_base_steps, int) or self.freeze_base_steps < 0:
            raise SpecError(f"model.freeze_base_steps={self.freeze_base_steps!r} must be an integer >= 0")


@dataclass
class ProbeModelConfig:
    """``model:`` of the probe family: the head on the learned mix of hidden states (ser_hf.models.probe)."""

    family: str = "probe"
    head: str = "linear"  # linear | mlp
    hidden_size: int | None = None
    dropout: float | None = None
    normalize_states: bool | None = None
    name_or_path: str | None = None  # the encoder, when embeddings.name_or_path is not given

    @property
    def head_options(self) -> dict:
        """The ProbeConfig fields the recipe set (the others keep ProbeConfig's defaults)."""
        keys = ("head", "hidden_size", "dropout", "normalize_states")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def _probe_model(family: str, d: dict) -> ProbeModelConfig:
    return build(ProbeModelConfig, {**d, "family": family}, "model")


def _split_known(cls, d: dict, extra: str) -> dict:
    known = {f.name for f in dataclasses.fields(cls)} - {extra}
    return {**{k: v for k, v in d.items() if k in known}, extra: {k: v for k, v in d.items() if k not in known}}


def _baseline_model(family: str, d: dict) -> BaselineModelConfig:
    valid = BASELINE_MODEL_KEYS[family]
    for key in d:
        if key not in valid:
            raise unknown_key_error("model", key, valid, what=f"{family} model option")
    return BaselineModelConfig(family, d)


def _classic_model(family: str, d: dict) -> ClassicModelConfig:
    return ClassicModelConfig(family=family, **_split_known(ClassicModelConfig, d, "params"))


def _transformer_model(family: str, d: dict) -> TransformerModelConfig:
    return TransformerModelConfig(family=family, **_split_known(TransformerModelConfig, d, "config_overrides"))


# The torch-free half of the family registry: which sections a family reads and how its ``model:``
# section is parsed. The other half (the runners) is ser_hf.families.REGISTRY; a test keeps the two
# in step. A new family adds one entry here and one module under ser_hf/families/.
@dataclass(frozen=True)
class FamilySpec:
    sections: tuple[str, ...]  # optional sections it reads, of features / augment / trainer / peft / embeddings
    parse_model: Any  # (family, model dict without 'family') -> model config
    spec_augment: bool = False  # whether augment.spec_augment applies (feature batches)


FAMILY_SPECS: dict[str, FamilySpec] = {
    **{name: FamilySpec(("features", "augment", "trainer"), _baseline_model, spec_augment=True)
       for name in BASELINE_MODEL_KEYS},
    "classic": FamilySpec(("features", "augment"), _classic_model),
    "transformer": FamilySpec(("augment", "trainer", "peft"), _transformer_model),
    "embedding": FamilySpec(("augment", "embeddings"), _classic_model),
    "probe": FamilySpec(("trainer", "embeddings"), _probe_model),
}
BASELINE_FAMILIES = tuple(BASELINE_MODEL_KEYS)


# ========================================================================================== run spec

TOP_LEVEL_KEYS = ("recipe_name", "seed", "output_dir", "resume", "overwrite", "debug", "task", "targets", "data",
                  "features", "augment", "model", "trainer", "peft", "embeddings", "hub", "description")
OPTIONAL_SECTIONS = ("features", "augment", "trainer", "peft", "embeddings")
SECTION_TYPES = {"features": FeatureConfig, "augment": AugmentConfig, "trainer": TrainerConfig,
                 "peft": PeftConfig, "embeddings": EmbeddingConfig}


@dataclass
class RunSpec:
    """One run, fully parsed: every section built and checked. ``raw`` is the resolved config as
    composed (written to the run folder as config.yaml)."""

    recipe_name: str | None
    seed: int
    output_dir: str
    resume: bool
    family: str
    data: DataConfig
    model: Any  # BaselineModelConfig | ClassicModelConfig | TransformerModelConfig
    features: FeatureConfig | None
    augment: AugmentConfig
    trainer: TrainerConfig | None
    peft: PeftConfig
    embeddings: EmbeddingConfig | None
    hub: HubConfig
    description: str | None = None
    overwrite: bool = False  # move an existing run folder aside and start afresh (ser_hf.runfolder.claim)
    debug: bool = False  # scripts: full traceback of config/user errors
    raw: dict = field(default_factory=dict)
    task: str = "classification"  # classification | regression | multitask (ser_hf.tasks.ModelTask)
    targets: tuple[str, ...] = ()  # the dimensions a regression/multitask run predicts (empty: classification)

    @property
    def features_section(self) -> dict | None:
        """The recipe's ``features:`` as written (for metrics.json), None when empty."""
        return self.raw.get("features") or None


# ============================================================================== task (issue 14, items 3-4)

TASKS = ("classification", "regression", "multitask")  # ser_hf.tasks.ModelTask and ser_hf.runfolder read these
DIMENSIONS = ("arousal", "valence", "dominance")  # ser_hf.data.labels re-exports these


def task_has_labels(task: str) -> bool:
    """Whether ``task`` predicts class labels (classification, multitask): the one definition for the spec,
    saved models (:class:`ser_hf.tasks.ModelTask`) and run folders (:mod:`ser_hf.runfolder`)."""
    return task in ("classification", "multitask")


def task_has_values(task: str) -> bool:
    """Whether ``task`` predicts dimension values (regression, multitask)."""
    return task in ("regression", "multitask")
DIMENSIONAL_CORPORA = ("iemocap", "msp_podcast", "manifest")  # ser_hf.data.labels re-exports these
# Families with a regression head, and those with a multitask (class logits + values) one.
REGRESSION_FAMILIES = ("lstm", "cnn1d", "cnn2d", "cnn_lstm", "cnn7", "classic", "embedding", "transformer", "probe")
MULTITASK_FAMILIES = ("lstm", "cnn1d", "cnn2d", "cnn_lstm", "cnn7", "transformer", "probe")


def parse_task(raw: Mapping, family: str, data: DataConfig, built: dict) -> tuple[str, tuple[str, ...]]:
    """``task`` and ``targets`` checked against the family, the corpus and the other sections; what is not
    built for dimensional runs (LoRA, cross-/multi-corpus, the probe family, classic multitask) is refused
    here, naming the key, before anything is read."""
    task = raw.get("task") or "classification"
    if task not in TASKS:
        hint = closest(str(task), TASKS)
        raise SpecError(f"task={task!r}: choose one of {list(TASKS)}" + (f" (did you mean {hint!r}?)" if hint else ""))
    given = raw.get("targets")
    trainer = built.get("trainer")
    if task == "classification":
        if given is not None:
            raise SpecError(f"targets={plain(given)!r} is set but task=classification predicts classes only: "
                            "add task=regression (or task=multitask), or remove targets")
        if trainer is not None:
            changed = [k for k in ("regression_loss", "regression_weight")
                       if getattr(trainer, k) != getattr(TrainerConfig, k)]
            if changed:
                raise SpecError(f"trainer.{changed[0]} is set but task=classification has no regression head: "
                                "add task=regression or task=multitask, or remove it")
        return task, ()
    targets = DIMENSIONS if given is None else given
    if isinstance(targets, str):
        targets = [targets]
    targets = tuple(plain(targets))
    if not targets:
        raise SpecError(f"targets=[]: task={task} needs at least one of {list(DIMENSIONS)}")
    for t in targets:
        if t not in DIMENSIONS:
            hint = closest(str(t), DIMENSIONS)
            raise SpecError(f"targets: unknown target {t!r}; choose from {list(DIMENSIONS)}"
                            + (f" (did you mean {hint!r}?)" if hint else ""))
    if len(set(targets)) != len(targets):
        raise SpecError(f"targets={list(targets)} names a target twice")
    if data.corpus not in DIMENSIONAL_CORPORA:
        raise SpecError(f"task={task}: data.corpus={data.corpus} has no arousal/valence/dominance ratings; corpora "
                        f"with them: {list(DIMENSIONAL_CORPORA)} (a manifest needs arousal/valence/dominance columns)")
    if data.test_corpus is not None or data.extra_train:
        key = "data.test_corpus" if data.test_corpus is not None else "data.extra_train"
        raise SpecError(f"task={task} with {key}: cross-/multi-corpus dimensional runs are not built (rating "
                        "scales differ between corpora); train and test on one corpus")
    if family not in REGRESSION_FAMILIES:
        raise SpecError(f"task={task}: model.family={family} has no regression head; families that regress: "
                        f"{list(REGRESSION_FAMILIES)}")
    if task == "multitask" and family not in MULTITASK_FAMILIES:
        raise SpecError(f"task=multitask: model.family={family} has no multitask head (class logits + values); "
                        f"use task=regression, or one of {list(MULTITASK_FAMILIES)}")
    peft = built.get("peft")
    if peft is not None and peft.enabled:
        raise SpecError(f"task={task} with peft.enabled=true: LoRA dimensional runs are not built; "
                        "fine-tune the whole model (peft.enabled=false)")
    return task, targets


def check_task_model(task: str, family: str, model: Mapping) -> None:
    """The classic/embedding estimator (``model.classifier`` of the recipe's ``model:`` mapping) suits the
    task: a regressor (svr, ridge) for regression, a classifier otherwise."""
    if FAMILY_SPECS[family].parse_model is not _classic_model:
        return
    classifier = model.get("classifier", ClassicModelConfig.classifier)
    if task == "regression" and classifier not in CLASSIC_REGRESSORS:
        raise SpecError(f"model.classifier={classifier} is a classifier but task=regression: use "
                        f"model.classifier=svr or ridge (one regressor per target)")
    if task != "regression" and classifier in CLASSIC_REGRESSORS:
        raise SpecError(f"model.classifier={classifier} is a regressor (task=regression only); for "
                        f"task={task} choose one of {[c for c in CLASSIC_CLASSIFIERS if c not in CLASSIC_REGRESSORS]}")


# Display-only keys: every family honours them (a family without a training loop has nothing to show),
# so one override can be given to a mixed set of recipes (emodb_loso.py, compare.py).
DISPLAY_ONLY_KEYS = {"trainer": ("progress_bar", "log_with")}


def _set_keys(name: str, value: dict) -> list[str]:
    """Keys of an optional section that differ from the section's defaults (display-only keys aside)."""
    default = dataclasses.asdict(SECTION_TYPES[name]()) if name != "features" else {}
    return sorted(k for k, v in value.items() if k not in DISPLAY_ONLY_KEYS.get(name, ())
                  and (name == "features" or default.get(k, object()) != v))


def parse_spec(cfg: Mapping | DictConfig) -> RunSpec:
    """Build and check every section of a composed config (see the module docstring); no I/O."""
    raw = plain(cfg)
    if not isinstance(raw, Mapping):
        raise SpecError(f"a run config must be a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise unknown_key_error(None, key, TOP_LEVEL_KEYS)

    def section(name) -> dict:
        value = raw.get(name)
        value = {} if value is None else value
        if not isinstance(value, Mapping):
            raise SpecError(f"the '{name}' section must be a mapping of options, got {value!r}")
        return dict(value)

    model = section("model")
    family = model.pop("family", None)
    if family not in FAMILY_SPECS:
        hint = closest(str(family), FAMILY_SPECS)
        raise SpecError(f"model.family={family!r} is not one of {sorted(FAMILY_SPECS)}"
                        + (f" (did you mean {hint!r}?)" if hint else ""))
    fam = FAMILY_SPECS[family]
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SpecError(f"seed={seed!r} must be an integer")
    data = DataConfig.from_dict(section("data"))
    built: dict[str, Any] = {}
    for name in OPTIONAL_SECTIONS:
        value = section(name)
        obj = (build(SECTION_TYPES[name], {"sampling_rate": data.sampling_rate, **value}, name) if name == "features"
               else build(SECTION_TYPES[name], {"seed": seed, **value}, name) if name == "trainer"
               else build(SECTION_TYPES[name], value, name))
        used = name in fam.sections
        if not used:
            given = _set_keys(name, value)
            if given:
                raise SpecError(f"{name}.{given[0]} is set, but model.family={family} does not use the '{name}' "
                                f"section (it reads: data, model{''.join(', ' + s for s in fam.sections)}); "
                                f"remove {', '.join(name + '.' + k for k in given)}")
        built[name] = obj if used or name in ("augment", "peft") else None
    if built["augment"].spec_augment is not None and not fam.spec_augment:
        raise SpecError(f"augment.spec_augment masks feature batches of the baseline families; "
                        f"model.family={family} has none: remove it (waveform transforms do apply)")
    resume, overwrite, debug = (parse_bool(raw.get(k, False), k) for k in ("resume", "overwrite", "debug"))
    task, targets = parse_task(raw, family, data, built)
    check_task_model(task, family, model)
    parsed_model = fam.parse_model(family, model)
    return RunSpec(
        recipe_name=raw.get("recipe_name"), seed=seed, output_dir=str(raw.get("output_dir") or ""),
        resume=resume, family=family, data=data, model=parsed_model, task=task, targets=targets,
        features=built["features"], augment=built["augment"], trainer=built["trainer"], peft=built["peft"],
        embeddings=built["embeddings"], hub=build(HubConfig, section("hub"), "hub"),
        description=raw.get("description"), overwrite=overwrite, debug=debug, raw=raw,
    )

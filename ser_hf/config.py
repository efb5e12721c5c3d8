"""Recipe loading: ``recipe=NAME key=value ...`` composed with Hydra, output folder decided once.

A recipe is ``recipes/recipe/NAME.yaml`` (a Hydra config group named ``recipe``) laid over
``recipes/defaults.yaml``; command-line ``key=value`` pairs go on top. We use Hydra's *compose* API
rather than ``@hydra.main`` on purpose: under ``accelerate launch`` every process would otherwise pick
its own timestamped run folder and write its own logs. Here the output folder is a pure function of
the recipe (``runs/<recipe>/<corpus>-<split>[-fold<k>]-seed<seed>`` unless ``output_dir=`` is given),
so every process of a distributed run agrees on it without talking to the others.

Defaults of the typed sections (features, trainer, ...) live in one place, the dataclasses that
consume them; the YAML files hold overrides only. Unknown keys are therefore caught by those
dataclasses, which name the key and the section.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

RECIPES_ENV = "SER_HF_RECIPES"
# Config groups: overrides of these select a file and must stay plain ``group=name``.
CONFIG_GROUPS = ("recipe",)
TOP_LEVEL_KEYS = {
    "recipe_name", "seed", "output_dir", "resume", "data", "features", "augment", "model",
    "trainer", "peft", "embeddings", "hub", "description", "overwrite", "debug",
}
# Booleans read through the one parser (ser_hf.runfolder.parse_bool): `resume=no` must not resume.
BOOLEAN_KEYS = ("resume", "overwrite", "debug", "hub.push", "hub.private", "peft.enabled")


def recipes_dir() -> Path:
    """``$SER_HF_RECIPES`` or the ``recipes/`` folder of the source tree."""
    env = os.environ.get(RECIPES_ENV)
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "recipes"
    if not (path / "defaults.yaml").is_file():
        raise FileNotFoundError(
            f"no recipes found at {path} (expected defaults.yaml and recipe/NAME.yaml there); "
            f"run from a source checkout (pip install -e .) or set {RECIPES_ENV}=/path/to/recipes"
        )
    return path


def available_recipes() -> list[str]:
    return sorted(p.stem for p in (recipes_dir() / "recipe").glob("*.yaml"))


def _force(override: str) -> str:
    """Turn ``a.b=c`` into ``++a.b=c`` (add or override), so any key of a typed section can be set
    from the command line; group selections and already-prefixed overrides stay as they are."""
    if override.startswith(("+", "~")) or "=" not in override:
        return override
    key = override.split("=", 1)[0]
    if key in CONFIG_GROUPS or key.startswith("hydra"):
        return override
    return "++" + override


def load_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``recipes/defaults.yaml`` + ``recipe=NAME`` + overrides into one resolved config."""
    cfg = _compose(overrides)
    if not cfg.get("output_dir"):
        cfg.output_dir = str(default_output_dir(cfg))
    return cfg


def _compose(overrides) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = list(overrides)
    names = available_recipes()
    for o in overrides:
        if o.startswith("recipe="):
            name = o.split("=", 1)[1]
            if name not in names:
                raise ValueError(f"unknown recipe {name!r}; available: {', '.join(names)}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3", job_name="ser_hf"):
        cfg = compose("defaults", overrides=[_force(o) for o in overrides], return_hydra_config=True)
    recipe = cfg.hydra.runtime.choices.get("recipe")
    with open_dict(cfg):
        del cfg["hydra"]
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cfg.recipe_name = recipe
    unknown = set(cfg.keys()) - TOP_LEVEL_KEYS
    if unknown:
        raise ValueError(f"unknown top-level config key(s) {sorted(unknown)}; known: {sorted(TOP_LEVEL_KEYS)}")
    _check_types(cfg)
    return cfg


def _check_types(cfg: DictConfig) -> None:
    """seed is an integer; every boolean key goes through the one parser (errors name the key)."""
    from .runfolder import parse_bool

    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            cfg.seed = int(str(seed).strip())
        except ValueError:
            raise ValueError(f"seed={seed!r}: must be an integer (e.g. seed=0)") from None
    for key in BOOLEAN_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            OmegaConf.update(cfg, key, parse_bool(value, key), force_add=True)


def recipe_suffix(cfg: DictConfig) -> str:
    """``""`` when ``cfg`` is its recipe as written (keys spelled out in folder names aside), else
    ``-<first 8 hex digits of the config fingerprint>``: runs with other overrides get other folders."""
    from .runfolder import suffix_for

    return suffix_for(cfg, _compose([f"recipe={cfg.recipe_name}"]))


def default_output_dir(cfg: DictConfig) -> Path:
    """``runs/<recipe>/<corpus>-<split>[-fold<k>][-to-<test corpus>]-seed<seed>[-<fingerprint>]``, relative to the
    working dir; the fingerprint suffix is added when the config differs from the recipe as written."""
    data = cfg.data
    name = f"{data.corpus}-{data.split}"
    if data.get("manifest"):  # two manifests must not share a run folder
        name = f"{data.corpus}-{Path(str(data.manifest)).stem}-{data.split}"
    if data.get("fold") is not None:
        name += f"-fold{data.fold}"
    if data.get("test_corpus"):
        name += f"-to-{data.test_corpus}"
    name += f"-seed{cfg.seed}{recipe_suffix(cfg)}"
    return Path("runs") / str(cfg.recipe_name) / re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def section(cfg: DictConfig, key: str) -> dict[str, Any]:
    """A config section as a plain dict ({} when absent or null)."""
    value = cfg.get(key)
    return {} if value is None else OmegaConf.to_container(value, resolve=True)


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

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        return from_dict(cls, d, "data")

    def corpus_options(self) -> dict:
        """Builder options of the manifest/folder keys that are set (an error for a corpus without them)."""
        keys = ("manifest", "speaker_regex", "labels")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def from_dict(cls, d: dict | None, section_name: str):
    """Build dataclass ``cls`` from ``d``; an unknown key is an error naming the section and valid keys."""
    d = dict(d or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in the '{section_name}' section of the recipe; valid keys: {sorted(known)}"
        )
    return cls(**coerce_bool_fields(cls, d, section_name))


def to_yaml(cfg: DictConfig | dict) -> str:
    return OmegaConf.to_yaml(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))


def dataclass_dict(obj) -> dict:
    return asdict(obj)


def configure_logging(level: int | str = "INFO") -> None:
    """Log ``ser_hf`` messages (warnings about skipped clips, chosen hyper-parameters) to stderr."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ser_hf").setLevel(level)


def parse_bool(value, key: str | None = None) -> bool:
    """``true/false/yes/no/on/off/1/0`` (any case); anything else is an error naming ``key``."""
    from .runfolder import parse_bool as _parse

    return _parse(value, key)


def coerce_bool_fields(cls, d: dict, section_name: str) -> dict:
    """``d`` with every field of dataclass ``cls`` annotated ``bool`` parsed by :func:`parse_bool`."""
    out = dict(d)
    for f in fields(cls):
        if f.name in out and f.type in (bool, "bool") and out[f.name] is not None:
            out[f.name] = parse_bool(out[f.name], f"{section_name}.{f.name}")
    return out


def user_errors() -> tuple[type, ...]:
    """Exceptions that mean a bad command line, config, file or run folder (not a bug): printed as one line."""
    from .runfolder import RunFolderError

    errors: list[type] = [ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, RunFolderError]
    try:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        errors += [HydraException, OmegaConfBaseException]
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return tuple(errors)


def run_cli(main, argv: list[str]):
    """Run a script's ``main(argv)``: a user error prints ``error: <message>`` on one line and exits 2;
    ``debug=true`` among the arguments restores the full traceback (bugs always show it)."""
    import sys

    debug = False
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key == "debug":
            try:
                debug = parse_bool(value, "debug")
            except ValueError:
                pass  # load_config reports it
    try:
        return main(argv)
    except user_errors() as err:
        if debug:
            raise
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {text} (debug=true shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def parse_key_values(args: list[str], required: tuple[str, ...] = (), optional: dict | None = None) -> dict:
    """``key=value`` command-line arguments of the small scripts (predict) into a dict, typed by
    ``optional``; a missing required key or an unknown key is an error saying what is accepted."""
    optional = optional or {}
    out: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {arg!r}; keys: {', '.join(required + tuple(optional))}")
        if key not in required and key not in optional:
            raise SystemExit(f"unknown key {key!r}; keys: {', '.join(required + tuple(optional))}")
        try:
            out[key] = optional.get(key, str)(value)
        except ValueError as err:
            raise SystemExit(f"{key}={value!r}: {err}") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise SystemExit(f"missing {', '.join(k + '=...' for k in missing)}")
    return out

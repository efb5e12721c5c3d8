"""Recipe loading: ``recipe=NAME key=value ...`` composed with Hydra, output folder decided once.

A recipe is ``recipes/recipe/NAME.yaml`` (a Hydra config group named ``recipe``) laid over
``recipes/defaults.yaml``; command-line ``key=value`` pairs go on top. We use Hydra's *compose* API
rather than ``@hydra.main`` on purpose: under ``accelerate launch`` every process would otherwise pick
its own timestamped run folder and write its own logs. Here the output folder is a pure function of
the recipe (``runs/<recipe>/<corpus>-<split>[-fold<k>]-seed<seed>`` unless ``output_dir=`` is given),
so every process of a distributed run agrees on it without talking to the others.

Defaults of the typed sections (features, trainer, ...) live in one place, the dataclasses of
:mod:`ser_hf.spec`; the YAML files hold overrides only. :func:`load_spec` parses the composed config
into a :class:`~ser_hf.spec.RunSpec`, which rejects unknown keys (naming the key, the section and
the closest valid key) before any work starts.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .runfolder import RunFolderError, suffix_for
from .spec import TOP_LEVEL_KEYS, DataConfig, RunSpec, parse_bool, parse_spec, unknown_key_error  # noqa: F401 (re-exported)

RECIPES_ENV = "SER_HF_RECIPES"
# Config groups: overrides of these select a file and must stay plain ``group=name``.
CONFIG_GROUPS = ("recipe",)
# Booleans read through the one parser (ser_hf.spec.parse_bool): `resume=no` must not resume.
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
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise unknown_key_error(None, key, TOP_LEVEL_KEYS)
    _check_types(cfg)
    return cfg


def load_spec(overrides: list[str] | tuple[str, ...] = ()) -> RunSpec:
    """:func:`load_config` parsed into the typed :class:`~ser_hf.spec.RunSpec` (every section checked)."""
    return parse_spec(load_config(overrides))


def _check_types(cfg: DictConfig) -> None:
    """seed is an integer; every boolean key goes through the one parser (errors name the key)."""
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


def configure_logging(level: int | str = "INFO") -> None:
    """Log ``ser_hf`` messages (warnings about skipped clips, chosen hyper-parameters) to stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ser_hf").setLevel(level)


def user_errors() -> tuple[type, ...]:
    """Exceptions that mean a bad command line, config, file or run folder (not a bug): printed as one line."""
    return (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, RunFolderError, HydraException,
            OmegaConfBaseException)


def run_cli(main, argv: list[str]):
    """Run a script's ``main(argv)``: a user error prints ``error: <message>`` on one line and exits 2;
    ``debug=true`` among the arguments restores the full traceback (bugs always show it)."""
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


# ---------------------------------------------------------------------------------- script arguments
# The scripts check every recipe's spec with these before they import the heavy modules (torch,
# datasets, transformers), so a typo fails in about a second with nothing read or written.


def list_arg(value: str) -> list[str]:
    """``[a,b]`` or ``a,b`` -> ["a", "b"] (Hydra's list syntax, parsed here because these keys are ours)."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return [v.strip() for v in value.split(",") if v.strip()]


CROSSVAL_KEYS = ("jobs", "output_dir")


def check_crossval_args(args: list[str] | tuple[str, ...]) -> RunSpec:
    """The spec of ``scripts/crossval.py recipe=NAME [jobs=N] [output_dir=DIR] key=value ...``."""
    return load_spec([a for a in args if a.split("=", 1)[0] not in CROSSVAL_KEYS])


def split_compare_args(args) -> tuple[list[str], list[str], Path | None, list[str]]:
    """``recipes=[a,b]`` | ``runs=[dir,...]``, ``output_dir=DIR`` and the overrides of every recipe:
    ``(recipes, runs, output_dir, overrides)``; each recipe's spec (with the overrides) is checked."""
    recipes, runs, out, rest = [], [], None, []
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "recipes":
            recipes = list_arg(value)
        elif key == "runs":
            runs = list_arg(value)
        elif key == "output_dir":
            out = Path(value)
        else:
            rest.append(arg)
    if bool(recipes) == bool(runs):
        raise ValueError("pass exactly one of recipes=[a,b,...] or runs=[dir1,dir2,...]")
    for name in recipes:
        check_crossval_args([f"recipe={name}", *rest])
    return recipes, runs, out, rest

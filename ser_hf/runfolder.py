"""What a run folder guarantees: one owner, a fingerprint, atomic outputs, checksums, nothing unpickled.

(Over 500 lines: every guarantee below shares the folder layout and the atomic-write helpers.)

- **Fingerprint** (``fingerprint.json``): a sha256 of the resolved config, leaving out the keys that do not
  change results (:data:`UNFINGERPRINTED`: where outputs go, resume/overwrite/debug/jobs, the Hub, data
  folders and caches), and of the data (corpus, file-list hash, split plan). A finished run is reused
  (cross-validation folds) or resumed only when its fingerprint equals the new one; otherwise the
  differing keys are named.
- **Lock** (``.lock``): one run writes a folder at a time. The lock records pid and host; a lock whose pid
  is dead on this host is stale and taken over.
- **Atomic writes**: every final output goes through :func:`atomic_write` (temporary file, fsync, rename,
  fsync of the folder), so a reader sees the old or the new file, never half of one.
- **Checksums** (``checksums.json``): sha256 of saved weights, verified before anything is loaded.
- **No pickle**: training state is safetensors + JSON (:func:`save_state`, :func:`load_state`).
- **One reader** of finished run folders (:func:`why_incomplete`, :func:`load_run`, :func:`discover_runs`)
  for cross-validation and comparison, of every task: a run's metrics.json ``task`` (classification when
  absent; regression, multitask) decides what it must hold (labels: ``label_names``, macro-F1, label and
  prediction columns; dimension values: ``targets``, ``ccc_mean``/``ccc_<t>``, ``true_<t>``/``pred_<t>``
  columns), and :class:`RunResult` gives ``task``, ``targets`` and :meth:`RunResult.target_values`.

A low-layer module: it imports only ser_hf.spec (reporting, config and the scripts build on it). torch and
safetensors are imported inside the state functions on purpose: the scripts import this module (through
ser_hf.config) to check a recipe before torch is loaded.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from .spec import FALSE_WORDS, TRUE_WORDS, parse_bool  # noqa: F401 (re-exported)
from .spec import TASKS
from .spec import task_has_labels as has_labels
from .spec import task_has_values as has_values

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
LOCK_FILE = ".lock"
CHECKSUMS_FILE = "checksums.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
# Keys (dotted, prefixes) that never change a run's results: left out of the config fingerprint.
UNFINGERPRINTED = (
    "output_dir", "resume", "overwrite", "debug", "jobs", "hub", "description",
    "data.data_dir", "data.test_data_dir", "data.cache_dir", "data.num_proc",
    "trainer.progress_bar", "trainer.log_with", "trainer.num_workers",
)
# Keys a resumed run may change (training continues to more epochs); they stay in the fingerprint.
RESUME_FREE = ("trainer.max_epochs", "trainer.early_stopping_patience", "trainer.eval_batch_size")
# Keys already spelled out in the default folder name: they do not add the fingerprint suffix.
NAMED_KEYS = ("seed", "data.corpus", "data.split", "data.fold", "data.test_corpus")


class RunFolderError(RuntimeError):
    """A run folder that this run may not write or read (owned, finished, different, damaged)."""


# ------------------------------------------------------------------------------------------- booleans


# The one boolean parser lives in the run spec (the bottom layer); re-exported here.


# ------------------------------------------------------------------------------------------- fingerprints


def _plain(cfg) -> Any:
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        if not obj and prefix:
            out[prefix] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj
    return out


def _excluded(key: str, excluded: Iterable[str]) -> bool:
    return any(key == e or key.startswith(e + ".") for e in excluded)


def fingerprinted_items(cfg, excluded: Iterable[str] = UNFINGERPRINTED) -> dict[str, Any]:
    """The flattened config keys that enter the fingerprint (``data.extra_train[*].data_dir`` too is dropped)."""
    flat = flatten(_plain(cfg))
    items = {k: v for k, v in flat.items() if not _excluded(k, excluded)}
    if isinstance(items.get("data.extra_train"), list):
        items["data.extra_train"] = [{k: v for k, v in dict(e).items() if k != "data_dir"}
                                     if isinstance(e, Mapping) else e for e in items["data.extra_train"]]
    # None and an absent key mean the same (a recipe that adds `key: null` changes nothing).
    return {k: v for k, v in sorted(items.items()) if v is not None and v != {}}


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def config_fingerprint(cfg, excluded: Iterable[str] = UNFINGERPRINTED) -> str:
    """sha256 of the resolved config without :data:`UNFINGERPRINTED` keys."""
    return digest(fingerprinted_items(cfg, excluded))


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ between two flattened configs (present in only one counts)."""
    return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def describe_differences(recorded: Mapping[str, Any], new: Mapping[str, Any], limit: int = 8) -> str:
    keys = differing_keys(recorded, new)
    parts = [f"{k}: {recorded.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys[:limit]]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "; ".join(parts) + more


def data_fingerprint(info: Mapping[str, Any], files: Iterable[str]) -> dict[str, Any]:
    """Corpus, sha256 of the sorted file list (names as the builders record them, relative to the corpus
    folder) and the split plan (split, fold, speakers per split)."""
    names = sorted(str(f) for f in files)
    return {
        "corpus": info.get("corpus"),
        "num_files": len(names),
        "files_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "split": {"split": info.get("split"), "fold": info.get("fold"), "speakers": info.get("speakers")},
    }


def clip_files(datasets, corpus) -> list[str]:
    """``corpus/file`` of every row of ``datasets`` (anything with ``len`` and a ``file`` column)."""
    return [f"{corpus}/{f}" for ds in datasets if len(ds) for f in ds["file"]]


def too_short_clips(datasets, min_s: float) -> list[dict]:
    """Clips shorter than ``min_s`` seconds, from the file headers the corpus builders record
    (``file_frames``, ``file_sampling_rate``): ``[{"file", "reason"}]``. They are kept but listed in
    metrics.json, the classification report and the model card, and logged."""
    found = []
    for ds in datasets:
        if not len(ds) or not {"file_frames", "file_sampling_rate"} <= set(ds.column_names):
            continue
        for f, n, sr in zip(ds["file"], ds["file_frames"], ds["file_sampling_rate"]):
            if sr and n / sr < min_s:
                found.append({"file": f, "reason": f"too short: {n / sr:.3f} s < {min_s:.3f} s (used anyway)"})
    if found:
        logger.warning("%d clip(s) shorter than %.3f s, e.g. %s", len(found), min_s, found[0]["file"])
    return found


def suffix_for(cfg, recipe_cfg) -> str:
    """``""`` when ``cfg`` equals the recipe as written (up to the keys the folder name already spells out
    and the unfingerprinted ones), else ``-<first 8 hex of the config fingerprint>``."""
    excluded = (*UNFINGERPRINTED, *NAMED_KEYS)
    if fingerprinted_items(cfg, excluded) == fingerprinted_items(recipe_cfg, excluded):
        return ""
    return "-" + config_fingerprint(cfg)[:8]


def read_fingerprint(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path} is unreadable ({err}); overwrite=true moves the folder aside") from err


def write_fingerprint(run_dir: str | os.PathLike, cfg, data: Mapping[str, Any] | None = None) -> dict:
    record = {"config": config_fingerprint(cfg), "config_items": fingerprinted_items(cfg)}
    if data is not None:
        record["data"] = dict(data)
    atomic_write(Path(run_dir) / FINGERPRINT_FILE, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record


def fingerprint_mismatch(run_dir: str | os.PathLike, cfg) -> str | None:
    """None when ``run_dir``'s recorded config fingerprint equals ``cfg``'s; else what differs (a folder
    without a fingerprint differs)."""
    recorded = read_fingerprint(run_dir)
    if recorded is None:
        return f"{Path(run_dir)} has no {FINGERPRINT_FILE} (written by another tool or an older version)"
    if recorded.get("config") == config_fingerprint(cfg):
        return None
    return describe_differences(recorded.get("config_items", {}), fingerprinted_items(cfg))


def check_data(run_dir: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Refuse to continue a run whose recorded data fingerprint differs from ``data``."""
    recorded = (read_fingerprint(run_dir) or {}).get("data")
    if recorded is None:
        return
    new = json.loads(json.dumps(dict(data), default=str))
    if recorded != new:
        diff = describe_differences(flatten(recorded), flatten(new))
        raise RunFolderError(f"{run_dir} was made from other data ({diff}); pass overwrite=true to move it aside "
                             "and start afresh")


# ------------------------------------------------------------------------------------------- atomic writes


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so a rename into it survives a crash (no-op where folders cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> Path:
    """The one way final outputs are written: temporary file + fsync + rename + fsync of the folder."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return Path(path)


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put the complete folder ``tmp`` at ``final`` (an existing ``final`` is removed after the swap)."""
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def move_aside(run_dir: str | os.PathLike) -> Path:
    """``overwrite=true``: rename ``run_dir`` to ``<name>.replaced-<UTC time>`` (nothing is deleted)."""
    run_dir = Path(run_dir)
    target = run_dir.with_name(f"{run_dir.name}.replaced-{utc_stamp()}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.replaced-{utc_stamp()}-{n}")
    os.replace(run_dir, target)
    fsync_dir(run_dir.parent)
    logger.warning("overwrite=true: moved %s aside to %s", run_dir, target)
    return target


# ------------------------------------------------------------------------------------------- checksums


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".skops", ".bin", ".onnx", ".pt")


def write_checksums(folder: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, str]:
    """Record sha256 of ``names`` (default: every weight file in ``folder``) in ``checksums.json``."""
    folder = Path(folder)
    if names is None:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    sums = {name: sha256_file(folder / name) for name in names}
    atomic_write(folder / CHECKSUMS_FILE, json.dumps(sums, indent=2, sort_keys=True) + "\n")
    return sums


def verify_checksums(folder: str | os.PathLike, required: bool = False) -> None:
    """Check every file listed in ``folder/checksums.json``; a missing, truncated or altered one is an error
    naming the file. No ``checksums.json``: fine unless ``required``."""
    folder = Path(folder)
    path = folder / CHECKSUMS_FILE
    if not path.is_file():
        if required:
            raise RunFolderError(f"{path} is missing: cannot verify the weights in {folder}")
        return
    try:
        sums = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path} is unreadable ({err})") from err
    for name, expected in sums.items():
        f = folder / name
        if not f.is_file():
            raise RunFolderError(f"{f} is missing (listed in {path})")
        got = sha256_file(f)
        if got != expected:
            raise RunFolderError(f"{f} is damaged or truncated: sha256 {got[:12]}... but {CHECKSUMS_FILE} records "
                                 f"{expected[:12]}... ({f.stat().st_size} bytes); re-run or restore the file")


# ------------------------------------------------------------------------------------------- state without pickle


def _encode(obj: Any, tensors: dict, key: str) -> Any:
    # lazy, as safetensors.torch below: runfolder stays torch-free (the scripts import it before the spec check)
    import torch

    if torch.is_tensor(obj):
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _encode(v, tensors, f"{key}.{k}") for k, v in obj.items()}}
        return {"__items__": [[k, _encode(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"state entry {key!r} of type {type(obj).__name__} cannot be stored without pickle")


def _decode(obj: Any, tensors: Mapping) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"].items()}
        if "__items__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    return obj


def save_state(folder: str | os.PathLike, name: str, state: Any) -> list[str]:
    """A nested state dict (optimizer, scheduler, grad scaler) as ``<name>.safetensors`` (tensors) +
    ``<name>.json`` (structure and plain values). Returns the file names written."""
    from safetensors.torch import save_file  # lazy: imports torch (see _encode)

    folder = Path(folder)
    tensors: dict = {}
    skeleton = _encode(state, tensors, name)
    files = [f"{name}.json"]
    atomic_write(folder / f"{name}.json", json.dumps(skeleton) + "\n")
    if tensors:
        with atomic_path(folder / f"{name}.safetensors") as tmp:
            save_file(tensors, str(tmp))
        files.append(f"{name}.safetensors")
    return files


def load_state(folder: str | os.PathLike, name: str, device: str = "cpu") -> Any:
    """Inverse of :func:`save_state`; a damaged file is an error naming it."""
    folder = Path(folder)
    path = folder / f"{name}.json"
    try:
        skeleton = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path} is missing or damaged ({err})") from err
    tensors = {}
    tpath = folder / f"{name}.safetensors"
    if tpath.exists():
        tensors = load_safetensors(tpath, device)
    return _decode(skeleton, tensors)


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """``safetensors.torch.load_file`` whose errors name the file (a truncated file otherwise says only
    "Error while deserializing header")."""
    from safetensors.torch import load_file  # lazy: imports torch (see _encode)

    try:
        return load_file(str(path), device=device)
    except Exception as err:  # SafetensorError, OSError: say which file and what
        raise RunFolderError(f"{path} is damaged or truncated ({type(err).__name__}: {err}); "
                             "re-run or restore the file") from err


# ------------------------------------------------------------------------------------------- lock and ownership


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``<folder>/.lock`` held by one process (pid + host). A lock of a dead pid on this host is stale and
    taken over; a live one (or one from another host) is refused, naming its owner."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.held = False

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"pid": None, "host": None}

    def stale(self, owner: Mapping) -> bool:
        pid, host = owner.get("pid"), owner.get("host")
        if pid == os.getpid() and host == socket.gethostname():
            return False
        return host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)

    def check(self) -> None:
        """Raise when another live process holds the lock (read-only: every rank may call it)."""
        owner = self.owner()
        if owner is not None and not self.held and not self.stale(owner) \
                and not (owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()):
            raise RunFolderError(
                f"{self.folder} is in use by another run (pid {owner.get('pid')} on host {owner.get('host')}, "
                f"started {owner.get('started', '?')}): one run per output folder. Wait for it, choose another "
                f"output_dir, or delete {self.path} if that run is gone")

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": utc_stamp()})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner is None:
                    continue
                if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                    self.held = True  # re-entrant within one process
                    return self
                if not self.stale(owner):
                    self.check()
                    raise RunFolderError(f"{self.path}: unreadable lock; delete it if no run uses {self.folder}")
                logger.warning("%s: taking over the stale lock of dead pid %s", self.folder, owner.get("pid"))
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(record)
                fh.flush()
                os.fsync(fh.fileno())
            self.held = True
            return self
        raise RunFolderError(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            owner = self.owner()
            if owner and owner.get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def claim(run_dir: str | os.PathLike, cfg, *, resume: bool, overwrite: bool, main_process: bool = True
          ) -> RunLock | None:
    """Make ``run_dir`` this run's before anything is written to it (the ownership rules in the README):

    - a folder another live run holds is refused;
    - a finished folder is refused unless ``resume`` (same fingerprint) or ``overwrite`` (moved aside);
    - a folder with a different fingerprint is refused naming the differing keys, unless ``overwrite``;
    - a non-empty folder that is not a ser_hf run folder is refused unless ``overwrite``.

    The main process takes the lock and returns it; other processes only check (returns None).
    """
    run_dir = Path(run_dir)
    lock = RunLock(run_dir)
    if run_dir.exists():
        lock.check()
        problem = _ownership_problem(run_dir, cfg, resume)
        if problem is not None:
            if not overwrite:
                raise RunFolderError(problem + "; pass overwrite=true to move the old folder aside "
                                     f"({run_dir.name}.replaced-<UTC time>) and start afresh, or choose another "
                                     "output_dir")
            if main_process:
                move_aside(run_dir)
    if not main_process:
        return None
    return lock.acquire()


def _ownership_problem(run_dir: Path, cfg, resume: bool) -> str | None:
    entries = [p for p in run_dir.iterdir() if p.name != LOCK_FILE]
    if not entries:
        return None
    if not (run_dir / FINGERPRINT_FILE).is_file():
        return (f"{run_dir} is not empty ({', '.join(sorted(p.name for p in entries)[:5])}) and holds no "
                f"{FINGERPRINT_FILE}: it is not a run folder of this version")
    diff = fingerprint_mismatch(run_dir, cfg)
    if diff is not None and resume:
        recorded = (read_fingerprint(run_dir) or {}).get("config_items", {})
        keys = differing_keys(recorded, fingerprinted_items(cfg))
        if keys and all(k in RESUME_FREE for k in keys):
            logger.warning("resuming %s with changed %s", run_dir, diff)
            return None
    if diff is not None:
        return f"{run_dir} holds a run of a different config ({diff})"
    if why_incomplete(run_dir) is None and not resume:
        return f"{run_dir} holds a finished run of this config (resume=true keeps it)"
    return None


# ------------------------------------------------------------------------------------------- the run-folder reader

# Keys of metrics.json the readers need; anything else in the file is passed through untouched.
REQUIRED_METRICS_KEYS = ("recipe", "corpus", "split", "fold", "seed", "speakers", "label_names", "test")
REQUIRED_TEST_KEYS = ("macro_f1", "accuracy", "uar")
REQUIRED_PREDICTION_COLUMNS = ("split", "corpus", "file", "speaker_id", "label", "prediction")
# Dimensional runs (issue 14): metrics.json "task" and "targets"; predictions.csv true_<target>/pred_<target>.
# The task names and what each predicts are the spec's (one definition, shared with ser_hf.tasks).
CLIP_COLUMNS = ("split", "corpus", "file", "speaker_id")
REQUIRED_VALUE_TEST_KEYS = ("ccc_mean",)


def run_task(metrics: Mapping[str, Any]) -> str:
    """metrics.json's ``task`` (absent: classification, what runs wrote before issue 14)."""
    task = metrics.get("task") or "classification"
    if task not in TASKS:
        raise ValueError(f"metrics.json task {task!r} is not one of {list(TASKS)}")
    return str(task)


def required_metrics_keys(task: str) -> tuple[str, ...]:
    """The metrics.json keys a finished run of ``task`` has (regression runs need no label_names, but targets)."""
    keys = tuple(k for k in REQUIRED_METRICS_KEYS if has_labels(task) or k != "label_names")
    return keys + (("targets",) if has_values(task) else ())


def required_test_keys(task: str, targets: Sequence[str] = ()) -> tuple[str, ...]:
    """The test-split metrics a finished run of ``task`` reports."""
    keys = REQUIRED_TEST_KEYS if has_labels(task) else ()
    if has_values(task):
        keys += REQUIRED_VALUE_TEST_KEYS + tuple(f"ccc_{t}" for t in targets)
    return keys


def required_prediction_columns(task: str, targets: Sequence[str] = ()) -> tuple[str, ...]:
    """predictions.csv columns of a run of ``task``: the clip columns, label/prediction (labels),
    true_<t>/pred_<t> per target (values)."""
    cols = REQUIRED_PREDICTION_COLUMNS if has_labels(task) else CLIP_COLUMNS
    if has_values(task):
        cols += tuple(c for t in targets for c in (f"true_{t}", f"pred_{t}"))
    return cols


@dataclass(frozen=True)
class RunResult:
    """One finished run folder: its metrics.json and the test rows of its predictions.csv."""

    run_dir: Path
    metrics: dict
    test_rows: tuple[dict, ...]

    @property
    def recipe(self) -> str:
        return str(self.metrics["recipe"])

    @property
    def corpus(self) -> str:
        return str(self.metrics["corpus"])

    @property
    def split(self) -> str:
        return str(self.metrics["split"])

    @property
    def fold(self) -> int | None:
        return self.metrics["fold"]

    @property
    def seed(self):
        return self.metrics["seed"]

    @property
    def leaky(self) -> bool:
        return is_leaky(self.metrics)

    @property
    def label_names(self) -> list[str]:
        return list(self.metrics.get("label_names") or [])

    @property
    def task(self) -> str:
        """classification (also when metrics.json has no ``task``), regression or multitask."""
        return run_task(self.metrics)

    @property
    def targets(self) -> tuple[str, ...]:
        """The dimensions a regression/multitask run predicts (metrics.json ``targets``); () otherwise."""
        return tuple(str(t) for t in self.metrics.get("targets") or ()) if has_values(self.task) else ()

    @property
    def has_labels(self) -> bool:
        return has_labels(self.task)

    @property
    def has_values(self) -> bool:
        return has_values(self.task)

    @property
    def test_speakers(self) -> list[str]:
        return sorted(str(s) for s in self.metrics["speakers"].get("test", []))

    def headline(self, key: str) -> float:
        return float(self.metrics["test"][key])

    def clip_keys(self) -> list[tuple]:
        """(fold, corpus, file) per test clip: the key that pairs clips across runs."""
        return [(self.fold, r["corpus"], r["file"]) for r in self.test_rows]

    def label_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """(references, predictions) of the test clips as indices into ``label_names``."""
        if not self.has_labels:
            raise ValueError(f"{self.run_dir}: a {self.task} run has no class labels (metrics.json task is "
                             f"{self.task!r}); its predictions are dimension values {list(self.targets)}")
        index = {name: i for i, name in enumerate(self.label_names)}
        refs, preds = [], []
        for row in self.test_rows:
            for column, out in (("label", refs), ("prediction", preds)):
                name = row[column]
                if name not in index:
                    raise ValueError(
                        f"{self.run_dir / PREDICTIONS_FILE}: {column} {name!r} of file {row['file']!r} is not one of "
                        f"metrics.json label_names {self.label_names}; predictions.csv and metrics.json must come "
                        "from the same run"
                    )
                out.append(index[name])
        return np.asarray(refs, dtype=np.int64), np.asarray(preds, dtype=np.int64)

    def target_values(self) -> tuple[np.ndarray, np.ndarray]:
        """(true, predicted) dimension values of the test clips, float64 arrays (clips, len(targets)) in
        :attr:`targets` order; an error names the run, clip and column of a missing or non-finite value."""
        if not self.has_values:
            raise ValueError(f"{self.run_dir}: a {self.task} run has no dimension values (metrics.json task is "
                             f"{self.task!r}; only regression and multitask runs predict arousal/valence/dominance)")
        out = []
        for prefix in ("true_", "pred_"):
            cols = [f"{prefix}{t}" for t in self.targets]
            values = np.asarray([[row.get(c, math.nan) for c in cols] for row in self.test_rows], dtype=np.float64)
            bad = np.argwhere(~np.isfinite(values))
            if bad.size:
                i, j = bad[0]
                raise ValueError(f"{self.run_dir / PREDICTIONS_FILE}: {cols[j]} of test clip "
                                 f"{self.test_rows[i]['file']!r} is empty or not a number "
                                 f"({len(bad)} such value(s) in all)")
            out.append(values)
        return out[0], out[1]


def is_leaky(metrics: Mapping[str, Any]) -> bool:
    """True when the run's split lets speakers overlap (``leaky`` flag, or a ``random`` split)."""
    return bool(metrics.get("leaky")) or metrics.get("split") == "random"


VALUE_PREFIXES = ("prob_", "true_", "pred_")


def _float_or_nan(v) -> float:
    if v in ("", None):
        return math.nan
    try:
        return float(v)
    except ValueError:
        return math.nan


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of predictions.csv; ``prob_*``, ``true_*`` and ``pred_*`` (dimension values) as floats (an
    empty or unparsable cell: NaN), everything else kept as text.

    Read with the csv module rather than pandas so speaker ids like "03" stay strings.
    """
    with Path(path).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k, v in r.items():
            if k.startswith(VALUE_PREFIXES):
                r[k] = _float_or_nan(v)
    return rows


def read_metrics(run_dir: str | os.PathLike) -> dict:
    """metrics.json of a run folder as a dict (errors name the file)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is unreadable ({err})") from err
    if not isinstance(metrics, dict):
        raise ValueError(f"{path} is not a JSON object")
    return metrics


def why_incomplete(run_dir: str | os.PathLike) -> str | None:
    """None when ``run_dir`` holds a finished run (parseable metrics.json with test metrics and a
    predictions.csv); otherwise the reason, so a fold loop can say why it re-runs a fold."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.is_file():
        return f"{metrics_path} does not exist"
    try:
        metrics = read_metrics(run_dir)
    except ValueError as err:
        return str(err)
    try:
        task = run_task(metrics)
    except ValueError as err:
        return f"{metrics_path}: {err}"
    missing = [k for k in required_metrics_keys(task) if k not in metrics]
    if missing:
        return f"{metrics_path} lacks keys {missing}"
    test = metrics["test"]
    targets = metrics.get("targets") or () if has_values(task) else ()
    if has_values(task) and (not isinstance(targets, list) or not targets):
        return f"{metrics_path}: a {task} run needs a non-empty 'targets' list, got {targets!r}"
    wanted = required_test_keys(task, targets)
    if not isinstance(test, dict) or any(k not in test for k in wanted):
        return f"{metrics_path} 'test' lacks some of {list(wanted)}"
    if not (run_dir / PREDICTIONS_FILE).is_file():
        return f"{run_dir / PREDICTIONS_FILE} does not exist"
    return None


def load_run(run_dir: str | os.PathLike) -> RunResult:
    """Read one finished run folder; a clear error says what is missing or malformed."""
    run_dir = Path(run_dir)
    reason = why_incomplete(run_dir)
    if reason is not None:
        raise FileNotFoundError(
            f"{run_dir} is not a finished run folder: {reason}. A finished run holds metrics.json (with keys "
            f"{list(REQUIRED_METRICS_KEYS)}) and predictions.csv; re-run it or drop it from the list."
        )
    metrics = read_metrics(run_dir)
    if not isinstance(metrics["speakers"], dict) or "test" not in metrics["speakers"]:
        raise ValueError(f"{run_dir / METRICS_FILE}: 'speakers' must be a dict with a 'test' list")
    task = run_task(metrics)
    if has_labels(task) and not metrics["label_names"]:
        raise ValueError(f"{run_dir / METRICS_FILE}: 'label_names' is empty")

    pred_path = run_dir / PREDICTIONS_FILE
    with pred_path.open(newline="", encoding="utf-8") as fh:
        columns = next(csv.reader(fh), [])
    wanted = required_prediction_columns(task, metrics.get("targets") or ())
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(f"{pred_path} lacks columns {missing} (has {columns}); a {task} run's predictions.csv "
                         "needs them (see the run folder contract)")
    rows = tuple(row for row in read_predictions(pred_path) if row["split"] == "test")
    if not rows:
        raise ValueError(f"{pred_path} has no rows with split == 'test'; nothing to evaluate")
    seen: set[tuple[str, str]] = set()
    for row in rows:
        key = (row["corpus"], row["file"])
        if key in seen:
            raise ValueError(f"{pred_path}: test clip {key[1]!r} of corpus {key[0]!r} appears twice")
        seen.add(key)
    return RunResult(run_dir=run_dir, metrics=metrics, test_rows=rows)


def discover_runs(path: str | os.PathLike) -> list[Path]:
    """A run folder itself, or (for a cross-validation folder) its direct sub-folders holding a
    metrics.json, sorted by name (folders moved aside by overwrite=true are left out). Lets
    ``runs=[dir,...]`` name either."""
    path = Path(path)
    if (path / METRICS_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; pass a run folder or a folder of fold run folders")
    found = sorted(p for p in path.iterdir() if (p / METRICS_FILE).is_file() and ".replaced-" not in p.name)
    if not found:
        raise FileNotFoundError(f"{path} holds no metrics.json, nor do its sub-folders; is the run finished?")
    return found

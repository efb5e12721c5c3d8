"""One experiment from top to bottom; ``scripts/finetune.py`` only parses the recipe and calls :func:`run`.

recipe -> run spec (every section checked, :mod:`ser_hf.spec`) -> model family built from it
(:mod:`ser_hf.families`) -> corpus folder -> ``load_corpus`` (speaker split, decoded audio) ->
``family.fit`` -> ``family.predict`` (clip-level probabilities) -> reporter (metrics.json, report,
plots, predictions.csv) -> ``family.save`` (``save_pretrained`` model) -> model card -> Hub.

Nothing here knows a family: every one goes through the same calls of :class:`ser_hf.families.Family`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env, set_seed
from datasets import ClassLabel, concatenate_datasets
from omegaconf import DictConfig, OmegaConf

from .clips import ENCODER_MIN_S, min_clip_samples
from .config import configure_logging, load_config, run_cli
from .data import load_corpus
from .data.labels import labels_of
from .data.synthetic import builder_options, generate_corpus
from .families import ExperimentData, Family, Fitted, Predictions, get_family
from .families.base import target_matrix
from .groups import group_metrics, regression_group_metrics
from .groups import summary as group_summary
from .hub import model_card, push_to_hub
from .metrics import compute_metrics, compute_regression_metrics
from .tasks import ModelTask
from .reporting import write_json, write_predictions, write_report
from .runfolder import (atomic_write, check_data, claim, clip_files, data_fingerprint, replace_dir, too_short_clips,
                        write_checksums, write_fingerprint)
from .spec import DataConfig, RunSpec, SpecError, parse_spec

logger = logging.getLogger(__name__)

__all__ = ["ExperimentData", "drop_unrated", "generated_corpus_dir", "load_data", "main", "process_state", "run"]

GENERATED_CACHE_ENV = "SER_HF_CACHE"


# ------------------------------------------------------------------------------------------------ data


def process_state():
    """Accelerate's process state, created the way ``Accelerator`` creates it.

    The state is a singleton fixed by its first creation, so it must honour ``ACCELERATE_USE_CPU``
    (DDP over CPU processes) exactly as the Accelerator built later by the trainer would.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def generated_corpus_dir(corpus: str, synthetic: dict) -> Path:
    """Generate (once) a corpus with ``ser_hf.data.synthetic`` under ``$SER_HF_CACHE`` (default
    ``~/.cache/ser_hf``) and return its folder; the folder name holds every generation parameter.
    Call it inside ``main_process_first`` in distributed runs (``load_data`` does)."""
    opts = {"speakers": 10, "per_class": 8, "seed": 0, **synthetic}
    root = Path(os.environ.get(GENERATED_CACHE_ENV) or Path.home() / ".cache" / "ser_hf") / "generated"
    name = corpus + "".join(f"-{k}{v}" for k, v in sorted(opts.items()))
    out = root / name
    done = out / ".complete"
    if not done.exists():
        generate_corpus(corpus, out, **opts)
        done.write_text("ok\n")
    return out


def _corpus_dir(corpus: str, data_dir: str | None, synthetic: dict | None) -> str | None:
    return str(generated_corpus_dir(corpus, synthetic)) if synthetic is not None else data_dir


def load_data(data: DataConfig, seed: int) -> ExperimentData:
    """Load and split the corpora named by the ``data:`` section (single, cross- or multi-corpus)."""
    cross = data.test_corpus is not None
    multi = bool(data.extra_train)
    label_set = "common" if (cross or multi) else data.label_set
    if (cross or multi) and data.label_set != "common":
        logger.info("cross/multi-corpus run: using the common label set %s", labels_of(data.corpus, "common"))

    def load(corpus, data_dir, synthetic=None, split=data.split, fold=data.fold, builder=None):
        root = _corpus_dir(corpus, data_dir, synthetic)
        if synthetic is not None:  # a generated manifest/folder corpus: its manifest file, its speaker regex
            builder = {**builder_options(corpus, root), **(builder or {})}
        return load_corpus(corpus, root, split=split, fold=fold,
                           sampling_rate=data.sampling_rate, label_set=label_set, cache_dir=data.cache_dir,
                           num_proc=data.num_proc, seed=seed, **(builder or {}))

    with process_state().main_process_first():
        main = load(data.corpus, data.data_dir, data.synthetic, builder={**data.builder, **data.corpus_options()})
        trains, vals = [main["train"]], [main["validation"]]
        infos = {data.corpus: main.info.to_dict()}
        tests = {data.corpus: main["test"]}
        for extra in data.extra_train:
            extra = dict(extra)
            name = extra.pop("corpus")
            other = load(name, extra.pop("data_dir", None), extra.pop("synthetic", None), builder=extra)
            trains.append(other["train"])
            vals.append(other["validation"])
            tests[name] = other["test"]
            infos[name] = other.info.to_dict()
        if cross:
            # Every clip of the test corpus is unseen (other speakers, other recordings): test on all of it.
            other = load(data.test_corpus, data.test_data_dir, None, split="speaker", fold=None)
            tests = {data.test_corpus: concatenate_datasets([_common_columns(other[s]) for s in other
                                                             if len(other[s])])}
            infos[data.test_corpus] = other.info.to_dict()
    if len(trains) > 1:
        trains = [_common_columns(d) for d in trains]
        vals = [_common_columns(d) for d in vals if len(d)]
    train = concatenate_datasets(trains) if len(trains) > 1 else trains[0]
    validation = (concatenate_datasets(vals) if len(vals) > 1 else vals[0]) if vals else main["validation"].select([])
    info = {
        "corpus": data.corpus,
        "split": main.info.split,
        "fold": main.info.fold,
        "leaky": main.info.leaky,
        "leaky_reason": main.info.leaky_reason,
        "label_set": label_set,
        "speakers": main.info.speakers,
        "skipped": [s for i in infos.values() for s in i.get("skipped", [])],
    }
    if cross:
        info["train_corpus"], info["test_corpus"] = data.corpus, data.test_corpus
        # The whole test corpus is tested: its speakers from every split.
        info["speakers"] = {**main.info.speakers,
                            "test": sorted({s for v in infos[data.test_corpus]["speakers"].values() for s in v})}
    if multi:
        info["corpora"] = {k: {"speakers": v["speakers"]} for k, v in infos.items()}
    return ExperimentData(train, validation, tests, list(main.info.label_names), info)


def drop_unrated(data: ExperimentData, task: ModelTask) -> ExperimentData:
    """Dimensional runs: rows without a rating (NaN) of some target leave every split and join
    ``info["skipped"]`` (file, split, which targets); a corpus without the target columns is an error."""
    data.task = task
    if not task.has_values:
        return data
    targets = list(task.targets)
    corpus = data.info.get("corpus")
    missing = [t for t in targets if t not in data.train.column_names]
    if missing:
        raise ValueError(f"task={task.task}: the {corpus} data has no {missing} column(s); a manifest needs "
                         f"{'/'.join(targets)} columns (or choose targets=[...] among those it has)")
    if len(data.train):
        unrated = [t for t, col in zip(targets, target_matrix(data.train, targets).T) if not np.isfinite(col).any()]
        if unrated:
            raise ValueError(f"task={task.task}: no training clip of {corpus} has a {'/'.join(unrated)} rating (a manifest "
                             f"needs {'/'.join(unrated)} columns with values); choose targets=[...] among the rated ones")
    skipped = []

    def keep(ds, split):
        if len(ds) == 0:
            return ds
        values = target_matrix(ds, targets)
        bad = ~np.isfinite(values)
        rows = np.flatnonzero(bad.any(axis=1))
        files = ds["file"] if "file" in ds.column_names else [str(i) for i in range(len(ds))]
        for i in rows:
            names = [t for t, b in zip(targets, bad[i]) if b]
            skipped.append({"file": files[i], "split": split, "reason": f"no {'/'.join(names)} rating (NaN)"})
        return ds.select(np.flatnonzero(~bad.any(axis=1)).tolist()) if len(rows) else ds

    data.train = keep(data.train, "train")
    data.validation = keep(data.validation, "validation")
    data.tests = {name: keep(ds, "test") for name, ds in data.tests.items()}
    if skipped:
        logger.warning("%d clip(s) without a %s rating were skipped (listed in metrics.json 'skipped')",
                       len(skipped), "/".join(targets))
        data.info["skipped"] = list(data.info.get("skipped") or []) + skipped
    return data


def model_task(spec: RunSpec, label_names) -> ModelTask:
    """The run's :class:`~ser_hf.tasks.ModelTask` (labels only when the model predicts classes)."""
    labels = tuple(label_names) if spec.task != "regression" else ()
    return ModelTask(spec.task, tuple(spec.targets), labels)


# Columns every corpus has; concatenating corpora keeps these only.
COMMON_COLUMNS = ("audio", "file", "label", "speaker_id", "gender")


def _common_columns(ds):
    ds = ds.remove_columns([c for c in ds.column_names if c not in COMMON_COLUMNS])
    return ds.cast_column("label", ClassLabel(names=labels_of("emodb", "common")))


# ------------------------------------------------------------------------------------------------ run


def run(cfg: DictConfig | RunSpec) -> Path:
    """Train and evaluate one recipe (a :class:`~ser_hf.spec.RunSpec`, or the config that
    :func:`ser_hf.config.load_config` composed); returns the run folder.

    The spec is parsed and the family built before anything is read or written, so a bad key fails
    in a second with nothing on disk.
    """
    spec = cfg if isinstance(cfg, RunSpec) else parse_spec(cfg)
    if not spec.output_dir:
        raise SpecError("output_dir is not set: pass output_dir=DIR (load_config sets runs/<recipe>/... by default)")
    family = get_family(spec.family)(spec)
    out = Path(spec.output_dir)
    state = process_state()
    # The folder becomes this run's (lock, fingerprint, finished-run checks) before anything is written to it.
    lock = claim(out, spec.raw, resume=spec.resume, overwrite=spec.overwrite, main_process=state.is_main_process)
    try:
        return run_claimed(spec, family, out, state)
    finally:
        if lock is not None:
            lock.release()


def min_clip_s(spec: RunSpec) -> float:
    """The shortest clip this run's family reads meaningfully, in seconds (``clips.min_clip_samples``)."""
    if spec.features is None:
        return ENCODER_MIN_S
    return min_clip_samples(spec.features, spec.features.sampling_rate) / spec.features.sampling_rate


def run_claimed(spec: RunSpec, family: Family, out: Path, state) -> Path:
    """:func:`run` once the run folder is this run's."""
    set_seed(spec.seed)
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(spec.raw)))
        write_fingerprint(out, spec.raw)
    logger.info("recipe %s -> %s", spec.recipe_name, out)

    data = load_data(spec.data, spec.seed)
    data = drop_unrated(data, model_task(spec, data.label_names))
    splits = [data.train, data.validation, *data.tests.values()]
    data.info["too_short"] = too_short_clips(splits, min_clip_s(spec))
    data_fp = data_fingerprint(data.info, clip_files(splits, data.info.get("corpus")))
    check_data(out, data_fp)
    state.wait_for_everyone()
    if state.is_main_process:
        write_fingerprint(out, spec.raw, data_fp)
    if len(data.train) == 0:
        raise ValueError(f"the training split of {spec.data.corpus} is empty (speakers: {data.info['speakers']}); "
                         "check data.data_dir, data.split and data.fold")
    start = time.perf_counter()
    fitted = family.fit(data, out)
    predictions = family.predict(family.reported_sets(data))
    fitted.train_seconds = fitted.train_seconds or time.perf_counter() - start
    if state.is_main_process:
        write_outputs(spec, family, data, fitted, predictions, out)
    state.wait_for_everyone()
    return out


# ---------------------------------------------------------------------------------------- outputs


def split_corpus(split: str, info: dict) -> str:
    """The corpus an evaluation set comes from (``test:<corpus>`` in multi-corpus runs)."""
    if ":" in split:
        return split.split(":", 1)[1]
    return info.get("test_corpus", info["corpus"]) if split == "test" else info["corpus"]


def run_metrics(spec: RunSpec, data: ExperimentData, fitted: Fitted, num_parameters: int | None) -> dict[str, Any]:
    """The header of metrics.json: what ran, on which speakers, how long."""
    metrics: dict[str, Any] = {
        "recipe": spec.recipe_name,
        "corpus": data.info["corpus"],
        "split": data.info["split"],
        "fold": data.info["fold"],
        "seed": spec.seed,
        "leaky": bool(data.info["leaky"]),
        "leaky_reason": data.info.get("leaky_reason", ""),
        "label_set": data.info["label_set"],
        "speakers": fitted.speakers or data.info["speakers"],
        "skipped": data.info["skipped"],
        "too_short": data.info.get("too_short", []),
        "best_epoch": fitted.best_epoch,
        "train_seconds": round(float(fitted.train_seconds or 0.0), 3),
        "model_family": spec.family,
        "features": spec.features_section,
        "num_parameters": num_parameters,
        "label_names": data.label_names,
        "task": data.task.task,
        "targets": list(data.task.targets),
    }
    for key in ("train_corpus", "test_corpus", "corpora"):
        if key in data.info:
            metrics[key] = data.info[key]
    return metrics


def score_predictions(metrics: dict, predictions: Predictions, data: ExperimentData) -> list[dict]:
    """Add each evaluation set's scores to ``metrics`` (pooled test scores in multi-corpus runs) and
    return the rows of predictions.csv. Dimensional runs (``data.task``) score CCC / Pearson / MAE per
    target (per-speaker/gender groups by mean CCC in regression runs) and write ``true_<t>``/``pred_<t>``."""
    names = data.label_names
    task = data.task
    rows = []
    for split, (ds, outputs) in predictions.items():
        probs, values = task.split_outputs(outputs)
        genders = ds["gender"] if "gender" in ds.column_names else [""] * len(ds)  # per-speaker/gender (issue 15)
        metrics[split] = {}
        if probs is not None:
            labels = np.asarray(ds["label"])
            pred = probs.argmax(axis=1)
            metrics[split] = compute_metrics(labels, pred, names)
            metrics[split].update(group_metrics(labels, pred, ds["speaker_id"], genders, names))
        if values is not None:
            true = target_matrix(ds, task.targets)
            metrics[split].update(compute_regression_metrics(true, values, task.targets))
            if probs is None:
                metrics[split].update(regression_group_metrics(true, values, ds["speaker_id"], genders, task.targets))
        corpus = split_corpus(split, data.info)
        for i, (f, spk) in enumerate(zip(ds["file"], ds["speaker_id"])):
            row = {"split": split if ":" not in split else "test", "corpus": corpus, "file": f, "speaker_id": spk}
            if probs is not None:
                row.update({"label": names[labels[i]], "prediction": names[pred[i]],
                            **{f"prob_{n}": float(probs[i, j]) for j, n in enumerate(names)}})
            if values is not None:
                for j, t in enumerate(task.targets):
                    row[f"true_{t}"], row[f"pred_{t}"] = float(true[i, j]), float(values[i, j])
            rows.append({**row, "gender": genders[i]})
    if any(k.startswith("test:") for k in metrics):
        metrics["test_per_corpus"] = {k.split(":", 1)[1]: metrics.pop(k) for k in list(metrics) if k.startswith("test:")}
        pooled = [r for r in rows if r["split"] == "test"]
        metrics["test"] = compute_metrics([r["label"] for r in pooled], [r["prediction"] for r in pooled], names)
        metrics["test"].update(group_metrics([r["label"] for r in pooled], [r["prediction"] for r in pooled],
                                             [f"{r['corpus']}:{r['speaker_id']}" for r in pooled],
                                             [r["gender"] for r in pooled], names))
    return rows


def write_outputs(spec: RunSpec, family: Family, data: ExperimentData, fitted: Fitted, predictions: Predictions,
                  out: Path) -> None:
    """The run folder: predictions.csv, history.json, model/ (+ model card), metrics.json, report, plots."""
    metrics = run_metrics(spec, data, fitted, family.num_parameters)
    rows = score_predictions(metrics, predictions, data)
    metrics = {"speakers_and_gender": group_summary(metrics), **metrics}  # worst speaker + gender gap first
    write_predictions(out / "predictions.csv", rows, label_names=data.label_names)
    if fitted.history:
        write_json(out / "history.json", fitted.history)
    # The model folder is built aside, with sha256 checksums of its weights, and swapped in whole.
    model_dir, tmp_dir = out / "model", out / ".model.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    family.save(tmp_dir)
    write_checksums(tmp_dir)
    card = model_card(metrics, base_model=family.base_model, repo_id=spec.hub.repo_id, dataset_name=data.info["corpus"])
    card.save(tmp_dir / "README.md")
    replace_dir(tmp_dir, model_dir)
    write_report(out, metrics, fitted.history, predictions=rows)
    if spec.hub.push:
        push_to_hub(model_dir, spec.hub.repo_id, card=card, private=spec.hub.private)
    test = metrics.get("test") or {}
    summary = {"output_dir": str(out)}
    if data.task.has_classes:
        logger.info("%s: test macro-F1 %s  (%s)", spec.recipe_name, test.get("macro_f1"), out)
        summary.update(test_macro_f1=test.get("macro_f1"),
                       validation_macro_f1=(metrics.get("validation") or {}).get("macro_f1"))
    if data.task.has_values:
        ccc = {t: test.get(f"ccc_{t}") for t in data.task.targets}
        logger.info("%s: test CCC %s, mean %s  (%s)", spec.recipe_name,
                    ", ".join(f"{t} {v:.3f}" for t, v in ccc.items() if v is not None), test.get("ccc_mean"), out)
        summary.update({f"test_ccc_{t}": v for t, v in ccc.items()}, test_ccc_mean=test.get("ccc_mean"),
                       validation_ccc_mean=(metrics.get("validation") or {}).get("ccc_mean"))
    print(json.dumps(summary))


def main(argv: list[str] | None = None) -> Path:
    """Command line: ``[accelerate launch] scripts/finetune.py recipe=NAME [key=value ...]`` or
    ``python -m ser_hf.experiment recipe=NAME ...`` (what parallel cross-validation starts per fold)."""
    configure_logging()
    return run(load_config(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])

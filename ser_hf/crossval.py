"""Cross-validation over folds: a resumable fold loop and a summary of finished fold runs.

(The run-folder reader itself is ser_hf/runfolder.py; the fold loop and the fold summary here share its
contract. Over 500 lines: the fold summary covers class and dimensional (CCC) runs, which share the fold
checks, tables and files.)

Everything here reads finished run folders (the "run folder contract": ``metrics.json`` +
``predictions.csv``), so a summary can be rebuilt at any time without re-training, and a crashed
cross-validation resumes at the first fold without a complete run folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ser_hf.config import load_config, load_spec, recipe_suffix
from ser_hf import experiment
from ser_hf.data.splits import num_folds
from ser_hf.families import get_family
from ser_hf.metrics import compute_metrics, compute_regression_metrics
from ser_hf.reporting import (  # noqa: F401 (is_leaky, read_predictions, PREDICTIONS_FILE re-exported)
    METRICS_FILE,
    PREDICTIONS_FILE,
    is_leaky,
    plot_confusion_matrices,
    plot_scatter,
    read_predictions,
    write_json,
)
from ser_hf.runfolder import clip_files, data_fingerprint

logger = logging.getLogger(__name__)

SUMMARY_JSON = "crossval_summary.json"
SUMMARY_MD = "crossval_summary.md"
POOLED_CM_PNG = "confusion_matrix_pooled.png"
POOLED_SCATTER_PNG = "scatter_pooled.png"

# Splits whose folds partition the speakers: their test speakers must be disjoint across folds.
FOLD_SPLITS = ("loso", "kfold", "session")
# The headline numbers reported per fold, in this order.
HEADLINE = ("macro_f1", "accuracy", "uar")
HEADLINE_NAMES = {"macro_f1": "macro-F1", "accuracy": "accuracy", "uar": "UAR"}
# Dimensional runs (issue 14): the mean CCC over targets, then each target's CCC.
VALUE_HEADLINE = "ccc_mean"


# --------------------------------------------------------------------------------------------------
# Reading finished run folders
# --------------------------------------------------------------------------------------------------


# The one reader of run folders lives in ser_hf.runfolder (re-exported here for existing imports).
from ser_hf.runfolder import (  # noqa: E402,F401
    REQUIRED_METRICS_KEYS,
    RunFolderError,
    RunLock,
    atomic_write,
    fingerprint_mismatch,
    move_aside,
    read_fingerprint,
    REQUIRED_PREDICTION_COLUMNS,
    REQUIRED_TEST_KEYS,
    RunResult,
    discover_runs,
    load_run,
    why_incomplete,
)


def check_same_protocol(runs: Sequence[RunResult], what: str) -> list[RunResult]:
    """Refuse a set of fold runs that are not folds of one experiment; return them sorted by fold.

    ``what`` names the set in errors (e.g. "recipe 'cnn2d'").
    """
    if not runs:
        raise ValueError(f"{what}: no run folders given")
    first = runs[0]
    for run in runs[1:]:
        for field in ("recipe", "corpus", "split", "seed", "task", "targets", "label_names", "leaky"):
            a, b = getattr(first, field), getattr(run, field)
            if a != b:
                raise ValueError(
                    f"{what}: runs disagree on {field!r}: {first.run_dir} has {a!r}, {run.run_dir} has {b!r}. "
                    "Folds of one cross-validation must share recipe, corpus, split, seed, task, targets and "
                    "label set."
                )
    if len(runs) > 1:
        folds = [r.fold for r in runs]
        if any(f is None for f in folds):
            raise ValueError(
                f"{what}: several runs of split {first.split!r} without a fold number "
                f"({[str(r.run_dir) for r in runs]}); only loso/kfold runs have several folds"
            )
        dupes = sorted({f for f in folds if folds.count(f) > 1})
        if dupes:
            dirs = [str(r.run_dir) for r in runs if r.fold in dupes]
            raise ValueError(f"{what}: fold(s) {dupes} given more than once: {dirs}")
        if first.split not in FOLD_SPLITS:
            raise ValueError(
                f"{what}: split {first.split!r} has one test set, so several runs of it are not folds; "
                f"cross-validation needs split in {FOLD_SPLITS}"
            )
        for i, a in enumerate(runs):
            for b in runs[i + 1:]:
                shared = sorted(set(a.test_speakers) & set(b.test_speakers))
                if shared:
                    raise ValueError(
                        f"{what}: test speakers {shared} are in both fold {a.fold} ({a.run_dir}) and fold {b.fold} "
                        f"({b.run_dir}); {first.split} folds must have disjoint test speakers"
                    )
    return sorted(runs, key=lambda r: (r.fold is not None, r.fold if r.fold is not None else 0))


# --------------------------------------------------------------------------------------------------
# Metrics and plots
# --------------------------------------------------------------------------------------------------


def clip_metrics(refs: np.ndarray, preds: np.ndarray, label_names: Sequence[str]) -> dict:
    """The project's one reporter (``ser_hf.metrics.compute_metrics``) plus ``per_class_f1`` as a list
    in label order, so pooled numbers are defined exactly like each run's own metrics.json."""
    metrics = compute_metrics(refs, preds, label_names)
    metrics["per_class_f1"] = [metrics["per_class"][name]["f1"] for name in metrics["labels"]]
    return metrics


def mean_std(values: Iterable[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); std is None for a single value."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        raise ValueError("mean_std of no values")
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return float(arr.mean()), std


def fmt_mean_std(mean: float, std: float | None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" if std is None or math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------------------------------
# Fold loop and summary
# --------------------------------------------------------------------------------------------------


def run_folds(
    run_one: Callable[[int], Path],
    folds: Sequence[int],
    fold_dir: Callable[[int], Path],
    fold_config: Callable[[int], object] | None = None,
    overwrite: bool = False,
    files_sha256: str | None = None,
) -> list[Path]:
    """Run every fold that has no finished run folder yet; return the fold run folders in ``folds`` order.

    ``fold_dir(k)`` is where fold k's run lands; a fold whose folder already holds a complete run is
    skipped, so re-invoking after a crash resumes where it stopped. ``run_one(k)`` trains and
    evaluates fold k and returns its run folder. With ``fold_config(k)`` (fold k's resolved config) a
    finished fold is reused only when its fingerprint matches (and its data's file list, when
    ``files_sha256`` is given); otherwise it is refused naming the differing keys, or with ``overwrite``
    moved aside to ``fold<k>.replaced-<UTC time>`` and re-run.
    """
    run_dirs: list[Path] = []
    for fold in folds:
        expected = Path(fold_dir(fold))
        reason = why_incomplete(expected)
        if reason is None and fold_config is not None:
            stale = reused_fold_problem(expected, fold_config(fold), files_sha256)
            if stale is not None:
                if not overwrite:
                    raise RunFolderError(f"fold {fold}: {stale}; pass overwrite=true to move it aside and re-run "
                                         "it, or choose another output_dir")
                move_aside(expected)
                reason = "overwrite=true"
        if reason is None:
            recorded = json.loads((expected / METRICS_FILE).read_text(encoding="utf-8"))["fold"]
            if recorded != fold:
                raise ValueError(
                    f"{expected / METRICS_FILE} records fold {recorded!r} but fold_dir({fold}) points at it; "
                    "fold_dir must give every fold its own folder"
                )
            logger.info("fold %s already done (%s); skipping", fold, expected)
            run_dirs.append(expected)
            continue
        if expected.exists():
            logger.info("fold %s: re-running because %s", fold, reason)
        else:
            logger.info("fold %s: running", fold)
        got = Path(run_one(fold))
        reason = why_incomplete(got)
        if reason is not None:
            raise RuntimeError(f"run_one({fold}) returned {got}, which is not a finished run folder: {reason}")
        if got.resolve() != expected.resolve():
            logger.warning(
                "run_one(%s) wrote %s but fold_dir(%s) is %s; a later resume will not find this fold",
                fold, got, fold, expected,
            )
        run_dirs.append(got)
    return run_dirs


def reused_fold_problem(run_dir: Path, cfg, files_sha256: str | None = None) -> str | None:
    """None when the finished run in ``run_dir`` was made with ``cfg`` (and, when given, the same file list)."""
    diff = fingerprint_mismatch(run_dir, cfg)
    if diff is not None:
        return f"{run_dir} is a finished run of a different config ({diff})"
    recorded = ((read_fingerprint(run_dir) or {}).get("data") or {}).get("files_sha256")
    if files_sha256 is not None and recorded is not None and recorded != files_sha256:
        return f"{run_dir} was made from a different file list of the corpus (files_sha256 differs)"
    return None


def run_parallel(tasks: Sequence[tuple[Path, list[str]]], jobs: int) -> None:
    """Run ``(run_dir, overrides)`` tasks as ``jobs`` concurrent ``python -m ser_hf.experiment`` processes.

    For many CPU cores, or one GPU shared by small models (one fold of a CNN baseline leaves a GPU
    mostly idle). Tasks start in the given order; each logs to ``<run_dir>.log``; CPU threads are split
    between the jobs unless ``OMP_NUM_THREADS`` is set. A task whose run folder is already finished is
    skipped, and a failed task does not stop the others: the error comes after all have ended, naming
    the failed runs' logs, and re-running resumes. (A plain process pool: ``accelerate launch`` spreads
    one training over many processes, not many trainings over one machine.)
    """
    todo = [(Path(d), list(o)) for d, o in tasks if why_incomplete(d) is not None]
    if not todo:
        return
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // min(jobs, len(todo)))))
    running: list[tuple[subprocess.Popen, Path, Path]] = []
    failed: list[tuple[Path, Path]] = []
    logger.info("%d runs to do, %d at a time", len(todo), jobs)
    try:
        while todo or running:
            while todo and len(running) < jobs:
                run_dir, overrides = todo.pop(0)
                log = Path(f"{run_dir}.log")
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "w") as fh:
                    cmd = [sys.executable, "-m", "ser_hf.experiment", *overrides, f"output_dir={run_dir}"]
                    running.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), run_dir,
                                    log))
            for item in [r for r in running if r[0].poll() is not None]:
                running.remove(item)
                proc, run_dir, log = item
                ok = proc.returncode == 0 and why_incomplete(run_dir) is None
                logger.info("%s %s (%s)", run_dir, "done" if ok else f"FAILED (exit {proc.returncode})", log)
                if not ok:
                    failed.append((run_dir, log))
            time.sleep(0.5)
    finally:  # interrupted (Ctrl-C, a timeout): stop the runs still going; their folds re-run next time
        for proc, _, _ in running:
            proc.terminate()
        for proc, _, _ in running:
            proc.wait()
    if failed:
        raise RuntimeError("runs failed: " + "; ".join(f"{d.name}, see {log}" for d, log in failed)
                           + ". Re-run the same command to retry them (finished runs are kept).")


def summarize_folds(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Per-fold and mean ± std of macro-F1 / accuracy / UAR, plus metrics of the pooled predictions.

    Writes ``crossval_summary.json``, ``crossval_summary.md`` and ``confusion_matrix_pooled.png`` into
    ``out_dir`` and returns the JSON content. Per-fold numbers are the runs' own metrics.json test
    metrics; pooled numbers are recomputed from predictions.csv over all folds' test clips.

    Regression and multitask folds (issue 14) add ``"dimensions"`` (:func:`summarize_value_runs`: CCC per
    target and mean CCC, per fold, mean ± std over folds, pooled) and ``scatter_pooled.png``; a regression
    cross-validation has no class metrics.
    """
    runs = [load_run(d) for d in run_dirs]
    runs = check_same_protocol(runs, f"cross-validation of {runs[0].recipe!r}" if runs else "cross-validation")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = runs[0]
    if not first.has_labels:
        return _summarize_value_folds(runs, out_dir)
    label_names = first.label_names
    summary = summarize_runs(runs)

    # Pooled confusion matrix is the sum of the per-fold ones; cross-check against metrics.json so a
    # predictions.csv that does not match its metrics.json is noticed.
    for run, row in zip(runs, summary["folds"]):
        recorded = run.metrics["test"].get("confusion_matrix")
        if recorded is not None and np.asarray(recorded).tolist() != row["confusion_matrix"]:
            logger.warning("%s: confusion matrix in metrics.json differs from the one of predictions.csv",
                           run.run_dir)

    result = {
        "recipe": first.recipe,
        "corpus": first.corpus,
        "split": first.split,
        "seed": first.seed,
        "leaky": first.leaky,
        "label_names": label_names,
        "n_folds": len(runs),
        "std_ddof": 1,
        **summary,
        "run_dirs": [os.path.relpath(r.run_dir, out_dir) for r in runs],
    }
    if first.has_values:  # multitask: the dimensions beside the classes
        result["task"], result["targets"] = first.task, list(first.targets)
        result["dimensions"] = summarize_value_runs(runs)
        plot_value_scatter(runs, out_dir / POOLED_SCATTER_PNG)
    write_json(out_dir / SUMMARY_JSON, result)
    # reporting's plot takes a run-shaped dict; the pooled metrics stand in as the "test" split.
    plot_confusion_matrices(
        {"recipe": f"{first.recipe} ({len(runs)} fold(s) pooled)", "corpus": first.corpus, "split": first.split,
         "leaky": first.leaky, "test": summary["pooled"]},
        out_dir / POOLED_CM_PNG,
    )
    atomic_write(out_dir / SUMMARY_MD, _summary_markdown(result))
    logger.info("cross-validation summary written to %s", out_dir / SUMMARY_MD)
    return result


def summarize_runs(runs: Sequence[RunResult]) -> dict:
    """The numbers of a cross-validation (no files): per-fold rows, mean/std, pooled metrics.

    ``runs`` must already be checked by :func:`check_same_protocol`.
    """
    label_names = runs[0].label_names
    folds, all_refs, all_preds = [], [], []
    for run in runs:
        refs, preds = run.label_indices()
        all_refs.append(refs)
        all_preds.append(preds)
        fold_cm = clip_metrics(refs, preds, label_names)["confusion_matrix"]
        folds.append({
            "fold": run.fold,
            "test_speakers": run.test_speakers,
            **{k: run.headline(k) for k in HEADLINE},
            "n_test_clips": len(run.test_rows),
            "train_seconds": run.metrics.get("train_seconds"),
            "confusion_matrix": fold_cm,
        })
    mean, std = {}, {}
    for key in HEADLINE:
        mean[key], std[key] = mean_std(f[key] for f in folds)
    pooled = clip_metrics(np.concatenate(all_refs), np.concatenate(all_preds), label_names)
    pooled["n_clips"] = int(sum(f["n_test_clips"] for f in folds))
    return {"folds": folds, "mean": mean, "std": std, "pooled": pooled}


def summarize_value_runs(runs: Sequence[RunResult]) -> dict:
    """The dimensional numbers of a cross-validation (no files): per fold the runs' own metrics.json test
    ``ccc_mean`` and ``ccc_<t>``, their mean and sample std over folds, and the pooled CCC / Pearson / MAE of all
    folds' test clips (``ser_hf.metrics.compute_regression_metrics``, the definition of every run's own
    metrics). ``runs`` must already be checked by :func:`check_same_protocol`."""
    targets = list(runs[0].targets)
    keys = [VALUE_HEADLINE, *(f"ccc_{t}" for t in targets)]
    folds, trues, preds = [], [], []
    for run in runs:
        true, pred = run.target_values()
        trues.append(true)
        preds.append(pred)
        folds.append({"fold": run.fold, "test_speakers": run.test_speakers, **{k: run.headline(k) for k in keys},
                      "n_test_clips": len(run.test_rows), "train_seconds": run.metrics.get("train_seconds")})
    mean, std = {}, {}
    for key in keys:
        mean[key], std[key] = mean_std(f[key] for f in folds)
    pooled = compute_regression_metrics(np.concatenate(trues), np.concatenate(preds), targets)
    pooled["n_clips"] = int(sum(f["n_test_clips"] for f in folds))
    return {"targets": targets, "folds": folds, "mean": mean, "std": std, "pooled": pooled}


def _summarize_value_folds(runs: Sequence[RunResult], out_dir: Path) -> dict:
    """summarize_folds of regression folds: crossval_summary.json/.md with the CCC summary and the pooled scatter."""
    first = runs[0]
    dims = summarize_value_runs(runs)
    result = {
        "recipe": first.recipe, "corpus": first.corpus, "split": first.split, "seed": first.seed,
        "leaky": first.leaky, "task": first.task, "targets": list(first.targets), "n_folds": len(runs), "std_ddof": 1,
        "dimensions": dims, "run_dirs": [os.path.relpath(r.run_dir, out_dir) for r in runs],
    }
    write_json(out_dir / SUMMARY_JSON, result)
    plot_value_scatter(runs, out_dir / POOLED_SCATTER_PNG)
    atomic_write(out_dir / SUMMARY_MD, "\n".join(_header_lines(result, dims["pooled"]["n_clips"])
                                                + _value_summary_lines(dims)) + "\n")
    logger.info("cross-validation summary written to %s", out_dir / SUMMARY_MD)
    return result


def plot_value_scatter(runs: Sequence[RunResult], path: str | os.PathLike) -> Path:
    """Predicted vs true value per target, test clips of all folds pooled: reporting's scatter plot (the one
    every dimensional run draws) with the pooled metrics standing in as the "test" split."""
    first = runs[0]
    true, pred = (np.concatenate(x) for x in zip(*(r.target_values() for r in runs)))
    pooled = compute_regression_metrics(true, pred, list(first.targets))
    rows = [row for r in runs for row in r.test_rows]
    return plot_scatter({"recipe": f"{first.recipe} ({len(runs)} fold(s) pooled)", "corpus": first.corpus,
                         "split": first.split, "leaky": first.leaky, "test": pooled}, rows, path)


def _header_lines(s: dict, n_clips: int) -> list[str]:
    lines = [f"# Cross-validation: {s['recipe']}", ""]
    lines.append(f"Corpus **{s['corpus']}**, split **{s['split']}**, seed {s['seed']}, {s['n_folds']} fold(s), "
                 f"{n_clips} test clips in all.")
    if s["leaky"]:
        lines.append("")
        lines.append("**Warning: leaky split** (random split: the same speakers are in train and test), so these "
                     "numbers overstate speaker-independent performance.")
    return lines


def _value_summary_lines(d: dict) -> list[str]:
    """The markdown of :func:`summarize_value_runs`: per fold, mean ± std, pooled, scatter plot."""
    targets = d["targets"]
    keys = [VALUE_HEADLINE, *(f"ccc_{t}" for t in targets)]
    names = ["mean CCC", *(f"CCC {t}" for t in targets)]
    lines = ["", "## Dimensions: CCC per fold", ""]
    lines += markdown_table(["fold", "test speakers", *names, "test clips"],
                            [[f["fold"], " ".join(f["test_speakers"]), *(f"{f[k]:.3f}" for k in keys),
                              f["n_test_clips"]] for f in d["folds"]])
    lines += ["", "## Dimensions: mean ± std over folds", ""]
    lines += markdown_table(names, [[fmt_mean_std(d["mean"][k], d["std"][k]) for k in keys]])
    p = d["pooled"]
    lines += ["", "std is the sample standard deviation over folds (ddof=1); with one fold it is not defined.", "",
              "## Dimensions: pooled over folds", "",
              f"All folds' test clips taken together ({p['n_clips']}): mean CCC {p['ccc_mean']:.3f}.", ""]
    lines += markdown_table(["target", "CCC", "Pearson", "MAE"],
                            [[t, f"{p[f'ccc_{t}']:.3f}", f"{p[f'pearson_{t}']:.3f}", f"{p[f'mae_{t}']:.3f}"]
                             for t in targets])
    lines += ["", f"![predicted vs true, pooled]({POOLED_SCATTER_PNG})", ""]
    return lines


def _summary_markdown(s: dict) -> str:
    names = s["label_names"]
    lines = _header_lines(s, s["pooled"]["n_clips"])
    lines += ["", "## Per fold", ""]
    lines += markdown_table(
        ["fold", "test speakers", "macro-F1", "accuracy", "UAR", "test clips"],
        [[f["fold"], " ".join(f["test_speakers"]), f"{f['macro_f1']:.3f}", f"{f['accuracy']:.3f}",
          f"{f['uar']:.3f}", f["n_test_clips"]] for f in s["folds"]],
    )
    lines += ["", "## Mean ± std over folds", ""]
    lines += markdown_table(
        [HEADLINE_NAMES[k] for k in HEADLINE],
        [[fmt_mean_std(s["mean"][k], s["std"][k]) for k in HEADLINE]],
    )
    lines += ["", "std is the sample standard deviation over folds (ddof=1); with one fold it is not defined."]
    p = s["pooled"]
    lines += ["", "## Pooled over folds", "",
              f"All folds' test predictions taken together: macro-F1 {p['macro_f1']:.3f}, accuracy "
              f"{p['accuracy']:.3f}, UAR {p['uar']:.3f}. The confusion matrix below is the sum of the per-fold "
              "ones (rows = true, columns = predicted).", ""]
    lines += markdown_table(["true \\ predicted", *names],
                       [[n, *row] for n, row in zip(names, p["confusion_matrix"])])
    lines += ["", "Per-class F1 (pooled): " + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, p["per_class_f1"])),
              "", f"![pooled confusion matrix]({POOLED_CM_PNG})", ""]
    if s.get("dimensions"):
        lines += _value_summary_lines(s["dimensions"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- recipe driver


def default_fold_split(corpus: str) -> str:
    """The fold protocol used when a recipe's split has no folds: EmoBox folds for RAVDESS, leave-one-session-out
    for IEMOCAP, LOSO otherwise."""
    return {"ravdess": "kfold", "iemocap": "session"}.get(corpus, "loso")


@dataclass
class FoldPlan:
    """The folds of one recipe's cross-validation: where each lands and the overrides that run it."""

    recipe: str
    out: Path
    split: str
    folds: list[int]
    overrides: list[str]
    overwrite: bool = False
    files_sha256: str | None = None  # of the corpus's file list, to recognise folds made from other data

    def fold_dir(self, k: int) -> Path:
        return self.out / f"fold{k}"

    def fold_overrides(self, k: int) -> list[str]:
        return [*self.overrides, f"data.split={self.split}", f"data.fold={k}"]

    def fold_config(self, k: int):
        """Fold k's resolved config (what its run folder's fingerprint must match)."""
        return load_config([*self.fold_overrides(k), f"output_dir={self.fold_dir(k)}"])

    def check_finished(self) -> None:
        """Refuse (or with overwrite=true move aside) every finished fold made with another config."""
        for k in self.folds:
            if why_incomplete(self.fold_dir(k)) is None:
                problem = reused_fold_problem(self.fold_dir(k), self.fold_config(k), self.files_sha256)
                if problem is not None:
                    if not self.overwrite:
                        raise RunFolderError(f"fold {k}: {problem}; pass overwrite=true to move it aside and "
                                             "re-run it, or choose another output_dir")
                    move_aside(self.fold_dir(k))

    def tasks(self) -> list[tuple[Path, list[str]]]:
        """``(run_dir, overrides)`` per fold, for :func:`run_parallel`."""
        return [(self.fold_dir(k), self.fold_overrides(k)) for k in self.folds]


def plan_folds(overrides: Sequence[str], out_dir: str | os.PathLike | None = None) -> FoldPlan:
    """Resolve a recipe's folds (``recipe=NAME key=value ...``). Loads the corpus once to count speakers,
    which also fills the decoded-corpus cache before any fold runs (parallel folds then only read it)."""
    overrides = list(overrides)
    for o in [o for o in overrides if o.startswith("output_dir=")]:
        # The folds' common root: each fold gets its own folder below it.
        out_dir = out_dir or o.split("=", 1)[1]
        overrides.remove(o)
    spec = load_spec(overrides)  # every section checked before the corpus is read,
    get_family(spec.family)(spec)  # and what only the family can check (estimator parameters, ...)
    data = spec.data
    split = data.split if data.split in FOLD_SPLITS else default_fold_split(data.corpus)
    # Like a run folder, the default root carries the config fingerprint when overrides change the recipe.
    base = load_config(overrides)
    out = Path(out_dir) if out_dir else Path("runs") / str(spec.recipe_name) / \
        f"crossval-{data.corpus}-{split}-seed{spec.seed}{recipe_suffix(base)}"
    probe = experiment.load_data(dataclasses.replace(data, split="speaker", fold=None), spec.seed)
    speakers = sorted({s for v in probe.info["speakers"].values() for s in v})
    folds = list(range(1, num_folds(data.corpus, split, speakers) + 1))
    probe_splits = [probe.train, probe.validation, *probe.tests.values()]
    return FoldPlan(str(spec.recipe_name), out, split, folds, overrides, overwrite=spec.overwrite,
                    files_sha256=data_fingerprint(probe.info, clip_files(probe_splits, probe.info.get("corpus")))
                    ["files_sha256"])


def crossval_recipe(overrides: Sequence[str], out_dir: str | os.PathLike | None = None, jobs: int = 1) -> Path:
    """Run every fold of a recipe (``recipe=NAME key=value ...``), skipping finished folds, and summarise.

    The folds' run folders are ``<out_dir>/fold<k>``; ``out_dir`` defaults to
    ``runs/<recipe>/crossval-<corpus>-<split>-seed<seed>``. A recipe whose ``data.split`` is
    ``speaker`` or ``random`` is cross-validated with :func:`default_fold_split`. ``jobs`` > 1 (or
    ``jobs=N`` among the overrides) runs that many folds at once in separate processes.
    """
    overrides = list(overrides)
    for o in [o for o in overrides if o.startswith("jobs=")]:
        value = o.split("=", 1)[1]
        if not value.isdigit():
            raise ValueError(f"jobs={value!r}: give the number of folds to run at once, e.g. jobs=4")
        jobs = int(value)
        overrides.remove(o)
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: the number of folds to run at once must be >= 1")
    plan = plan_folds(overrides, out_dir)
    logger.info("cross-validating %s: %s with %d folds -> %s", plan.recipe, plan.split, len(plan.folds), plan.out)
    with RunLock(plan.out):  # one cross-validation per root; each fold run also locks its own folder
        plan.check_finished()
        if jobs > 1:
            run_parallel(plan.tasks(), jobs)
        dirs = run_folds(lambda k: experiment.run(load_config([*plan.fold_overrides(k), f"output_dir={plan.fold_dir(k)}"])),
                         plan.folds, plan.fold_dir, fold_config=plan.fold_config, overwrite=plan.overwrite,
                         files_sha256=plan.files_sha256)
        summarize_folds(dirs, plan.out)
    return plan.out

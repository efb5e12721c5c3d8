"""Compare recipes evaluated on identical test clips: table, plots and paired significance tests.

(Over 500 lines: the comparison table, its plots and the paired tests read the same aligned clips;
splitting the tests into their own module is the next step if it grows.)

Reads finished run folders only (metrics.json + predictions.csv). Runs made on different splits are
refused rather than compared: a difference measured on different test speakers says nothing about
the models.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from itertools import combinations
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import binomtest, wilcoxon

from ser_hf.config import split_compare_args
from ser_hf.crossval import (
    crossval_recipe,
    HEADLINE,
    RunResult,
    check_same_protocol,
    discover_runs,
    fmt_mean_std,
    load_run,
    markdown_table,
    summarize_runs,
)
from ser_hf.data.splits import builtin_genders
from ser_hf.groups import group_metrics, normalise_gender
from ser_hf.reporting import PROTOCOLS
from ser_hf.runfolder import atomic_write, read_metrics

logger = logging.getLogger(__name__)

COMPARISON_CSV = "comparison.csv"
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"
PER_CLASS_PNG = "per_class_f1.png"
SIGNIFICANCE_CSV = "significance.csv"

COMPARISON_COLUMNS = (
    "recipe", "model_family", "features", "num_parameters", "train_seconds_total", "train_seconds_mean",
    "macro_f1_mean", "macro_f1_std", "accuracy_mean", "accuracy_std", "uar_mean", "uar_std",
    "pooled_macro_f1", "n_folds", "folds", "n_test_clips", "corpus", "split", "leaky",
    "worst_speaker", "worst_speaker_macro_f1", "female_macro_f1", "male_macro_f1", "gender_gap",
)
SIGNIFICANCE_COLUMNS = (
    "recipe_a", "recipe_b", "n_clips", "n_folds", "macro_f1_a", "macro_f1_b", "delta_macro_f1",
    "ci_low", "ci_high", "bootstrap_p", "bootstrap_p_holm", "n_resamples", "a_right_b_wrong",
    "a_wrong_b_right", "mcnemar_p", "wilcoxon_p", "significant",
    "gender_gap_a", "gender_gap_b", "delta_gender_gap", "gap_ci_low", "gap_ci_high", "gap_bootstrap_p",
)
MIN_FOLDS_WILCOXON = 5


# --------------------------------------------------------------------------------------------------
# Paired tests
# --------------------------------------------------------------------------------------------------


def _macro_f1_from_cms(cms: np.ndarray) -> np.ndarray:
    """Macro-F1 of a stack of confusion matrices (..., K, K), rows = true.

    Same definition as ``ser_hf.metrics.compute_metrics``: the mean runs over the classes present in
    the references (a resample may lack a rare class). Hand-written because the bootstrap needs
    thousands of macro-F1 values and compute_metrics per resample would dominate the run time.
    """
    tp = np.diagonal(cms, axis1=-2, axis2=-1).astype(float)
    support = cms.sum(axis=-1)
    denom = support + cms.sum(axis=-2)  # true count + predicted count = 2TP + FP + FN
    present = support > 0
    f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
    return f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def paired_bootstrap(
    refs: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray, num_labels: int,
    n_resamples: int = 2000, seed: int = 0, chunk: int = 250,
) -> dict:
    """Paired bootstrap over clips of macro-F1(A) − macro-F1(B).

    Each resample draws clips with replacement and scores both systems on the same draw. Returns the
    observed difference, the 95% percentile interval and a two-sided p-value
    ``min(1, 2·min(#{δ* ≤ 0}+1, #{δ* ≥ 0}+1)/(B+1))`` (how often the resampled difference falls on
    the other side of zero).
    """
    refs, preds_a, preds_b = (np.asarray(x, dtype=np.int64) for x in (refs, preds_a, preds_b))
    n = refs.size
    if n == 0 or preds_a.size != n or preds_b.size != n:
        raise ValueError(f"paired_bootstrap needs equal, non-empty arrays (got {n}, {preds_a.size}, {preds_b.size})")
    k2 = num_labels * num_labels
    cell_a, cell_b = refs * num_labels + preds_a, refs * num_labels + preds_b
    observed = float(_macro_f1_from_cms(np.bincount(cell_a, minlength=k2).reshape(num_labels, num_labels))
                     - _macro_f1_from_cms(np.bincount(cell_b, minlength=k2).reshape(num_labels, num_labels)))
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(m, n))
        offset = (np.arange(m) * k2)[:, None]
        # One bincount gives the confusion matrix of every resample in the chunk.
        cms_a = np.bincount((offset + cell_a[idx]).ravel(), minlength=m * k2).reshape(m, num_labels, num_labels)
        cms_b = np.bincount((offset + cell_b[idx]).ravel(), minlength=m * k2).reshape(m, num_labels, num_labels)
        deltas[start:start + m] = _macro_f1_from_cms(cms_a) - _macro_f1_from_cms(cms_b)
    # Tolerance so that exactly equal systems (all deltas 0 up to float noise) land on both sides.
    eps = 1e-12
    below = int(np.sum(deltas <= eps))
    above = int(np.sum(deltas >= -eps))
    p = min(1.0, 2 * min(below + 1, above + 1) / (n_resamples + 1))
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return {"delta": observed, "ci_low": float(lo), "ci_high": float(hi), "p": float(p), "n_resamples": n_resamples}


# --- per-gender gap (issue 15): same paired clip bootstrap, the statistic is gap(A) - gap(B) ----------------


def paired_bootstrap_gap(
    refs: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray, female: np.ndarray, male: np.ndarray,
    num_labels: int, n_resamples: int = 2000, seed: int = 0, chunk: int = 250,
) -> dict:
    """Paired bootstrap over clips of gap(A) − gap(B), gap = macro-F1(female clips) − macro-F1(male clips).

    Same resampling and p-value as :func:`paired_bootstrap` (both recipes scored on the same draw); clips of
    unknown gender take part in the draw but in neither group. Returns the observed gaps too."""
    refs, preds_a, preds_b = (np.asarray(x, dtype=np.int64) for x in (refs, preds_a, preds_b))
    female, male = np.asarray(female, bool), np.asarray(male, bool)
    n = refs.size
    if not female.any() or not male.any():
        raise ValueError("paired_bootstrap_gap needs clips of both genders")
    k2 = num_labels * num_labels
    group = np.where(female, 0, np.where(male, 1, 2))  # 2 = unknown, dropped from both groups

    def gaps(cells: np.ndarray, idx: np.ndarray) -> np.ndarray:
        m = idx.shape[0]
        flat = ((np.arange(m) * 3 * k2)[:, None] + group[idx] * k2 + cells[idx]).ravel()
        cms = np.bincount(flat, minlength=m * 3 * k2).reshape(m, 3, num_labels, num_labels)
        f1 = _macro_f1_from_cms(cms)
        return f1[:, 0] - f1[:, 1]

    cell_a, cell_b = refs * num_labels + preds_a, refs * num_labels + preds_b
    whole = np.arange(n)[None]
    gap_a, gap_b = float(gaps(cell_a, whole)[0]), float(gaps(cell_b, whole)[0])
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(m, n))
        deltas[start:start + m] = gaps(cell_a, idx) - gaps(cell_b, idx)
    eps = 1e-12
    below, above = int(np.sum(deltas <= eps)), int(np.sum(deltas >= -eps))
    p = min(1.0, 2 * min(below + 1, above + 1) / (n_resamples + 1))
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return {"gap_a": gap_a, "gap_b": gap_b, "delta": gap_a - gap_b, "ci_low": float(lo), "ci_high": float(hi),
            "p": float(p), "n_resamples": n_resamples}


def _clip_groups(runs: Sequence[RunResult], keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(speaker, gender) per clip key: predictions.csv's gender column, else the corpus documentation's."""
    known: dict[str, dict] = {}
    info: dict[tuple, tuple[str, str]] = {}
    for run in runs:
        for key, row in zip(run.clip_keys(), run.test_rows):
            corpus = str(row.get("corpus") or run.corpus)
            if corpus not in known:
                try:
                    known[corpus] = builtin_genders(corpus)
                except ValueError:  # a corpus without documented genders (manifest, ...)
                    known[corpus] = {}
            speaker = str(row.get("speaker_id", ""))
            gender = normalise_gender(row.get("gender")) or normalise_gender(known[corpus].get(speaker)) or ""
            info[key] = (speaker if corpus == run.corpus else f"{corpus}:{speaker}", gender)
    return np.asarray([info[k][0] for k in keys]), np.asarray([info[k][1] for k in keys])


# --- end per-gender gap ---------------------------------------------------------------------------------


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test on paired per-clip correctness: a two-sided binomial test of the
    discordant clips (A right/B wrong vs A wrong/B right) against 1/2."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    p = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_right_b_wrong": a_only, "a_wrong_b_right": b_only, "p": p}


def wilcoxon_folds(f1_a: Sequence[float], f1_b: Sequence[float]) -> float | None:
    """Wilcoxon signed-rank p-value on per-fold macro-F1; None with fewer than 5 folds (too few to
    ever reach p < 0.05)."""
    a, b = np.asarray(f1_a, float), np.asarray(f1_b, float)
    if a.size < MIN_FOLDS_WILCOXON:
        return None
    if np.allclose(a, b):  # scipy warns and divides by zero here; identical folds mean no evidence
        return 1.0
    return float(wilcoxon(a, b).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone), for the family of all pairs."""
    m = len(pvalues)
    order = np.argsort(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]


# --------------------------------------------------------------------------------------------------
# Consistency checks
# --------------------------------------------------------------------------------------------------


def _refuse(a: str, b: str, field: str, va, vb) -> ValueError:
    return ValueError(
        f"refusing to compare recipe {a!r} with recipe {b!r}: they differ in {field} ({a!r}: {va}; {b!r}: {vb}). "
        "Differences are only meaningful on identical test clips: re-run one recipe on the other's "
        "corpus/split/folds."
    )


def _check_same_test_sets(name_a: str, runs_a: Sequence[RunResult], name_b: str, runs_b: Sequence[RunResult]):
    ra, rb = runs_a[0], runs_b[0]
    for field in ("corpus", "split", "label_names"):
        if getattr(ra, field) != getattr(rb, field):
            raise _refuse(name_a, name_b, field, repr(getattr(ra, field)), repr(getattr(rb, field)))
    folds_a, folds_b = [r.fold for r in runs_a], [r.fold for r in runs_b]
    if folds_a != folds_b:
        raise _refuse(name_a, name_b, "folds", folds_a, folds_b)
    for a, b in zip(runs_a, runs_b):
        if a.test_speakers != b.test_speakers:
            raise _refuse(name_a, name_b, f"test speakers of fold {a.fold}", a.test_speakers, b.test_speakers)
        clips_a = {(r["corpus"], r["file"]): r["label"] for r in a.test_rows}
        clips_b = {(r["corpus"], r["file"]): r["label"] for r in b.test_rows}
        if clips_a.keys() != clips_b.keys():
            only_a = sorted(clips_a.keys() - clips_b.keys())
            only_b = sorted(clips_b.keys() - clips_a.keys())
            raise _refuse(
                name_a, name_b, f"test clips of fold {a.fold}",
                f"{len(only_a)} clip(s) only here, e.g. {[f for _, f in only_a[:3]]}",
                f"{len(only_b)} clip(s) only here, e.g. {[f for _, f in only_b[:3]]}",
            )
        wrong = sorted(k for k in clips_a if clips_a[k] != clips_b[k])
        if wrong:
            k = wrong[0]
            raise _refuse(name_a, name_b, f"true labels of {len(wrong)} test clip(s) of fold {a.fold}",
                          f"{k[1]} = {clips_a[k]!r}", f"{k[1]} = {clips_b[k]!r}")


# --------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------


def group_runs(paths: Sequence[str | os.PathLike]) -> dict[str, list[Path]]:
    """Group finished run folders (or cross-validation folders of them) by their metrics.json recipe,
    in first-seen order, for ``compare.py runs=[dir,...]``.

    Two cross-validation folders of one recipe (the same recipe run with different overrides) are two
    entries, named ``recipe [folder name]``; single fold folders of one recipe are still one entry."""
    found: list[tuple[str, Path, Path]] = []  # (recipe, given path, run folder)
    for path in paths:
        for run_dir in discover_runs(path):
            found.append((str(read_metrics(run_dir).get("recipe", run_dir.name)), Path(path), run_dir))
    cv_folders: dict[str, set[Path]] = {}
    for recipe, given, run_dir in found:
        if run_dir != given:  # given is a cross-validation folder
            cv_folders.setdefault(recipe, set()).add(given)
    groups: dict[str, list[Path]] = {}
    for recipe, given, run_dir in found:
        several = len(cv_folders.get(recipe, ())) > 1 or (cv_folders.get(recipe) and run_dir == given)
        name = f"{recipe} [{given.name if run_dir != given else run_dir.parent.name}]" if several else recipe
        groups.setdefault(name, []).append(run_dir)
    return groups


def _features_text(features) -> str:
    if features is None:
        return ""
    if isinstance(features, Mapping):
        return str(features.get("kind") or json.dumps(dict(features), sort_keys=True))
    return str(features)


def _aligned(runs: Sequence[RunResult], keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(references, predictions) of a recipe's test clips in the order of ``keys``."""
    refs, preds, order = [], [], []
    for run in runs:
        r, p = run.label_indices()
        refs.append(r)
        preds.append(p)
        order += run.clip_keys()
    refs, preds = np.concatenate(refs), np.concatenate(preds)
    position = {k: i for i, k in enumerate(order)}
    idx = np.asarray([position[k] for k in keys])
    return refs[idx], preds[idx]


def compare(
    groups: Mapping[str, Sequence[str | os.PathLike]],
    out_dir: str | os.PathLike,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Compare recipes, each given as its run folders over the same folds (one folder for a single split).

    Refuses (ValueError) groups that differ in corpus, split, folds, label set, or a fold's test
    speakers or test clips. Writes comparison.csv, comparison.md, comparison.png, per_class_f1.png and
    significance.csv into ``out_dir``; returns {"corpus", "split", "folds", "n_clips", "rows", "per_class_f1",
    "pairs", "files"}.
    """
    if len(groups) < 2:
        raise ValueError(f"compare needs at least two recipes, got {list(groups)}")
    loaded: dict[str, list[RunResult]] = {}
    for name, dirs in groups.items():
        if not dirs:
            raise ValueError(f"recipe {name!r}: no run folders given")
        loaded[name] = check_same_protocol([load_run(d) for d in dirs], f"recipe {name!r}")
    names = list(loaded)
    ref_name = names[0]
    for name in names[1:]:
        _check_same_test_sets(ref_name, loaded[ref_name], name, loaded[name])

    first = loaded[ref_name][0]
    label_names = first.label_names
    num_labels = len(label_names)
    keys = sorted((k for run in loaded[ref_name] for k in run.clip_keys()), key=lambda k: (k[0] or 0, k[1], k[2]))
    folds = [r.fold for r in loaded[ref_name]]

    rows, per_class, aligned, fold_f1 = [], {}, {}, {}
    speakers, genders = _clip_groups(loaded[ref_name], keys)
    groups_of: dict[str, dict] = {}
    for name, runs in loaded.items():
        summary = summarize_runs(runs)
        aligned[name] = _aligned(runs, keys)
        fold_f1[name] = [f["macro_f1"] for f in summary["folds"]]
        per_class[name] = summary["pooled"]["per_class_f1"]
        seconds = [r.metrics.get("train_seconds") for r in runs]
        seconds = [float(s) for s in seconds if s is not None]
        params = {r.metrics.get("num_parameters") for r in runs}
        row = {
            "recipe": name,
            "model_family": runs[0].metrics.get("model_family", ""),
            "features": _features_text(runs[0].metrics.get("features")),
            "num_parameters": params.pop() if len(params) == 1 else max(p for p in params if p is not None),
            "train_seconds_total": sum(seconds) if seconds else None,
            "train_seconds_mean": float(np.mean(seconds)) if seconds else None,
            "pooled_macro_f1": summary["pooled"]["macro_f1"],
            "n_folds": len(runs),
            "folds": " ".join("" if r.fold is None else str(r.fold) for r in runs).strip(),
            "n_test_clips": summary["pooled"]["n_clips"],
            "corpus": first.corpus,
            "split": first.split,
            "leaky": runs[0].leaky,
        }
        for key in HEADLINE:
            row[f"{key}_mean"], row[f"{key}_std"] = summary["mean"][key], summary["std"][key]
        groups_of[name] = group_metrics(*aligned[name], speakers, genders, label_names)  # pooled over folds
        worst = groups_of[name]["worst_speaker"] or {}
        row.update(worst_speaker=worst.get("speaker"), worst_speaker_macro_f1=worst.get("macro_f1"),
                   female_macro_f1=groups_of[name]["per_gender"].get("female", {}).get("macro_f1"),
                   male_macro_f1=groups_of[name]["per_gender"].get("male", {}).get("macro_f1"),
                   gender_gap=groups_of[name]["gender_gap"])
        rows.append(row)

    n_pairs = len(names) * (len(names) - 1) // 2
    # A bootstrap of B resamples cannot give p below 2/(B+1), and Holm multiplies the smallest p by the number
    # of pairs: with many recipes, 2000 resamples could never show any difference as significant. Raise B
    # so that the floor, after Holm, sits at alpha/2.
    n_resamples = max(n_resamples, math.ceil(4 * n_pairs / alpha))
    pairs = []
    for a, b in combinations(names, 2):
        refs, preds_a = aligned[a]
        _, preds_b = aligned[b]
        boot = paired_bootstrap(refs, preds_a, preds_b, num_labels, n_resamples=n_resamples, seed=seed)
        mc = mcnemar_exact(preds_a == refs, preds_b == refs)
        row_a, row_b = rows[names.index(a)], rows[names.index(b)]
        pairs.append({
            "recipe_a": a, "recipe_b": b, "n_clips": int(refs.size), "n_folds": len(folds),
            "macro_f1_a": row_a["pooled_macro_f1"], "macro_f1_b": row_b["pooled_macro_f1"],
            "delta_macro_f1": boot["delta"], "ci_low": boot["ci_low"], "ci_high": boot["ci_high"],
            "bootstrap_p": boot["p"], "n_resamples": n_resamples,
            "a_right_b_wrong": mc["a_right_b_wrong"], "a_wrong_b_right": mc["a_wrong_b_right"],
            "mcnemar_p": mc["p"], "wilcoxon_p": wilcoxon_folds(fold_f1[a], fold_f1[b]),
        })
        if (genders == "female").any() and (genders == "male").any():
            gap = paired_bootstrap_gap(refs, preds_a, preds_b, genders == "female", genders == "male", num_labels,
                                       n_resamples=n_resamples, seed=seed)
            pairs[-1].update(gender_gap_a=gap["gap_a"], gender_gap_b=gap["gap_b"], delta_gender_gap=gap["delta"],
                             gap_ci_low=gap["ci_low"], gap_ci_high=gap["ci_high"], gap_bootstrap_p=gap["p"])
    for pair, adjusted in zip(pairs, holm([p["bootstrap_p"] for p in pairs])):
        pair["bootstrap_p_holm"] = adjusted
        # Family-wise: with several pairs a difference is called significant on the Holm-adjusted p.
        pair["significant"] = adjusted < alpha

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / COMPARISON_CSV, COMPARISON_COLUMNS, rows)
    _write_csv(out_dir / SIGNIFICANCE_CSV, SIGNIFICANCE_COLUMNS, pairs)
    plot_macro_f1_bars(rows, out_dir / COMPARISON_PNG)
    plot_per_class_f1(per_class, label_names, out_dir / PER_CLASS_PNG)
    result = {
        "corpus": first.corpus, "split": first.split, "folds": folds, "n_clips": len(keys),
        "label_names": label_names, "rows": rows, "per_class_f1": per_class, "pairs": pairs, "alpha": alpha,
        "groups": groups_of,
        "files": {k: str(out_dir / v) for k, v in (
            ("csv", COMPARISON_CSV), ("md", COMPARISON_MD), ("bar_chart", COMPARISON_PNG),
            ("per_class_f1", PER_CLASS_PNG), ("significance", SIGNIFICANCE_CSV))},
    }
    atomic_write(out_dir / COMPARISON_MD, _comparison_markdown(result))
    logger.info("comparison of %s written to %s", names, out_dir / COMPARISON_MD)
    return result


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})


# --------------------------------------------------------------------------------------------------
# Plots (matplotlib object API: no pyplot global state)
# --------------------------------------------------------------------------------------------------


def plot_macro_f1_bars(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Bar per recipe of mean macro-F1 over folds, error bar = sample std (none for one fold)."""
    names = [r["recipe"] + (" (leaky)" if r["leaky"] else "") for r in rows]
    means = [r["macro_f1_mean"] for r in rows]
    stds = [r["macro_f1_std"] or 0.0 for r in rows]
    fig = Figure(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 4.0))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    ax.bar(x, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    for xi, m in zip(x, means):
        ax.text(xi, m / 2, f"{m:.3f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(x, labels=names, rotation=30, ha="right")
    ax.set_ylabel("macro-F1 (mean ± std over folds)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_per_class_f1(per_class: Mapping[str, Sequence[float]], label_names: Sequence[str],
                      path: str | os.PathLike) -> Path:
    """Heatmap recipes × classes of F1 on the pooled test clips."""
    names = list(per_class)
    data = np.asarray([per_class[n] for n in names], dtype=float)
    fig = Figure(figsize=(max(4.0, 0.8 * len(label_names) + 2.5), max(2.5, 0.5 * len(names) + 1.5)))
    ax = fig.add_subplot()
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(im, ax=ax, label="F1")
    ax.set_xticks(range(len(label_names)), labels=list(label_names), rotation=45, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center",
                    color="black" if data[i, j] > 0.6 else "white", fontsize=8)
    ax.set_title("per-class F1 (test clips pooled over folds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def _params_text(n) -> str:
    if n is None or n == "":
        return ""
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _seconds_text(s) -> str:
    if s is None:
        return ""
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def _p_text(p: float) -> str:
    return f"{p:.2g}"


def _comparison_markdown(res: dict) -> str:
    rows, pairs, alpha = res["rows"], res["pairs"], res["alpha"]
    folds = res["folds"]
    fold_text = "a single test set" if folds == [None] else f"folds {', '.join(str(f) for f in folds)}"
    lines = ["# Comparison", ""]
    lines.append(f"Corpus **{res['corpus']}**, split **{res['split']}** — "
                 f"{PROTOCOLS.get(res['split'], res['split'])}; {fold_text}. Every recipe was evaluated on the same "
                 f"{res['n_clips']} test clips (same test speakers in every fold); this was checked, not assumed.")
    if any(r["leaky"] for r in rows):
        lines += ["", "**Warning:** rows marked *leaky* come from a random split where the same speakers are in "
                      "train and test; their scores overstate speaker-independent performance."]
    lines += ["", "## Results", ""]
    table = []
    for r in rows:
        name = r["recipe"] + (" ⚠ leaky" if r["leaky"] else "")
        table.append([
            name, r["model_family"], r["features"], _params_text(r["num_parameters"]),
            _seconds_text(r["train_seconds_total"]), fmt_mean_std(r["macro_f1_mean"], r["macro_f1_std"]),
            fmt_mean_std(r["accuracy_mean"], r["accuracy_std"]), fmt_mean_std(r["uar_mean"], r["uar_std"]),
            r["n_folds"],
        ])
    lines += markdown_table(["recipe", "model family", "features", "params", "train time", "macro-F1",
                        "accuracy", "UAR", "folds"], table)
    lines += ["", "Mean ± sample std (ddof=1) over folds of each fold's test metrics; train time is summed over folds.",
              ""]
    lines += _groups_markdown(res)  # worst speaker and female − male gap near the top (issue 15)
    lines += [f"![macro-F1 per recipe]({COMPARISON_PNG})", "", "## Per-class F1 (test clips pooled over folds)", ""]
    lines += markdown_table(["recipe", *res["label_names"]],
                       [[n, *(f"{v:.3f}" for v in vals)] for n, vals in res["per_class_f1"].items()])
    lines += ["", f"![per-class F1]({PER_CLASS_PNG})", "", "## Is the difference real?", ""]
    lines.append(
        f"ΔF1 is macro-F1(A) − macro-F1(B) on all test clips pooled over folds. The interval and p come from a "
        f"paired bootstrap over clips ({pairs[0]['n_resamples'] if pairs else 0} resamples: both recipes scored on "
        "the same resampled clips). McNemar's exact test counts the clips one recipe gets right and the other "
        f"wrong. With at least {MIN_FOLDS_WILCOXON} folds a Wilcoxon signed-rank test on per-fold macro-F1 is added "
        "(with 5 folds its smallest possible p is 0.0625, so it cannot reach 0.05).")
    if len(pairs) > 1:
        lines += ["", f"{len(pairs)} pairs are tested; the Holm-adjusted bootstrap p (significance.csv, "
                     "bootstrap_p_holm) controls the chance of any false alarm among them."]
    lines.append("")
    for p in pairs:
        verdict = "significant" if p["significant"] else "not significant"
        # The smallest p a bootstrap of B resamples can give is 2/(B+1): say "≤" there, not "=".
        at_floor = p["bootstrap_p"] <= 2 / (p["n_resamples"] + 1) + 1e-15
        boot_p = f"p ≤ {_p_text(p['bootstrap_p'])}" if at_floor else f"p = {_p_text(p['bootstrap_p'])}"
        text = (f"- **{p['recipe_a']} vs {p['recipe_b']}**: ΔF1 = {_signed(p['delta_macro_f1'])} "
                f"[{_signed(p['ci_low'])}, {_signed(p['ci_high'])}], {boot_p}")
        if len(pairs) > 1:
            text += f", Holm-adjusted p = {_p_text(p['bootstrap_p_holm'])}"
        text += f" — {verdict} at {alpha:g}"
        text += (f". McNemar: {p['recipe_a']} right and {p['recipe_b']} wrong on {p['a_right_b_wrong']} clips, "
                 f"the reverse on {p['a_wrong_b_right']}, p = {_p_text(p['mcnemar_p'])}.")
        if p["wilcoxon_p"] is not None:
            text += f" Wilcoxon over {p['n_folds']} folds: p = {_p_text(p['wilcoxon_p'])}."
        if p.get("delta_gender_gap") is not None:
            text += (f" Female − male gap: {_signed(p['gender_gap_a'])} vs {_signed(p['gender_gap_b'])}, difference "
                     f"{_signed(p['delta_gender_gap'])} [{_signed(p['gap_ci_low'])}, {_signed(p['gap_ci_high'])}], "
                     f"paired bootstrap p = {_p_text(p['gap_bootstrap_p'])}.")
        lines.append(text)
    lines.append("")
    return "\n".join(lines)


def _groups_markdown(res: dict) -> list[str]:
    """Per-speaker and per-gender macro-F1 (test clips pooled over folds), worst speaker and gender gap first."""
    groups = res.get("groups") or {}
    if not groups:
        return []
    lines = ["## Per speaker and gender (test clips pooled over folds)", ""]
    table = []
    for name, g in groups.items():
        worst = g.get("worst_speaker") or {}
        pg = g.get("per_gender") or {}
        table.append([name, f"{worst.get('speaker')} ({worst.get('macro_f1', float('nan')):.3f})",
                      *(f"{pg[x]['macro_f1']:.3f}" if x in pg else "n/a" for x in ("female", "male")),
                      _signed(g["gender_gap"]) if g.get("gender_gap") is not None else (g.get("gender_gap_note") or "n/a")])
    lines += markdown_table(["recipe", "worst speaker (macro-F1)", "female", "male", "female − male"], table)
    speakers = list(next(iter(groups.values()))["per_speaker"])
    lines += ["", "Macro-F1 per test speaker:", ""]
    lines += markdown_table(["recipe", *speakers], [[n, *(f"{g['per_speaker'][s]['macro_f1']:.3f}" for s in speakers)]
                                                   for n, g in groups.items()])
    lines += ["", "Whether two recipes differ in the female − male gap is tested per pair below (paired bootstrap "
                  "over clips, gap(A) − gap(B)).", ""]
    return lines


__all__ = [
    "compare", "group_runs", "paired_bootstrap", "paired_bootstrap_gap", "mcnemar_exact", "wilcoxon_folds", "holm",
    "plot_macro_f1_bars", "plot_per_class_f1", "discover_runs",
]


# ---------------------------------------------------------------------------------- recipe driver


def compare_from_args(args: Sequence[str]) -> Path:
    """``recipes=[a,b,...]`` (cross-validated on identical folds) or ``runs=[dir,...]`` (finished runs),
    plus ``output_dir=DIR`` and any ``key=value`` override applied to every recipe."""
    recipes, runs, out, rest = split_compare_args(args)  # recipes' specs checked before any fold runs
    if runs:
        groups = group_runs([Path(r) for r in runs])
    else:
        groups = {}
        for name in recipes:
            folds_dir = crossval_recipe([f"recipe={name}", *rest])
            groups[name] = discover_runs(folds_dir)
    out = out or Path("runs") / "comparisons" / "_vs_".join(groups)
    compare(groups, out)
    return out

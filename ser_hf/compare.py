"""Compare recipes evaluated on identical test clips: table, plots and paired significance tests.

(Over 500 lines: the comparison tables, plots and markdown of classification and of dimensional runs read
the same aligned clips; the paired tests themselves are in ser_hf/paired_tests.py.)

What is compared is what every recipe's runs share (metrics.json ``task``): class predictions (macro-F1,
McNemar, ...) when all have labels, dimension values (CCC per target and its mean over targets, issue 14)
when all are regression/multitask runs of the same targets; a classification run is never compared with
a regression run (an error says so).

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

from ser_hf.config import split_compare_args
from ser_hf.crossval import (
    crossval_recipe,
    HEADLINE,
    VALUE_HEADLINE,
    summarize_value_runs,
    RunResult,
    check_same_protocol,
    discover_runs,
    fmt_mean_std,
    load_run,
    markdown_table,
    summarize_runs,
)
from ser_hf.data.splits import builtin_genders
from ser_hf.groups import group_metrics, normalise_gender, regression_group_metrics
from ser_hf.paired_tests import (  # noqa: F401 (the tests' names, re-exported from here as before)
    MIN_FOLDS_WILCOXON,
    _macro_f1_from_cms,
    ccc,
    holm,
    mcnemar_exact,
    paired_bootstrap,
    paired_bootstrap_ccc,
    paired_bootstrap_ccc_gap,
    paired_bootstrap_gap,
    wilcoxon_folds,
)
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
COMPARISON_CCC_CSV = "comparison_ccc.csv"
COMPARISON_CCC_PNG = "comparison_ccc.png"
SIGNIFICANCE_CCC_CSV = "significance_ccc.csv"
SIGNIFICANCE_COLUMNS = (
    "recipe_a", "recipe_b", "n_clips", "n_folds", "macro_f1_a", "macro_f1_b", "delta_macro_f1",
    "ci_low", "ci_high", "bootstrap_p", "bootstrap_p_holm", "n_resamples", "a_right_b_wrong",
    "a_wrong_b_right", "mcnemar_p", "wilcoxon_p", "significant",
    "gender_gap_a", "gender_gap_b", "delta_gender_gap", "gap_ci_low", "gap_ci_high", "gap_bootstrap_p",
)


# --------------------------------------------------------------------------------------------------
# Speaker and gender of each clip (the paired tests themselves live in ser_hf.paired_tests)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Consistency checks
# --------------------------------------------------------------------------------------------------


def _refuse(a: str, b: str, field: str, va, vb) -> ValueError:
    return ValueError(
        f"refusing to compare recipe {a!r} with recipe {b!r}: they differ in {field} ({a!r}: {va}; {b!r}: {vb}). "
        "Differences are only meaningful on identical test clips: re-run one recipe on the other's "
        "corpus/split/folds."
    )


def shared_outputs(loaded: Mapping[str, Sequence[RunResult]]) -> tuple[bool, bool]:
    """``(labels, values)``: whether every recipe's runs carry class predictions, and dimension values of the
    same targets. Refuses recipes that share neither (a classification run against a regression run) or that
    predict different targets."""
    names = list(loaded)
    first = {n: runs[0] for n, runs in loaded.items()}
    labels = all(r.has_labels for r in first.values())
    values = all(r.has_values for r in first.values())
    if not labels and not values:
        kinds = ", ".join(f"{n!r}: {first[n].task}" for n in names)
        raise ValueError(f"refusing to compare a classification run with a regression run ({kinds}): a classification "
                         "run has class predictions (macro-F1), a regression run dimension values (CCC); there is "
                         "nothing to compare them on. Compare classification recipes with each other and "
                         "regression (or multitask) recipes with each other.")
    if values:
        ref = names[0]
        for n in names[1:]:
            if first[n].targets != first[ref].targets:
                raise _refuse(ref, n, "targets", list(first[ref].targets), list(first[n].targets))
    return labels, values


def _check_same_test_sets(name_a: str, runs_a: Sequence[RunResult], name_b: str, runs_b: Sequence[RunResult],
                          labels: bool = True, values: bool = False):
    ra, rb = runs_a[0], runs_b[0]
    for field in ("corpus", "split") + (("label_names",) if labels else ()):
        if getattr(ra, field) != getattr(rb, field):
            raise _refuse(name_a, name_b, field, repr(getattr(ra, field)), repr(getattr(rb, field)))
    folds_a, folds_b = [r.fold for r in runs_a], [r.fold for r in runs_b]
    if folds_a != folds_b:
        raise _refuse(name_a, name_b, "folds", folds_a, folds_b)
    for a, b in zip(runs_a, runs_b):
        if a.test_speakers != b.test_speakers:
            raise _refuse(name_a, name_b, f"test speakers of fold {a.fold}", a.test_speakers, b.test_speakers)
        clips_a = {(r["corpus"], r["file"]): r for r in a.test_rows}
        clips_b = {(r["corpus"], r["file"]): r for r in b.test_rows}
        if clips_a.keys() != clips_b.keys():
            only_a = sorted(clips_a.keys() - clips_b.keys())
            only_b = sorted(clips_b.keys() - clips_a.keys())
            raise _refuse(
                name_a, name_b, f"test clips of fold {a.fold}",
                f"{len(only_a)} clip(s) only here, e.g. {[f for _, f in only_a[:3]]}",
                f"{len(only_b)} clip(s) only here, e.g. {[f for _, f in only_b[:3]]}",
            )
        columns = (["label"] if labels else []) + ([f"true_{t}" for t in ra.targets] if values else [])
        for column in columns:
            wrong = sorted(k for k in clips_a if not _same_truth(clips_a[k][column], clips_b[k][column]))
            if wrong:
                k = wrong[0]
                what = "true labels" if column == "label" else f"{column} values"
                raise _refuse(name_a, name_b, f"{what} of {len(wrong)} test clip(s) of fold {a.fold}",
                              f"{k[1]} = {clips_a[k][column]!r}", f"{k[1]} = {clips_b[k][column]!r}")


def _same_truth(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(float(a), float(b), rtol=0, atol=1e-6))
    return a == b


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


def _recipe_info(name: str, runs: Sequence[RunResult]) -> dict:
    """The columns of a comparison row that describe the recipe rather than its scores."""
    seconds = [r.metrics.get("train_seconds") for r in runs]
    seconds = [float(s) for s in seconds if s is not None]
    params = {r.metrics.get("num_parameters") for r in runs}
    known = [p for p in params if p is not None]
    return {
        "recipe": name,
        "model_family": runs[0].metrics.get("model_family", ""),
        "features": _features_text(runs[0].metrics.get("features")),
        "num_parameters": params.pop() if len(params) == 1 else (max(known) if known else None),
        "train_seconds_total": sum(seconds) if seconds else None,
        "train_seconds_mean": float(np.mean(seconds)) if seconds else None,
        "n_folds": len(runs),
        "folds": " ".join("" if r.fold is None else str(r.fold) for r in runs).strip(),
        "corpus": runs[0].corpus,
        "split": runs[0].split,
        "leaky": runs[0].leaky,
    }


def _aligned_values(runs: Sequence[RunResult], keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) dimension values (clips, targets) of a recipe's test clips in the order of ``keys``."""
    trues, preds, order = [], [], []
    for run in runs:
        t, p = run.target_values()
        trues.append(t)
        preds.append(p)
        order += run.clip_keys()
    position = {k: i for i, k in enumerate(order)}
    idx = np.asarray([position[k] for k in keys])
    return np.concatenate(trues)[idx], np.concatenate(preds)[idx]


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

    Refuses (ValueError) groups that differ in corpus, split, folds, label set, targets, or a fold's test
    speakers or test clips, and a classification recipe against a regression one (:func:`shared_outputs`).
    Classes: writes comparison.csv, comparison.md, comparison.png, per_class_f1.png and significance.csv into
    ``out_dir``; returns {"corpus", "split", "folds", "n_clips", "rows", "per_class_f1", "pairs", "files"}.
    Dimensions (regression/multitask runs): writes comparison_ccc.csv, significance_ccc.csv and
    comparison_ccc.png, and the result gains "dimensions" ({"targets", "rows", "pairs", "groups"}); a
    regression-only comparison has no class keys.
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
    labels, values = shared_outputs(loaded)
    for name in names[1:]:
        _check_same_test_sets(ref_name, loaded[ref_name], name, loaded[name], labels, values)

    first = loaded[ref_name][0]
    keys = sorted((k for run in loaded[ref_name] for k in run.clip_keys()), key=lambda k: (k[0] or 0, k[1], k[2]))
    folds = [r.fold for r in loaded[ref_name]]
    speakers, genders = _clip_groups(loaded[ref_name], keys)
    n_pairs = len(names) * (len(names) - 1) // 2
    # A bootstrap of B resamples cannot give p below 2/(B+1), and Holm multiplies the smallest p by the number
    # of pairs: with many recipes, 2000 resamples could never show any difference as significant. Raise B
    # so that the floor, after Holm, sits at alpha/2.
    n_resamples = max(n_resamples, math.ceil(4 * n_pairs / alpha))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"corpus": first.corpus, "split": first.split, "folds": folds, "n_clips": len(keys), "alpha": alpha,
              "files": {"md": str(out_dir / COMPARISON_MD)}}
    markdown = []
    if labels:
        result.update(_compare_labels(loaded, keys, folds, speakers, genders, out_dir, n_resamples, seed, alpha))
        markdown.append(_comparison_markdown(result))
    if values:
        result["dimensions"] = _compare_values(loaded, keys, folds, speakers, genders, out_dir, n_resamples, seed,
                                               alpha)
        result["files"].update(result["dimensions"].pop("files"))
        markdown.append(_value_comparison_markdown(result, header=not labels))
    atomic_write(out_dir / COMPARISON_MD, "\n".join(markdown))
    logger.info("comparison of %s written to %s", names, out_dir / COMPARISON_MD)
    return result


def _compare_labels(loaded: Mapping[str, Sequence[RunResult]], keys, folds, speakers, genders, out_dir: Path,
                    n_resamples: int, seed: int, alpha: float) -> dict:
    """The class comparison (macro-F1 table, per-class F1, paired bootstrap, McNemar, Wilcoxon, gender gap)."""
    names = list(loaded)
    first = loaded[names[0]][0]
    label_names = first.label_names
    num_labels = len(label_names)
    rows, per_class, aligned, fold_f1 = [], {}, {}, {}
    groups_of: dict[str, dict] = {}
    for name, runs in loaded.items():
        summary = summarize_runs(runs)
        aligned[name] = _aligned(runs, keys)
        fold_f1[name] = [f["macro_f1"] for f in summary["folds"]]
        per_class[name] = summary["pooled"]["per_class_f1"]
        row = {**_recipe_info(name, runs), "pooled_macro_f1": summary["pooled"]["macro_f1"],
               "n_test_clips": summary["pooled"]["n_clips"]}
        for key in HEADLINE:
            row[f"{key}_mean"], row[f"{key}_std"] = summary["mean"][key], summary["std"][key]
        groups_of[name] = group_metrics(*aligned[name], speakers, genders, label_names)  # pooled over folds
        worst = groups_of[name]["worst_speaker"] or {}
        row.update(worst_speaker=worst.get("speaker"), worst_speaker_macro_f1=worst.get("macro_f1"),
                   female_macro_f1=groups_of[name]["per_gender"].get("female", {}).get("macro_f1"),
                   male_macro_f1=groups_of[name]["per_gender"].get("male", {}).get("macro_f1"),
                   gender_gap=groups_of[name]["gender_gap"])
        rows.append(row)

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

    _write_csv(out_dir / COMPARISON_CSV, COMPARISON_COLUMNS, rows)
    _write_csv(out_dir / SIGNIFICANCE_CSV, SIGNIFICANCE_COLUMNS, pairs)
    plot_macro_f1_bars(rows, out_dir / COMPARISON_PNG)
    plot_per_class_f1(per_class, label_names, out_dir / PER_CLASS_PNG)
    return {
        "label_names": label_names, "rows": rows, "per_class_f1": per_class, "pairs": pairs, "groups": groups_of,
        "files": {k: str(out_dir / v) for k, v in (
            ("csv", COMPARISON_CSV), ("md", COMPARISON_MD), ("bar_chart", COMPARISON_PNG),
            ("per_class_f1", PER_CLASS_PNG), ("significance", SIGNIFICANCE_CSV))},
    }


def value_columns(targets: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Columns of comparison_ccc.csv and significance_ccc.csv for these targets."""
    per = [f"ccc_{t}" for t in targets]
    rows = ("recipe", "model_family", "features", "num_parameters", "train_seconds_total", "train_seconds_mean",
            "ccc_mean_mean", "ccc_mean_std", *(f"{k}_{x}" for k in per for x in ("mean", "std")),
            "pooled_ccc_mean", *(f"pooled_{k}" for k in per), "n_folds", "folds", "n_test_clips", "corpus", "split",
            "leaky", "worst_speaker", "worst_speaker_ccc_mean", "female_ccc_mean", "male_ccc_mean", "gender_gap")
    pairs = ("recipe_a", "recipe_b", "n_clips", "n_folds", "ccc_mean_a", "ccc_mean_b", "delta_ccc_mean", "ci_low",
             "ci_high", "bootstrap_p", "bootstrap_p_holm", "n_resamples", "wilcoxon_p", "significant",
             *(f"{k}_{x}" for k in per for x in ("a", "b", "delta", "ci_low", "ci_high", "p", "p_holm", "significant")),
             "gender_gap_a", "gender_gap_b", "delta_gender_gap", "gap_ci_low", "gap_ci_high", "gap_bootstrap_p")
    return rows, pairs


def _compare_values(loaded: Mapping[str, Sequence[RunResult]], keys, folds, speakers, genders, out_dir: Path,
                    n_resamples: int, seed: int, alpha: float) -> dict:
    """The dimensional comparison (issue 14): CCC per target and mean CCC per recipe (mean ± std over folds,
    pooled), per speaker and gender, and per pair a paired bootstrap over clips of ΔCCC per target and of Δ mean
    CCC (Holm-adjusted over the pairs for the mean, over pairs × targets for the targets), Wilcoxon over folds
    of the mean CCC, and a paired bootstrap of the female − male gap in mean CCC."""
    names = list(loaded)
    targets = list(loaded[names[0]][0].targets)
    row_columns, pair_columns = value_columns(targets)
    rows, aligned, fold_ccc, groups_of = [], {}, {}, {}
    for name, runs in loaded.items():
        summary = summarize_value_runs(runs)
        aligned[name] = _aligned_values(runs, keys)
        fold_ccc[name] = [f[VALUE_HEADLINE] for f in summary["folds"]]
        row = {**_recipe_info(name, runs), "n_test_clips": summary["pooled"]["n_clips"],
               "pooled_ccc_mean": summary["pooled"]["ccc_mean"]}
        for key in summary["mean"]:
            row[f"{key}_mean"], row[f"{key}_std"] = summary["mean"][key], summary["std"][key]
        row.update({f"pooled_ccc_{t}": summary["pooled"][f"ccc_{t}"] for t in targets})
        g = groups_of[name] = regression_group_metrics(*aligned[name], speakers, genders, targets)
        worst = g["worst_speaker"] or {}
        row.update(worst_speaker=worst.get("speaker"), worst_speaker_ccc_mean=worst.get("ccc_mean"),
                   female_ccc_mean=g["per_gender"].get("female", {}).get("ccc_mean"),
                   male_ccc_mean=g["per_gender"].get("male", {}).get("ccc_mean"), gender_gap=g["gender_gap"])
        rows.append(row)

    pairs = []
    both = (genders == "female").any() and (genders == "male").any()
    for a, b in combinations(names, 2):
        true, pred_a = aligned[a]
        _, pred_b = aligned[b]
        boot = paired_bootstrap_ccc(true, pred_a, pred_b, targets, n_resamples=n_resamples, seed=seed)
        m = boot["mean"]
        pair = {"recipe_a": a, "recipe_b": b, "n_clips": int(len(true)), "n_folds": len(folds),
                "ccc_mean_a": m["ccc_a"], "ccc_mean_b": m["ccc_b"], "delta_ccc_mean": m["delta"],
                "ci_low": m["ci_low"], "ci_high": m["ci_high"], "bootstrap_p": m["p"], "n_resamples": n_resamples,
                "wilcoxon_p": wilcoxon_folds(fold_ccc[a], fold_ccc[b])}
        for t in targets:
            r = boot[t]
            pair.update({f"ccc_{t}_a": r["ccc_a"], f"ccc_{t}_b": r["ccc_b"], f"ccc_{t}_delta": r["delta"],
                         f"ccc_{t}_ci_low": r["ci_low"], f"ccc_{t}_ci_high": r["ci_high"], f"ccc_{t}_p": r["p"]})
        if both:
            gap = paired_bootstrap_ccc_gap(true, pred_a, pred_b, genders == "female", genders == "male",
                                           n_resamples=n_resamples, seed=seed)
            pair.update(gender_gap_a=gap["gap_a"], gender_gap_b=gap["gap_b"], delta_gender_gap=gap["delta"],
                        gap_ci_low=gap["ci_low"], gap_ci_high=gap["ci_high"], gap_bootstrap_p=gap["p"])
        pairs.append(pair)
    for pair, adjusted in zip(pairs, holm([p["bootstrap_p"] for p in pairs])):
        pair["bootstrap_p_holm"] = adjusted
        pair["significant"] = adjusted < alpha
    per_target = [(pair, t) for pair in pairs for t in targets]
    for (pair, t), adjusted in zip(per_target, holm([pair[f"ccc_{t}_p"] for pair, t in per_target])):
        pair[f"ccc_{t}_p_holm"] = adjusted
        pair[f"ccc_{t}_significant"] = adjusted < alpha

    _write_csv(out_dir / COMPARISON_CCC_CSV, row_columns, rows)
    _write_csv(out_dir / SIGNIFICANCE_CCC_CSV, pair_columns, pairs)
    plot_ccc_bars(rows, targets, out_dir / COMPARISON_CCC_PNG)
    return {"targets": targets, "rows": rows, "pairs": pairs, "groups": groups_of,
            "files": {"ccc_csv": str(out_dir / COMPARISON_CCC_CSV), "ccc_bar_chart": str(out_dir / COMPARISON_CCC_PNG),
                      "ccc_significance": str(out_dir / SIGNIFICANCE_CCC_CSV)}}


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


def plot_ccc_bars(rows: Sequence[dict], targets: Sequence[str], path: str | os.PathLike) -> Path:
    """Grouped bars per recipe: mean CCC and each target's CCC (mean over folds, error bar = sample std)."""
    keys = ["ccc_mean", *(f"ccc_{t}" for t in targets)]
    names = [r["recipe"] + (" (leaky)" if r["leaky"] else "") for r in rows]
    fig = Figure(figsize=(max(4.5, 1.4 * len(rows) * len(keys) / 2 + 2), 4.0))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        means = [r[f"{key}_mean"] for r in rows]
        stds = [r[f"{key}_std"] or 0.0 for r in rows]
        ax.bar(x + (j - (len(keys) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label="mean CCC" if key == "ccc_mean" else key[4:])
    ax.set_xticks(x, labels=names, rotation=30, ha="right")
    ax.set_ylabel("CCC (mean ± std over folds)")
    ax.set_ylim(min(0.0, *(r["ccc_mean_mean"] for r in rows)), 1)
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
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


def _boot_p_text(p: float, n_resamples: int) -> str:
    # The smallest p a bootstrap of B resamples can give is 2/(B+1): say "≤" there, not "=".
    return f"p ≤ {_p_text(p)}" if p <= 2 / (n_resamples + 1) + 1e-15 else f"p = {_p_text(p)}"


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
        boot_p = _boot_p_text(p["bootstrap_p"], p["n_resamples"])
        text = (f"- **{p['recipe_a']} vs {p['recipe_b']}**: ΔF1 = {_signed(p['delta_macro_f1'])} "
                f"[{_signed(p['ci_low'])}, {_signed(p['ci_high'])}], {boot_p}")
        if len(pairs) > 1:
            text += f", Holm-adjusted p = {_p_text(p['bootstrap_p_holm'])}"
        text += f" — {verdict} at {alpha:g}"
        text += (f". McNemar: {p['recipe_a']} right and {p['recipe_b']} wrong on {p['a_right_b_wrong']} clips, "
                 f"the reverse on {p['a_wrong_b_right']}, p = {_p_text(p['mcnemar_p'])}.")
        lines.append(text + _folds_and_gap_text(p, "Female − male gap"))
    lines.append("")
    return "\n".join(lines)


def _folds_and_gap_text(p: dict, gap_name: str) -> str:
    """A pair's Wilcoxon-over-folds and gender-gap sentences (classification and regression comparisons)."""
    text = ""
    if p["wilcoxon_p"] is not None:
        text += f" Wilcoxon over {p['n_folds']} folds: p = {_p_text(p['wilcoxon_p'])}."
    if p.get("delta_gender_gap") is not None:
        text += (f" {gap_name}: {_signed(p['gender_gap_a'])} vs {_signed(p['gender_gap_b'])}, difference "
                 f"{_signed(p['delta_gender_gap'])} [{_signed(p['gap_ci_low'])}, {_signed(p['gap_ci_high'])}], "
                 f"paired bootstrap p = {_p_text(p['gap_bootstrap_p'])}.")
    return text


def _value_comparison_markdown(res: dict, header: bool) -> str:
    """comparison.md's dimensional part (the whole file for regression runs)."""
    d, alpha, folds = res["dimensions"], res["alpha"], res["folds"]
    targets, rows, pairs = d["targets"], d["rows"], d["pairs"]
    lines = []
    if header:
        fold_text = "a single test set" if folds == [None] else f"folds {', '.join(str(f) for f in folds)}"
        lines += ["# Comparison", "",
                  f"Corpus **{res['corpus']}**, split **{res['split']}** — {PROTOCOLS.get(res['split'], res['split'])}; "
                  f"{fold_text}. Every recipe was evaluated on the same {res['n_clips']} test clips with the same "
                  "true values (same test speakers in every fold); this was checked, not assumed."]
        if any(r["leaky"] for r in rows):
            lines += ["", "**Warning:** rows marked *leaky* come from a random split where the same speakers are in "
                          "train and test; their scores overstate speaker-independent performance."]
    lines += ["", f"## Dimensions: CCC ({', '.join(targets)})", ""]
    keys = ["ccc_mean", *(f"ccc_{t}" for t in targets)]
    lines += markdown_table(
        ["recipe", "model family", "features", "params", "train time", "mean CCC", *targets, "pooled mean CCC",
         "folds"],
        [[r["recipe"] + (" ⚠ leaky" if r["leaky"] else ""), r["model_family"], r["features"],
          _params_text(r["num_parameters"]), _seconds_text(r["train_seconds_total"]),
          *(fmt_mean_std(r[f"{k}_mean"], r[f"{k}_std"]) for k in keys), f"{r['pooled_ccc_mean']:.3f}", r["n_folds"]]
         for r in rows])
    lines += ["", "Mean ± sample std (ddof=1) over folds of each fold's test CCC (Lin's concordance correlation); "
                  "mean CCC is the mean over targets; pooled = all folds' test clips together.", "",
              f"![CCC per recipe]({COMPARISON_CCC_PNG})", "", "### Per speaker and gender (mean CCC, pooled clips)", ""]
    table = []
    for name, g in d["groups"].items():
        worst = g.get("worst_speaker") or {}
        pg = g.get("per_gender") or {}
        table.append([name, f"{worst.get('speaker')} ({worst['ccc_mean']:.3f})" if worst else "n/a",
                      *(f"{pg[x]['ccc_mean']:.3f}" if pg.get(x, {}).get("ccc_mean") is not None else "n/a"
                        for x in ("female", "male")),
                      _signed(g["gender_gap"]) if g.get("gender_gap") is not None else g.get("gender_gap_note", "n/a")])
    lines += markdown_table(["recipe", "worst speaker (mean CCC)", "female", "male", "female − male"], table)
    lines += ["", "### Is the CCC difference real?", "",
              f"ΔCCC is CCC(A) − CCC(B) on all test clips pooled over folds; interval and p from a paired bootstrap "
              f"over clips ({pairs[0]['n_resamples'] if pairs else 0} resamples, both recipes scored on the same "
              "draw). The mean-CCC p is Holm-adjusted over the pairs, each target's over pairs × targets. With at "
              f"least {MIN_FOLDS_WILCOXON} folds a Wilcoxon signed-rank test on per-fold mean CCC is added.", ""]
    lines += markdown_table(
        ["A vs B", *(f"Δ {k[4:] if k != 'ccc_mean' else 'mean CCC'} [95% CI], Holm p" for k in keys)],
        [[f"{p['recipe_a']} vs {p['recipe_b']}",
          f"{_signed(p['delta_ccc_mean'])} [{_signed(p['ci_low'])}, {_signed(p['ci_high'])}], "
          f"{_p_text(p['bootstrap_p_holm'])}",
          *(f"{_signed(p[f'ccc_{t}_delta'])} [{_signed(p[f'ccc_{t}_ci_low'])}, {_signed(p[f'ccc_{t}_ci_high'])}], "
            f"{_p_text(p[f'ccc_{t}_p_holm'])}" for t in targets)] for p in pairs])
    lines.append("")
    for p in pairs:
        text = (f"- **{p['recipe_a']} vs {p['recipe_b']}**: mean CCC {p['ccc_mean_a']:.3f} vs {p['ccc_mean_b']:.3f}, "
                f"Δ = {_signed(p['delta_ccc_mean'])}, {_boot_p_text(p['bootstrap_p'], p['n_resamples'])}"
                f"{', Holm-adjusted p = ' + _p_text(p['bootstrap_p_holm']) if len(pairs) > 1 else ''} — "
                f"{'significant' if p['significant'] else 'not significant'} at {alpha:g}.")
        differing = [t for t in targets if p[f"ccc_{t}_significant"]]
        text += f" Targets that differ significantly: {', '.join(differing) if differing else 'none'}."
        lines.append(text + _folds_and_gap_text(p, "Female − male gap in mean CCC"))
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
    "paired_bootstrap_ccc", "paired_bootstrap_ccc_gap", "plot_ccc_bars", "plot_macro_f1_bars", "plot_per_class_f1",
    "discover_runs", "shared_outputs",
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

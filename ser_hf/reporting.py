"""What a run leaves behind for people and for the comparison tools: metrics.json, report, plots, predictions.

Every number is written next to its protocol (corpus, split, fold, speakers per
split), and a random utterance split is flagged as leaky in every human-readable
output, because a number without its protocol is how speaker leakage goes unnoticed.

Dimensional (regression) runs: splits whose metrics hold ``ccc_mean`` get a CCC / Pearson / MAE table per
target in the report and a scatter plot of prediction vs truth per target (``scatter.png``, from the
``true_<t>``/``pred_<t>`` columns of the predictions) instead of a confusion matrix.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch), so reporting works headless and inside other people's programs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "classification_report.txt"
CONFUSION_FILE = "confusion_matrix.png"
CURVES_FILE = "curves.png"
SCATTER_FILE = "scatter.png"
PREDICTIONS_FILE = "predictions.csv"
HISTORY_FILE = "history.json"

EVAL_SPLITS = ("validation", "test")
LEAKY_WARNING = ("LEAKY SPLIT: utterance-level random split, speakers overlap "
                 "— not a speaker-independent result")

PROTOCOLS = {
    "speaker": "speaker-independent (published speaker split)",
    "loso": "speaker-independent (leave-one-speaker-out)",
    "kfold": "speaker-independent (speaker k-fold)",
    "session": "speaker-independent (leave-one-session-out)",
    "manifest": "the manifest's split column (speaker overlap checked)",
    "random": "LEAKY (utterance-level random split, speakers overlap)",
}


# ----------------------------------------------------------------------------------------------- helpers

# is_leaky and read_predictions live with the one run-folder reader (ser_hf.runfolder), re-exported here.
from .runfolder import atomic_path, atomic_write, is_leaky, read_predictions  # noqa: E402,F401
# predictions.csv's leading columns are the reader's (one definition); regression runs have no
# label/prediction/prob columns, a true_<t> and pred_<t> per target instead.
from .runfolder import CLIP_COLUMNS as REGRESSION_PREDICTION_COLUMNS  # noqa: E402
from .runfolder import REQUIRED_PREDICTION_COLUMNS as PREDICTION_COLUMNS  # noqa: E402


def leaky_warning(metrics: Mapping[str, Any]) -> str:
    """The LEAKY banner: why this run is not speaker-independent (a random split, or the data's ``leaky_reason``)."""
    reason = metrics.get("leaky_reason")
    return f"NOT SPEAKER-INDEPENDENT: {reason}" if reason else LEAKY_WARNING


def protocol_description(metrics: Mapping[str, Any]) -> str:
    """One line naming the split protocol and fold, e.g. ``speaker-independent (leave-one-speaker-out), fold 3``."""
    split = metrics.get("split")
    text = PROTOCOLS.get(split, f"split {split!r}" if split else "split not recorded")
    if metrics.get("leaky_reason") and split != "random":
        text = f"NOT speaker-independent ({metrics['leaky_reason']})"
    elif is_leaky(metrics) and split != "random":
        text += " — marked LEAKY"
    if metrics.get("fold") is not None:
        text += f", fold {metrics['fold']}"
    return text


def eval_splits(metrics: Mapping[str, Any]) -> dict[str, dict]:
    """The evaluated splits in ``metrics``: run dicts hold ``validation``/``test``; a bare compute_metrics dict
    counts as one split named ``evaluation``."""
    found = {s: metrics[s] for s in EVAL_SPLITS if isinstance(metrics.get(s), Mapping) and metrics[s]}
    if not found and ("confusion_matrix" in metrics or "ccc_mean" in metrics):
        found = {"evaluation": dict(metrics)}
    return found


def regression_targets(split_metrics: Mapping[str, Any]) -> list[str]:
    """The targets a split's metrics score (``ccc_<t>`` keys), empty for a classification split."""
    if "ccc_mean" not in split_metrics:
        return []
    return list(split_metrics.get("targets") or [k[4:] for k in split_metrics if k.startswith("ccc_") and k != "ccc_mean"])


def format_regression_table(split_metrics: Mapping[str, Any], digits: int = 3) -> str:
    """CCC / Pearson / MAE per target, then the mean CCC."""
    targets = regression_targets(split_metrics)
    width = max(len("mean"), *(len(t) for t in targets))
    rows = [f"{'':>{width}} {'CCC':>9} {'Pearson':>9} {'MAE':>9}", ""]
    for t in targets:
        rows.append(f"{t:>{width}} {split_metrics[f'ccc_{t}']:>9.{digits}f} {split_metrics[f'pearson_{t}']:>9.{digits}f} "
                    f"{split_metrics[f'mae_{t}']:>9.{digits}f}")
    rows += ["", f"{'mean':>{width}} {split_metrics['ccc_mean']:>9.{digits}f}"]
    return "\n".join(rows)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unpacked, paths as strings, NaN/inf as null (strict JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "to_dict"):  # e.g. SplitInfo, FeatureConfig
        return _jsonable(obj.to_dict())
    return str(obj)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as strict, NaN-free JSON (``allow_nan=False`` proves it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- report text

def _header_lines(metrics: Mapping[str, Any]) -> list[str]:
    task = metrics.get("task") or "classification"
    title = {"regression": "ser_hf dimensional (regression) report",
             "multitask": "ser_hf multitask (classes + dimensions) report"}.get(task, "ser_hf classification report")
    lines = [title, ""]
    leaky = is_leaky(metrics)
    if leaky:
        lines += ["!" * 100, f"!!! {leaky_warning(metrics)}", "!" * 100, ""]
    corpus = metrics.get("corpus", "not recorded")
    if metrics.get("train_corpus") or metrics.get("test_corpus"):
        corpus = f"{corpus} (cross-corpus: trained on {metrics.get('train_corpus')}, tested on {metrics.get('test_corpus')})"
    lines.append(f"recipe:         {metrics.get('recipe', 'not recorded')}")
    lines.append(f"corpus:         {corpus}")
    lines.append(f"split protocol: {protocol_description(metrics)}")
    lines.append(f"fold:           {metrics.get('fold') if metrics.get('fold') is not None else '-'}")
    if task != "classification":
        lines.append(f"task:           {task} (targets: {', '.join(metrics.get('targets') or [])})")
    for key, label in (("seed", "seed"), ("model_family", "model"), ("best_epoch", "best epoch"),
                       ("num_parameters", "parameters")):
        if metrics.get(key) is not None:
            lines.append(f"{label + ':':<16}{metrics[key]}")
    speakers = metrics.get("speakers") or {}
    if speakers:
        lines.append("speakers per split:")
        for split in ("train", "validation", "test"):
            ids = list(speakers.get(split) or [])
            lines.append(f"  {split:<11} ({len(ids):>3}): {' '.join(map(str, ids)) if ids else '-'}")
    else:
        lines.append("speakers per split: not recorded")
    return lines


def format_classification_report(split_metrics: Mapping[str, Any], digits: int = 3) -> str:
    """scikit-learn ``classification_report``-style table from a stored compute_metrics dict.

    Hand-formatted because the stored metrics are all we have here (sklearn's report needs the raw
    predictions). ``macro avg`` uses the same classes as macro-F1/UAR (those with support), so its
    f1-score and recall are exactly ``macro_f1`` and ``uar``.
    """
    per_class = split_metrics["per_class"]
    names = list(split_metrics.get("labels") or per_class)
    width = max(len("weighted avg"), *(len(n) for n in names))
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    rows = [head, ""]
    row = "{:>{w}} {:>9.{d}f} {:>9.{d}f} {:>9.{d}f} {:>9}"
    for name in names:
        c = per_class[name]
        rows.append(row.format(name, c["precision"], c["recall"], c["f1"], c["support"], w=width, d=digits))
    rows.append("")
    support = np.array([per_class[n]["support"] for n in names], dtype=float)
    total = int(support.sum())
    present = support > 0
    prec = np.array([per_class[n]["precision"] for n in names])
    rec = np.array([per_class[n]["recall"] for n in names])
    rows.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {split_metrics['accuracy']:>9.{digits}f} {total:>9}")
    macro_p = float(prec[present].mean()) if present.any() else 0.0
    rows.append(row.format("macro avg", macro_p, split_metrics["uar"], split_metrics["macro_f1"], total,
                           w=width, d=digits))
    weights = support if total else np.ones_like(support)
    rows.append(row.format("weighted avg", float(np.average(prec, weights=weights)),
                           float(np.average(rec, weights=weights)), split_metrics["weighted_f1"], total,
                           w=width, d=digits))
    return "\n".join(rows)


def _confusion_text(split_metrics: Mapping[str, Any]) -> str:
    names = list(split_metrics["labels"])
    cm = split_metrics["confusion_matrix"]
    width = max(6, *(len(n) for n in names))
    lines = ["confusion matrix (rows = true, columns = predicted):",
             f"{'':>{width}} " + " ".join(f"{n[:width]:>{width}}" for n in names)]
    lines += [f"{name:>{width}} " + " ".join(f"{v:>{width}}" for v in row) for name, row in zip(names, cm)]
    return "\n".join(lines)


def skipped_lines(metrics: Mapping[str, Any], limit: int = 50) -> list[str]:
    """The clips left out of the run (undecodable, too short, ...) with their reasons, for report and card."""
    lines = []
    for key, title in (("skipped", "skipped clips ({n}; not in any split):"),
                       ("too_short", "too-short clips ({n}; below the features' or model's minimum, used):")):
        clips = list(metrics.get(key) or [])
        if not clips:
            lines.append(title.split(" (")[0] + ": none")
            continue
        lines.append(title.format(n=len(clips)))
        lines += [f"  {s.get('file', '?')}: {s.get('reason', '?')}" if isinstance(s, Mapping) else f"  {s}"
                  for s in clips[:limit]]
        if len(clips) > limit:
            lines.append(f"  ... {len(clips) - limit} more in metrics.json")
    return lines


def classification_report_text(metrics: Mapping[str, Any], history_note: str | None = None) -> str:
    """The whole ``classification_report.txt``: protocol header, then one table per evaluated split."""
    lines = _header_lines(metrics)
    # per-speaker / per-gender results (issue 15). Lazy: groups -> metrics -> evaluate/datasets import torch, and
    # this module (with ser_hf.hub, which imports it) stays torch-free.
    from .groups import report_lines, table_lines

    if report_lines(metrics):
        lines += ["", "speakers and gender:", *(f"  {line}" for line in report_lines(metrics))]
    splits = eval_splits(metrics)
    if not splits:
        lines += ["", "no evaluated split in metrics (expected 'validation' and/or 'test' entries)"]
    for split, m in splits.items():
        lines += ["", f"== {split} ({m.get('num_examples', '?')} clips) " + "=" * 40, ""]
        if "ccc_mean" in m:
            lines += [f"dimensions (CCC = concordance correlation, on {m.get('num_examples', '?')} rated clips):",
                      format_regression_table(m), ""]
        if "confusion_matrix" in m:
            lines.append(format_classification_report(m))
            lines += ["", f"macro-F1 {m['macro_f1']:.4f}   UAR {m['uar']:.4f}   accuracy {m['accuracy']:.4f}   "
                          f"weighted-F1 {m['weighted_f1']:.4f}"]
            if m.get("absent_labels"):
                lines.append(f"no {split} examples of: {', '.join(m['absent_labels'])} "
                             "(left out of macro-F1/UAR; their rows show support 0)")
            lines += ["", _confusion_text(m)]
        if table_lines(m):
            lines += ["", "per speaker and gender:", *table_lines(m)]
    if history_note:
        lines += ["", history_note]
    lines += ["", *skipped_lines(metrics)]
    if is_leaky(metrics):
        lines += ["", f"!!! {leaky_warning(metrics)}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- plots

def _new_figure(width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _title_suffix(metrics: Mapping[str, Any]) -> str:
    parts = [str(metrics.get(k)) for k in ("recipe", "corpus") if metrics.get(k)]
    parts.append(protocol_description(metrics))
    return " | ".join(parts)


def plot_confusion_matrices(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """One row per evaluated split: counts (left) and row-normalised recall (right), labelled axes."""
    splits = {k: m for k, m in eval_splits(metrics).items() if "confusion_matrix" in m}
    if not splits:
        raise ValueError("metrics holds no evaluated split ('validation'/'test' with a confusion_matrix) to plot")
    n_labels = max(len(m["labels"]) for m in splits.values())
    side = max(4.0, 0.55 * n_labels + 2.0)
    fig = _new_figure(2 * side + 1, side * len(splits) + 0.6)
    axes = fig.subplots(len(splits), 2, squeeze=False)
    for row, (split, m) in enumerate(splits.items()):
        cm = np.asarray(m["confusion_matrix"], dtype=float)
        names = m["labels"]
        sums = cm.sum(axis=1, keepdims=True)
        norm = np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)  # absent class: a row of 0, not NaN
        for col, (data, title, fmt) in enumerate(((cm, "counts", "{:.0f}"), (norm, "row-normalised (recall)", "{:.2f}"))):
            ax = axes[row][col]
            vmax = 1.0 if col else max(float(cm.max()), 1.0)
            im = ax.imshow(data, cmap="Blues", vmin=0, vmax=vmax)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
            ax.set_yticks(range(len(names)), labels=names)
            ax.set_xlabel("predicted label")
            ax.set_ylabel("true label")
            ax.set_title(f"{split}: {title}  (macro-F1 {m['macro_f1']:.3f}, UAR {m['uar']:.3f})", fontsize=9)
            for i in range(data.shape[0]):
                for j in range(data.shape[1]):
                    ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] > 0.6 * vmax else "black")
    fig.suptitle(("LEAKY SPLIT — " if is_leaky(metrics) else "") + _title_suffix(metrics), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_scatter(metrics: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Prediction vs truth per target (columns) and evaluated split (rows), with the identity line and the
    split's CCC in each title. ``rows``: prediction rows with ``split``, ``true_<t>`` and ``pred_<t>``."""
    splits = {k: m for k, m in eval_splits(metrics).items() if "ccc_mean" in m}
    if not splits:
        raise ValueError("metrics holds no evaluated dimensional split ('validation'/'test' with ccc_mean) to plot")
    targets = regression_targets(next(iter(splits.values())))
    fig = _new_figure(3.6 * len(targets) + 0.4, 3.4 * len(splits) + 0.6)
    axes = fig.subplots(len(splits), len(targets), squeeze=False)
    for r, (split, m) in enumerate(splits.items()):
        mine = [row for row in rows if row.get("split") == split] or list(rows)
        for c, t in enumerate(targets):
            ax = axes[r][c]
            x = np.array([float(row[f"true_{t}"]) for row in mine])
            y = np.array([float(row[f"pred_{t}"]) for row in mine])
            ax.scatter(x, y, s=8, alpha=0.6)
            if x.size:
                lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
                ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1)
            ax.set_xlabel(f"true {t}")
            ax.set_ylabel(f"predicted {t}")
            ax.set_title(f"{split}: {t}  (CCC {m[f'ccc_{t}']:.3f}, r {m[f'pearson_{t}']:.3f})", fontsize=9)
    fig.suptitle(("LEAKY SPLIT — " if is_leaky(metrics) else "") + _title_suffix(metrics), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list, list]:
    xs, ys = [], []
    for i, h in enumerate(history):
        v = h.get(key)
        if isinstance(v, (int, float, np.number)) and math.isfinite(float(v)):
            xs.append(h.get("epoch", i + 1))
            ys.append(float(v))
    return xs, ys


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path,
                metrics: Mapping[str, Any] | None = None) -> Path | None:
    """Train/validation loss and the validation selection score (macro-F1, or mean CCC for regression runs)
    per epoch; None (nothing written) if no numbers to plot."""
    loss = {k: _series(history, k) for k in ("train_loss", "val_loss")}
    f1 = _series(history, "val_macro_f1")
    score_name = "macro-F1"
    if not f1[0] and _series(history, "val_ccc_mean")[0]:
        f1, score_name = _series(history, "val_ccc_mean"), "mean CCC"
    if not any(xs for xs, _ in loss.values()) and not f1[0]:
        return None
    fig = _new_figure(10, 4)
    ax_loss, ax_f1 = fig.subplots(1, 2)
    for key, (xs, ys) in loss.items():
        if xs:
            ax_loss.plot(xs, ys, marker="o", markersize=3, label=key.replace("_", " "))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    if f1[0]:
        ax_f1.plot(*f1, marker="o", markersize=3, color="tab:green", label=f"validation {score_name}")
    best = (metrics or {}).get("best_epoch")
    if best is not None:
        for ax in (ax_loss, ax_f1):
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best}")
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel(score_name)
    ax_f1.set_ylim(0 if score_name == "macro-F1" else -1, 1)
    ax_f1.set_title(f"validation {score_name}")
    for ax in (ax_loss, ax_f1):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if metrics:
        fig.suptitle(("LEAKY SPLIT — " if is_leaky(metrics) else "") + _title_suffix(metrics), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


# ----------------------------------------------------------------------------------------------- entry points

def write_report(output_dir: str | Path, metrics: Mapping[str, Any],
                 history: Sequence[Mapping[str, Any]] | None = None,
                 predictions: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Path]:
    """Write metrics.json, classification_report.txt, confusion_matrix.png and (with a history) curves.png;
    dimensional runs get scatter.png (from ``predictions``, the rows of predictions.csv) instead of / besides
    the confusion matrix.

    ``metrics`` is the run-folder dict (``validation``/``test`` hold compute_metrics dicts) or one bare
    compute_metrics dict. Returns {"metrics", "classification_report", "confusion_matrix"[, "curves"]} -> path.
    Runs without per-epoch history (classic models) get no curves.png; the report says so.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(metrics, Mapping):
        raise TypeError(f"write_report: metrics must be a dict, got {type(metrics).__name__}")
    paths: dict[str, Path] = {"metrics": write_json(output_dir / METRICS_FILE, metrics)}

    note = None
    curves = plot_curves(history, output_dir / CURVES_FILE, metrics) if history else None
    if curves is not None:
        paths["curves"] = curves
    else:
        note = ("no per-epoch training history (e.g. a classic model fitted in one go): "
                f"{CURVES_FILE} not written")
        logger.info("%s in %s", note, output_dir)

    report = output_dir / REPORT_FILE
    atomic_write(report, classification_report_text(metrics, note))
    paths["classification_report"] = report
    splits = eval_splits(metrics)
    if any("confusion_matrix" in m for m in splits.values()):
        paths["confusion_matrix"] = plot_confusion_matrices(metrics, output_dir / CONFUSION_FILE)
    if any("ccc_mean" in m for m in splits.values()):
        if predictions:
            paths["scatter"] = plot_scatter(metrics, predictions, output_dir / SCATTER_FILE)
        else:
            logger.warning("no prediction rows given: %s not written in %s", SCATTER_FILE, output_dir)
    if not splits:
        logger.warning("metrics in %s hold no evaluated split; %s not written", output_dir, CONFUSION_FILE)
    if is_leaky(metrics):
        logger.warning("%s (%s)", leaky_warning(metrics), output_dir)
    return paths


def write_predictions(path: str | Path, rows: Iterable[Mapping[str, Any]],
                      label_names: Sequence[str] | None = None) -> Path:
    """Write predictions.csv: ``split, corpus, file, speaker_id, label, prediction``, then ``prob_<label>`` columns.

    Probability columns follow ``label_names`` when given (else their first-seen order); other keys follow.
    Regression rows (no ``label`` key in any row) need only ``split, corpus, file, speaker_id`` and carry
    ``true_<t>``/``pred_<t>`` columns; ``label_names`` is then ignored.
    """
    rows = [dict(r) for r in rows]
    regression = bool(rows) and not any("label" in r for r in rows)
    base = REGRESSION_PREDICTION_COLUMNS if regression else PREDICTION_COLUMNS
    if regression:
        label_names = []
    for i, r in enumerate(rows):
        missing = [c for c in base if c not in r]
        if missing:
            raise ValueError(f"write_predictions({path}): row {i} lacks {missing}; every row needs "
                             f"{', '.join(base)} and prob_<label> (or true_/pred_<target>) columns")
    if label_names is not None:
        prob_cols = [f"prob_{n}" for n in label_names]
    else:
        prob_cols = list(dict.fromkeys(k for r in rows for k in r if k.startswith("prob_")))
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in base and k not in prob_cols))
    stray = [k for k in extra if k.startswith("prob_")]
    if stray:
        raise ValueError(f"write_predictions({path}): columns {stray} are not in label_names {list(label_names)}")
    columns = [*base, *prob_cols, *extra]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (float(v) if isinstance(v, np.floating) else v) for k, v in r.items()})
    return path


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """Load a run folder: {"run_dir", "metrics", "predictions" (list | None), "history" (list | None)}."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist; pass the output_dir of a finished run")
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.is_file():
        found = sorted(p.name for p in run_dir.iterdir())[:20]
        raise FileNotFoundError(f"{metrics_path} not found: {run_dir} is not a finished ser_hf run "
                                f"(found: {found or 'nothing'}); runs write {METRICS_FILE} when they end")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{metrics_path} is not valid JSON ({err}); re-run the experiment or fix the file") from err
    predictions_path = run_dir / PREDICTIONS_FILE
    history_path = run_dir / HISTORY_FILE
    return {
        "run_dir": run_dir,
        "metrics": metrics,
        "predictions": read_predictions(predictions_path) if predictions_path.is_file() else None,
        "history": json.loads(history_path.read_text(encoding="utf-8")) if history_path.is_file() else None,
    }

"""The one reporter every model family goes through: macro-F1, accuracy, UAR, weighted F1, per class, confusion matrix;
for dimensional (regression) runs CCC, Pearson and MAE per target and the mean CCC (:func:`compute_regression_metrics`,
:class:`SERRegressionMetrics`).

Emotion corpora are imbalanced, so accuracy alone hides a model that ignores the
rare classes; macro-F1 (the model-selection metric) and UAR (unweighted average
recall, the usual SER headline number, = scikit-learn's balanced accuracy) are
reported next to it, always together.

Macro averages (macro-F1, UAR) run over the classes present in the references.
A class with no reference example (e.g. the public CREMA-D sample has no
neutral clip, a cross-corpus test set may lack a class) would otherwise add a
meaningless 0 to the average; it still appears in ``per_class`` and in the
confusion matrix, and predictions of it still cost the true classes recall.
Such classes are listed in ``absent_labels``.

``SERMetrics`` wraps ``compute_metrics`` as an ``evaluate.Metric`` defined here
(``evaluate.load("f1")`` would fetch a script from the Hub), so batches can be
accumulated with ``add_batch`` and the same object works offline.

>>> m = compute_metrics([0, 1, 1, 2], [0, 1, 2, 2], ["angry", "happy", "sad"])
>>> round(m["accuracy"], 2), round(m["uar"], 3), m["confusion_matrix"]
(0.75, 0.833, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

METRIC_KEYS = ("macro_f1", "accuracy", "uar", "weighted_f1")


def _as_indices(values: Any, label_names: Sequence[str], what: str) -> np.ndarray:
    """Class indices from ints or label-name strings; anything else is an error naming ``what``."""
    if hasattr(values, "detach"):  # torch tensor: avoid importing torch here
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a flat sequence of class indices or label names, got shape {arr.shape}; "
                         "for logits take argmax over the last axis first")
    if arr.size and arr.dtype.kind in "US":
        index = {name: i for i, name in enumerate(label_names)}
        unknown = sorted({str(v) for v in arr.tolist()} - index.keys())
        if unknown:
            raise ValueError(f"{what} holds label names not in label_names: {unknown}; label_names={list(label_names)}")
        return np.array([index[str(v)] for v in arr.tolist()], dtype=np.int64)
    if arr.size and arr.dtype.kind == "f":
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{what} holds non-integer values; pass class indices (argmax of the logits)")
    if arr.size and arr.dtype.kind not in "iuf":
        raise ValueError(f"{what} must hold class indices (int) or label names (str), got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= len(label_names))]
    if bad.size:
        raise ValueError(f"{what} holds class indices outside 0..{len(label_names) - 1} "
                         f"({len(label_names)} label_names): {sorted(set(bad.tolist()))[:10]}")
    return arr


def compute_metrics(references: Sequence, predictions: Sequence, label_names: Sequence[str]) -> dict[str, Any]:
    """Clip-level scores of ``predictions`` against ``references`` over all ``label_names``.

    ``references`` / ``predictions``: class indices into ``label_names`` (or the label names themselves).
    Returns plain Python types (JSON-ready): ``macro_f1, accuracy, uar, weighted_f1`` (floats),
    ``per_class`` ({label: {precision, recall, f1, support}}), ``confusion_matrix`` (rows = true label,
    columns = predicted, over every label name), ``labels``, ``absent_labels``, ``num_examples``.
    """
    label_names = [str(n) for n in label_names]
    if not label_names:
        raise ValueError("label_names is empty; pass the class names in id order (the model's id2label)")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names has duplicates: {label_names}")
    refs = _as_indices(references, label_names, "references")
    preds = _as_indices(predictions, label_names, "predictions")
    if refs.shape != preds.shape:
        raise ValueError(f"references ({refs.size}) and predictions ({preds.size}) differ in length; "
                         "pass one prediction per evaluated clip")
    if refs.size == 0:
        raise ValueError("no examples to score (empty references); an empty split has no metrics, skip it instead")

    all_ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        refs, preds, labels=all_ids, average=None, zero_division=0)
    present = support > 0
    # Weighted F1 = support-weighted mean; classes with no support weigh 0, same as sklearn's average="weighted".
    weighted_f1 = float(np.average(f1, weights=support))
    cm = confusion_matrix(refs, preds, labels=all_ids)
    return {
        "macro_f1": float(f1[present].mean()),
        "accuracy": float(accuracy_score(refs, preds)),
        "uar": float(recall[present].mean()),
        "weighted_f1": weighted_f1,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": cm.astype(int).tolist(),
        "labels": list(label_names),
        "absent_labels": [name for i, name in enumerate(label_names) if not present[i]],
        "num_examples": int(refs.size),
    }


_DESCRIPTION = """Speech emotion recognition scores: macro-F1, accuracy, UAR (unweighted average recall),
weighted F1, per-class precision/recall/F1/support and the confusion matrix over all label names."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class indices, one per clip.
    references (list of int): true class indices, one per clip.
    label_names (list of str): class names in id order; may also be given to the constructor.
Returns:
    dict: see ser_hf.metrics.compute_metrics.
Examples:
    >>> SERMetrics().compute(predictions=[0, 1], references=[0, 0], label_names=["angry", "sad"])["accuracy"]
    0.5
"""


class SERMetrics(evaluate.Metric):
    """``evaluate`` wrapper of :func:`compute_metrics` (accumulate with ``add_batch``, then ``compute``).

    Kept in memory by default: nothing is written under the evaluate cache, so it works on
    read-only homes and with ``HF_HUB_OFFLINE=1``. Pass ``keep_in_memory=False`` with
    ``num_process``/``process_id`` for evaluate's file-based multi-process gathering.
    """

    def __init__(self, label_names: Sequence[str] | None = None, keep_in_memory: bool | None = None, **kwargs):
        self.label_names = list(label_names) if label_names is not None else None
        if keep_in_memory is None:
            keep_in_memory = kwargs.get("num_process", 1) == 1
        super().__init__(keep_in_memory=keep_in_memory, **kwargs)

    def _build_data_dir(self) -> str:
        # evaluate creates <HF_METRICS_CACHE>/<name>/<config> even when everything stays in memory; skip
        # the mkdir then, so a read-only or absent cache folder is no obstacle.
        if self.keep_in_memory:
            return os.path.join(self._data_dir_root, self.name, self.config_name)
        return super()._build_data_dir()

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(self, predictions, references, label_names: Sequence[str] | None = None) -> dict[str, Any]:
        names = label_names if label_names is not None else self.label_names
        if names is None:
            raise ValueError("SERMetrics needs label_names: pass SERMetrics(label_names=[...]) or "
                             "compute(..., label_names=[...])")
        return compute_metrics(references, predictions, names)


# ------------------------------------------------------------------------------ dimensional (regression) scores

REGRESSION_KEYS = ("ccc", "pearson", "mae")  # per target: ccc_<t>, pearson_<t>, mae_<t>; plus ccc_mean


def _pair(y_true, y_pred, what: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"{what}: y_true ({t.size}) and y_pred ({p.size}) differ in length")
    if t.size < 2:
        raise ValueError(f"{what}: needs at least 2 values, got {t.size}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError(f"{what}: NaN/inf values (skip unrated rows before scoring)")
    return t, p


def ccc_many(true: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Lin's concordance correlation ``2·cov / (var_t + var_p + (mean_t − mean_p)²)`` (population moments,
    as the AVEC/MSP-Podcast challenges compute it) over the clip axis (second to last) of ``true``/``pred``
    shaped ``(..., clips, targets)``; returns ``(..., targets)``. ``weights`` ``(..., clips)`` (counts or 0/1,
    broadcast against the clips) restricts or repeats clips, which is how a bootstrap resample or a gender group
    is scored without copying (``ser_hf.paired_tests``). Both sides one and the same constant give 1, both
    constant and different 0, no clips NaN. The one CCC definition: :func:`ccc` is this on one column; the
    training loss (``ser_hf.losses``) is its torch twin, differentiable."""
    t, p = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    w = (np.ones(t.shape[:-1]) if weights is None else np.asarray(weights, dtype=np.float64))[..., None]
    n = w.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mt, mp = (w * t).sum(axis=-2) / n, (w * p).sum(axis=-2) / n
        dt, dp = t - mt[..., None, :], p - mp[..., None, :]
        vt, vp = (w * dt * dt).sum(axis=-2) / n, (w * dp * dp).sum(axis=-2) / n
        cov = (w * dt * dp).sum(axis=-2) / n
        denom = vt + vp + (mt - mp) ** 2
        return np.where(denom > 0, 2 * cov / np.where(denom > 0, denom, 1.0), np.where(n > 0, 1.0, np.nan))


def ccc(y_true, y_pred) -> float:
    """:func:`ccc_many` of one pair of rating columns (checked: same length, at least 2, finite)."""
    t, p = _pair(y_true, y_pred, "ccc")
    return float(ccc_many(t[:, None], p[:, None])[0])


def pearson(y_true, y_pred) -> float:
    """Pearson correlation; 0 when either side is constant (undefined otherwise)."""
    t, p = _pair(y_true, y_pred, "pearson")
    st, sp = t.std(), p.std()
    if st == 0 or sp == 0:
        return 0.0
    return float(((t - t.mean()) * (p - p.mean())).mean() / (st * sp))


def compute_regression_metrics(true, pred, targets: Sequence[str]) -> dict[str, Any]:
    """Per target ``ccc_<t>``, ``pearson_<t>``, ``mae_<t>``, then ``ccc_mean`` (over targets) and
    ``num_examples``. ``true``/``pred``: (n, len(targets)) arrays (a 1-D array for one target)."""
    targets = [str(t) for t in targets]
    if not targets:
        raise ValueError("compute_regression_metrics: targets is empty")
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    t, p = (a.reshape(-1, 1) if a.ndim == 1 else a for a in (t, p))
    if t.shape != p.shape or t.shape[1] != len(targets):
        raise ValueError(f"compute_regression_metrics: true {t.shape} and pred {p.shape} must both be "
                         f"(n, {len(targets)}) for targets {targets}")
    out: dict[str, Any] = {}
    for j, name in enumerate(targets):
        out[f"ccc_{name}"] = ccc(t[:, j], p[:, j])
        out[f"pearson_{name}"] = pearson(t[:, j], p[:, j])
        out[f"mae_{name}"] = float(np.abs(t[:, j] - p[:, j]).mean())
    out["ccc_mean"] = float(np.mean([out[f"ccc_{n}"] for n in targets]))
    out["targets"] = targets
    out["num_examples"] = int(t.shape[0])
    return out


_REG_DESCRIPTION = """Dimensional emotion scores: concordance correlation (CCC), Pearson correlation and mean
absolute error per target (arousal, valence, dominance), and the mean CCC over targets."""

_REG_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): predicted values, one row per clip, one column per target.
    references (list of list of float): true values, same layout.
    targets (list of str): the target names in column order; may also be given to the constructor.
Returns:
    dict: see ser_hf.metrics.compute_regression_metrics.
Examples:
    >>> SERRegressionMetrics(targets=["arousal"]).compute(predictions=[[1.0], [2.0]], references=[[1.0], [2.0]])["ccc_mean"]
    1.0
"""


class SERRegressionMetrics(SERMetrics):
    """``evaluate`` wrapper of :func:`compute_regression_metrics` (in memory by default, like :class:`SERMetrics`)."""

    def __init__(self, targets: Sequence[str] | None = None, keep_in_memory: bool | None = None, **kwargs):
        self.targets = list(targets) if targets is not None else None
        super().__init__(label_names=None, keep_in_memory=keep_in_memory, **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_REG_DESCRIPTION,
            citation="Lin, L. I. (1989). A concordance correlation coefficient to evaluate reproducibility.",
            inputs_description=_REG_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Sequence(datasets.Value("float64"))}),
            reference_urls=["https://doi.org/10.2307/2532051"],
        )

    def _compute(self, predictions, references, targets: Sequence[str] | None = None) -> dict[str, Any]:
        names = targets if targets is not None else self.targets
        if names is None:
            raise ValueError("SERRegressionMetrics needs targets: pass SERRegressionMetrics(targets=[...]) or "
                             "compute(..., targets=[...])")
        return compute_regression_metrics(references, predictions, names)

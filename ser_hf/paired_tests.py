"""Paired significance tests of two systems scored on the same clips (used by :mod:`ser_hf.compare`).

Moved out of compare.py (whose docstring announced the split once it grew) when dimensional runs brought
tests on CCC. numpy/scipy only, no run folders: the inputs are aligned per-clip arrays.

- classes: :func:`paired_bootstrap` (macro-F1), :func:`paired_bootstrap_gap` (female − male macro-F1),
  :func:`mcnemar_exact`;
- dimensions (issue 14): :func:`ccc` (vectorised over resamples, optionally on a subset of clips given as
  weights), :func:`paired_bootstrap_ccc` (per target and of the mean over targets),
  :func:`paired_bootstrap_ccc_gap` (female − male mean CCC);
- folds and families: :func:`wilcoxon_folds`, :func:`holm`.

Every bootstrap resamples clips with replacement and scores both systems on the same draw; the two-sided
p-value is ``min(1, 2·min(#{δ* ≤ 0}+1, #{δ* ≥ 0}+1)/(B+1))`` and the interval the 2.5/97.5 percentiles.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import binomtest, wilcoxon

from ser_hf.metrics import ccc_many as ccc  # the one CCC definition, vectorised over resamples and groups

MIN_FOLDS_WILCOXON = 5

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
# Dimensions: concordance correlation (issue 14)
# --------------------------------------------------------------------------------------------------


def _bootstrap_summary(observed, deltas: np.ndarray) -> dict:
    """p-value and 95% interval of resampled differences (NaN resamples, e.g. without clips of a group,
    are left out)."""
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        return {"delta": float(observed), "ci_low": float("nan"), "ci_high": float("nan"), "p": float("nan")}
    eps = 1e-12
    below, above = int(np.sum(deltas <= eps)), int(np.sum(deltas >= -eps))
    p = min(1.0, 2 * min(below + 1, above + 1) / (deltas.size + 1))
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return {"delta": float(observed), "ci_low": float(lo), "ci_high": float(hi), "p": float(p)}


def _resample_counts(rng, n: int, m: int) -> np.ndarray:
    """(m, n) how often each clip is drawn in each of m resamples of n clips with replacement."""
    idx = rng.integers(0, n, size=(m, n))
    counts = np.zeros((m, n))
    np.add.at(counts, (np.arange(m)[:, None], idx), 1.0)
    return counts


def _check_values(true, pred_a, pred_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, a, b = (np.asarray(x, dtype=np.float64) for x in (true, pred_a, pred_b))
    t, a, b = (x[:, None] if x.ndim == 1 else x for x in (t, a, b))
    if t.ndim != 2 or t.size == 0 or a.shape != t.shape or b.shape != t.shape:
        raise ValueError(f"paired CCC tests need equal, non-empty (clips, targets) arrays; got {t.shape}, "
                         f"{a.shape}, {b.shape}")
    return t, a, b


def paired_bootstrap_ccc(true, pred_a, pred_b, targets: Sequence[str], n_resamples: int = 2000, seed: int = 0,
                         chunk: int = 250) -> dict:
    """Paired bootstrap over clips of CCC(A) − CCC(B) per target and of the mean CCC over targets.

    ``true``/``pred_*``: ``(clips, len(targets))``. Returns ``{target: {ccc_a, ccc_b, delta, ci_low, ci_high,
    p}, ..., "mean": {...}, "n_resamples"}``."""
    t, a, b = _check_values(true, pred_a, pred_b)
    targets = list(targets)
    if len(targets) != t.shape[1]:
        raise ValueError(f"{len(targets)} target names for {t.shape[1]} value columns")
    n = t.shape[0]
    obs_a, obs_b = ccc(t, a), ccc(t, b)
    rng = np.random.default_rng(seed)
    deltas = np.empty((n_resamples, len(targets) + 1))
    chunk = max(1, min(chunk, int(4e6 // max(1, n * len(targets)))))
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        w = _resample_counts(rng, n, m)
        ca, cb = ccc(t, a, w), ccc(t, b, w)
        deltas[start:start + m, :-1] = ca - cb
        deltas[start:start + m, -1] = ca.mean(axis=1) - cb.mean(axis=1)
    out: dict = {"n_resamples": n_resamples}
    names = [*targets, "mean"]
    va, vb = [*obs_a, obs_a.mean()], [*obs_b, obs_b.mean()]
    for j, name in enumerate(names):
        out[name] = {"ccc_a": float(va[j]), "ccc_b": float(vb[j]),
                     **_bootstrap_summary(va[j] - vb[j], deltas[:, j])}
    return out


def paired_bootstrap_ccc_gap(true, pred_a, pred_b, female, male, n_resamples: int = 2000, seed: int = 0,
                             chunk: int = 250) -> dict:
    """Paired bootstrap over clips of gap(A) − gap(B), gap = mean CCC(female clips) − mean CCC(male clips);
    clips of unknown gender take part in the draw but in neither group (as :func:`paired_bootstrap_gap`)."""
    t, a, b = _check_values(true, pred_a, pred_b)
    female, male = np.asarray(female, bool), np.asarray(male, bool)
    if not female.any() or not male.any():
        raise ValueError("paired_bootstrap_ccc_gap needs clips of both genders")

    def gaps(pred, w):
        return ccc(t, pred, w * female).mean(axis=-1) - ccc(t, pred, w * male).mean(axis=-1)

    one = np.ones(t.shape[0])
    gap_a, gap_b = float(gaps(a, one)), float(gaps(b, one))
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_resamples)
    chunk = max(1, min(chunk, int(4e6 // max(1, t.size))))
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        w = _resample_counts(rng, t.shape[0], m)
        deltas[start:start + m] = gaps(a, w) - gaps(b, w)
    return {"gap_a": gap_a, "gap_b": gap_b, **_bootstrap_summary(gap_a - gap_b, deltas), "n_resamples": n_resamples}


__all__ = ["MIN_FOLDS_WILCOXON", "ccc", "holm", "mcnemar_exact", "paired_bootstrap", "paired_bootstrap_ccc",
           "paired_bootstrap_ccc_gap", "paired_bootstrap_gap", "wilcoxon_folds"]

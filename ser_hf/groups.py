"""Per-speaker and per-gender results: does the model work equally for every speaker, for women and men?

:func:`group_metrics` adds to a split's metrics (the ``ser_hf.metrics.compute_metrics`` dict) the
macro-F1 (same definition: mean over the classes present in the group's references), UAR, accuracy and
clip count per test speaker and per gender, the worst speaker, and the female − male macro-F1 gap. A split
with one gender only (TESS is all female, SAVEE all male) or without gender metadata gets
``gender_gap: null`` and a ``gender_gap_note`` saying why, never an error.

:func:`regression_group_metrics` is the same for dimensional (regression) runs, scored by ``ccc_mean`` (the mean
CCC over targets); such a split's metrics carry ``"group_score": "ccc_mean"`` and every summary, report line and
table below reads its score key from there (``macro_f1`` otherwise).

:func:`summary` is what metrics.json shows first and :func:`report_lines` what classification_report.txt
prints at its top. Gender values are normalised by :func:`normalise_gender` (``female``/``f``/``w``,
``male``/``m``; anything else, e.g. "" for an unknown CREMA-D actor, counts as unknown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ser_hf.metrics import _as_indices, compute_metrics, compute_regression_metrics

GENDERS = ("female", "male")
_ALIASES = {"female": "female", "f": "female", "w": "female", "woman": "female", "women": "female",
            "male": "male", "m": "male", "man": "male", "men": "male"}


def normalise_gender(value: Any) -> str | None:
    """"female" / "male", or None when unknown."""
    if value is None:
        return None
    return _ALIASES.get(str(value).strip().lower())


def _scores(refs: np.ndarray, preds: np.ndarray, label_names: Sequence[str]) -> dict:
    m = compute_metrics(refs, preds, label_names)
    return {"macro_f1": m["macro_f1"], "uar": m["uar"], "accuracy": m["accuracy"], "n": int(refs.size)}


def group_metrics(references, predictions, speakers: Sequence, genders: Sequence | None,
                  label_names: Sequence[str]) -> dict[str, Any]:
    """``{"per_speaker", "per_gender", "worst_speaker", "gender_gap"[, "gender_gap_note"]}`` for one split.

    ``per_speaker``: {speaker: {macro_f1, uar, accuracy, n, gender}}; ``per_gender``: {female|male: {macro_f1,
    uar, accuracy, n, speakers}}; ``gender_gap``: macro-F1(female) − macro-F1(male), or None (see the note).
    """
    refs = _as_indices(references, label_names, "references")
    preds = _as_indices(predictions, label_names, "predictions")
    if refs.size != preds.size:
        raise ValueError(f"group_metrics: {refs.size} references, {preds.size} predictions")
    return _groups(refs.size, speakers, genders, lambda m: _scores(refs[m], preds[m], label_names), "macro_f1")


def _regression_scores(true: np.ndarray, pred: np.ndarray, targets: Sequence[str]) -> dict:
    n = int(true.shape[0])
    if n < 2:  # one clip has no variance: no CCC
        return {"ccc_mean": None, "n": n}
    m = compute_regression_metrics(true, pred, targets)
    return {"ccc_mean": m["ccc_mean"], **{f"ccc_{t}": m[f"ccc_{t}"] for t in targets}, "n": n}


def regression_group_metrics(true, pred, speakers: Sequence, genders: Sequence | None,
                             targets: Sequence[str]) -> dict[str, Any]:
    """:func:`group_metrics` for dimensional runs: per speaker / gender ``ccc_mean`` (and ``ccc_<target>``, ``n``),
    the worst speaker and the female − male ``ccc_mean`` gap; ``group_score: "ccc_mean"``. ``true``/``pred``:
    (n, len(targets)) arrays. A group of one clip has ``ccc_mean: None`` (and is never the worst speaker)."""
    t = np.asarray(true, dtype=np.float64).reshape(len(true), -1)
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    if t.shape != p.shape:
        raise ValueError(f"regression_group_metrics: true {t.shape} and pred {p.shape} differ")
    out = _groups(len(t), speakers, genders, lambda m: _regression_scores(t[m], p[m], targets), "ccc_mean")
    return {"group_score": "ccc_mean", **out}


def _groups(n: int, speakers: Sequence, genders: Sequence | None, score, key: str) -> dict[str, Any]:
    """Per speaker / per gender ``score(mask)`` dicts, worst speaker and gender gap by ``key``."""
    spk = np.asarray([str(s) for s in speakers])
    if spk.size != n:
        raise ValueError(f"group_metrics: {n} predictions, {spk.size} speakers")
    gen = np.asarray([normalise_gender(g) or "" for g in (genders if genders is not None else [""] * spk.size)])
    if gen.size != spk.size:
        raise ValueError(f"group_metrics: {gen.size} genders for {spk.size} clips")
    per_speaker = {}
    for s in sorted(set(spk.tolist())):
        mask = spk == s
        g = sorted(set(gen[mask].tolist()) - {""})
        per_speaker[s] = {**score(mask), "gender": g[0] if len(g) == 1 else None}
    per_gender = {}
    for g in GENDERS:
        mask = gen == g
        if mask.any():
            per_gender[g] = {**score(mask), "speakers": sorted(set(spk[mask].tolist()))}
    out: dict[str, Any] = {"per_speaker": per_speaker, "per_gender": per_gender}
    scored = [s for s in per_speaker if per_speaker[s][key] is not None]
    if scored:
        worst = min(scored, key=lambda s: (per_speaker[s][key], s))
        out["worst_speaker"] = {"speaker": worst, key: per_speaker[worst][key], "n": per_speaker[worst]["n"]}
    else:
        out["worst_speaker"] = None
    if len(per_gender) == 2 and None not in (per_gender["female"][key], per_gender["male"][key]):
        out["gender_gap"] = per_gender["female"][key] - per_gender["male"][key]
    elif len(per_gender) == 2:
        out["gender_gap"] = None
        out["gender_gap_note"] = "n/a: a gender group has a single clip"
    else:
        out["gender_gap"] = None
        out["gender_gap_note"] = (f"n/a: only {next(iter(per_gender))} speakers in this split" if per_gender
                                  else "n/a: no gender metadata for these speakers")
    return out


def score_key(split_metrics: Mapping[str, Any]) -> str:
    """The score the groups of a split are ranked by: ``macro_f1``, or ``ccc_mean`` for dimensional runs."""
    return str(split_metrics.get("group_score") or "macro_f1")


def _score_name(key: str) -> str:
    return {"macro_f1": "macro-F1", "ccc_mean": "mean CCC"}.get(key, key)


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """{split: {"worst_speaker", "gender_gap", ["gender_gap_note"], "female_<score>", "male_<score>"}} with
    <score> = macro_f1 (or ccc_mean for dimensional runs, which also say ``"group_score": "ccc_mean"``)."""
    out = {}
    for split in ("validation", "test"):
        m = metrics.get(split)
        if not isinstance(m, Mapping) or "per_speaker" not in m:
            continue
        key = score_key(m)
        entry = {"worst_speaker": m.get("worst_speaker"), "gender_gap": m.get("gender_gap")}
        if key != "macro_f1":
            entry["group_score"] = key
        if m.get("gender_gap_note"):
            entry["gender_gap_note"] = m["gender_gap_note"]
        for g in GENDERS:
            entry[f"{g}_{key}"] = (m.get("per_gender") or {}).get(g, {}).get(key)
        out[split] = entry
    return out


def gap_text(entry: Mapping[str, Any]) -> str:
    if entry.get("gender_gap") is None:
        return f"female − male gap {entry.get('gender_gap_note') or 'n/a'}"
    key = score_key(entry)
    return (f"female {entry[f'female_{key}']:.3f} vs male {entry[f'male_{key}']:.3f}: "
            f"female − male gap {entry['gender_gap']:+.3f}")


def report_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The lines classification_report.txt shows at its top: worst speaker and gender gap per split."""
    lines = []
    for split, entry in summary(metrics).items():
        worst, key = entry.get("worst_speaker"), score_key(entry)
        w = (f"worst speaker {worst['speaker']} ({_score_name(key)} {worst[key]:.3f}, {worst['n']} clips)"
             if worst else "no speakers")
        lines.append(f"{split}: {w}; {gap_text(entry)}")
    return lines


def table_lines(split_metrics: Mapping[str, Any]) -> list[str]:
    """Per-speaker and per-gender macro-F1 table of one split (empty when not computed)."""
    per_speaker = split_metrics.get("per_speaker")
    if not per_speaker:
        return []
    if score_key(split_metrics) == "ccc_mean":
        def fmt(v):
            return f"{v:>9.3f}" if v is not None else f"{'-':>9}"

        lines = [f"{'speaker':>10} {'gender':>7} {'clips':>6} {'mean CCC':>9}"]
        for s, m in per_speaker.items():
            lines.append(f"{s:>10} {m.get('gender') or '?':>7} {m['n']:>6} {fmt(m['ccc_mean'])}")
        for g, m in (split_metrics.get("per_gender") or {}).items():
            lines.append(f"{'all ' + g:>10} {'':>7} {m['n']:>6} {fmt(m['ccc_mean'])}")
        return lines
    lines = [f"{'speaker':>10} {'gender':>7} {'clips':>6} {'macro-F1':>9} {'UAR':>6}"]
    for s, m in per_speaker.items():
        lines.append(f"{s:>10} {m.get('gender') or '?':>7} {m['n']:>6} {m['macro_f1']:>9.3f} {m['uar']:>6.3f}")
    for g, m in (split_metrics.get("per_gender") or {}).items():
        lines.append(f"{'all ' + g:>10} {'':>7} {m['n']:>6} {m['macro_f1']:>9.3f} {m['uar']:>6.3f}")
    return lines


__all__ = ["GENDERS", "gap_text", "group_metrics", "normalise_gender", "regression_group_metrics", "report_lines",
           "score_key", "summary", "table_lines"]

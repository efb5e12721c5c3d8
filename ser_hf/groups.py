"""Per-speaker and per-gender results: does the model work equally for every speaker, for women and men?

:func:`group_metrics` adds to a split's metrics (the ``ser_hf.metrics.compute_metrics`` dict) the
macro-F1 (same definition: mean over the classes present in the group's references), UAR, accuracy and
clip count per test speaker and per gender, the worst speaker, and the female − male macro-F1 gap. A split
with one gender only (TESS is all female, SAVEE all male) or without gender metadata gets
``gender_gap: null`` and a ``gender_gap_note`` saying why, never an error.

:func:`summary` is what metrics.json shows first and :func:`report_lines` what classification_report.txt
prints at its top. Gender values are normalised by :func:`normalise_gender` (``female``/``f``/``w``,
``male``/``m``; anything else, e.g. "" for an unknown CREMA-D actor, counts as unknown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ser_hf.metrics import _as_indices, compute_metrics

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
    spk = np.asarray([str(s) for s in speakers])
    if not (refs.size == preds.size == spk.size):
        raise ValueError(f"group_metrics: {refs.size} references, {preds.size} predictions, {spk.size} speakers")
    gen = np.asarray([normalise_gender(g) or "" for g in (genders if genders is not None else [""] * spk.size)])
    if gen.size != spk.size:
        raise ValueError(f"group_metrics: {gen.size} genders for {spk.size} clips")
    per_speaker = {}
    for s in sorted(set(spk.tolist())):
        mask = spk == s
        g = sorted(set(gen[mask].tolist()) - {""})
        per_speaker[s] = {**_scores(refs[mask], preds[mask], label_names), "gender": g[0] if len(g) == 1 else None}
    per_gender = {}
    for g in GENDERS:
        mask = gen == g
        if mask.any():
            per_gender[g] = {**_scores(refs[mask], preds[mask], label_names),
                             "speakers": sorted(set(spk[mask].tolist()))}
    out: dict[str, Any] = {"per_speaker": per_speaker, "per_gender": per_gender}
    if per_speaker:
        worst = min(per_speaker, key=lambda s: (per_speaker[s]["macro_f1"], s))
        out["worst_speaker"] = {"speaker": worst, "macro_f1": per_speaker[worst]["macro_f1"],
                                "n": per_speaker[worst]["n"]}
    else:
        out["worst_speaker"] = None
    if len(per_gender) == 2:
        out["gender_gap"] = per_gender["female"]["macro_f1"] - per_gender["male"]["macro_f1"]
    else:
        out["gender_gap"] = None
        out["gender_gap_note"] = (f"n/a: only {next(iter(per_gender))} speakers in this split" if per_gender
                                  else "n/a: no gender metadata for these speakers")
    return out


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """{split: {"worst_speaker", "gender_gap", ["gender_gap_note"], "female_macro_f1", "male_macro_f1"}}."""
    out = {}
    for split in ("validation", "test"):
        m = metrics.get(split)
        if not isinstance(m, Mapping) or "per_speaker" not in m:
            continue
        entry = {"worst_speaker": m.get("worst_speaker"), "gender_gap": m.get("gender_gap")}
        if m.get("gender_gap_note"):
            entry["gender_gap_note"] = m["gender_gap_note"]
        for g in GENDERS:
            entry[f"{g}_macro_f1"] = (m.get("per_gender") or {}).get(g, {}).get("macro_f1")
        out[split] = entry
    return out


def gap_text(entry: Mapping[str, Any]) -> str:
    if entry.get("gender_gap") is None:
        return f"female − male gap {entry.get('gender_gap_note') or 'n/a'}"
    return (f"female {entry['female_macro_f1']:.3f} vs male {entry['male_macro_f1']:.3f}: "
            f"female − male gap {entry['gender_gap']:+.3f}")


def report_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The lines classification_report.txt shows at its top: worst speaker and gender gap per split."""
    lines = []
    for split, entry in summary(metrics).items():
        worst = entry.get("worst_speaker")
        w = (f"worst speaker {worst['speaker']} (macro-F1 {worst['macro_f1']:.3f}, {worst['n']} clips)"
             if worst else "no speakers")
        lines.append(f"{split}: {w}; {gap_text(entry)}")
    return lines


def table_lines(split_metrics: Mapping[str, Any]) -> list[str]:
    """Per-speaker and per-gender macro-F1 table of one split (empty when not computed)."""
    per_speaker = split_metrics.get("per_speaker")
    if not per_speaker:
        return []
    lines = [f"{'speaker':>10} {'gender':>7} {'clips':>6} {'macro-F1':>9} {'UAR':>6}"]
    for s, m in per_speaker.items():
        lines.append(f"{s:>10} {m.get('gender') or '?':>7} {m['n']:>6} {m['macro_f1']:>9.3f} {m['uar']:>6.3f}")
    for g, m in (split_metrics.get("per_gender") or {}).items():
        lines.append(f"{'all ' + g:>10} {'':>7} {m['n']:>6} {m['macro_f1']:>9.3f} {m['uar']:>6.3f}")
    return lines


__all__ = ["GENDERS", "gap_text", "group_metrics", "normalise_gender", "report_lines", "summary", "table_lines"]

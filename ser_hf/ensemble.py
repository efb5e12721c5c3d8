"""Late fusion of finished cross-validations: average clip probabilities fold by fold.

``scripts/ensemble.py runs=[CV_DIR,...] [weights=equal|validation] [output_dir=OUT] [name=NAME]``

Each member is a cross-validation folder (``<dir>/fold<k>/`` run folders, what ``scripts/crossval.py``
writes) or a single run folder. The members must share one fold plan: corpus, split, label set, fold
numbers, and in every fold the same test speakers and test clips with the same labels; otherwise this
refuses, naming the member, fold and what differs. The fused model writes ``OUT/fold<k>/`` run folders
(``metrics.json``, ``predictions.csv``, report, confusion matrix) that ``scripts/compare.py`` reads beside
its members' folds, plus ``OUT/crossval_summary.*`` and ``OUT/ensemble.json`` (members and weights per fold).

``weights=equal`` averages the members' probabilities. ``weights=validation`` chooses, in each fold, the
convex weights (a simplex grid) that maximise macro-F1 on that fold's *validation* speakers, never its test
speakers; ties go to the weights nearest to equal. Members need validation predictions for that: classic
recipes train on the validation speakers by default (``model.train_on_validation``), so run them with
``model.train_on_validation=false``; a member without them is refused, naming member and fold.

Classic models report a softmax over SVM decision values rather than calibrated probabilities, so members'
scores differ in sharpness; averaging them is the plain late fusion the SER literature reports.

Dimensional members (``task=regression``, issue 14) are fused the same way on their values: the weighted mean of
the members' ``pred_<target>``, per clip; ``weights=validation`` then maximises the mean CCC over targets on the
validation speakers. The members must rate the same targets with the same true values. Multitask members, and a
classification member beside a regression one, are refused.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser_hf.config import list_arg as _list_arg
from ser_hf.config import parse_key_values
from ser_hf.crossval import RunResult, discover_runs, load_run, summarize_folds
from ser_hf.metrics import compute_metrics, compute_regression_metrics
from ser_hf.reporting import (
    PREDICTIONS_FILE,
    read_predictions,
    write_json,
    write_predictions,
    write_report,
)

logger = logging.getLogger(__name__)

__all__ = ["WEIGHTS", "Member", "ensemble", "ensemble_from_args", "load_member", "validation_weights"]

WEIGHTS = ("equal", "validation")
MANIFEST = "ensemble.json"


@dataclass
class Member:
    """One member: its fold runs keyed by fold number (None for a single run)."""

    path: Path
    runs: dict[int | None, RunResult]

    @property
    def name(self) -> str:
        return next(iter(self.runs.values())).recipe

    def where(self, fold) -> str:
        return f"member {self.name!r} ({self.path}), fold {fold}"


def load_member(path: str | os.PathLike) -> Member:
    """Read a cross-validation folder (or one run folder) as a member."""
    path = Path(path)
    runs: dict[int | None, RunResult] = {}
    for run_dir in discover_runs(path):
        run = load_run(run_dir)
        if run.fold in runs:
            raise ValueError(f"{path}: fold {run.fold} appears twice ({runs[run.fold].run_dir} and {run_dir})")
        runs[run.fold] = run
    return Member(path, runs)


def _rows(run: RunResult, split: str) -> list[dict]:
    if split == "test":
        return list(run.test_rows)
    return [r for r in read_predictions(run.run_dir / PREDICTIONS_FILE) if r["split"] == split]


def _probs(rows: Sequence[dict], label_names: Sequence[str], where: str) -> np.ndarray:
    cols = [f"prob_{n}" for n in label_names]
    missing = [c for c in cols if c not in rows[0]]
    if missing:
        raise ValueError(f"{where}: predictions.csv lacks probability columns {missing}; late fusion needs "
                         "every class's probability")
    p = np.asarray([[r[c] for c in cols] for r in rows], dtype=np.float64)
    if not np.isfinite(p).all():
        raise ValueError(f"{where}: predictions.csv holds empty or non-finite probabilities")
    return p


def _check_plan(members: Sequence[Member]) -> list:
    """Refuse members whose fold plans differ (naming what differs); return the folds."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
    ref = members[0]
    ref_run = next(iter(ref.runs.values()))
    folds = sorted(ref.runs, key=lambda f: -1 if f is None else f)
    for m in members[1:]:
        run = next(iter(m.runs.values()))
        for field in ("corpus", "split", "label_names", "targets"):
            a, b = getattr(ref_run, field), getattr(run, field)
            if a != b:
                raise ValueError(f"fold plans differ: member {ref.name!r} ({ref.path}) has {field} {a!r}, "
                                 f"member {m.name!r} ({m.path}) has {b!r}")
        other = sorted(m.runs, key=lambda f: -1 if f is None else f)
        if other != folds:
            raise ValueError(f"fold plans differ: member {ref.name!r} ({ref.path}) has folds {folds}, "
                             f"member {m.name!r} ({m.path}) has folds {other}")
        for k in folds:
            a, b = ref.runs[k], m.runs[k]
            if a.test_speakers != b.test_speakers:
                raise ValueError(f"fold plans differ: fold {k} test speakers are {a.test_speakers} in member "
                                 f"{ref.name!r} ({ref.path}) but {b.test_speakers} in member {m.name!r} ({m.path})")
            truth = (lambda r: r["label"]) if a.has_labels else (lambda r: tuple(round(r[f"true_{t}"], 6)
                                                                                      for t in a.targets))
            la = {(r["corpus"], r["file"]): truth(r) for r in a.test_rows}
            lb = {(r["corpus"], r["file"]): truth(r) for r in b.test_rows}
            if la != lb:
                diff = sorted(set(la.items()) ^ set(lb.items()))
                raise ValueError(f"fold plans differ: fold {k} test clips or labels differ between member "
                                 f"{ref.name!r} ({ref.path}) and member {m.name!r} ({m.path}), "
                                 f"e.g. {[f'{f} = {lab}' for (_, f), lab in diff[:3]]}")
    return folds


def _aligned_rows(member: Member, fold, split: str, keys: Sequence[tuple]) -> list[dict]:
    """The member's ``split`` prediction rows of one fold in the order of ``keys`` (the first member's clips)."""
    rows = _rows(member.runs[fold], split)
    by_key = {(r["corpus"], r["file"]): r for r in rows}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise ValueError(f"{member.where(fold)}: {len(missing)} {split} clip(s) of the first member are missing, "
                         f"e.g. {[f for _, f in missing[:3]]}")
    return [by_key[k] for k in keys]


def _aligned(member: Member, fold, split: str, keys: Sequence[tuple], label_names) -> np.ndarray:
    return _probs(_aligned_rows(member, fold, split, keys), label_names, member.where(fold))


def _simplex(m: int) -> np.ndarray:
    """Convex weight vectors on a grid: step 1/10 up to 4 members, coarser beyond (a few thousand at most)."""
    steps = 10 if m <= 4 else 5 if m <= 7 else 2
    grid = [np.asarray(c) / steps for c in itertools.product(range(steps + 1), repeat=m) if sum(c) == steps]
    return np.asarray(grid)


def validation_weights(probs: Sequence[np.ndarray], refs: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
    """The simplex-grid weights maximising macro-F1 of the weighted mean on these (validation) clips; ties
    go to the weights nearest to equal."""
    stack = np.stack(probs)  # (M, n, C)
    equal = np.full(len(probs), 1.0 / len(probs))
    best, best_key = equal, None
    for w in _simplex(len(probs)):
        pred = np.tensordot(w, stack, axes=1).argmax(axis=1)
        key = (round(compute_metrics(refs, pred, label_names)["macro_f1"], 12), -float(np.sum((w - equal) ** 2)))
        if best_key is None or key > best_key:
            best, best_key = w, key
    return best


def _fused_task(members: Sequence[Member]) -> str:
    """classification or regression: what the members share and this module fuses; anything else refused."""
    tasks = {m.name: next(iter(m.runs.values())).task for m in members}
    kinds = set(tasks.values())
    if kinds == {"classification"} or kinds == {"regression"}:
        return kinds.pop()
    described = ", ".join(f"{n!r}: {t}" for n, t in tasks.items())
    if "multitask" in kinds:
        raise ValueError(f"late fusion of multitask members is not implemented ({described}); fuse their classes or "
                         "their values by ensembling classification or regression runs")
    raise ValueError(f"cannot fuse a classification member with a regression member ({described}): one averages "
                     "class probabilities, the other dimension values")


def _values(rows: Sequence[dict], prefix: str, targets: Sequence[str], where: str) -> np.ndarray:
    cols = [f"{prefix}_{t}" for t in targets]
    missing = [c for c in cols if c not in rows[0]]
    if missing:
        raise ValueError(f"{where}: predictions.csv lacks columns {missing}")
    v = np.asarray([[r[c] for c in cols] for r in rows], dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"{where}: predictions.csv holds empty or non-finite {prefix}_<target> values")
    return v


def _aligned_values(member: Member, fold, split: str, keys: Sequence[tuple], targets) -> np.ndarray:
    return _values(_aligned_rows(member, fold, split, keys), "pred", targets, member.where(fold))


def validation_value_weights(preds: Sequence[np.ndarray], true: np.ndarray, targets: Sequence[str]) -> np.ndarray:
    """The simplex-grid weights maximising the mean CCC over targets of the weighted mean values on these
    (validation) clips; ties go to the weights nearest to equal."""
    stack = np.stack(preds)  # (M, n, T)
    equal = np.full(len(preds), 1.0 / len(preds))
    best, best_key = equal, None
    for w in _simplex(len(preds)):
        score = compute_regression_metrics(true, np.tensordot(w, stack, axes=1), targets)["ccc_mean"]
        key = (round(score, 12), -float(np.sum((w - equal) ** 2)))
        if best_key is None or key > best_key:
            best, best_key = w, key
    return best


def _fuse_values(members: Sequence[Member], fold, split: str, keys: Sequence[tuple], src: dict, w: np.ndarray,
                 targets: Sequence[str]) -> tuple[dict, list[dict]]:
    """(metrics, predictions.csv rows) of one split: the members' values averaged with weights ``w``."""
    fused = np.tensordot(w, np.stack([_aligned_values(m, fold, split, keys, targets) for m in members]), axes=1)
    true = _values([src[key] for key in keys], "true", targets, members[0].where(fold))
    rows = []
    for key, t_row, p_row in zip(keys, true, fused):
        r = src[key]
        rows.append({"split": split, "corpus": r["corpus"], "file": r["file"], "speaker_id": r["speaker_id"],
                     **{c: v for t, a, b in zip(targets, t_row, p_row) for c, v in ((f"true_{t}", a), (f"pred_{t}", b))},
                     **({"gender": r["gender"]} if "gender" in r else {})})
    return compute_regression_metrics(true, fused, targets), rows


def _speakers(runs: Sequence[RunResult]) -> dict:
    sp = [r.metrics["speakers"] for r in runs]
    train = sorted({str(s) for d in sp for s in d.get("train", [])})
    val = sorted({str(s) for d in sp for s in d.get("validation", [])} - set(train))
    return {"train": train, "validation": val, "test": runs[0].test_speakers}


def ensemble(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None, weights: str = "equal",
             name: str | None = None) -> Path:
    """Fuse the members at ``paths`` fold by fold into ``out_dir`` (default ``runs/ensembles/<name>-<weights>``;
    see the module docstring); returns it."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r} is not one of {list(WEIGHTS)}")
    members = [load_member(p) for p in paths]
    first = next(iter(members[0].runs.values()))
    regression = _fused_task(members) == "regression"
    folds = _check_plan(members)
    label_names = first.label_names
    targets = list(first.targets)
    names = [m.name for m in members]
    if name is None:
        name = "ensemble_" + "+".join(n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names))
    has_val = {(i, k): bool(_rows(m.runs[k], "validation")) for i, m in enumerate(members) for k in folds}
    if weights == "validation":
        for (i, k), ok in has_val.items():
            if not ok:
                raise ValueError(
                    f"weights=validation: {members[i].where(k)} has no validation predictions (no split=validation "
                    f"rows in {members[i].runs[k].run_dir / PREDICTIONS_FILE}); re-run that member with "
                    "model.train_on_validation=false, or use weights=equal")
    out = Path(out_dir) if out_dir else Path("runs") / "ensembles" / f"{name}-{weights}"
    fold_dirs, manifest = [], {"members": [{"recipe": n, "path": str(m.path)} for n, m in zip(names, members)],
                               "weights": weights, "folds": {}}
    for k in folds:
        runs = [m.runs[k] for m in members]
        splits = ["test"] + (["validation"] if all(has_val[(i, k)] for i in range(len(members))) else [])
        w = np.full(len(members), 1.0 / len(members))
        keys_of = {}
        for split in splits:
            keys_of[split] = [(r["corpus"], r["file"]) for r in _rows(runs[0], split)]
        if weights == "validation" and regression:
            val_rows = {(r["corpus"], r["file"]): r for r in _rows(runs[0], "validation")}
            true = _values([val_rows[key] for key in keys_of["validation"]], "true", targets, members[0].where(k))
            preds = [_aligned_values(m, k, "validation", keys_of["validation"], targets) for m in members]
            w = validation_value_weights(preds, true, targets)
        elif weights == "validation":
            val_rows = {(r["corpus"], r["file"]): r for r in _rows(runs[0], "validation")}
            refs = np.asarray([label_names.index(val_rows[key]["label"]) for key in keys_of["validation"]])
            probs = [_aligned(m, k, "validation", keys_of["validation"], label_names) for m in members]
            w = validation_weights(probs, refs, label_names)
        rows = []
        metrics = {
            "recipe": name, "corpus": first.corpus, "split": first.split, "fold": k, "seed": first.seed,
            "leaky": any(r.leaky for r in runs), "label_set": first.metrics.get("label_set"),
            "speakers": _speakers(runs), "skipped": first.metrics.get("skipped", []), "best_epoch": None,
            "train_seconds": round(sum(float(r.metrics.get("train_seconds") or 0.0) for r in runs), 3),
            "model_family": "ensemble", "features": None, "num_parameters": None, "label_names": label_names,
            **({"task": "regression", "targets": targets} if regression else {}),
            "ensemble": {"weights_rule": weights, "members": [str(r.run_dir) for r in runs],
                         "weights": [float(x) for x in w]},
        }
        for split in splits:
            src = {(r["corpus"], r["file"]): r for r in _rows(runs[0], split)}
            if regression:
                metrics[split], fused_rows = _fuse_values(members, k, split, keys_of[split], src, w, targets)
                rows += fused_rows
                continue
            p = np.tensordot(w, np.stack([_aligned(m, k, split, keys_of[split], label_names) for m in members]),
                             axes=1)
            pred = p.argmax(axis=1)
            labels = [src[key]["label"] for key in keys_of[split]]
            metrics[split] = compute_metrics(labels, pred, label_names)
            for key, pi, row in zip(keys_of[split], pred, p):
                r = src[key]
                rows.append({"split": split, "corpus": r["corpus"], "file": r["file"], "speaker_id": r["speaker_id"],
                             "label": r["label"], "prediction": label_names[pi],
                             **{f"prob_{n}": float(v) for n, v in zip(label_names, row)}})
        if weights == "validation":
            metrics["ensemble"]["note"] = "validation scores are optimistic: the weights were chosen on them"
        fold_dir = out / ("run" if k is None else f"fold{k}")
        write_predictions(fold_dir / PREDICTIONS_FILE, rows, label_names=label_names)
        write_report(fold_dir, metrics, predictions=rows if regression else None)
        fold_dirs.append(fold_dir)
        key = "ccc_mean" if regression else "macro_f1"
        manifest["folds"][str(k)] = {"weights": [float(x) for x in w], f"test_{key}": metrics["test"][key]}
        logger.info("fold %s: weights %s, test %s %.3f", k, np.round(w, 2).tolist(), key, metrics["test"][key])
    write_json(out / MANIFEST, manifest)
    if len(fold_dirs) > 1:
        summarize_folds(fold_dirs, out)
    return out


def ensemble_from_args(args: Sequence[str]) -> Path:
    """``runs=[dir,...] [weights=equal|validation] [output_dir=OUT] [name=NAME]``."""
    opts = parse_key_values(list(args), required=("runs",), optional={"weights": str, "output_dir": str, "name": str})
    runs = _list_arg(opts["runs"])
    weights = opts.get("weights", "equal")
    return ensemble(runs, opts.get("output_dir"), weights=weights, name=opts.get("name"))

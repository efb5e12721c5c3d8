"""Leave-one-speaker-out macro-F1 of recipes on the real EmoDB copy, and the leakage lesson.

    python benchmarks/emodb_loso.py --data-dir ../shared/data/emodb --recipes svm_stats_emodb cnn2d_emodb ...
    python benchmarks/emodb_loso.py --data-dir ../shared/data/emodb --leakage cnn2d_emodb

Each recipe is cross-validated with ``scripts/crossval.py`` semantics (10 LOSO folds, resumable: a
finished fold is not re-run; ``--jobs N`` runs N folds at once), into ``--runs DIR/<recipe>``. The table (mean ± std over folds, pooled
macro-F1, train time) is written to ``--out`` (default benchmarks/results/emodb_loso.md), together with
the command, the machine and the date. ``--leakage R`` also runs R under the leaky utterance-level
random split (the seed projects' protocol) and prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from ser_hf.config import load_config
from ser_hf.crossval import SUMMARY_JSON, crossval_recipe, plan_folds, run_parallel, why_incomplete
from ser_hf.experiment import run


def machine() -> str:
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{platform.machine()} {os.cpu_count()} CPUs{gpu}, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.platform()}")


def row(recipe: str, summary: dict) -> str:
    m, s = summary["mean"], summary["std"]
    secs = sum(f.get("train_seconds") or 0 for f in summary["folds"])
    return (f"| `{recipe}` | {m['macro_f1']:.3f} ± {s['macro_f1']:.3f} | {m['uar']:.3f} ± {s['uar']:.3f} | "
            f"{m['accuracy']:.3f} ± {s['accuracy']:.3f} | {summary['pooled']['macro_f1']:.3f} | "
            f"{summary['n_folds']} | {secs:.0f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="the EmoDB folder (wav/ inside)")
    ap.add_argument("--recipes", nargs="*", default=[])
    ap.add_argument("--leakage", nargs="*", default=[], help="recipes to also run under split=random (leaky)")
    ap.add_argument("--runs", default="runs/benchmarks/emodb_loso")
    ap.add_argument("--jobs", type=int, default=1, help="folds run at once, each in its own process")
    ap.add_argument("--out", default="benchmarks/results/emodb_loso.md")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every recipe")
    args = ap.parse_args(argv)
    if not Path(args.data_dir, "wav").is_dir():
        ap.error(f"--data-dir {args.data_dir}: no wav/ folder there (expected the EmoDB layout wav/03a01Fa.wav)")

    common = ["data.corpus=emodb", f"data.data_dir={args.data_dir}", "trainer.progress_bar=false", *args.overrides]
    loso = {r: [f"recipe={r}", *common, "data.split=loso"] for r in args.recipes}
    leaky_dir = {r: Path(args.runs) / (r + "-random") for r in args.leakage}
    leaky_args = {r: [f"recipe={r}", *common, "data.split=random"] for r in args.leakage}
    if args.jobs > 1:
        # One queue over every fold of every recipe (and the leaky runs), so no core waits for a
        # recipe's slowest fold; then the summaries below only read the finished folds.
        folds = {r: plan_folds(loso[r], Path(args.runs) / r).tasks() for r in args.recipes}
        tasks = []
        for recipe in args.recipes:
            tasks += folds[recipe] + ([(leaky_dir[recipe], leaky_args[recipe])] if recipe in leaky_dir else [])
        tasks += [(leaky_dir[r], leaky_args[r]) for r in args.leakage if r not in args.recipes]
        try:
            run_parallel(tasks, args.jobs)
        except RuntimeError as err:  # report what finished; the failed runs are named in the error
            print(err, file=sys.stderr)
    else:
        folds = {}
    incomplete = {r for r, tasks in folds.items() if any(why_incomplete(d) is not None for d, _ in tasks)}

    lines = []
    for recipe in args.recipes:
        if recipe in incomplete:
            print(f"{recipe}: some folds did not finish; not summarised", file=sys.stderr)
            continue
        start = time.perf_counter()
        out = crossval_recipe(loso[recipe], out_dir=Path(args.runs) / recipe)
        summary = json.loads((out / SUMMARY_JSON).read_text())
        lines.append(row(recipe, summary))
        print(lines[-1], f"({time.perf_counter() - start:.0f} s wall)", flush=True)
    leak_lines = []
    for recipe in args.leakage:
        leaky = leaky_dir[recipe]
        if why_incomplete(leaky) is not None:
            if args.jobs > 1:  # it ran in the queue above and failed (named in the error printed there)
                continue
            run(load_config([*leaky_args[recipe], f"output_dir={leaky}"]))
        m = json.loads((leaky / "metrics.json").read_text())
        loso_summary = Path(args.runs) / recipe / SUMMARY_JSON
        loso_m = json.loads(loso_summary.read_text()) if loso_summary.exists() else None
        leak_lines.append(f"| `{recipe}` | {m['test']['macro_f1']:.3f} (LEAKY) | "
                          + (f"{loso_m['mean']['macro_f1']:.3f} ± {loso_m['std']['macro_f1']:.3f} |"
                             if loso_m else "not run |"))
        print(leak_lines[-1], flush=True)

    text = [f"# EmoDB (shared copy) — leave-one-speaker-out\n",
            f"Command: `python benchmarks/emodb_loso.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
            f"Machine: {machine()}  ",
            f"Date: {time.strftime('%Y-%m-%d')}\n",
            "Data: the shared EmoDB copy (535 clips, every file cut or zero-padded to 2.0 s at 22.05 kHz; "
            "not directly comparable with papers on the full 16 kHz corpus). Protocol: 10 folds, one test "
            "speaker each; validation speakers from the training side (one male, one female); classic models "
            "train on train+validation. std is over folds (ddof=1); pooled = macro-F1 of all folds' predictions.\n"]
    if lines:
        text += ["| recipe | macro-F1 | UAR | accuracy | pooled macro-F1 | folds | train s (all folds) |",
                 "|---|---|---|---|---|---|---|", *lines, ""]
    if leak_lines:
        text += ["## Leakage: the same recipe under a random utterance split vs LOSO\n",
                 "| recipe | random split (speakers shared, windows of a clip kept together) | LOSO |",
                 "|---|---|---|", *leak_lines, ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

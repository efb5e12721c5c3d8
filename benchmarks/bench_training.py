"""Training throughput (clips/s and windows/s per epoch) and peak memory of a baseline recipe.

    python benchmarks/bench_training.py --data-dir ../shared/data/emodb --recipe cnn2d_emodb --epochs 3

Runs the recipe's real training loop (speaker split, its features and windows) for ``--epochs`` epochs
and reports the median epoch time over epochs 2.. (epoch 1 includes warm-up), the training clips and
windows per second, and the process's peak resident memory (ru_maxrss, includes the datasets cache
pages it touched). Results are appended to ``--out`` with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from ser_hf.config import load_config
from ser_hf.experiment import run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--recipe", default="cnn2d_emodb")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--runs", default="runs/benchmarks/training")
    ap.add_argument("--out", default="benchmarks/results/training.md")
    args = ap.parse_args(argv)
    out_dir = Path(args.runs) / args.recipe
    cfg = load_config([f"recipe={args.recipe}", f"data.data_dir={args.data_dir}", f"trainer.max_epochs={args.epochs}",
                       "trainer.early_stopping_patience=null", "trainer.progress_bar=false", "trainer.log_with=null",
                       f"output_dir={out_dir}"])
    start = time.perf_counter()
    run(cfg)
    wall = time.perf_counter() - start
    history = json.loads((out_dir / "history.json").read_text())
    metrics = json.loads((out_dir / "metrics.json").read_text())
    from ser_hf.data import load_corpus

    corpus = load_corpus(cfg.data.corpus, args.data_dir, split="speaker", sampling_rate=cfg.data.sampling_rate)
    n_train = len(corpus["train"])
    epoch_s = [h["seconds"] for h in history]
    steady = statistics.median(epoch_s[1:] if len(epoch_s) > 1 else epoch_s)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        f"## {args.recipe} on {cfg.data.corpus} ({time.strftime('%Y-%m-%d')})\n",
        f"Command: `python benchmarks/bench_training.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads), Python {platform.python_version()}\n",
        "| training clips | epochs | epoch seconds (median of epochs 2..) | clips/s | parameters | peak RSS MiB | wall s |",
        "|---|---|---|---|---|---|---|",
        f"| {n_train} | {len(history)} | {steady:.1f} | {n_train / steady:.1f} | {metrics['num_parameters']} | "
        f"{peak_mib:.0f} | {wall:.0f} |",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

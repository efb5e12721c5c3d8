"""Command-line time to the error for a bad recipe key, from process start (issue 10's target: < 2 s).

Each case runs as ``python scripts/<script>.py ...`` in a fresh process, ``--repeats`` times; the median
wall-clock time from ``subprocess`` start to exit is reported, with the last line of stderr (the error).
``--before DIR`` also times the same commands in a checkout of the code before the typed spec (e.g.
``git archive 737fa2b | tar -x -C DIR``), where a typo failed only when its section was reached, after
the corpus had been generated/decoded (or a key the family does not use was silently accepted).

Usage (from the repo root)::

    python benchmarks/bench_spec_errors.py [--repeats 5] [--before /tmp/base] [--out benchmarks/results/spec_errors.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMODB = f"data.data_dir={REPO.parent / 'shared' / 'data' / 'emodb'}"  # the real copy beside the repo, if any
CASES = [
    ("finetune.py", ["recipe=demo", "trainer.max_epoch=3"]),
    ("finetune.py", ["recipe=wav2vec2_emodb", "peft.rnak=8", EMODB]),
    ("finetune.py", ["recipe=svm_stats_emodb", "trainer.max_epochs=3", EMODB]),
    ("crossval.py", ["recipe=svm_stats_spknorm_emodb", "features.n_mfc=13", "jobs=2", EMODB]),
    ("compare.py", ["recipes=[svm_stats_emodb,rf_stats_emodb]", "model.kernal=linear", EMODB]),
]


def time_case(root: Path, script: str, args: list[str], cache: Path, timeout: float) -> tuple[float, int, str, float]:
    """(wall seconds, return code, last stderr line, CPU seconds of the child: user + system)."""
    env = {**os.environ, "PYTHONPATH": str(root), "SER_HF_CACHE": str(cache), "HF_DATASETS_CACHE": str(cache / "hf")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(root / "scripts" / script), *args,
                               f"output_dir={cache / 'out'}"], capture_output=True, text=True, cwd=root, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, -1, f"(no error within {timeout:g} s: the run started)", float("nan")
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "")
    return seconds, proc.returncode, last, cpu


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", type=Path, default=None, help="a checkout of the code before the typed spec")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "spec_errors.md")
    args = ap.parse_args(argv)
    rows = []
    for script, case in CASES:
        row = {"command": f"python scripts/{script} {' '.join(a if a != EMODB else 'data.data_dir=...' for a in case)}"}
        for label, root in (("after", REPO), ("before", args.before)):
            if root is None:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                runs = [time_case(root, script, case, Path(tmp), args.timeout) for _ in range(args.repeats if label == "after" else 1)]
            row[label] = (statistics.median(r[0] for r in runs), runs[-1][1], runs[-1][2],
                          statistics.median(r[3] for r in runs))
        rows.append(row)
    load = os.getloadavg()
    lines = [
        "# Time to the error for a bad recipe key (issue 10)", "",
        f"Command: `python benchmarks/bench_spec_errors.py --repeats {args.repeats}"
        + (f" --before {args.before}`" if args.before else "`"),
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared; load average {load[0]:.1f} at the end), "
        f"Python {platform.python_version()}. Date: {date.today().isoformat()}.", "",
        "Seconds from process start to exit: wall clock and CPU (user + system of the process), medians of the "
        "repeats for the new code; one run of the old code, which generated/decoded the corpus first or accepted "
        "the key and started training. On a shared machine the wall clock is the CPU time stretched by the load.", "",
        "| command | now: wall s | now: CPU s | now: error | before: wall s | before: outcome |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r["after"]
        b = r.get("before")
        lines.append(f"| `{r['command']}` | {a[0]:.2f} | {a[3]:.2f} | {a[2][:150]} | "
                     + (f"{b[0]:.1f} | rc={b[1]}: {b[2][:120]} |" if b else "– | – |"))
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""openSMILE feature sets vs the stats kind: cold extraction throughput on the real EmoDB copy.

Every kind runs through the same door, ``compute_features`` on the corpus builder's file rows (decode +
soxr resampling to ``--sampling-rate`` + 40 dB trim inside the feature map), on a fresh datasets cache
each time, with openSMILE's in-process memo cleared, so every number is a cold extraction. Kinds are
interleaved over ``--repeats`` rounds; medians reported, plus the ratio to ``stats`` (the
``svm_stats_spknorm_emodb`` feature set without F0) from the same round.

    OMP_NUM_THREADS=2 python benchmarks/bench_opensmile.py [--data-dir ../shared/data/emodb] [--limit 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STATS = {"kind": "stats", "trim_db": 40, "n_fft": 512, "hop_length": 160, "n_mels": 40, "n_mfcc": 20,
             "stats_descriptors": ["mfcc", "delta_mfcc", "rms", "zcr", "centroid", "rolloff", "flatness", "logmel",
                                "bandwidth", "contrast"],
             "stats": ["mean", "std", "min", "max", "median", "p5", "p25", "p75", "p95", "skew", "kurtosis",
                    "delta_mean", "delta_std"]}
KINDS = {
    "stats (svm_stats_spknorm, no F0)": {**STATS, "f0": False},
    "stats + F0 (svm_stats_spknorm as written)": {**STATS, "f0": True},
    "opensmile eGeMAPSv02 functionals": {"kind": "opensmile", "feature_set": "eGeMAPSv02", "trim_db": 40},
    "opensmile ComParE_2016 functionals": {"kind": "opensmile", "feature_set": "ComParE_2016", "trim_db": 40},
    "opensmile eGeMAPSv02 lld": {"kind": "opensmile", "feature_set": "eGeMAPSv02", "level": "lld", "trim_db": 40},
}


def main() -> None:
    import datasets

    from ser_hf.data.builders import BUILDERS
    from ser_hf.features import FeatureConfig, compute_features
    from ser_hf.features_opensmile import clear_memo

    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "emodb")
    p.add_argument("--limit", type=int, default=200, help="clips (the first N files of the corpus)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--sampling-rate", type=int, default=16000)
    a = p.parse_args()
    datasets.disable_progress_bars()
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    ratios: dict[str, list[float]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        builder = BUILDERS["emodb"](data_dir=a.data_dir, cache_dir=f"{tmp}/b")
        builder.download_and_prepare()
        files = builder.as_dataset(split="train").select(range(a.limit))
        for i, kw in enumerate(KINDS.values()):  # warm-up (imports, filterbanks, SMILExtract start), untimed
            compute_features(files.select(range(3)).flatten_indices(cache_file_name=f"{tmp}/w{i}.arrow"),
                             FeatureConfig(sampling_rate=a.sampling_rate, **kw))
        load = os.getloadavg()
        for r in range(a.repeats):
            this = {}
            for name, kw in KINDS.items():
                cfg = FeatureConfig(sampling_rate=a.sampling_rate, **kw)
                clear_memo()
                ds = files.flatten_indices(cache_file_name=f"{tmp}/{r}_{len(this)}.arrow")  # a fresh fingerprint
                t = time.perf_counter()
                out = compute_features(ds, cfg)
                np.asarray(out.with_format("numpy")["features"][:] if cfg.kind != "opensmile" or cfg.level ==
                           "functionals" else [len(x) for x in out["features"]])
                this[name] = time.perf_counter() - t
                times[name].append(this[name])
            for name in KINDS:
                ratios[name].append(this[name] / this[next(iter(KINDS))])
        load_after = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; load average before {load[0]:.2f}, after "
          f"{load_after[0]:.2f}; {a.limit} clips, {a.repeats} round(s), {a.sampling_rate} Hz")
    print("| features | dims | s (median) | clips/s | time vs stats |\n|---|---|---|---|---|")
    for name, kw in KINDS.items():
        from ser_hf.features import feature_names

        cfg = FeatureConfig(sampling_rate=a.sampling_rate, **kw)
        dims = len(feature_names(cfg))
        med = statistics.median(times[name])
        print(f"| {name} | {dims}{' per frame' if kw.get('level') == 'lld' else ''} | {med:.1f} | "
              f"{a.limit / med:.1f} | {statistics.median(ratios[name]):.2f}x |")


if __name__ == "__main__":
    main()

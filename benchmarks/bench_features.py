"""Feature-extraction throughput on the real EmoDB copy: ser_hf pipeline vs the seeds' per-file loop.

Measured side by side in one run (interleaved repeats, medians reported):

- ``seed loop``: what the seed scripts do, serially per file: ``librosa.load(path)`` + ``librosa.feature.mfcc``
  (+ ``librosa.feature.delta`` twice when ``--seed-deltas``, the same MFCC+Δ+ΔΔ stack ser_hf computes).
- ``cold``: a fresh datasets cache: ``ser_hf.data.load_corpus`` (build + decode with soundfile) +
  ``compute_features`` on every split + reading all features back as numpy.
- ``cold fused``: a fresh cache: the corpus builder (file list + metadata, no decoding) + ``compute_features``
  decoding the files itself inside its map (no decoded-audio cache written) + reading back.
- ``warm``: the same calls again on the now-populated cache (nothing is decoded or computed).
- ``warm compute_features``: only the second ``compute_features`` calls + reading, on already-loaded splits.
- waveform augmentation cost per clip (audiomentations, and a hand-written numpy noise for reference).

Usage (from the repo root; BLAS threads matter on a shared machine, so run both ways)::

    python benchmarks/bench_features.py [--data-dir ../shared/data/emodb] [--repeats 5] [--num-proc 1 2]
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/bench_features.py

``--speaker-norm-check`` adds a LOSO SVM on ``stats`` features with/without ``speaker_normalise``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def seed_loop(files: list[Path], n_mfcc: int, deltas: bool) -> list[np.ndarray]:
    import librosa

    out = []
    for path in files:
        y, sr = librosa.load(path)
        m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc)
        if deltas:
            m = np.stack([m, librosa.feature.delta(m), librosa.feature.delta(m, order=2)])
        out.append(m)
    return out


def augment_timings(files: list[Path], sampling_rate: int, repeats: int) -> list[str]:
    """ms per clip of each audiomentations transform, and of a hand-written numpy noise for comparison."""
    from ser_hf.augment import build_waveform_augment
    from ser_hf.data.audio import decode_audio

    clips = [decode_audio(p, sampling_rate) for p in files[:50]]
    rows = []
    rng = np.random.default_rng(0)

    def numpy_noise(y: np.ndarray) -> np.ndarray:  # AddGaussianSNR at 20 dB, by hand
        rms = np.sqrt(np.mean(y**2))
        return y + rng.normal(0, rms / 10, y.shape).astype(np.float32)

    candidates = {name: build_waveform_augment({name: {"p": 1.0}}, seed=0)
                  for name in ("noise", "shift", "pitch_shift", "time_stretch")}
    candidates["numpy noise (hand-written reference)"] = lambda y, sr: numpy_noise(y)
    for name, aug in candidates.items():
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            for y in clips:
                aug(y, sampling_rate)
            ts.append((time.perf_counter() - t) / len(clips) * 1000)
        rows.append(f"| {name} | {statistics.median(ts):.2f} |")
    return rows


def speaker_norm_check(data_dir: Path) -> list[str]:
    """LOSO SVM macro-F1 on ``stats`` features of EmoDB, without and with per-speaker normalisation."""
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from ser_hf.data.builders import BUILDERS
    from ser_hf.features import FeatureConfig, compute_features, speaker_normalise

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        builder = BUILDERS["emodb"](data_dir=data_dir, cache_dir=tmp)
        builder.download_and_prepare()
        raw = builder.as_dataset(split="train")
        for f0 in (False, True):
            cfg = FeatureConfig(kind="stats", sampling_rate=16000, f0=f0)
            t = time.perf_counter()
            feats = compute_features(raw, cfg)
            seconds = time.perf_counter() - t
            y, spk = np.asarray(feats["label"]), np.asarray(feats["speaker_id"])
            for norm in (False, True):
                x = np.asarray((speaker_normalise(feats) if norm else feats).with_format("numpy")["features"][:])
                pred = np.empty_like(y)
                for s in np.unique(spk):  # leave one speaker out
                    test = spk == s
                    clf = make_pipeline(StandardScaler(), SVC(C=10, gamma="scale")).fit(x[~test], y[~test])
                    pred[test] = clf.predict(x[test])
                per = np.mean([f1_score(y[spk == s], pred[spk == s], average="macro") for s in np.unique(spk)])
                rows.append(f"| stats, f0={f0} (D={x.shape[1]}, {seconds:.1f} s to extract) | {norm} | "
                            f"{f1_score(y, pred, average='macro'):.3f} | {per:.3f} |")
    return rows


def timed(fn, *args):
    """(wall seconds, CPU seconds of this process, result); CPU time is steadier on a shared machine."""
    t, c = time.perf_counter(), time.process_time()
    result = fn(*args)
    return (time.perf_counter() - t, time.process_time() - c), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "emodb",
                        help="EmoDB folder holding wav/ (default: ../shared/data/emodb from the repo root)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1],
                        help="num_proc values to measure for the cold pipeline (1 = in-process)")
    parser.add_argument("--n-mfcc", type=int, default=40)
    parser.add_argument("--sampling-rate", type=int, default=22050,
                        help="22050 = librosa.load's default, so both sides compute the same signal")
    parser.add_argument("--speaker-norm-check", action="store_true",
                        help="also run a LOSO SVM on stats features with and without speaker normalisation")
    parser.add_argument("--seed-deltas", action="store_true",
                        help="also time the seed loop with the same delta channels ser_hf computes")
    args = parser.parse_args(argv)

    wav_dir = args.data_dir / "wav"
    files = sorted(wav_dir.glob("*.wav")) if wav_dir.is_dir() else []
    if not files:
        raise SystemExit(f"error: no EmoDB clips in {wav_dir}: pass --data-dir pointing at the EmoDB folder "
                         f"(the one holding wav/03a01Fa.wav ...)")

    import datasets

    from ser_hf.data import load_corpus
    from ser_hf.data.builders import BUILDERS
    from ser_hf.features import FeatureConfig, compute_features

    datasets.disable_progress_bars()
    logging.getLogger("ser_hf").setLevel(logging.ERROR)
    cfg = FeatureConfig(kind="mfcc_stack", n_mfcc=args.n_mfcc, sampling_rate=args.sampling_rate)
    n = len(files)

    times: dict[str, list[tuple[float, float]]] = {}
    check = None

    def build_and_compute(cache: Path, num_proc: int | None) -> list[np.ndarray]:
        builder = BUILDERS["emodb"](data_dir=args.data_dir, cache_dir=str(cache))
        builder.download_and_prepare()
        raw = builder.as_dataset(split="train")  # audio = Audio(decode=False): paths only
        return [compute_features(raw, cfg, num_proc=num_proc).with_format("numpy")["features"][:]]

    def load_and_compute(cache: Path, num_proc: int | None) -> list[np.ndarray]:
        corpus = load_corpus("emodb", args.data_dir, sampling_rate=cfg.sampling_rate, cache_dir=cache,
                             num_proc=num_proc)
        return [compute_features(corpus[k], cfg, num_proc=num_proc).with_format("numpy")["features"][:]
                for k in corpus]

    # Warm-up outside the timings: imports, numba JIT, librosa's lazy loaders.
    seed_loop(files[:3], args.n_mfcc, True)
    with tempfile.TemporaryDirectory() as tmp:
        load_and_compute(Path(tmp), None)
    with tempfile.TemporaryDirectory() as tmp:
        build_and_compute(Path(tmp), None)

    for r in range(args.repeats):
        t, ref = timed(seed_loop, files, args.n_mfcc, False)
        times.setdefault("seed loop: librosa.load + mfcc", []).append(t)
        if args.seed_deltas:
            t, _ = timed(seed_loop, files, args.n_mfcc, True)
            times.setdefault("seed loop + delta, delta-delta", []).append(t)
        for num_proc in args.num_proc:
            np_arg = num_proc if num_proc > 1 else None
            with tempfile.TemporaryDirectory() as tmp:
                t, arrays = timed(load_and_compute, Path(tmp), np_arg)
                times.setdefault(f"ser_hf cold, num_proc={num_proc}: load_corpus + compute_features", []).append(t)
                t, _ = timed(load_and_compute, Path(tmp), np_arg)
                times.setdefault(f"ser_hf warm, num_proc={num_proc}: load_corpus + compute_features", []).append(t)
                corpus = load_corpus("emodb", args.data_dir, sampling_rate=cfg.sampling_rate, cache_dir=tmp)
                t, again = timed(lambda: [compute_features(corpus[k], cfg).with_format("numpy")["features"][:]
                                          for k in corpus])
                times.setdefault("ser_hf warm: compute_features only (corpus already loaded)", []).append(t)
            with tempfile.TemporaryDirectory() as tmp:
                t, fused = timed(build_and_compute, Path(tmp), np_arg)
                times.setdefault(f"ser_hf cold, num_proc={num_proc}: builder + compute_features decoding "
                                 f"files (fused)", []).append(t)
                t, _ = timed(build_and_compute, Path(tmp), np_arg)
                times.setdefault(f"ser_hf warm, num_proc={num_proc}: builder + compute_features (fused)",
                                 []).append(t)
                if check is None:
                    check = (ref, arrays, again)
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)

    ref, arrays, again = check
    got = sum(len(a) for a in arrays)
    assert got == n and len(fused[0]) == n, f"ser_hf produced {got} / {len(fused[0])} clips, expected {n}"
    assert all(np.array_equal(a, b) for a, b in zip(arrays, again)), "warm features differ from cold ones"
    # the seed's MFCC is channel 0 of ours (same librosa maths); compare as sets of clips (split order differs)
    ours = np.concatenate(arrays)[:, 0]
    assert np.allclose(np.sort(ours.sum(axis=(1, 2))), np.sort([r.sum() for r in ref]), rtol=1e-4), \
        "ser_hf MFCCs differ from librosa.feature.mfcc"
    shape = arrays[0].shape[1:]

    base_wall = statistics.median(w for w, _ in times["seed loop: librosa.load + mfcc"])
    base_cpu = statistics.median(c for _, c in times["seed loop: librosa.load + mfcc"])
    lines = [
        f"clips: {n} (EmoDB copy, 2.0 s at 22,050 Hz); features: mfcc_stack {shape} "
        f"(n_mfcc={args.n_mfcc}, n_fft=2048, hop=512, sampling_rate={args.sampling_rate}); "
        f"seed loop: n_mfcc={args.n_mfcc}, librosa defaults otherwise",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs visible (shared), Python {platform.python_version()}, "
        f"{platform.platform()}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}",
        f"repeats: {args.repeats}, interleaved; medians (wall min-max in brackets). CPU = this process's CPU time "
        f"(num_proc>1 workers not counted)",
        "",
        "| pipeline | wall s | clips/s | wall vs seed loop | CPU s | CPU vs seed loop |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, ts in times.items():
        wall = statistics.median(w for w, _ in ts)
        cpu = statistics.median(c for _, c in ts)
        lo, hi = min(w for w, _ in ts), max(w for w, _ in ts)
        in_process = "num_proc=1" in name or "num_proc" not in name
        cpu_cols = f"{cpu:.3f} | {base_cpu / cpu:.1f}x" if in_process else "n/a | n/a"
        lines.append(f"| {name} [{lo:.3f}-{hi:.3f}] | {wall:.3f} | {n / wall:,.0f} | {base_wall / wall:.1f}x "
                     f"| {cpu_cols} |")
    lines += ["", f"Waveform augmentation, ms per 2.0 s clip at {args.sampling_rate} Hz (50 clips, median of "
              f"{args.repeats}):", "", "| transform | ms/clip |", "|---|---:|"]
    lines += augment_timings(files, args.sampling_rate, args.repeats)
    if args.speaker_norm_check:
        lines += ["", "LOSO SVM (StandardScaler + SVC C=10, 10 folds) on EmoDB, 16 kHz:", "",
                  "| features | speaker norm | pooled macro-F1 | mean per-speaker macro-F1 |", "|---|---|---:|---:|"]
        lines += speaker_norm_check(args.data_dir)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

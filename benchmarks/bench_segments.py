"""Long-recording speed: a 10-minute generated recording through ``predict.py segment=vad`` on CPU.

The recording: speech-like clips of ``ser_hf.data.synthetic`` (EmoDB layout, 16 kHz, 1.6 s each) joined by
0.5-2 s of -60 dBFS noise, 10 minutes in all. The model: the ``demo`` recipe's architecture (2-D CNN on
log-mel, speaker-normalised features) saved with ``save_pretrained`` with random weights (speed does not
depend on the weights' values). Timed: the whole ``scripts/predict.py`` main() (VAD pass + scoring of every
segment + segments.csv/.json, summary, timeline PNG), median of ``--repeats`` runs, and the VAD pass
(``ser_hf.segments.scan``) alone. Peak RSS (VmHWM) of this process is reported.

    OMP_NUM_THREADS=2 python benchmarks/bench_segments.py --minutes 10 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(root: Path, minutes: float) -> tuple[Path, Path, int]:
    from ser_hf.data.synthetic import generate_corpus
    from ser_hf.features import FeatureConfig
    from ser_hf.models import build_baseline

    corpus = generate_corpus("emodb", root / "corpus", speakers=10, per_class=2, seed=0)
    clips = sorted((Path(corpus) / "wav").glob("*.wav"))
    labels = sorted({p.name[5] for p in clips})
    rng = np.random.default_rng(0)
    sr = 16000
    parts, total, n = [], 0, 0
    while total < minutes * 60 * sr:
        y, file_sr = sf.read(clips[n % len(clips)], dtype="float32")
        gap = (1e-3 * rng.standard_normal(int(rng.uniform(0.5, 2.0) * sr))).astype(np.float32)
        parts += [y, gap]
        total += len(y) + len(gap)
        n += 1
    audio = np.concatenate(parts)[: int(minutes * 60 * sr)]
    rec = root / "recording.wav"
    sf.write(rec, audio, sr, subtype="PCM_16")
    fcfg = FeatureConfig(kind="logmel", sampling_rate=sr, n_fft=512, hop_length=160, n_mels=40, speaker_norm=True)
    torch.manual_seed(0)
    model = build_baseline("cnn2d", (1, 40, 161), id2label=labels, in_channels=1, channels=[16, 32, 64],
                           kernel_sizes=[3, 3, 3], pool_sizes=[2, 2, 2]).eval()
    model.save_pretrained(root / "model")
    fcfg.save_pretrained(root / "model")
    return rec, root / "model", n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    spec = importlib.util.spec_from_file_location("predict_script", REPO / "scripts" / "predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    from ser_hf.segments import scan

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rec, model_dir, n_clips = build(root, args.minutes)
        duration = sf.info(rec).duration
        totals, vads = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            scan(rec, vad=True)
            vads.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            code = predict.main([f"model={model_dir}", f"audio={rec}", "segment=vad", f"output_dir={root / f'out{r}'}"])
            totals.append(time.perf_counter() - t0)
            assert code == 0
        segments = sum(1 for _ in open(root / "out0" / "segments.csv")) - 1
        load = os.getloadavg()
        total, vad = statistics.median(totals), statistics.median(vads)
        print(f"recording {duration:.0f} s ({n_clips} clips), {segments} segments found")
        print(f"predict.py segment=vad end to end: median {total:.1f} s (runs {', '.join(f'{t:.1f}' for t in totals)})"
              f" = {duration / total:.1f}x real time; VAD pass alone median {vad:.1f} s "
              f"({', '.join(f'{t:.1f}' for t in vads)}) = {duration / vad:.1f}x real time")
        print(f"peak RSS {_peak_rss_mb():.0f} MB; torch threads {torch.get_num_threads()}; "
              f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    main()

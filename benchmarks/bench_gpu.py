"""GPU throughput of a wav2vec2-base-geometry model: fine-tuning steps and inference, fp32 vs bf16.

The GPU counterpart of ``bench_inference.py`` (same model, same clips, same fine-tuning step), for a
machine with a CUDA device::

    python benchmarks/bench_gpu.py --data-dir ../shared/data/emodb --out benchmarks/results/gpu.md \\
        --save-model /tmp/w2v2_base_random

- Fine-tuning: optimizer steps per second (forward + backward + AdamW) on batches of random 3 s crops,
  full fine-tuning (feature encoder frozen) and LoRA, in fp32 and under bf16 autocast (what
  ``trainer.mixed_precision=bf16`` / ``accelerate launch --mixed_precision bf16`` does), with the peak GPU
  memory of each (``torch.cuda.max_memory_allocated``).
- Inference: ``pipeline("audio-classification", device=0)`` called per clip vs ``ser_hf`` batched
  (``load_for_inference(device="cuda")``) in fp32 and bf16, on the same decoded EmoDB clips; median of
  repeats, methods taking turns.

Random weights (no Hub here); speed does not depend on their values. ``--save-model`` keeps the model
folder so a recipe can then be run for real on the GPU with ``model.name_or_path=<that folder>``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_inference import SR, build_model, finetune_throughput, pick_files  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--save-model", type=Path, default=None, help="keep the random wav2vec2-base folder here")
    ap.add_argument("--num-clips", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32, help="inference batch size")
    ap.add_argument("--train-batches", type=int, nargs="+", default=[8])
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-inference", action="store_true")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to smoke-test this script")
    args = ap.parse_args(argv)

    import torch
    import transformers

    from ser_hf.data.audio import decode_audio
    from ser_hf.data.labels import EMODB_LABELS

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a GPU machine (bench_inference.py is the CPU one)")
    transformers.logging.set_verbosity_error()
    labels = list(EMODB_LABELS)
    files = pick_files(args.data_dir, args.num_clips)
    arrays = [decode_audio(f, SR) for f in files]
    audio_s = sum(len(a) for a in arrays) / SR
    model_dir = build_model(args.save_model or Path(tempfile.mkdtemp(prefix="bench_gpu_")) / "w2v2", labels)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none (CPU smoke test)"
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    # ---- fine-tuning steps
    train = {}
    for batch in args.train_batches:
        for lora in (False, True):
            for dtype in (None, torch.bfloat16):
                name = ("LoRA r=8 (q/k/v/out_proj) + head" if lora else "full (feature encoder frozen)") + \
                       (", bf16 autocast" if dtype else ", fp32")
                if args.device == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                rates = finetune_throughput(model_dir, arrays, labels, batch, args.train_steps, lora,
                                            device=args.device, dtype=dtype)
                peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
                train[(name, batch)] = (rates, peak)
                print(f"train B={batch} {name}: {statistics.median(rates):.1f} clips/s, peak {peak:.2f} GiB",
                      flush=True)

    # ---- inference
    inference = [] if args.skip_inference else measure_inference(args, model_dir, arrays, audio_s, labels, sync)
    lines = [
        "# GPU throughput (wav2vec2-base geometry)",
        "",
        "Command (from the repo root): `python benchmarks/bench_gpu.py " +
        " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
        f"- Machine: GPU {gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, Python {platform.python_version()}; date {time.strftime('%Y-%m-%d')}.",
        "- Model: `Wav2Vec2ForSequenceClassification(Wav2Vec2Config())` (wav2vec2-base geometry, 94.6 M "
        "parameters), random weights, 7 EmoDB labels.",
        f"- Data: {len(arrays)} clips of the EmoDB copy ({audio_s:.0f} s of audio, 2.0 s each, resampled to 16 kHz).",
        "",
        "## Fine-tuning steps",
        "",
        "Batches of random 3 s crops, forward + backward + AdamW step, median of "
        f"{args.train_steps} timed steps after 3 warm-up steps (synchronised). Peak = "
        "`torch.cuda.max_memory_allocated` over the run.",
        "",
        "| mode | batch | clips/s (median) | ms/step | peak GPU memory GiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for (name, batch), (r, peak) in train.items():
        m = statistics.median(r)
        lines.append(f"| {name} | {batch} | {m:.1f} | {1000 * batch / m:.0f} | {peak:.2f} |")
    text = "\n".join(lines + inference)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


def measure_inference(args, model_dir, arrays, audio_s, labels, sync) -> list[str]:
    """pipeline() per clip vs ser_hf batched fp32 / bf16 on the GPU; markdown lines."""
    from transformers import pipeline

    from ser_hf.inference import load_for_inference

    pipe = pipeline("audio-classification", model=str(model_dir), device=0 if args.device == "cuda" else -1)
    fp32 = load_for_inference(model_dir, device=args.device)
    bf16 = load_for_inference(model_dir, device=args.device, precision="bf16")
    methods = {
        "pipeline loop (per file, fp32)": lambda clips: [pipe({"raw": a, "sampling_rate": SR}, top_k=None)
                                                         for a in clips],
        f"ser_hf batched fp32 (B={args.batch_size})": lambda clips: fp32.predict_arrays(
            clips, SR, batch_size=args.batch_size),
        f"ser_hf batched bf16 (B={args.batch_size})": lambda clips: bf16.predict_arrays(
            clips, SR, batch_size=args.batch_size),
    }
    for fn in methods.values():  # warm-up
        fn(arrays[:args.batch_size])
    rates = {name: [] for name in methods}
    for rep in range(args.repeats):
        for name in list(methods)[rep % len(methods):] + list(methods)[:rep % len(methods)]:
            sync()
            t0 = time.perf_counter()
            methods[name](arrays)
            sync()
            rates[name].append(len(arrays) / (time.perf_counter() - t0))
    ours = [r["scores"] for r in fp32.predict_arrays(arrays, SR, batch_size=args.batch_size)]
    low = [r["scores"] for r in bf16.predict_arrays(arrays, SR, batch_size=args.batch_size)]
    ref = [{d["label"]: d["score"] for d in out} for out in methods["pipeline loop (per file, fp32)"](arrays)]
    top1 = lambda s: max(s, key=s.get)  # noqa: E731
    diff_ref = max(abs(a[k] - b[k]) for a, b in zip(ours, ref) for k in labels)
    agree_bf16 = np.mean([top1(a) == top1(b) for a, b in zip(low, ours)])
    diff_bf16 = max(abs(a[k] - b[k]) for a, b in zip(low, ours) for k in labels)

    med = {n: statistics.median(r) for n, r in rates.items()}
    base = med["pipeline loop (per file, fp32)"]
    lines = []
    lines += [
        "",
        "## Inference",
        "",
        f"All {len(arrays)} clips per repeat, {args.repeats} repeats, methods in rotated order; median.",
        "",
        "| method | clips/s | x pipeline loop | real-time factor | repeats |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in med.items():
        lines.append(f"| {name} | {r:.1f} | {r / base:.2f} | {(len(arrays) / r) / audio_s:.4f} | "
                     f"{', '.join(f'{x:.1f}' for x in rates[name])} |")
    lines += [
        "",
        f"- ser_hf batched fp32 vs pipeline: max |prob diff| {diff_ref:.1e}.",
        f"- bf16 vs fp32 (batched): top-1 agreement {agree_bf16:.1%}, max |prob diff| {diff_bf16:.1e} "
        "(random weights: near-uniform probabilities, so top-1 agreement is a worst case).",
        "",
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

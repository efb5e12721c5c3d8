"""Inference and fine-tuning throughput of a wav2vec2-base-geometry model on CPU, on the real EmoDB copy.

Model: ``Wav2Vec2ForSequenceClassification(Wav2Vec2Config())`` - the defaults are wav2vec2-base's geometry
(12 layers, hidden 768, group-norm feature encoder) - with random weights (no Hub access here), 7 EmoDB
classes, saved with ``save_pretrained`` beside wav2vec2-base's feature extractor settings (no attention
mask). Speed does not depend on the weights' values.

Measured side by side in one process on the same decoded clips: the methods take turns on blocks of clips
(order rotated per block) so that they see the same machine load; medians over repeats are reported.

- ``pipeline loop``: ``transformers.pipeline("audio-classification")`` called once per clip (the usual
  per-file recipe), fed ``{"raw": array, "sampling_rate": 16000}``;
- ``ser_hf per file (B=1)``: ``Predictor.predict_arrays`` with batch size 1 (separates batching's gain from
  the pipeline's own per-call overhead);
- ``ser_hf batched (B)``: ``Predictor.predict_arrays`` (length-sorted batches of B, one forward per batch);
- ``ser_hf ... bf16``: the same under bfloat16 autocast (``load_for_inference(precision="bf16")``); this CPU has
  native bf16 (AVX512-BF16);
- ``ser_hf batched int8 (B)``: the same after dynamic int8 quantisation of the Linear layers
  (``precision="int8"``);
- ``ser_hf predict_files (B)``: end to end from the WAV files (decode + resample + batched inference).

Peak memory: each method runs once in a fresh subprocess that reports its peak resident set size
(``VmHWM`` from /proc/self/status, = ``resource.getrusage(...).ru_maxrss``) after loading the model and
after inference; tracemalloc is not used because it does not see torch's tensor allocations.

Fine-tuning: optimizer steps per second (forward + backward + AdamW step) on batches of random 3 s crops
(``AudioCollator(train=True, max_duration_s=3)``) of concatenated EmoDB clips (the copy's clips are 2 s),
for full fine-tuning (feature encoder frozen, as ``load_audio_classifier`` does by default) and LoRA.

Usage (from the repo root)::

    python benchmarks/bench_inference.py --data-dir ../shared/data/emodb --num-clips 64 --repeats 3 \\
        --out benchmarks/results/inference.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def build_model(model_dir: Path, labels: list[str]) -> Path:
    """wav2vec2-base geometry, random weights, wav2vec2-base's feature extractor settings."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(num_labels=len(labels), id2label=dict(enumerate(labels)),
                            label2id={n: i for i, n in enumerate(labels)})
    Wav2Vec2ForSequenceClassification(config).eval().save_pretrained(model_dir)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(model_dir)
    return model_dir


def pick_files(data_dir: Path, n: int) -> list[Path]:
    """n clips spread evenly over the sorted file list (all speakers and emotions appear)."""
    files = sorted((data_dir / "wav").glob("*.wav"))
    if not files:
        raise SystemExit(f"no wav/*.wav under {data_dir}: pass --data-dir pointing at the EmoDB folder")
    idx = np.linspace(0, len(files) - 1, num=min(n, len(files))).round().astype(int)
    return [files[i] for i in idx]


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(method: str, model_dir: str, files: list[str], batch_size: int) -> dict:
    """Run one method once in this (fresh) process; peak RSS after loading and after inference."""
    from ser_hf.data.audio import decode_audio

    arrays = [decode_audio(f, SR) for f in files]
    if method == "pipeline":
        from transformers import pipeline

        pipe = pipeline("audio-classification", model=model_dir)
        loaded = peak_rss_mb()
        for a in arrays:
            pipe({"raw": a, "sampling_rate": SR}, top_k=None)
    else:
        from ser_hf.inference import load_for_inference

        backend, _, precision = method.partition(":") if ":" in method else ("torch", "", method)
        if backend == "onnxfile":  # "onnxfile:PATH": that graph inside the export folder model_dir
            from ser_hf.onnx_backend import OnnxModel

            pred = load_for_inference(model_dir, precision="fp32", backend="onnx")
            pred.model = OnnxModel(precision)
        else:  # "fp32" (torch) or "onnx:int8" / "onnx:auto" (model_dir: the export)
            pred = load_for_inference(model_dir, precision=precision, backend=backend,
                                      **({} if backend == "onnx" else {"device": "cpu"}))
        loaded = peak_rss_mb()
        pred.predict_arrays(arrays, SR, batch_size=batch_size)
    return {"after_load_mb": loaded, "peak_mb": peak_rss_mb()}


def run_probe(method: str, model_dir: Path, files: list[Path], batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--probe", method, "--model-dir", str(model_dir), "--batch-size",
           str(batch_size), "--files", *map(str, files)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def finetune_throughput(model_dir: Path, arrays: list[np.ndarray], labels: list[str], batch_size: int,
                        steps: int, lora: bool, device: str = "cpu", dtype=None) -> list[float]:
    """Clips/s of optimizer steps (forward + backward + AdamW) on random 3 s crops.

    ``dtype`` (e.g. torch.bfloat16): autocast as Accelerate's ``mixed_precision`` does; weights and
    optimizer state stay float32.
    """
    import contextlib

    import torch

    from ser_hf.models import transformer as tf

    model, fe = tf.load_audio_classifier(model_dir, labels)
    if lora:
        model = tf.apply_lora(model, r=8, alpha=16, dropout=0.05)
    model.to(device).train()
    groups = tf.param_groups(model, head_lr=1e-3, encoder_lr=5e-5, weight_decay=0.01)
    opt = torch.optim.AdamW([{k: g[k] for k in ("params", "lr", "weight_decay")} for g in groups])
    long_clips = [np.concatenate([arrays[i], arrays[(i + 1) % len(arrays)]]) for i in range(len(arrays))]
    rows = [{"audio": {"array": a, "sampling_rate": SR}, "label": i % len(labels), "clip_id": i}
            for i, a in enumerate(long_clips)]
    collate = tf.AudioCollator(fe, max_duration_s=3.0, train=True, seed=0)
    cuda = torch.device(device).type == "cuda"
    rates = []
    warmup = 3 if cuda else 1  # cuDNN/cuBLAS autotuning, allocator; oneDNN kernel selection on CPU
    for step in range(steps + warmup):
        batch = collate([rows[(step * batch_size + j) % len(rows)] for j in range(batch_size)])
        batch.pop("clip_id")
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(torch.device(device).type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= warmup:
            rates.append(batch_size / (time.perf_counter() - start))
    return rates


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "emodb")
    ap.add_argument("--num-clips", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    # candidates mode (issue 15): default-path candidates on a trained model, side by side
    ap.add_argument("--candidates", action="store_true",
                    help="compare inference candidates (torch fp32/bf16/int8, onnxruntime fp32/int8, threads) on "
                         "--trained-model against the per-file pipeline() loop on --pipeline-model")
    ap.add_argument("--trained-model", type=Path, default=None, help="a trained transformers model folder")
    ap.add_argument("--pipeline-model", type=Path, default=None,
                    help="model the pipeline() loop runs (default: --trained-model); e.g. the uncropped Whisper")
    ap.add_argument("--uncrop-from", type=Path, default=None,
                    help="build the pipeline model by restoring the 30 s Whisper positions of this base model")
    ap.add_argument("--title", default="", help="what the model is, for the report")
    ap.add_argument("--test-speakers", nargs="+", default=["12", "14", "15", "16"])
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    ap.add_argument("--no-memory", action="store_true", help="candidates mode: skip the peak-memory subprocesses")
    ap.add_argument("--skip", nargs="*", default=[], help="candidates mode: skip methods whose name contains these")
    ap.add_argument("--main-batch", type=int, default=None,
                    help="candidates mode: the batch size of every row (default: the largest --batch-sizes)")
    ap.add_argument("--quality-clips", type=int, default=0,
                    help="candidates mode: clips of the test speakers for the quality columns (0: all)")
    ap.add_argument("--int8-scope", default="all", help="candidates mode: the export's int8_scope")
    ap.add_argument("--per-channel", action="store_true", help="candidates mode: the export's per_channel")
    ap.add_argument("--extra-batch-models", nargs="*", default=[],
                    help="candidates mode: models also timed at the other --batch-sizes (onnxruntime fp32 always)")
    ap.add_argument("--memory-variants", nargs="*", default=[],
                    help="candidates mode: int8 variants (by row name, without ' (B=..)') whose peak RSS to measure")
    # internal: memory probe subprocess
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--files", nargs="*", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))

    if args.candidates:
        return candidates_main(args, argv)
    if args.probe:
        print(json.dumps(memory_probe(args.probe, args.model_dir, args.files, args.batch_size)))
        return 0

    logging.basicConfig(level=logging.WARNING)
    import torch
    import transformers
    from transformers import pipeline

    from ser_hf.data.audio import decode_audio
    from ser_hf.data.labels import EMODB_LABELS
    from ser_hf.inference import load_for_inference

    transformers.logging.set_verbosity_error()
    labels = list(EMODB_LABELS)
    files = pick_files(args.data_dir, args.num_clips)
    arrays = [decode_audio(f, SR) for f in files]
    audio_s = sum(len(a) for a in arrays) / SR
    lengths = sorted({len(a) for a in arrays})
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    model_dir = build_model(tmp / "w2v2_base_random", labels)

    pipe = pipeline("audio-classification", model=str(model_dir), device=-1)
    fp32 = load_for_inference(model_dir, device="cpu")
    int8 = load_for_inference(model_dir, device="cpu", precision="int8")
    bf16 = load_for_inference(model_dir, device="cpu", precision="bf16")
    big = max(args.batch_sizes)

    def run_pipeline(clips):
        return [{d["label"]: d["score"] for d in pipe({"raw": a, "sampling_rate": SR}, top_k=None)} for a in clips]

    def batched(pred, b):
        return lambda clips: [r["scores"] for r in pred.predict_arrays(clips, SR, batch_size=b)]

    methods = {"pipeline loop (per file)": run_pipeline, "ser_hf per file fp32 (B=1)": batched(fp32, 1)}
    for b in args.batch_sizes:
        methods[f"ser_hf batched fp32 (B={b})"] = batched(fp32, b)
    methods["ser_hf per file bf16 (B=1)"] = batched(bf16, 1)
    methods[f"ser_hf batched bf16 (B={big})"] = batched(bf16, big)
    methods[f"ser_hf batched int8 (B={big})"] = batched(int8, big)
    methods[f"ser_hf predict_files fp32 (B={big})"] = "files"

    # warm-up (first-call costs: oneDNN kernel selection, lazy imports)
    pipe({"raw": arrays[0], "sampling_rate": SR})
    fp32.predict_arrays(arrays[:2], SR)
    int8.predict_arrays(arrays[:2], SR)
    bf16.predict_arrays(arrays[:2], SR)

    # The machine is shared: load changes within a minute. Methods therefore take turns on blocks of
    # `block` clips (order rotated per block), and a repeat's rate is its clips over its summed time.
    block = max(args.batch_sizes)
    rates: dict[str, list[float]] = {name: [] for name in methods}
    outputs: dict[str, list] = {}
    loads = []
    names = list(methods)
    for rep in range(args.repeats):
        spent = dict.fromkeys(names, 0.0)
        got: dict[str, list] = {name: [] for name in names}
        for k, start_i in enumerate(range(0, len(arrays), block)):
            clips, paths = arrays[start_i:start_i + block], files[start_i:start_i + block]
            for name in names[k % len(names):] + names[:k % len(names)]:
                fn = methods[name]
                loads.append(os.getloadavg()[0])
                t0 = time.perf_counter()
                res = ([r["scores"] for r in fp32.predict_files(paths, batch_size=big)] if fn == "files"
                       else fn(clips))
                spent[name] += time.perf_counter() - t0
                got[name].extend(res)
        for name in names:
            rates[name].append(len(arrays) / spent[name])
            outputs[name] = got[name]
            print(f"repeat {rep + 1}/{args.repeats} {name}: {rates[name][-1]:.2f} clips/s", flush=True)

    def top1(scores):
        return [max(s, key=s.get) for s in scores]

    ref = outputs["pipeline loop (per file)"]
    ours = outputs[f"ser_hf batched fp32 (B={big})"]
    agree_ours = np.mean([a == b for a, b in zip(top1(ours), top1(ref))])
    diff_ours = max(abs(a[k] - b[k]) for a, b in zip(ours, ref) for k in labels)
    low = {}
    for p in ("bf16", "int8"):
        q = outputs[f"ser_hf batched {p} (B={big})"]
        low[p] = (np.mean([a == b for a, b in zip(top1(q), top1(ours))]),
                  max(abs(a[k] - b[k]) for a, b in zip(q, ours) for k in labels))
    margin = statistics.median(sorted(s.values())[-1] - sorted(s.values())[-2] for s in ours)

    memory = {}
    for method in ("pipeline", "fp32", "bf16", "int8"):
        memory[method] = run_probe(method, model_dir, files, big)
        print("memory", method, memory[method], flush=True)

    train = {}
    if not args.skip_train:
        for lora in (False, True):
            name = "LoRA r=8 (q/k/v/out_proj) + head" if lora else "full (feature encoder frozen)"
            train[name] = finetune_throughput(model_dir, arrays, labels, args.train_batch, args.train_steps, lora)
            print("train", name, train[name], flush=True)

    med = {name: statistics.median(v) for name, v in rates.items()}
    base = med["pipeline loop (per file)"]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    lines = [
        "# Inference and fine-tuning throughput (wav2vec2-base geometry, CPU)",
        "",
        "Command (from the repo root):",
        "",
        "```",
        "python benchmarks/bench_inference.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "```",
        "",
        f"- Machine: {cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, Python "
        f"{platform.python_version()}. The machine was shared with other jobs (1-min load average during the "
        f"timed runs: median {statistics.median(loads):.1f}, max {max(loads):.1f}); the methods took turns on "
        f"blocks of {block} clips (order rotated per block) so they saw the same load, and medians of "
        f"{args.repeats} repeats are reported.",
        "- Model: `Wav2Vec2ForSequenceClassification(Wav2Vec2Config())` (12 layers, hidden 768, "
        f"{sum(p.numel() for p in fp32.model.parameters()) / 1e6:.1f} M parameters), random weights, 7 EmoDB "
        "labels, wav2vec2-base feature extractor settings (`return_attention_mask=False`).",
        f"- Data: {len(files)} clips of the EmoDB copy in `{args.data_dir}` (evenly spaced over the sorted file "
        f"list), decoded with soundfile and resampled 22.05 -> 16 kHz with soxr; {audio_s:.1f} s of audio. "
        f"Clip lengths in samples: {lengths} (this copy cuts every file to 2.0 s, so batches need no padding "
        "and length sorting has nothing to sort here; on corpora of varied lengths an unmasked model like this "
        "one batches only equal-length inputs by default, see `allow_padding`).",
        "",
        "## Inference",
        "",
        "| method | clips/s (median) | x pipeline loop | real-time factor | repeats (clips/s) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in med.items():
        rtf = (len(arrays) / r) / audio_s
        lines.append(f"| {name} | {r:.2f} | {r / base:.2f} | {rtf:.3f} | "
                     f"{', '.join(f'{x:.2f}' for x in rates[name])} |")
    lines += [
        "",
        "Real-time factor = processing seconds / audio seconds (lower is faster). `predict_files` includes "
        "decoding and resampling the WAV files; the other rows start from decoded arrays.",
        "",
        f"- Agreement, ser_hf batched fp32 vs pipeline loop: top-1 {agree_ours:.1%}, max |prob diff| "
        f"{diff_ours:.1e}.",
        f"- Agreement with fp32 (batched): bf16 top-1 {low['bf16'][0]:.1%}, max |prob diff| {low['bf16'][1]:.1e}; "
        f"int8 top-1 {low['int8'][0]:.1%}, max |prob diff| {low['int8'][1]:.1e}. Caveat: with random weights "
        f"the 7 class probabilities are nearly equal (median top-1 margin {margin:.1e}), so top-1 agreement "
        "is a worst case here; a trained model's margins are much wider.",
        "",
        "## Peak memory (resident set size, MB)",
        "",
        "Each method ran once over the same clips in a fresh subprocess; `VmHWM` (peak RSS, same as "
        "`resource.getrusage(RUSAGE_SELF).ru_maxrss`) after loading the model and after inference. "
        "Process-level, so it includes torch/transformers themselves.",
        "",
        "| method | after load (int8: + quantisation) | peak | inference working set |",
        "|---|---:|---:|---:|",
    ]
    names = {"pipeline": "pipeline loop (per file)", "fp32": f"ser_hf batched fp32 (B={big})",
             "bf16": f"ser_hf batched bf16 (B={big})", "int8": f"ser_hf batched int8 (B={big})"}
    for key, m in memory.items():
        lines.append(f"| {names[key]} | {m['after_load_mb']:.0f} | {m['peak_mb']:.0f} | "
                     f"{m['peak_mb'] - m['after_load_mb']:.0f} |")
    if train:
        lines += [
            "",
            "## Fine-tuning step throughput (CPU)",
            "",
            f"Batch of {args.train_batch} random 3 s crops (16 kHz), forward + backward + AdamW step, "
            f"{args.train_steps} timed steps after one warm-up step; fp32 (`trainer.mixed_precision=no`).",
            "",
            "| mode | clips/s (median) | s/step | steps (clips/s) |",
            "|---|---:|---:|---|",
        ]
        for name, r in train.items():
            m = statistics.median(r)
            lines.append(f"| {name} | {m:.2f} | {args.train_batch / m:.1f} | {', '.join(f'{x:.2f}' for x in r)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


def uncropped_whisper(trained: Path, base: Path, out: Path) -> Path:
    """The trained (cropped) Whisper classifier with the base model's 30 s position table and extractor
    back: what a plain `pipeline()` user of an uncropped Whisper classifier runs (same weights otherwise)."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification
    from transformers import WhisperModel

    model = AutoModelForAudioClassification.from_pretrained(trained)
    full = WhisperModel.from_pretrained(base).encoder.embed_positions
    enc = model.encoder
    enc.embed_positions = full
    enc.max_source_positions = full.num_embeddings
    model.config.max_source_positions = full.num_embeddings
    model.save_pretrained(out)
    AutoFeatureExtractor.from_pretrained(base).save_pretrained(out)
    return out


def candidates_main(args, argv) -> int:
    """Issue 15: every inference candidate on a trained model, side by side with the per-file pipeline loop.

    Speed: the same method as the wav2vec2 table above (decoded clips, methods take turns on blocks of clips
    in rotated order, medians over repeats) on ``--num-clips`` clips of the test speakers. Quality, against
    fp32 PyTorch: top-1 agreement, max |prob diff| and macro-F1 on *all* clips of the test speakers
    (``--quality-clips 0``; an untimed pass per distinct model, so that one flipped clip is 0.4 %, not 3 %).
    The export (``export_onnx(..., quantize="int8")``) records its own int8 check (ser_hf.precision's gate);
    the row "default path" is what ``predict.py model=EXPORT`` runs after it.
    """
    logging.basicConfig(level=logging.WARNING)
    import torch
    import transformers
    from sklearn.metrics import f1_score
    from transformers import pipeline

    from ser_hf.data.audio import decode_audio
    from ser_hf.data.labels import EMODB_CODES
    from ser_hf.export import export_onnx, quantize_int8_graph
    from ser_hf.inference import load_for_inference
    from ser_hf.onnx_backend import FP32_FILE, OnnxModel, read_onnx_config
    from ser_hf.precision import check_verdict, cpu_flags, onnx_default

    transformers.logging.set_verbosity_error()
    model_dir = args.trained_model
    tmp = Path(tempfile.mkdtemp(prefix="bench_candidates_"))
    pipe_dir = args.pipeline_model or model_dir
    if args.uncrop_from:
        pipe_dir = uncropped_whisper(model_dir, args.uncrop_from, tmp / "uncropped")
    fp32 = load_for_inference(model_dir, device="cpu", backend="torch", precision="fp32")
    sr = fp32.sampling_rate
    test_files = sorted(f for f in (args.data_dir / "wav").glob("*.wav") if f.name[:2] in args.test_speakers)
    idx = np.linspace(0, len(test_files) - 1, num=min(args.num_clips, len(test_files))).round().astype(int)
    files = [test_files[i] for i in idx]
    q_files = test_files if not args.quality_clips else [
        test_files[i] for i in np.linspace(0, len(test_files) - 1, num=min(args.quality_clips, len(test_files)))
        .round().astype(int)]
    q_truth = [EMODB_CODES[f.name[5]] for f in q_files]
    q_arrays = [decode_audio(f, sr) for f in q_files]
    arrays = [decode_audio(f, sr) for f in files]
    audio_s = sum(len(a) for a in arrays) / sr
    t0 = time.perf_counter()
    listed = tmp / "quality_clips.csv"  # the export's own int8 check runs on the quality clips
    listed.write_text("file,label\n" + "".join(f"{f},{t}\n" for f, t in zip(q_files, q_truth)))
    export = export_onnx(model_dir, tmp / "onnx", quantize="int8", int8_scope=args.int8_scope,
                         per_channel=args.per_channel, check_audio=listed)
    export_s = time.perf_counter() - t0
    ecfg = read_onnx_config(export)
    gate = ecfg.get("int8_check") or {}
    default_graph, default_why = onnx_default(ecfg)
    variants = {}
    for scope, pc in (("all", False), ("all", True), ("ffn", False), ("ffn", True)):
        path = tmp / f"int8_{scope}{'_pc' if pc else ''}.onnx"
        quantize_int8_graph(export / FP32_FILE, path, scope=scope, per_channel=pc)
        variants[f"onnxruntime int8, {scope} MatMul/Gemm{', per-channel' if pc else ''}"] = path
    flags = cpu_flags()
    native_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    big = args.main_batch or max(args.batch_sizes)
    pipe = pipeline("audio-classification", model=str(pipe_dir), device=-1)

    def ort(path: Path, threads: int | None = None, optimization: str = "all"):
        p = load_for_inference(export, backend="onnx", precision="fp32")
        p.model = OnnxModel(path, threads=threads, optimization=optimization)
        return p

    models = {  # name -> predictor; each timed at batch `big` (and the ones in --batch-sizes at the others)
        "torch fp32": fp32,
        "torch int8 (dynamic, Linear)": load_for_inference(model_dir, device="cpu", backend="torch", precision="int8"),
        "onnxruntime fp32": ort(export / FP32_FILE),
        "onnxruntime fp32, basic graph optimisation": ort(export / FP32_FILE, optimization="basic"),
        "onnxruntime fp32, 1 thread": ort(export / FP32_FILE, threads=1),
        **{name: ort(path) for name, path in variants.items()},
        f"default path: export + backend=auto ({default_graph})": load_for_inference(export),
    }
    if native_bf16:
        models["torch bf16 autocast (native on this CPU)"] = load_for_inference(model_dir, device="cpu",
                                                                                backend="torch", precision="bf16")
    models = {n: m for n, m in models.items() if n == "torch fp32" or not any(x in n for x in args.skip)}

    def run_pipeline(clips):
        return [{d["label"]: d["score"] for d in pipe({"raw": a, "sampling_rate": sr}, top_k=None)} for a in clips]

    def batched(pred, b):
        return lambda clips: [r["scores"] for r in pred.predict_arrays(clips, sr, batch_size=b)]

    pipe_name = "pipeline() loop, per file" + (" (uncropped 30 s model)" if args.uncrop_from else "")
    methods = {pipe_name: (run_pipeline, "pipeline"), "torch fp32, per file (B=1)": (batched(fp32, 1), "torch fp32")}
    for name, pred in models.items():
        methods[f"{name} (B={big})"] = (batched(pred, big), name)
    for b in sorted(set(args.batch_sizes) | {big}):
        if b != big:
            for name in ("onnxruntime fp32", *args.extra_batch_models):
                if name in models:
                    methods[f"{name} (B={b})"] = (batched(models[name], b), name)
    if "onnxruntime fp32" in models:
        methods["onnxruntime fp32, per file (B=1)"] = (batched(models["onnxruntime fp32"], 1), "onnxruntime fp32")
    methods = {n: m for n, m in methods.items() if n.startswith(("pipeline", "torch fp32 ("))
               or not any(x in n for x in args.skip)}
    for fn, _ in methods.values():  # warm-up
        fn(arrays[:2])
    block = big
    names = list(methods)
    rates: dict[str, list[float]] = {n: [] for n in names}
    loads = []
    timed_out: dict[str, list] = {}
    for rep in range(args.repeats):
        spent = dict.fromkeys(names, 0.0)
        got: dict[str, list] = {n: [] for n in names}
        for k, start in enumerate(range(0, len(arrays), block)):
            clips = arrays[start:start + block]
            for name in names[k % len(names):] + names[:k % len(names)]:
                loads.append(os.getloadavg()[0])
                t = time.perf_counter()
                got[name].extend(methods[name][0](clips))
                spent[name] += time.perf_counter() - t
        timed_out = got
        for name in names:
            rates[name].append(len(arrays) / spent[name])
            print(f"repeat {rep + 1} {name}: {rates[name][-1]:.2f} clips/s", flush=True)

    # quality: one untimed pass per distinct model over the quality clips
    labels = fp32.label_names
    top = lambda scores: [max(s, key=s.get) for s in scores]  # noqa: E731
    # the same graph at another thread count / fusion level, or the export's own int8 graph (= the variant
    # quantised with the same settings), differs at the 1e-7 level: its quality pass is not repeated
    own = f"onnxruntime int8, {args.int8_scope} MatMul/Gemm{', per-channel' if args.per_channel else ''}"
    alias = {"onnxruntime fp32, basic graph optimisation": "onnxruntime fp32", "onnxruntime fp32, 1 thread":
             "onnxruntime fp32", f"default path: export + backend=auto ({default_graph})":
             "onnxruntime fp32" if default_graph == "fp32" else own}
    outputs = {}
    used = {m[1] for m in methods.values()}
    for name, pred in models.items():
        if name in used and alias.get(name) not in models:
            outputs[name] = batched(pred, big)(q_arrays)
            print(f"quality pass: {name}", flush=True)
    for name, same in alias.items():
        if name in models and same in outputs:
            outputs[name] = outputs[same]
    ref = outputs["torch fp32"]
    f1_ref = f1_score(q_truth, top(ref), labels=labels, average="macro", zero_division=0)
    quality = {}
    for key, q in outputs.items():
        f1 = f1_score(q_truth, top(q), labels=labels, average="macro", zero_division=0)
        agree = float(np.mean([a == b for a, b in zip(top(q), top(ref))]))
        rec = {"top1_agreement": agree, "macro_f1_delta": f1 - f1_ref, "clips": len(q_arrays)}
        quality[key] = (agree, max(abs(a[k] - b[k]) for a, b in zip(q, ref) for k in labels), f1,
                        check_verdict(rec)[0])
    margins = [sorted(s.values())[-1] - sorted(s.values())[-2] for s in ref]
    # the pipeline loop: quality on the timed clips only (it runs the same fp32 weights; a full pass is slow)
    t_truth = [EMODB_CODES[f.name[5]] for f in files]
    t_ref, t_pipe = timed_out[f"torch fp32 (B={big})"], timed_out[pipe_name]
    t_f1_ref = f1_score(t_truth, top(t_ref), labels=labels, average="macro", zero_division=0)
    t_f1 = f1_score(t_truth, top(t_pipe), labels=labels, average="macro", zero_division=0)
    t_agree = float(np.mean([a == b for a, b in zip(top(t_pipe), top(t_ref))]))
    quality["pipeline"] = (t_agree, max(abs(a[k] - b[k]) for a, b in zip(t_pipe, t_ref) for k in labels),
                           f1_ref + (t_f1 - t_f1_ref), check_verdict({"top1_agreement": t_agree,
                                                                     "macro_f1_delta": t_f1 - t_f1_ref})[0])

    memory = {}
    if not args.no_memory:
        memory["pipeline"] = run_probe("pipeline", pipe_dir, files, big)
        memory["torch fp32"] = run_probe("fp32", model_dir, files, big)
        memory["onnxruntime fp32"] = run_probe("onnx:fp32", export, files, big)
        for name in args.memory_variants:
            if name in variants:
                memory[name] = run_probe(f"onnxfile:{variants[name]}", export, files, big)
        memory["default path"] = run_probe("onnx:auto", export, files, big)
    med = {n: statistics.median(v) for n, v in rates.items()}
    base = med[names[0]]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    lines = [
        f"## Candidates: {args.title or model_dir.name} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        "```",
        "python benchmarks/bench_inference.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "```",
        "",
        f"- Machine: {cpu}, {os.cpu_count()} cores, flags {' '.join(simd)}; native bf16: {native_bf16}; "
        f"avx2: {'avx2' in flags}; VNNI: {bool(flags & {'avx512_vnni', 'avx_vnni'})}. torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{__import__('onnxruntime').__version__}, transformers {transformers.__version__}. 1-min load average "
        f"during the timed runs: median {statistics.median(loads):.1f}, max {max(loads):.1f} (2 cores shared "
        f"with other engineers' jobs; methods take turns per block of {block} clips so they see the same load).",
        f"- Model: `{model_dir.name}` ({type(fp32.model).__name__}, "
        f"{sum(p.numel() for p in fp32.model.parameters()) / 1e6:.1f} M parameters; training: see the notes with "
        f"this table); pipeline() runs `{Path(pipe_dir).name}`. ONNX export (fp32 + int8 + the int8 check) took "
        f"{export_s:.0f} s.",
        f"- Speed: {len(files)} EmoDB clips of the test speakers {', '.join(args.test_speakers)} ({audio_s:.0f} s "
        f"of audio), {args.repeats} repeats. Quality: {len(q_files)} clips of the same speakers (untimed pass), "
        f"against torch fp32 (macro-F1 {f1_ref:.3f}); median top-1 margin of fp32: {statistics.median(margins):.2f}. "
        f"'passes' = top-1 agreement >= 98 % and |delta macro-F1| <= 0.01 (ser_hf.precision). The pipeline() "
        f"row's quality columns compare it with torch fp32 on the {len(files)} timed clips only.",
        f"- The export's own int8 check (int8_scope={args.int8_scope}, per_channel={args.per_channel}): "
        f"{check_verdict(gate)[1]}; max |prob diff| {gate.get('max_abs_prob_diff', float('nan')):.1e}. "
        f"backend=auto on the export runs: {default_graph} ({default_why}).",
        "",
        "| method | clips/s (median) | x pipeline loop | top-1 agreement with torch fp32 | max abs prob diff | "
        "macro-F1 | delta macro-F1 | passes | repeats (clips/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name in names:
        agree, diff, f1, ok = quality[methods[name][1]]
        lines.append(f"| {name} | {med[name]:.2f} | {med[name] / base:.2f} | {agree:.1%} | {diff:.1e} | {f1:.3f} | "
                     f"{f1 - f1_ref:+.3f} | {'yes' if ok else 'no'} | {', '.join(f'{x:.2f}' for x in rates[name])} |")
    lines += ["", "Peak RSS (MB, fresh process each, after load / peak): " + (
        "; ".join(f"{k} {v['after_load_mb']:.0f} / {v['peak_mb']:.0f}" for k, v in memory.items())
        if memory else "not measured (--no-memory)"), ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        previous = args.out.read_text() if args.append and args.out.exists() else ""
        args.out.write_text(previous + ("\n" if previous else "") + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

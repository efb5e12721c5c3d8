"""Predict emotions with any saved ser_hf model; prints one JSON line per file.

    python scripts/predict.py model=runs/demo/emodb-speaker-seed0/model audio=clip.wav
    python scripts/predict.py model=DIR audio=FOLDER [batch_size=16] [chunk_s=10] [overlap_s=1] [device=cpu]
        [precision=fp32|bf16|int8|auto] [allow_padding=true|false] [backend=auto|torch|onnx] [threads=N]

precision=bf16 is about 2x faster on CPUs with native bfloat16 and on GPUs, int8 (CPU) about 1.7x; both move
probabilities by ~1e-3 (benchmarks/results/inference.md); auto picks bf16 where the device runs it natively.
allow_padding=true batches clips of different lengths for checkpoints without attention masks (wav2vec2-base),
at a small cost in exactness. backend=onnx runs a folder written by scripts/export.py with onnxruntime
(precision=fp32|int8 picks its graph; default: the export's own); backend=auto (default) does so by itself.
"""

import json
import sys

from ser_hf.config import configure_logging, parse_bool, parse_key_values
from ser_hf.inference import audio_paths, predict_files

if __name__ == "__main__":
    configure_logging()
    args = parse_key_values(sys.argv[1:], required=("model", "audio"),
                            optional={"batch_size": int, "chunk_s": float, "overlap_s": float, "device": str,
                                      "precision": str, "allow_padding": parse_bool,
                                      "backend": str, "threads": int})
    model, audio = args.pop("model"), args.pop("audio")
    for record in predict_files(audio_paths(audio), model, **args):
        print(json.dumps(record), flush=True)

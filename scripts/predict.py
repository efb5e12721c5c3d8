"""Predict emotions with any saved ser_hf model; prints one JSON line per file.

    python scripts/predict.py model=runs/demo/emodb-speaker-seed0/model audio=clip.wav
    python scripts/predict.py model=DIR audio=FOLDER [batch_size=16] [chunk_s=10] [overlap_s=1] [device=cpu]
        [precision=fp32|bf16|int8|auto] [allow_padding=true|false]

Every model family scores a long file as ``chunk_s`` chunks overlapping by ``overlap_s`` whose logits are
averaged (one record per file). A clip shorter than 0.25 s (or the model's minimum) is scored with a
``warning`` in its record; a silence-only file gives ``"label": "no speech"``; an undecodable file an
``error`` record. Exit code: 0 when every file was scored, 1 when any failed, 2 for bad arguments; the
summary line goes to stderr, so stdout holds only JSON lines.

precision=bf16 is about 2x faster on CPUs with native bfloat16 and on GPUs, int8 (CPU) about 1.7x; both move
probabilities by ~1e-3 (benchmarks/results/inference.md); auto picks bf16 where the device runs it natively.
allow_padding=true batches clips of different lengths for checkpoints without attention masks (wav2vec2-base),
at a small cost in exactness.
"""

import json
import sys

from ser_hf.config import configure_logging, parse_bool, parse_key_values
from ser_hf.inference import audio_paths, load_for_inference

OPTIONAL = {"batch_size": int, "chunk_s": float, "overlap_s": float, "device": str, "precision": str,
            "allow_padding": parse_bool}


def main(argv: list[str]) -> int:
    configure_logging()
    try:
        args = parse_key_values(argv, required=("model", "audio"), optional=OPTIONAL)
        model, audio = args.pop("model"), args.pop("audio")
        paths = audio_paths(audio)
        predictor = load_for_inference(model, device=args.pop("device", None),
                                       precision=args.pop("precision", "fp32"))
    except SystemExit as err:  # parse_key_values' message
        print(f"predict.py: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"predict.py: {err}", file=sys.stderr)
        return 2
    failed = no_speech = 0
    for record in predictor.predict_files(paths, **args):
        failed += "error" in record
        no_speech += record.get("label") == "no speech"
        print(json.dumps(record), flush=True)
    print(f"predict.py: {len(paths) - failed} of {len(paths)} file(s) scored ({no_speech} without speech), "
          f"{failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Predict emotions with any saved ser_hf model; prints one JSON line per file.

    python scripts/predict.py model=runs/demo/emodb-speaker-seed0/model audio=clip.wav
    python scripts/predict.py model=DIR audio=FOLDER [batch_size=16] [chunk_s=10] [overlap_s=1] [device=cpu]
"""

import json
import sys

from ser_hf.config import configure_logging, parse_key_values
from ser_hf.inference import audio_paths, predict_files

if __name__ == "__main__":
    configure_logging()
    args = parse_key_values(sys.argv[1:], required=("model", "audio"),
                            optional={"batch_size": int, "chunk_s": float, "overlap_s": float, "device": str})
    model, audio, device = args.pop("model"), args.pop("audio"), args.pop("device", None)
    for record in predict_files(audio_paths(audio), model, device=device, **args):
        print(json.dumps(record), flush=True)

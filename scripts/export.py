"""Export a saved ser_hf neural model to ONNX, runnable with onnxruntime (``predict.py backend=onnx``).

    python scripts/export.py model=runs/demo/emodb-speaker-seed0/model format=onnx output_dir=exports/demo
    python scripts/export.py model=DIR format=onnx output_dir=OUT [quantize=int8] [opset=17] [overwrite=true]
        [check_audio=CSV_OR_FOLDER] [int8_scope=all|ffn] [per_channel=true|false]

Then: ``python scripts/predict.py model=OUT audio=clips/ [backend=onnx] [precision=auto|fp32|int8]``.

With quantize=int8 the export measures the int8 graph against the fp32 one on labelled clips - the test split
of the run folder DIR was saved in (DIR = runs/<recipe>/<run>/model), or check_audio= (a CSV with file,label
columns; a folder of unlabelled clips gives agreement only, which cannot pass) - and records top-1 agreement,
max |prob diff| and the macro-F1 change in OUT/onnx_config.json. predict.py's default (precision=auto) runs
int8 only if that check passed (ser_hf/precision.py), else fp32 with a log line saying why.
See ser_hf/export.py for what is written and why torch.onnx (not optimum) exports it.
"""

import sys

from ser_hf.config import configure_logging, parse_bool, parse_key_values
from ser_hf.export import FORMATS, export_onnx

if __name__ == "__main__":
    configure_logging()
    args = parse_key_values(sys.argv[1:], required=("model", "output_dir"),
                            optional={"format": str, "quantize": str, "opset": int, "overwrite": parse_bool,
                                      "check_audio": str, "int8_scope": str, "per_channel": parse_bool})
    fmt = args.pop("format", "onnx")
    if fmt not in FORMATS:
        raise SystemExit(f"format={fmt!r}: supported formats are {', '.join(FORMATS)}")
    quantize = args.pop("quantize", None)
    if quantize in ("none", "no", ""):
        quantize = None
    try:
        out = export_onnx(args.pop("model"), args.pop("output_dir"), quantize=quantize, **args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise SystemExit(f"export failed: {err}") from None
    print(out)

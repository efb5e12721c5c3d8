"""Predict emotions with any saved ser_hf model; prints one JSON line per file (or per segment).

    python scripts/predict.py model=runs/demo/emodb-speaker-seed0/model audio=clip.wav
    python scripts/predict.py model=DIR audio=FOLDER [batch_size=16] [chunk_s=10] [overlap_s=1] [device=cpu]
        [precision=fp32|bf16|int8|auto] [allow_padding=true|false] [backend=auto|torch|onnx] [threads=N]
    python scripts/predict.py model=DIR audio=FILE_OR_FOLDER segment=vad|window|none [output_dir=OUT]
        [window_s=2 hop_s=2] [min_speech_s=0.25 min_silence_s=0.5 max_segment_s=10]

Every model family scores a long file as ``chunk_s`` chunks overlapping by ``overlap_s`` whose logits are
averaged (one record per file). A dimensional model (trained with task=regression) prints its ratings instead of
a label and probabilities, ``{"file": ..., "values": {"arousal": ..., "valence": ..., "dominance": ...}}`` in the
targets' own units; a multitask model prints both. Segment rows and segments.csv then carry one column per target,
summary.csv the mean of each over the file's speech (``mean_<target>``), and the timeline the values over time.
A model trained on speaker-normalised clip vectors (stats features, embeddings) z-scores the files of one call
together as one speaker's clips: pass one speaker's clips (at least 2). A clip shorter than 0.25 s (or the model's minimum) is scored with a
``warning`` in its record; a silence-only file gives ``"label": "no speech"``; an undecodable file an
``error`` record. A file longer than 60 s is read in blocks and scored chunk by chunk (never whole in
memory). Exit code: 0 when every file was scored, 1 when any failed, 2 for bad arguments; the
summary line goes to stderr, so stdout holds only JSON lines.

Long recordings (ser_hf.segments): ``segment=window`` scores windows of ``window_s`` every ``hop_s`` seconds,
``segment=vad`` the speech regions Silero VAD finds (``min_speech_s``, ``min_silence_s``; a region longer than
``max_segment_s`` is scored with the chunk_s/overlap_s averaging); one row per segment (file, start, end,
label, probabilities). With ``output_dir`` the rows go to segments.csv/.json with summary.csv/.json (share
of speech time per emotion) and a <file>.timeline.png per file; without it, as JSON lines on stdout. The
audio is read in blocks; a progress bar over files and segments goes to stderr (on a terminal).

precision=bf16 is about 2x faster on CPUs with native bfloat16 and on GPUs, int8 (CPU) about 1.7x; both move
probabilities by ~1e-3 and flip a few % of a trained model's labels (benchmarks/results/inference.md), so
precision=auto runs fp32 for torch folders. allow_padding=true batches clips of different lengths for
checkpoints without attention masks (wav2vec2-base), at a small cost in exactness. backend=onnx runs a folder
written by scripts/export.py with onnxruntime (precision=fp32|int8 picks its graph; auto, the default: int8 only
if the export's recorded int8 quality check passed, see ser_hf/precision.py); backend=auto does so by itself.
"""

import json
import sys

from ser_hf.config import configure_logging, parse_bool, parse_key_values
from ser_hf.inference import audio_paths, load_for_inference

OPTIONAL = {"batch_size": int, "chunk_s": float, "overlap_s": float, "device": str, "precision": str,
            "allow_padding": parse_bool, "backend": str, "threads": int}
SEGMENT_KEYS = {"segment": str, "window_s": float, "hop_s": float, "min_speech_s": float, "min_silence_s": float,
                "max_segment_s": float, "output_dir": str}


def _segments(predictor, paths, seg: dict, output_dir, args: dict) -> tuple[int, int]:
    """Per-segment rows (ser_hf.segments); returns (failed files, rows)."""
    from tqdm.auto import tqdm

    from ser_hf.segments import segment_file, write_outputs

    settings, results, failed = seg, [], 0
    for path in tqdm(paths, desc="files", unit="file", disable=None, file=sys.stderr):
        try:
            result = segment_file(predictor, path, settings, progress=lambda **kw: tqdm(
                disable=None, file=sys.stderr, **kw), **args)
        except (OSError, RuntimeError, ValueError) as err:  # soundfile's LibsndfileError is a RuntimeError
            failed += 1
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            print(json.dumps({"file": str(path), "label": None, "scores": None, "error": message}), flush=True)
            continue
        results.append(result)
        if output_dir is None:
            for row in result["rows"]:
                print(json.dumps(row), flush=True)
    rows = sum(len(r["rows"]) for r in results)
    if output_dir is not None:
        write_outputs(results, predictor.label_names, output_dir, predictor.targets)
    return failed, rows


def _whole_files(predictor, paths, args: dict) -> list[dict]:
    """One record per file; files longer than segments.LONG_FILE_S are scored streaming (bounded memory)."""
    import soundfile as sf

    from ser_hf.segments import LONG_FILE_S, score_streaming

    long = set()
    for i, path in enumerate(paths):
        try:
            if sf.info(str(path)).duration > LONG_FILE_S:
                long.add(i)
        except (RuntimeError, OSError):  # unreadable: predict_files names the problem
            pass
    short = iter(predictor.predict_files([p for i, p in enumerate(paths) if i not in long], **args))
    return [score_streaming(predictor, path, **args) if i in long else next(short) for i, path in enumerate(paths)]


def main(argv: list[str]) -> int:
    configure_logging()
    try:
        args = parse_key_values(argv, required=("model", "audio"), optional={**OPTIONAL, **SEGMENT_KEYS})
        model, audio = args.pop("model"), args.pop("audio")
        seg = {k: args.pop(k) for k in list(args) if k in SEGMENT_KEYS}
        output_dir = seg.pop("output_dir", None)
        settings = None
        if seg or output_dir is not None:
            from ser_hf.segments import SegmentSettings

            settings = SegmentSettings(mode=seg.pop("segment", "none"), **seg)
        chunk_s, overlap_s = args.get("chunk_s", 10.0), args.get("overlap_s", 1.0)
        if not chunk_s > 0 or not 0 <= overlap_s < chunk_s:
            raise ValueError(f"chunk_s={chunk_s}, overlap_s={overlap_s}: need chunk_s > 0 and 0 <= overlap_s < chunk_s")
        if args.get("batch_size", 1) < 1:
            raise ValueError(f"batch_size={args['batch_size']} must be >= 1")
        paths = audio_paths(audio)
        predictor = load_for_inference(model, device=args.pop("device", None), precision=args.pop("precision", None),
                                       backend=args.pop("backend", "auto"), threads=args.pop("threads", None))
    except SystemExit as err:  # parse_key_values' message
        print(f"predict.py: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"predict.py: {err}", file=sys.stderr)
        return 2
    if settings is not None and (settings.mode != "none" or output_dir is not None):
        failed, rows = _segments(predictor, paths, settings, output_dir, args)
        where = f" into {output_dir}" if output_dir is not None else ""
        print(f"predict.py: {len(paths) - failed} of {len(paths)} file(s) scored, {rows} segment(s){where}, "
              f"{failed} failed", file=sys.stderr)
        return 1 if failed else 0
    failed = no_speech = 0
    try:
        records = _whole_files(predictor, paths, args)
    except ValueError as err:  # e.g. a speaker-normalised model given a single clip
        print(f"predict.py: {err}", file=sys.stderr)
        return 2
    for record in records:
        failed += "error" in record
        no_speech += record.get("label") == "no speech"
        print(json.dumps(record), flush=True)
    print(f"predict.py: {len(paths) - failed} of {len(paths)} file(s) scored ({no_speech} without speech), "
          f"{failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

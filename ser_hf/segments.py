"""Long recordings: emotion per segment over time (fixed windows or voice-activity segments).

``segment_file(predictor, path, settings)`` cuts one recording into segments and scores each with the
predictor (:mod:`ser_hf.inference`; chunked scoring and the one clip-averaging function of
:mod:`ser_hf.clips`). Modes (:class:`SegmentSettings`):

- ``none``: one row per file (the whole file, as ``predict.py`` always did);
- ``window``: windows of ``window_s`` every ``hop_s`` seconds (the last one may be shorter; windows without
  sound get the "no speech" label);
- ``vad``: speech regions found by Silero VAD (``silero-vad``; its bundled model, fed 16 kHz arrays resampled
  with soxr, never its ``read_audio``), with ``min_speech_s`` / ``min_silence_s``; a region longer than
  ``max_segment_s`` is one row scored as ``chunk_s`` chunks overlapping by ``overlap_s`` whose logits are
  averaged (shorter ones are scored as one input). A recording without speech gives one "no speech" row.

Memory: the file is read in blocks (``soundfile.blocks``) and resampled block by block with a streaming
soxr resampler for the VAD pass; each segment is then read from the file on its own. A one-hour file
therefore never sits in memory whole: the VAD keeps one speech probability per 32 ms and the timeline a
min/max envelope per 10 ms.

Outputs (:func:`write_outputs`): ``segments.csv`` / ``segments.json`` (file, start, end, label, one column per
class probability), ``summary.json`` / ``summary.csv`` (per file: duration, speech time, share of speech time
per emotion) and ``<file stem>.timeline.png`` (class probabilities over time under the waveform). A dimensional
model (regression, or multitask beside the classes) adds one column per target (``arousal``, ``valence``,
``dominance``: the segment's values) to the segments, the speech-time-weighted mean of each target over a file's
scored segments to its summary (``mean``), and the values over time to the timeline.

Models that z-score their clip vectors over a call (speaker-normalised ``stats`` features or embeddings,
``Predictor.normalises_over_call``) score all segments of a recording in one call: the recording's segments are
treated as one speaker's clips.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from matplotlib import cm
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ser_hf.clips import NO_SPEECH, is_silent
from ser_hf.data.audio import RESAMPLE_QUALITY, resample
from ser_hf.models.transformer import chunk_bounds

logger = logging.getLogger(__name__)

MODES = ("none", "window", "vad")
VAD_RATE = 16000
VAD_FRAME = 512  # silero-vad's frame at 16 kHz (32 ms)
ENVELOPE_S = 0.01
BLOCK_S = 30.0


@dataclasses.dataclass
class SegmentSettings:
    mode: str = "none"
    window_s: float = 2.0
    hop_s: float | None = None  # None = window_s
    min_speech_s: float = 0.25
    min_silence_s: float = 0.5
    max_segment_s: float = 10.0
    threshold: float = 0.5  # silero's speech probability threshold (its default)
    speech_pad_s: float = 0.03  # silero's default padding of each speech region

    def __post_init__(self):
        problems = []
        if self.mode not in MODES:
            problems.append(f"segment={self.mode!r}: use one of {', '.join(MODES)}")
        for key in ("window_s", "min_silence_s", "max_segment_s"):
            if not float(getattr(self, key)) > 0:
                problems.append(f"{key}={getattr(self, key)} must be > 0")
        if self.hop_s is not None and not float(self.hop_s) > 0:
            problems.append(f"hop_s={self.hop_s} must be > 0")
        if not float(self.min_speech_s) >= 0:
            problems.append(f"min_speech_s={self.min_speech_s} must be >= 0")
        if not 0 < float(self.threshold) < 1:
            problems.append(f"threshold={self.threshold} must be between 0 and 1")
        if problems:
            raise ValueError("; ".join(problems))


# ------------------------------------------------------------------------------------------- reading


def _mono(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block.astype(np.float32, copy=False)


def stream_blocks(path: str | os.PathLike, sampling_rate: int, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Mono float32 blocks of the file at ``sampling_rate``: read with ``soundfile.blocks`` and resampled with
    a streaming soxr resampler (continuous across blocks), so memory stays at one block."""
    info = sf.info(os.fspath(path))
    native = int(info.samplerate)
    stream = None if native == sampling_rate else soxr.ResampleStream(native, sampling_rate, 1, dtype="float32",
                                                                      quality=RESAMPLE_QUALITY)
    blocksize = max(1, int(block_s * native))
    for block in sf.blocks(os.fspath(path), blocksize=blocksize, dtype="float32", always_2d=True):
        x = _mono(block)
        yield x if stream is None else stream.resample_chunk(x)
    if stream is not None:
        tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        if tail.size:
            yield tail


def read_span(path: str | os.PathLike, start_s: float, end_s: float, sampling_rate: int) -> np.ndarray:
    """The file's samples between ``start_s`` and ``end_s`` (seconds), mono, at ``sampling_rate``."""
    info = sf.info(os.fspath(path))
    native = int(info.samplerate)
    a = max(0, int(round(start_s * native)))
    b = min(int(info.frames), int(round(end_s * native)))
    x, _ = sf.read(os.fspath(path), start=a, stop=max(a, b), dtype="float32", always_2d=True)
    return resample(_mono(x), native, sampling_rate)


class _Envelope:
    """Min/max of the waveform per ENVELOPE_S, for the timeline plot (a few KB per minute)."""

    def __init__(self, sampling_rate: int):
        self.step = max(1, int(ENVELOPE_S * sampling_rate))
        self.rest = np.zeros(0, np.float32)
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []

    def add(self, x: np.ndarray, last: bool = False):
        x = np.concatenate([self.rest, x])
        n = len(x) // self.step if not last else -(-len(x) // self.step)
        if n:
            body = x[: n * self.step] if not last else np.pad(x, (0, n * self.step - len(x)))
            frames = body.reshape(n, self.step)
            self.lo.append(frames.min(1))
            self.hi.append(frames.max(1))
        self.rest = x[n * self.step:] if not last else np.zeros(0, np.float32)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.lo:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self.lo), np.concatenate(self.hi)


# ----------------------------------------------------------------------------------------------- VAD

_VAD_MODEL = None


def _silero():
    """The silero_vad module, imported without its side effect: its import calls torch.set_num_threads(1)
    for the whole process, which would slow the emotion model that runs after it. Hence imported here, lazily
    (the thread count restored right after), never at the module top."""
    threads = torch.get_num_threads()
    import silero_vad

    torch.set_num_threads(threads)
    return silero_vad


def _vad_model():
    global _VAD_MODEL
    if _VAD_MODEL is None:
        _VAD_MODEL = _silero().load_silero_vad()  # the TorchScript model bundled in the wheel: no download
    return _VAD_MODEL


def scan(path: str | os.PathLike, *, vad: bool) -> dict:
    """One streaming pass over the file at 16 kHz: duration, waveform envelope and (``vad``) silero's speech
    probability per 32 ms frame."""
    model = _vad_model() if vad else None
    if model is not None:
        model.reset_states()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one 32 ms frame per call: more threads only add synchronisation (silero's advice)
    try:
        return _scan(path, model)
    finally:
        torch.set_num_threads(threads)


def _scan(path, model) -> dict:
    env = _Envelope(VAD_RATE)
    probs: list[float] = []
    rest = np.zeros(0, np.float32)
    total = 0
    with torch.inference_mode():
        for block in stream_blocks(path, VAD_RATE):
            total += len(block)
            env.add(block)
            if model is None:
                continue
            x = np.concatenate([rest, block])
            n = len(x) // VAD_FRAME
            for k in range(n):
                probs.append(float(model(torch.from_numpy(x[k * VAD_FRAME:(k + 1) * VAD_FRAME]), VAD_RATE)))
            rest = x[n * VAD_FRAME:]
        if model is not None and len(rest):
            probs.append(float(model(torch.from_numpy(np.pad(rest, (0, VAD_FRAME - len(rest)))), VAD_RATE)))
    env.add(np.zeros(0, np.float32), last=True)
    return {"samples": total, "duration_s": total / VAD_RATE, "envelope": env.arrays(), "speech_probs": probs}


def speech_regions(speech_probs: list[float], num_samples: int, settings: SegmentSettings) -> list[tuple[float, float]]:
    """(start_s, end_s) of the speech regions silero's own post-processing finds in the frame probabilities."""
    if not speech_probs:
        return []
    stamps = _silero().get_speech_timestamps_from_probs(
        speech_probs, sampling_rate=VAD_RATE, threshold=settings.threshold,
        min_speech_duration_ms=int(round(settings.min_speech_s * 1000)),
        min_silence_duration_ms=int(round(settings.min_silence_s * 1000)),
        speech_pad_ms=int(round(settings.speech_pad_s * 1000)), audio_length_samples=num_samples)
    return [(s["start"] / VAD_RATE, s["end"] / VAD_RATE) for s in stamps]


def window_spans(duration_s: float, window_s: float, hop_s: float | None) -> list[tuple[float, float]]:
    """Windows of ``window_s`` every ``hop_s`` covering ``[0, duration_s]``; the last one ends at the end."""
    hop = float(hop_s or window_s)
    spans, start = [], 0.0
    while True:
        end = min(start + window_s, duration_s)
        spans.append((start, end))
        if end >= duration_s - 1e-9:
            return spans
        start += hop


# ------------------------------------------------------------------------------------------- scoring

LONG_FILE_S = 60.0  # segment=none: files longer than this are scored streaming (never whole in memory)


def score_streaming(predictor, path: str | os.PathLike, *, batch_size: int = 8, chunk_s: float | None = 10.0,
                    overlap_s: float = 1.0, allow_padding: bool | None = None) -> dict:
    """One record for a long file, as ``predictor.predict_files`` gives, without holding the file in memory:
    the file is read in blocks at the model's rate and cut into the same ``chunk_s``/``overlap_s`` chunks
    (last one aligned to the end), scored ``4 * batch_size`` at a time (a speaker-normalised model z-scores each
    such group of chunks together, a few minutes of the recording); the chunks' raw outputs (``predictor.outputs``: logits, log-probabilities of
    a classic classifier, dimension values) are averaged, as ``ser_hf.clips.aggregate_clips`` averages the
    chunks of an input held in memory, and the record is made from the mean."""
    name = os.fspath(path)
    sr = predictor.sampling_rate
    chunk_s, overlap_s = predictor.chunking(chunk_s or LONG_FILE_S, overlap_s)
    info = sf.info(name)
    expected = int(round(info.frames * sr / info.samplerate))
    bounds = chunk_bounds(expected, sr, chunk_s, overlap_s)
    size = bounds[0][1] - bounds[0][0]
    buffer, offset, k = np.zeros(0, np.float32), 0, 0  # buffer holds samples [offset, offset + len(buffer))
    out_sum, pending, loud = None, [], False

    def flush():
        nonlocal out_sum, pending
        if pending:
            out = predictor.outputs(pending, batch_size=batch_size, chunk_s=None,
                                    allow_padding=allow_padding).astype(np.float64).sum(0)
            out_sum = out if out_sum is None else out_sum + out
            pending = []

    taken = 0

    def take(a: int, b: int):
        nonlocal loud, taken
        x = buffer[a - offset:b - offset].copy()
        loud = loud or not is_silent(x, sr)
        pending.append(x)
        taken += 1
        # a speaker-normalised model z-scores each scored group together: never leave a last group of one chunk
        if len(pending) >= 4 * batch_size and len(bounds) - taken != 1:
            flush()

    for block in stream_blocks(name, sr):
        buffer = np.concatenate([buffer, block])
        while k < len(bounds) and bounds[k][1] <= offset + len(buffer):
            take(*bounds[k])
            k += 1
        keep = bounds[k][0] if k < len(bounds) else offset + len(buffer)
        buffer, offset = buffer[keep - offset:], keep
    total = offset + len(buffer)
    while k < len(bounds):  # the stream came out a few samples short of the header's estimate
        a = max(0, total - size)
        take(max(a, offset), total)
        k += 1
    flush()
    if not loud:
        return predictor.blank_record(name, NO_SPEECH)
    return predictor._record(name, out_sum / len(bounds))



def _row(path: str, start: float, end: float, record: dict) -> dict:
    row = {"file": path, "start": round(float(start), 3), "end": round(float(end), 3)}
    row.update({k: record[k] for k in ("label", "scores", "values") if k in record})
    if record.get("warning"):
        row["warning"] = record["warning"]
    return row


def segment_file(predictor, path: str | os.PathLike, settings: SegmentSettings, *, batch_size: int = 8,
                 chunk_s: float | None = 10.0, overlap_s: float = 1.0, allow_padding: bool | None = None,
                 progress=None) -> dict:
    """``{"file", "duration_s", "rows": [...], "envelope": (lo, hi)}`` for one recording.

    Raises the decoder's error for an unreadable file (the caller records it and goes on)."""
    name = os.fspath(path)
    info = scan(name, vad=settings.mode == "vad")
    duration = info["duration_s"]
    if settings.mode == "none":
        spans = [(0.0, duration)]
    elif settings.mode == "window":
        spans = window_spans(duration, settings.window_s, settings.hop_s)
    else:
        spans = speech_regions(info["speech_probs"], info["samples"], settings)
    rows = []
    if settings.mode == "none" and duration > LONG_FILE_S:  # one row, scored streaming
        record = score_streaming(predictor, name, batch_size=batch_size, chunk_s=chunk_s, overlap_s=overlap_s,
                                 allow_padding=allow_padding)
        return {"file": name, "duration_s": duration, "rows": [_row(name, 0.0, duration, record)],
                "envelope": info["envelope"]}
    if settings.mode == "vad" and not spans:
        rows.append(_row(name, 0.0, duration, predictor.blank_record(name, NO_SPEECH)))
    bar = progress(total=len(spans), desc=Path(name).name, unit="segment", leave=False) if progress else None
    sr = predictor.sampling_rate
    together = getattr(predictor, "normalises_over_call", False)  # one speaker's clips: z-scored in one call
    group = len(spans) or 1 if together else max(1, 4 * batch_size)  # scored together: bounded memory
    for first in range(0, len(spans), group):
        block = spans[first:first + group]
        scored: dict[int, dict] = {}
        todo: dict[bool, list[tuple[int, np.ndarray]]] = {False: [], True: []}
        for k, (start, end) in enumerate(block):
            x = read_span(name, start, end, sr)
            if x.size == 0 or is_silent(x, sr):
                scored[k] = predictor.blank_record(name, NO_SPEECH)
            else:
                todo[together or (settings.mode == "vad" and end - start > settings.max_segment_s)].append((k, x))
        for long, items in todo.items():
            if not items:
                continue
            # vad: a segment up to max_segment_s is one input; a longer one is scored in chunk_s chunks
            seg_chunk = chunk_s if (long or settings.mode != "vad") else None
            records = predictor.predict_arrays([x for _, x in items], sr, batch_size=batch_size, chunk_s=seg_chunk,
                                               names=[f"{name}[{block[k][0]:.2f}-{block[k][1]:.2f}s]" for k, _ in items],
                                               overlap_s=overlap_s, allow_padding=allow_padding)
            scored.update({k: r for (k, _), r in zip(items, records)})
        for k, (start, end) in enumerate(block):
            rows.append(_row(name, start, end, scored[k]))
        if bar is not None:
            bar.update(len(block))
    if bar is not None:
        bar.close()
    return {"file": name, "duration_s": duration, "rows": rows, "envelope": info["envelope"]}


def summarise(result: dict, label_names: list[str], targets: list[str] | tuple = ()) -> dict:
    """Share of the speech time per emotion (by each segment's label) and the file's speech time; with
    ``targets`` (a dimensional model) ``mean``: each target's mean over the scored segments, weighted by their
    length (None without speech). A regression model's summary has no share or label."""
    per = {label: 0.0 for label in label_names}
    sums = {t: 0.0 for t in targets}
    speech = 0.0
    for row in result["rows"]:
        length = row["end"] - row["start"]
        if label_names and row.get("label") in per:
            per[row["label"]] += length
        elif label_names or row.get("values") is None:
            continue
        speech += length
        for t in targets:
            sums[t] += length * row["values"][t]
    out = {"file": result["file"], "duration_s": round(result["duration_s"], 3), "speech_s": round(speech, 3)}
    if label_names:
        out["share"] = {k: (round(v / speech, 4) if speech else 0.0) for k, v in per.items()}
        out["label"] = max(per, key=per.get) if speech else NO_SPEECH
    if targets:
        out["mean"] = {t: (round(v / speech, 6) if speech else None) for t, v in sums.items()}
    return out


# -------------------------------------------------------------------------------------------- output


def rows_table(rows: list[dict], label_names: list[str], targets: list[str] | tuple = ()) -> list[dict]:
    """Flat rows for CSV: file, start, end, label, p_<class>..., then one column per target (its value)."""
    out = []
    for r in rows:
        flat = {"file": r["file"], "start": r["start"], "end": r["end"], "label": r.get("label") or ""}
        for label in label_names:
            flat[f"p_{label}"] = "" if r.get("scores") is None else round(float(r["scores"][label]), 6)
        for t in targets:
            flat[t] = "" if r.get("values") is None else round(float(r["values"][t]), 6)
        out.append(flat)
    return out


def _steps(rows: list[dict], key: str, name: str) -> tuple[list, list]:
    """A step line of ``row[key][name]`` over the scored segments (NaN breaks between them)."""
    xs, ys = [], []
    for r in rows:
        if r.get(key) is None:
            continue
        xs += [r["start"], r["end"], np.nan]
        ys += [r[key][name]] * 2 + [np.nan]
    return xs, ys


def plot_timeline(result: dict, label_names: list[str], path: str | os.PathLike,
                  targets: list[str] | tuple = ()) -> None:
    """Waveform envelope on top, each class probability over time below (gaps: no speech), and each target's
    value over time (dimensional models) below that."""
    lo, hi = result["envelope"]
    t = np.arange(len(lo)) * ENVELOPE_S
    panels = (["probability"] if label_names else []) + (["values"] if targets else [])
    fig = Figure(figsize=(12, 2.5 + 2.5 * len(panels)))  # object API on an Agg canvas, as ser_hf.reporting
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + len(panels), 1, sharex=True, gridspec_kw={"height_ratios": [1] + [2] * len(panels)})
    ax_w = axes[0]
    ax_p = axes[1] if label_names else None
    ax_v = axes[-1] if targets else None
    ax_w.fill_between(t, lo, hi, color="0.4", linewidth=0)
    ax_w.set_ylabel("waveform")
    ax_w.set_title(Path(result["file"]).name)
    for ax in axes[1:]:
        for r in result["rows"]:
            if r.get("label") == NO_SPEECH:
                ax.axvspan(r["start"], r["end"], color="0.9", zorder=0)
    if ax_p is not None:
        for k, label in enumerate(label_names):
            ax_p.plot(*_steps(result["rows"], "scores", label), label=label, color=cm.tab10(k % 10), linewidth=2)
        ax_p.set_ylim(0, 1)
        ax_p.set_ylabel("probability")
        ax_p.legend(loc="upper right", fontsize="small", ncol=min(len(label_names), 4))
    if ax_v is not None:
        for k, target in enumerate(targets):
            ax_v.plot(*_steps(result["rows"], "values", target), label=target, color=cm.Dark2(k % 8), linewidth=2)
        ax_v.set_ylabel("value")
        ax_v.grid(alpha=0.3)
        ax_v.legend(loc="upper right", fontsize="small", ncol=len(targets))
    axes[-1].set_xlim(0, max(result["duration_s"], 1e-3))
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_outputs(results: list[dict], label_names: list[str], output_dir: str | os.PathLike,
                  targets: list[str] | tuple = ()) -> dict:
    """segments.csv/.json, summary.csv/.json and one timeline PNG per file into ``output_dir`` (``targets``: the
    dimensions of a regression/multitask model, ``Predictor.targets``)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for res in results for r in res["rows"]]
    table = rows_table(rows, label_names, targets)
    fields = ["file", "start", "end", "label"] + [f"p_{label}" for label in label_names] + list(targets)
    with open(out / "segments.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
    (out / "segments.json").write_text(json.dumps(rows, indent=1))
    summaries = [summarise(res, label_names, targets) for res in results]
    (out / "summary.json").write_text(json.dumps(summaries, indent=1))
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "duration_s", "speech_s", *(["label", *label_names] if label_names else []),
                         *(f"mean_{t}" for t in targets)])
        for s in summaries:
            classes = [s["label"], *s["share"].values()] if label_names else []
            means = ["" if s["mean"][t] is None else s["mean"][t] for t in targets]
            writer.writerow([s["file"], s["duration_s"], s["speech_s"], *classes, *means])
    used: set[str] = set()
    for res in results:
        stem = Path(res["file"]).stem
        while stem in used:  # same file name in two folders
            stem += "_"
        used.add(stem)
        plot_timeline(res, label_names, out / f"{stem}.timeline.png", targets)
    return {"segments": len(rows), "files": len(results)}


__all__ = ["MODES", "SegmentSettings", "plot_timeline", "read_span", "scan", "segment_file", "speech_regions",
           "stream_blocks", "summarise", "window_spans", "write_outputs"]

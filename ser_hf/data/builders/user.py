"""Your own data: a manifest table (``data.corpus=manifest``) or one folder per class (``data.corpus=folder``).

Manifest: a CSV (or TSV: ``.tsv`` suffix or tabs in the header) with a header row. Columns (case-insensitive):

=============  ========  ===================================================================================
``path``       required  audio file, relative to the manifest's folder or absolute
``label``      required  class name (any string; the label order is sorted, or ``data.labels=[...]``)
``speaker``    optional  speaker id; with it every split is speaker-independent
``gender``     optional  female | male (f | m accepted, any case)
``split``      optional  train | validation | test, used by ``data.split=manifest`` only
``start``      optional  segment start in seconds (segments of longer files); ``end`` the segment end
``arousal``    optional  float ratings, any scale; also ``valence``, ``dominance``
=============  ========  ===================================================================================

A bad row (missing or unreadable file, empty or unknown label, bad gender/split/number, end <= start, a
duplicate path+segment, an empty speaker cell) is skipped with a warning naming its line and listed in
``skipped``; a missing required column is an error naming it. Other columns are ignored (warned once).

Folder: ``<data_dir>/<class>/<clip>.wav`` (one sub-folder per class; the folder name is the label). Speaker
(and optionally gender) from ``speaker_regex`` searched in each file name without its extension: the named
group ``speaker`` (else group 1, else the whole match) and an optional named group ``gender``; a file the
regex does not match is skipped. Without ``speaker_regex`` there is no speaker information: every split is
then utterance-level and marked as not speaker-independent.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ser_hf.data.builders._common import (
    NAN,
    CORPUS_AUDIO_EXTENSIONS,
    CorpusBuilder,
    SERBuilderConfig,
    SkipFile,
    dimension_features,
    list_audio,
    probe_audio,
)
from ser_hf.data.labels import DIMENSIONS, common_label_index

logger = logging.getLogger(__name__)

REQUIRED = ("path", "label")
OPTIONAL = ("speaker", "gender", "split", "start", "end") + DIMENSIONS
GENDERS = {"f": "female", "female": "female", "m": "male", "male": "male"}
PARTS = ("train", "validation", "test")


def _labels_option(labels: Any, corpus: str) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str) or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ValueError(f"{corpus}: labels must be a list of class names, e.g. data.labels=[angry,happy], "
                         f"got {labels!r}")
    out = tuple(x.strip() for x in labels)
    if len(set(out)) != len(out):
        raise ValueError(f"{corpus}: labels lists a class twice: {list(out)}")
    return out


@dataclass
class ManifestConfig(SERBuilderConfig):
    manifest: str = ""
    labels: tuple | None = None


@dataclass
class FolderConfig(SERBuilderConfig):
    speaker_regex: str | None = None
    labels: tuple | None = None


def _segment_name(rel: str, start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return rel
    return f"{rel}@{start or 0.0:.3f}-{'' if end is None else f'{end:.3f}'}"


def read_manifest(path: Path, labels: tuple[str, ...] | None) -> tuple[list[dict], list[dict], set[str]]:
    """(good rows, skipped rows, columns present); raises for an unreadable file or a missing column."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"manifest {path}: cannot read it as UTF-8 text ({err})") from err
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"manifest {path}: empty file; expected a header row with {', '.join(REQUIRED)}")
    tab = path.suffix.lower() in (".tsv", ".tab") or ("\t" in lines[0] and "," not in lines[0])
    reader = csv.reader(lines, delimiter="\t" if tab else ",")
    header = [h.strip().lower() for h in next(reader)]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ValueError(f"manifest {path}: missing required column(s) {', '.join(missing)} "
                         f"(header has {', '.join(header) or 'nothing'}); required: {', '.join(REQUIRED)}")
    dupes = sorted(c for c, n in Counter(header).items() if n > 1 and c)
    if dupes:
        raise ValueError(f"manifest {path}: column(s) {', '.join(dupes)} appear twice in the header")
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        logger.warning("manifest %s: ignoring column(s) %s (known: %s)", path, ", ".join(unknown),
                       ", ".join(REQUIRED + OPTIONAL))
    columns = set(header)
    root = path.parent
    rows, skipped, seen = [], [], {}
    for number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue  # blank line
        given = cells[header.index("path")].strip() if len(cells) > header.index("path") else ""

        def skip(reason: str) -> None:
            logger.warning("manifest %s line %d (%s): skipping: %s", path.name, number, given or "no path", reason)
            skipped.append({"file": given, "line": number, "reason": f"{path.name} line {number}: {reason}"})

        if len(cells) != len(header):
            skip(f"{len(cells)} cells for {len(header)} columns")
            continue
        row = {h: c.strip() for h, c in zip(header, cells)}
        try:
            rows.append(_manifest_row(row, root, labels, columns, seen, number))
        except SkipFile as err:
            skip(str(err))
    return rows, skipped, columns


def _number(row: dict, key: str) -> float | None:
    text = row.get(key, "")
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise SkipFile(f"{key} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SkipFile(f"{key} {text!r} is not a finite number")
    return value


def _manifest_row(row: dict, root: Path, labels, columns: set[str], seen: dict, number: int) -> dict:
    given, label = row["path"], row["label"]
    if not given:
        raise SkipFile("empty path")
    if not label:
        raise SkipFile("empty label")
    if labels is not None and label not in labels:
        raise SkipFile(f"unknown label {label!r}; data.labels is {list(labels)}")
    file = Path(given).expanduser()
    file = file if file.is_absolute() else root / file
    speaker = row.get("speaker", "")
    if "speaker" in columns and not speaker:
        raise SkipFile("empty speaker (the manifest has a speaker column)")
    gender_text = row.get("gender", "")
    gender = GENDERS.get(gender_text.lower(), None) if gender_text else ""
    if gender is None:
        raise SkipFile(f"gender {gender_text!r} is not female, male, f or m")
    part = row.get("split", "").lower()
    if part and part not in PARTS:
        raise SkipFile(f"split {row['split']!r} is not one of {', '.join(PARTS)}")
    start, end = _number(row, "start"), _number(row, "end")
    if start is not None and start < 0:
        raise SkipFile(f"start {start} is negative")
    if end is not None and end <= (start or 0.0):
        raise SkipFile(f"end {end} is not after start {start or 0.0}")
    dims = {d: _number(row, d) for d in DIMENSIONS}
    key = (str(file.resolve()), start, end)
    if key in seen:
        raise SkipFile(f"duplicate of line {seen[key]} (same path{' and segment' if start or end else ''})")
    seen[key] = number
    if not file.is_file():
        raise SkipFile(f"no such file {file}")
    return {"path": file, "given": given, "label": label, "speaker": speaker, "gender": gender,
            "partition": part, "start": start, "end": end, "line": number,
            **{d: NAN if v is None else v for d, v in dims.items()}}


class Manifest(CorpusBuilder):
    """Clips (or segments) listed in a CSV/TSV manifest; labels from the data."""

    CORPUS = "manifest"
    BUILDER_CONFIG_CLASS = ManifestConfig
    LAYOUT = ("a manifest CSV/TSV with a header: path,label[,speaker,gender,split,start,end,arousal,valence,"
              "dominance]; paths relative to the manifest's folder or absolute")

    @classmethod
    def default_data_dir(cls, options: dict) -> Path | None:
        """The folder relative paths are read from: the manifest's own."""
        manifest = options.get("manifest")
        return Path(manifest).expanduser().resolve().parent if manifest else None

    def __init__(self, *, data_dir=None, manifest: str | None = None, labels=None, **kwargs):
        if not manifest:
            raise ValueError("manifest: no manifest file given; pass data.manifest=path/to/clips.csv "
                             "(header: path,label[,speaker,gender,split,start,end,arousal,valence,dominance])")
        path = Path(manifest).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"manifest: {path} does not exist or is not a file")
        labels = _labels_option(labels, "manifest")
        self._manifest_path = path
        self._rows, self._bad, self._columns = read_manifest(path, labels)
        self._labels = list(labels) if labels is not None else sorted({r["label"] for r in self._rows})
        if not self._rows:
            raise ValueError(f"manifest {path}: no usable row ({len(self._bad)} skipped: "
                             f"{'; '.join(b['reason'] for b in self._bad[:3])})")
        super().__init__(data_dir=data_dir or path.parent, manifest=str(path),
                         labels=tuple(self._labels), **kwargs)

    @property
    def label_names(self) -> list[str]:
        return list(self._labels)

    @property
    def has_speakers(self) -> bool:
        return "speaker" in self._columns

    def extra_features(self):
        return {"partition": datasets.Value("string"), "segment_start": datasets.Value("float32"),
                "segment_end": datasets.Value("float32"), **dimension_features()}

    def find_audio(self, root: Path) -> list[Path]:
        return sorted({r["path"] for r in self._rows})

    def metadata_files(self, root: Path) -> list[Path]:
        return [self._manifest_path]

    def scan(self) -> list[dict]:
        skipped = [dict(b) for b in self._bad]
        rows, headers = [], {}
        for r in self._rows:
            try:
                if r["path"] not in headers:
                    headers[r["path"]] = probe_audio(r["path"])
                header = headers[r["path"]]
            except SkipFile as err:
                headers[r["path"]] = err
                header = err
            if isinstance(header, SkipFile):
                reason = f"{self._manifest_path.name} line {r['line']}: {header}"
                logger.warning("manifest: skipping %s: %s", r["given"], reason)
                skipped.append({"file": r["given"], "line": r["line"], "reason": reason})
                continue
            seconds = header.frames / header.samplerate
            start, end = r["start"] or 0.0, r["end"] if r["end"] is not None else seconds
            if start >= seconds or end > seconds + 1e-3:
                reason = (f"{self._manifest_path.name} line {r['line']}: segment {start:g}-{end:g} s is past the end "
                          f"of the file ({seconds:.3f} s)")
                logger.warning("manifest: skipping %s: %s", r["given"], reason)
                skipped.append({"file": r["given"], "line": r["line"], "reason": reason})
                continue
            segment = r["start"] is not None or r["end"] is not None
            frames = int(round((min(end, seconds) - start) * header.samplerate)) if segment else int(header.frames)
            rows.append({
                "audio": {"path": str(r["path"]), "bytes": None},
                "file": _segment_name(Path(r["given"]).as_posix(), r["start"], r["end"]),
                "label": self._labels.index(r["label"]),
                "common_label": common_label_index("manifest", r["label"]),
                "speaker_id": r["speaker"],
                "gender": r["gender"],
                "file_frames": frames,
                "file_sampling_rate": int(header.samplerate),
                "partition": r["partition"],
                "segment_start": start if segment else NAN,
                "segment_end": end if segment else NAN,
                **{d: r[d] for d in DIMENSIONS},
            })
        if not rows:
            raise ValueError(f"manifest {self._manifest_path}: none of its rows is usable ({len(skipped)} skipped)")
        rows.sort(key=lambda row: row["file"])  # the order of every other builder: by file
        counts = Counter(self._labels[row["label"]] for row in rows)
        empty = [x for x in self._labels if not counts[x]]
        if empty:
            logger.warning("manifest: label(s) %s have no usable row", ", ".join(empty))
        logger.info("manifest: %d rows from %s (%d skipped)", len(rows), self._manifest_path, len(skipped))
        self._report = {"skipped": skipped, "excluded": {}, "num_rows": len(rows)}
        return rows


class Folder(CorpusBuilder):
    """One sub-folder per class; speaker (and gender) from an optional regex on the file names."""

    CORPUS = "folder"
    BUILDER_CONFIG_CLASS = FolderConfig
    LAYOUT = "one sub-folder per class: <data_dir>/<class>/<clip>.wav (e.g. angry/spk01_001.wav)"

    def __init__(self, *, data_dir=None, speaker_regex: str | None = None, labels=None, **kwargs):
        labels = _labels_option(labels, "folder")
        try:
            self._regex = re.compile(speaker_regex) if speaker_regex else None
        except re.error as err:
            raise ValueError(f"folder: speaker_regex {speaker_regex!r} is not a valid regular expression ({err})") \
                from None
        root = self.check_data_dir(data_dir)
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and list_audio(p))
        self._labels = list(labels) if labels is not None else present
        if not self._labels:
            raise FileNotFoundError(f"folder: no sub-folder of {root} holds audio ({'/'.join(CORPUS_AUDIO_EXTENSIONS)}); "
                                    f"expected {self.LAYOUT}")
        super().__init__(data_dir=data_dir, speaker_regex=speaker_regex, labels=tuple(self._labels), **kwargs)

    @property
    def label_names(self) -> list[str]:
        return list(self._labels)

    @property
    def has_speakers(self) -> bool:
        return self._regex is not None

    def extra_features(self):
        return {}

    def find_audio(self, root: Path) -> list[Path]:
        return [f for d in sorted(root.iterdir()) if d.is_dir() for f in list_audio(d)]

    def clip_key(self, path: Path, rel: str) -> str:
        return str(Path(rel).with_suffix(""))

    def parse(self, path: Path, rel: str, meta) -> dict:
        label = path.parent.name
        if label not in self._labels:
            raise SkipFile(f"folder {label!r} is not in data.labels {self._labels}")
        speaker, gender = "", ""
        if self._regex is not None:
            match = self._regex.search(path.stem)
            if match is None:
                raise SkipFile(f"file name {path.stem!r} does not match speaker_regex {self._regex.pattern!r}")
            groups = match.groupdict()
            speaker = groups.get("speaker") or (match.group(1) if match.re.groups else match.group(0))
            if not speaker:
                raise SkipFile(f"speaker_regex {self._regex.pattern!r} matched an empty speaker in {path.stem!r}")
            g = (groups.get("gender") or "").lower()
            if g and g not in GENDERS:
                raise SkipFile(f"gender {g!r} from speaker_regex is not female, male, f or m")
            gender = GENDERS.get(g, "")
        return {"label": label, "speaker_id": speaker, "gender": gender}

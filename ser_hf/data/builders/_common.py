"""What the corpus builders share: finding files, skip-and-report, the cache fingerprint.

Each corpus builder is a ``datasets.GeneratorBasedBuilder`` reading a local folder in
the corpus's own layout. A bad clip never stops a build: it is skipped with a
warning naming the file and the reason, and listed in ``builder.skipped``. Clips a
corpus leaves out by design (RAVDESS song, CREMA-D tied votes) are counted in
``builder.excluded``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import soundfile as sf
from datasets.builder import Key

from ser_hf.data import labels
from ser_hf.data.audio import CORPUS_AUDIO_EXTENSIONS
from ser_hf.data.labels import COMMON_LABELS, common_label_index

logger = logging.getLogger(__name__)

REPORT_FILENAME = "ser_hf_scan.json"  # written next to dataset_info.json: skipped/excluded survive a cache hit
NAN = math.nan


class SkipFile(Exception):
    """A file that cannot become a row (bad name, empty, unreadable header); warned and listed."""


class ExcludeClip(Exception):
    """A valid clip the corpus leaves out by design (e.g. RAVDESS song); counted by reason."""


@dataclass
class SERBuilderConfig(datasets.BuilderConfig):
    """BuilderConfig with the fingerprint of the files in data_dir.

    The fingerprint is part of the cache directory name (datasets hashes every
    config kwarg into the config id), so adding, removing or editing a file
    rebuilds the dataset instead of serving stale rows.
    """

    fingerprint: str = ""


@dataclass(repr=False)
class _PathAudio(datasets.Audio):
    """``Audio(decode=False)`` that stores a local path as-is.

    datasets' ``Audio.encode_example`` imports torchcodec even for a plain path
    that needs no encoding; this subclass skips that. It is used only while the
    builder writes its Arrow file; the saved and loaded features are plain Audio.
    """

    def encode_example(self, value):
        return {"bytes": None, "path": value["path"]}


def corpus_features(label_names: list[str], extra: dict[str, Any]) -> datasets.Features:
    """The columns every corpus has, then the corpus's own ``extra`` columns."""
    return datasets.Features(
        {
            "audio": datasets.Audio(decode=False),
            "file": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(label_names)),
            "common_label": datasets.ClassLabel(names=list(COMMON_LABELS)),
            "speaker_id": datasets.Value("string"),
            "gender": datasets.Value("string"),
            # From the file's header at scan time: length and rate without decoding (shapes, filters).
            "file_frames": datasets.Value("int64"),
            "file_sampling_rate": datasets.Value("int32"),
            **extra,
        }
    )


def _opt_out_of_streaming_patches(builder_cls: type) -> None:
    """Keep datasets from monkey-patching this package's builder modules for streaming.

    Every ``DatasetBuilder.__init__`` replaces ``open``, ``os.path.*`` and ``pathlib.Path`` in the builder's
    module and its parents' with fsspec-backed versions (``datasets.streaming.extend_module_for_streaming``)
    so that remote hub scripts can stream. These builders read local folders only; the patch made every path
    operation of the scan several times slower (``xPath``) and changed ``Path`` for the whole module for the
    rest of the process. datasets skips modules marked ``_patched_for_streaming``; mark ours.
    """
    for cls in builder_cls.__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and cls.__module__.startswith("ser_hf."):
            module._patched_for_streaming = True


def list_audio(folder: Path) -> list[Path]:
    """Audio files directly inside ``folder`` (not recursive), sorted; [] when it is not a folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in CORPUS_AUDIO_EXTENSIONS and p.is_file())


def files_fingerprint(root: Path, files: list[Path]) -> str:
    """Hash of relative path, size and mtime of ``files``: changes whenever one is added, removed or edited."""
    digest = hashlib.sha256()
    for path in sorted(set(files)):
        stat = path.stat()
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)  # manifest: anywhere
        digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def describe_dir(root: Path, limit: int = 8) -> str:
    """What is in ``root``, for error messages: its first entries, and audio files found deeper."""
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f", ... ({len(entries)} entries)" if len(entries) > limit else ""
    text = f"{root} holds " + (", ".join(names) + more if names else "nothing (empty folder)")
    deeper = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        depth = len(Path(dirpath).relative_to(root).parts)
        if depth >= 4:
            dirnames.clear()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in CORPUS_AUDIO_EXTENSIONS:
                deeper.append(Path(dirpath, name).relative_to(root).as_posix())
        if len(deeper) >= 1000:
            break
    if deeper:
        text += f"; audio files below it include {deeper[0]} ({len(deeper)}{'+' if len(deeper) >= 1000 else ''} found)"
    return text


def code_hash(*modules: Any) -> str:
    """Hash of the modules' source: a code change rebuilds cached datasets instead of serving stale ones."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(inspect.getfile(module)).read_bytes())
    return digest.hexdigest()[:16]


class CorpusBuilder(datasets.GeneratorBasedBuilder):
    """Base of the corpus builders: one "train" split holding every usable clip.

    Subclasses set CORPUS, LABELS, LAYOUT and implement ``find_audio``,
    ``parse`` and ``extra_features`` (plus ``metadata_files`` /
    ``load_metadata`` when the corpus ships tables).
    """

    CORPUS: str = ""
    LABELS: list[str] = []
    LAYOUT: str = ""  # the expected layout with an example path, for error messages
    HOMEPAGE: str = ""
    CITATION: str = ""
    LICENSE: str = ""
    BUILDER_CONFIG_CLASS = SERBuilderConfig
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *, data_dir: str | os.PathLike | None = None, **kwargs):
        _opt_out_of_streaming_patches(type(self))
        self.check_options(kwargs)
        root = self.check_data_dir(data_dir)
        files = self.find_audio(root)
        if not files:
            raise FileNotFoundError(
                f"{self.CORPUS}: found 0 audio files ({'/'.join(CORPUS_AUDIO_EXTENSIONS)}) where the layout puts them; "
                f"expected {self.LAYOUT}. Instead, {describe_dir(root)}"
            )
        kwargs.setdefault("fingerprint", files_fingerprint(root, files + self.metadata_files(root)))
        kwargs.setdefault("hash", code_hash(inspect.getmodule(type(self)), inspect.getmodule(CorpusBuilder), labels))
        self._report: dict | None = None
        super().__init__(data_dir=str(root), **kwargs)

    # ---- what each corpus defines -------------------------------------------------------
    @classmethod
    def default_data_dir(cls, options: dict) -> Path | None:
        """The data_dir to use when none is given (the manifest builder: the manifest's folder); else None."""
        return None

    @property
    def has_speakers(self) -> bool:
        """False when the rows carry no speaker information (a folder corpus without speaker_regex, a manifest
        without a speaker column): splits are then utterance-level and marked as not speaker-independent."""
        return True

    def find_audio(self, root: Path) -> list[Path]:
        """Every audio file where the corpus layout puts them (including ones that will be skipped)."""
        raise NotImplementedError

    def metadata_files(self, root: Path) -> list[Path]:
        """Metadata files present in ``root`` that the builder reads (part of the fingerprint)."""
        return []

    def load_metadata(self, root: Path) -> Any:
        """Tables joined onto clips; passed to ``parse``."""
        return None

    def parse(self, path: Path, rel: str, meta: Any) -> dict:
        """Corpus columns of one clip, with ``label`` as a name; raise SkipFile or ExcludeClip."""
        raise NotImplementedError

    def extra_features(self) -> dict[str, Any]:
        raise NotImplementedError

    def clip_key(self, path: Path, rel: str) -> str:
        """What makes two files the same clip (the second is skipped as a duplicate): the name without extension."""
        return path.stem

    @property
    def label_names(self) -> list[str]:
        """The ClassLabel names of this build (LABELS; builders whose label set depends on options override it)."""
        return list(self.LABELS)

    # ---- shared --------------------------------------------------------------------------
    @classmethod
    def check_options(cls, kwargs: dict) -> None:
        """A clear error for an option this corpus does not have (e.g. label_source on EmoDB)."""
        config_fields = set(cls.BUILDER_CONFIG_CLASS.__dataclass_fields__) - {"data_dir", "data_files"}
        builder_params = set(inspect.signature(datasets.DatasetBuilder.__init__).parameters) - {"self", "config_kwargs"}
        unknown = sorted(set(kwargs) - config_fields - builder_params)
        if unknown:
            own = sorted(config_fields - set(datasets.BuilderConfig.__dataclass_fields__) - {"fingerprint"})
            raise TypeError(
                f"{cls.CORPUS}: unknown option(s) {', '.join(unknown)}; "
                f"this corpus's options are {', '.join(own) or 'none'} besides data_dir and cache_dir"
            )

    @classmethod
    def check_data_dir(cls, data_dir: str | os.PathLike | None) -> Path:
        if data_dir is None or str(data_dir).strip() == "":
            raise ValueError(
                f"{cls.CORPUS}: no data_dir given; pass data_dir=<folder holding the corpus> laid out as {cls.LAYOUT}"
            )
        root = Path(data_dir).expanduser().resolve()
        if not root.exists():
            raise FileNotFoundError(f"{cls.CORPUS}: data_dir {root} does not exist; expected {cls.LAYOUT}")
        if not root.is_dir():
            raise NotADirectoryError(f"{cls.CORPUS}: data_dir {root} is a file, not a folder; expected {cls.LAYOUT}")
        return root

    @property
    def root(self) -> Path:
        return Path(self.config.data_dir)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=f"{self.CORPUS} read from a local copy laid out as {self.LAYOUT}",
            features=corpus_features(self.label_names, self.extra_features()),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            license=self.LICENSE,
        )

    def scan(self) -> list[dict]:
        """Rows of every usable clip; records skipped files and excluded clips in ``self._report``."""
        root = self.root
        meta = self.load_metadata(root)
        rows: list[dict] = []
        skipped: list[dict] = []
        excluded: Counter = Counter()
        seen: dict[str, str] = {}

        def skip(rel: str, reason: str) -> None:
            logger.warning("%s: skipping %s: %s", self.CORPUS, rel, reason)
            skipped.append({"file": rel, "reason": reason})

        order = {ext: i for i, ext in enumerate(CORPUS_AUDIO_EXTENSIONS)}
        files = sorted(self.find_audio(root),
                       key=lambda p: (self.clip_key(p, p.relative_to(root).as_posix()), order[p.suffix.lower()], str(p)))
        for path in files:
            rel = path.relative_to(root).as_posix()
            key = self.clip_key(path, rel)
            if key in seen:
                skip(rel, f"duplicate of {seen[key]} (same clip name)")
                continue
            seen[key] = rel
            try:
                row = self.parse(path, rel, meta)
                header = probe_audio(path)
            except SkipFile as err:
                skip(rel, str(err))
                continue
            except ExcludeClip as err:
                excluded[str(err)] += 1
                continue
            label = row.pop("label")
            label_names = self.label_names
            rows.append(
                {
                    "audio": {"path": str(path), "bytes": None},
                    "file": rel,
                    "file_frames": int(header.frames),
                    "file_sampling_rate": int(header.samplerate),
                    "label": label_names.index(label),
                    "common_label": common_label_index(self.CORPUS, label),
                    **row,
                }
            )
        rows.sort(key=lambda r: r["file"])
        if excluded:
            logger.warning(
                "%s: left out %d clips by design: %s",
                self.CORPUS,
                sum(excluded.values()),
                "; ".join(f"{reason}: {n}" for reason, n in sorted(excluded.items())),
            )
        logger.info("%s: %d clips from %s (%d files skipped)", self.CORPUS, len(rows), root, len(skipped))
        if skipped:
            logger.warning("%s: skipped %d files (each named in a warning above)", self.CORPUS, len(skipped))
        if not rows:
            raise ValueError(
                f"{self.CORPUS}: none of the {len(files)} audio files in {root} is usable "
                f"({len(skipped)} skipped, {sum(excluded.values())} left out by design); expected {self.LAYOUT}"
            )
        self._report = {"skipped": skipped, "excluded": dict(excluded), "num_rows": len(rows)}
        return rows

    @property
    def report(self) -> dict:
        """{"skipped": [{"file", "reason"}], "excluded": {reason: count}, "num_rows"} of the build."""
        if self._report is None:
            sidecar = Path(self._output_dir) / REPORT_FILENAME
            if sidecar.is_file():
                self._report = json.loads(sidecar.read_text())
            else:  # not built yet: scanning is cheap (names and headers only)
                self.scan()
        return self._report

    @property
    def skipped(self) -> list[dict]:
        return list(self.report["skipped"])

    @property
    def excluded(self) -> dict[str, int]:
        return dict(self.report["excluded"])

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"rows": self.scan()})]

    def _generate_examples(self, rows: list[dict]):
        for index, row in enumerate(rows):
            yield Key(0, index), row

    def _download_and_prepare(self, dl_manager, verification_mode, **kwargs):
        plain = self.info.features
        self.info.features = datasets.Features(
            {k: (_PathAudio(decode=False) if k == "audio" else v) for k, v in plain.items()}
        )
        try:
            super()._download_and_prepare(dl_manager, verification_mode, **kwargs)
        finally:
            self.info.features = plain
        # self._output_dir is the temporary folder datasets renames into place when done.
        (Path(self._output_dir) / REPORT_FILENAME).write_text(json.dumps(self.report, indent=1))


def probe_audio(path: Path):
    """soundfile's header of ``path`` (frames, samplerate); SkipFile naming the problem when unusable."""
    try:
        if path.stat().st_size == 0:
            raise SkipFile("empty file (0 bytes)")
        header = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise SkipFile(f"unreadable audio header ({err})") from err
    if header.frames == 0:
        raise SkipFile("no audio samples (zero-length)")
    return header


def dimension_features() -> dict[str, Any]:
    """arousal / valence / dominance columns (float32, NaN where a row has no rating)."""
    return {name: datasets.Value("float32") for name in labels.DIMENSIONS}


def nan_if_missing(value: float | None) -> float:
    return NAN if value is None else float(value)

"""``load_corpus``: a corpus folder -> decoded, speaker-split ``CorpusDict``.

Steps: the corpus builder reads data_dir (cached by datasets, keyed by a
fingerprint of the files); ``datasets.map`` decodes every clip once with
soundfile + soxr (cached too: a second identical call reads the cache and
decodes nothing); clips that fail to decode are dropped and listed; the label
set is applied; rows are split by speaker with ``ser_hf.data.splits``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np

from ser_hf.data import audio as audio_io
from ser_hf.data import splits as splits_mod
from ser_hf.data.builders import BUILDERS, code_hash
from ser_hf.data.labels import COMMON_LABELS, check_corpus

logger = logging.getLogger(__name__)

__all__ = ["CorpusDict", "SplitInfo", "load_corpus", "data_dir_env_var", "resolve_data_dir"]

SPLIT_NAMES = ("train", "validation", "test")
# Part of the decode cache key: a change to the decoding code decodes again instead of reusing old arrays.
DECODE_VERSION = f"soundfile+soxr-{audio_io.RESAMPLE_QUALITY}-mono-float32-{code_hash(audio_io)}"
DECODE_BATCH_SIZE = 16  # clips per map batch: bounds memory for long clips


@dataclass
class SplitInfo:
    """How a CorpusDict was made: which speakers went where, and what was skipped."""

    corpus: str
    split: str
    fold: int | None
    seed: int
    sampling_rate: int
    label_set: str
    label_names: list[str]
    speakers: dict[str, list[str]]
    leaky: bool = False
    skipped: list[dict] = field(default_factory=list)
    # Why a non-random split is still not speaker-independent (no speaker information, overlapping speakers).
    leaky_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class CorpusDict(datasets.DatasetDict):
    """DatasetDict with "train", "validation", "test" and ``.info`` (a SplitInfo).

    DatasetDict methods (map, filter, ...) return a plain DatasetDict: keep ``.info`` yourself.
    """

    def __init__(self, splits: dict[str, datasets.Dataset], info: SplitInfo):
        super().__init__(splits)
        self.info = info

    def __repr__(self) -> str:
        info = self.info
        where = f"{info.corpus} split={info.split!r} fold={info.fold} label_set={info.label_set!r}"
        return f"CorpusDict[{where}, {len(info.skipped)} skipped]" + super().__repr__()[len("DatasetDict"):]


def data_dir_env_var(name: str) -> str:
    """The environment variable read when no data_dir is given, e.g. SER_HF_DATA_EMODB."""
    return f"SER_HF_DATA_{check_corpus(name).upper()}"


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None) -> Path:
    """``data_dir``, else ``$SER_HF_DATA_<CORPUS>``; a ValueError saying how to pass it when both are empty."""
    env = data_dir_env_var(name)
    if data_dir is None or str(data_dir).strip() == "":
        data_dir = os.environ.get(env, "").strip()
        if not data_dir:
            raise ValueError(
                f"no data_dir for corpus {name!r}: pass the folder holding it, "
                f"e.g. data.data_dir=/path/to/{name} on the command line, load_corpus({name!r}, data_dir=...) "
                f"in Python, or set the environment variable {env}=/path/to/{name}"
            )
    return Path(data_dir).expanduser()


def _decode_batch(batch: dict, sampling_rate: int) -> dict:
    """datasets.map function: decode each clip; a failure leaves an empty array and the reason."""
    decoded, errors = [], []
    # Segments of longer files (manifest start/end): NaN or absent = the whole file.
    starts = batch.get("segment_start") or [None] * len(batch["audio"])
    ends = batch.get("segment_end") or [None] * len(batch["audio"])
    for item, start, end in zip(batch["audio"], starts, ends):
        try:
            # Looked up on the module at call time so tests can count calls.
            array = audio_io.decode_audio(item["path"], sampling_rate, start=start, end=end)
            errors.append("")
        except audio_io.AudioDecodeError as err:
            array = np.zeros(0, dtype=np.float32)
            errors.append(err.reason)
        decoded.append({"array": array, "sampling_rate": sampling_rate, "path": item["path"]})
    return {"audio": decoded, "decode_error": errors}


def _decoded_features(features: datasets.Features) -> datasets.Features:
    out = datasets.Features(features.copy())
    out["audio"] = {
        "array": datasets.List(datasets.Value("float32")),
        "sampling_rate": datasets.Value("int32"),
        "path": datasets.Value("string"),
    }
    out["decode_error"] = datasets.Value("string")
    return out


def _column(ds: datasets.Dataset, name: str) -> list:
    """One column as a Python list (reads only that column from Arrow, not the audio)."""
    return ds.data.column(name).to_pylist() if ds._indices is None else list(ds[name][:])


def _cache_root(cache_dir: str | os.PathLike | None) -> str | None:
    # datasets reads HF_DATASETS_CACHE once, at import; honour it at call time too.
    if cache_dir is not None:
        return str(cache_dir)
    return os.environ.get("HF_DATASETS_CACHE") or None


def load_corpus(
    name: str,
    data_dir: str | os.PathLike | None,
    split: str = "speaker",
    fold: int | None = None,
    sampling_rate: int = 16000,
    label_set: str = "corpus",
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    seed: int = 0,
    **builder_kwargs,
) -> CorpusDict:
    """Load corpus ``name`` from ``data_dir``, decoded to mono float32 at ``sampling_rate``, split by speaker.

    ``data_dir`` None or "" falls back to ``$SER_HF_DATA_<NAME>``. ``split``/``fold`` as in
    ``ser_hf.data.splits``; ``label_set`` "corpus" or "common" (rows without a common label dropped,
    ``label`` becomes the common label). ``builder_kwargs`` go to the builder (e.g. CREMA-D
    ``label_source="voice"``). Clips that cannot be decoded are skipped and listed in ``info.skipped``.
    """
    check_corpus(name)
    if label_set not in ("corpus", "common"):
        raise ValueError(f"unknown label_set {label_set!r}; expected 'corpus' or 'common'")
    if split not in splits_mod.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(splits_mod.SPLITS)}")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive integer (Hz), got {sampling_rate!r}")
    sampling_rate = int(sampling_rate)
    if split == "manifest" and name != "manifest":
        raise ValueError(f"split 'manifest' reads the split column of a manifest (corpus 'manifest'), not {name}")
    if name == "manifest" and data_dir and Path(data_dir).expanduser().is_file() and not builder_kwargs.get("manifest"):
        builder_kwargs["manifest"], data_dir = str(data_dir), None  # data_dir=clips.csv names the manifest itself
    if (data_dir is None or str(data_dir).strip() == "") and BUILDERS[name].default_data_dir(builder_kwargs):
        data_dir = BUILDERS[name].default_data_dir(builder_kwargs)
    root = resolve_data_dir(name, data_dir)

    builder = BUILDERS[name](data_dir=root, cache_dir=_cache_root(cache_dir), **builder_kwargs)
    builder.download_and_prepare()
    # The builder's own label order: fixed for published corpora, from the data for manifest/folder.
    label_names = list(COMMON_LABELS) if label_set == "common" else builder.info.features["label"].names
    raw = builder.as_dataset(split=datasets.Split.TRAIN)
    skipped = [dict(item) for item in builder.skipped]
    if skipped:
        logger.warning("%s: %d files were skipped when building (listed in info.skipped)", name, len(skipped))

    # Deterministic fingerprint: same built data + same rate + same decoder -> same cache file.
    fingerprint = hashlib.sha256(f"{raw._fingerprint}|{sampling_rate}|{DECODE_VERSION}".encode()).hexdigest()[:32]
    decoded = raw.map(
        _decode_batch,
        batched=True,
        batch_size=DECODE_BATCH_SIZE,
        writer_batch_size=DECODE_BATCH_SIZE * 8,
        fn_kwargs={"sampling_rate": sampling_rate},
        features=_decoded_features(raw.features),
        num_proc=num_proc,
        new_fingerprint=fingerprint,
        desc=f"Decoding {name} at {sampling_rate} Hz",
    )

    errors = _column(decoded, "decode_error")
    files = _column(decoded, "file")
    keep = np.array([not e for e in errors], dtype=bool)
    for file, reason in zip(files, errors):
        if reason:
            logger.warning("%s: skipping %s: %s", name, file, reason)
            skipped.append({"file": file, "reason": reason})
    decoded = decoded.remove_columns("decode_error")

    if label_set == "common":
        common = np.asarray(_column(decoded, "common_label"))
        order = decoded.column_names
        # Swapping the column (not map) avoids rewriting every decoded array.
        decoded = (
            decoded.remove_columns("label")
            .add_column("label", common.tolist(), feature=datasets.ClassLabel(names=list(COMMON_LABELS)))
            .select_columns(order)
        )
        dropped = int(np.sum(keep & (common < 0)))
        if dropped:
            logger.info("%s: label_set='common' drops %d clips whose label has no common counterpart", name, dropped)
        keep &= common >= 0

    leaky_reason = ""
    if split == "manifest":
        if "partition" not in decoded.column_names or "split" not in getattr(builder, "_columns", ()):
            raise ValueError(f"{name}: data.split=manifest needs a 'split' column (train/validation/test) in the "
                             "manifest, and it has none; use data.split=speaker (k-fold fold 1) or add the column")
        partition = np.asarray(_column(decoded, "partition"), dtype=object)
        for file, part, ok in zip(files, partition, keep):
            if ok and not part:
                reason = "empty split cell (data.split=manifest needs train, validation or test)"
                logger.warning("%s: skipping %s: %s", name, file, reason)
                skipped.append({"file": file, "reason": reason})
        keep &= partition != ""

    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise ValueError(f"{name}: no usable clips in {root} ({len(skipped)} skipped, label_set={label_set!r})")
    speaker_of = np.asarray(_column(decoded, "speaker_id"), dtype=object)[rows]
    no_speakers = not builder.has_speakers or not any(speaker_of)

    if split == "manifest" or (split == "speaker" and name in splits_mod.PARTITION_CORPORA):
        # Published (MSP-Podcast) or user-given (manifest) partition of the rows.
        part_of = np.asarray(_column(decoded, "partition"), dtype=object)[rows]
        indices = {k: rows[part_of == k] for k in SPLIT_NAMES}
        speakers = {k: sorted({s for s in speaker_of[part_of == k] if s}) for k in SPLIT_NAMES}
        overlap = sorted({s for a in SPLIT_NAMES for b in SPLIT_NAMES if a < b for s in set(speakers[a]) & set(speakers[b])})
        if no_speakers:
            leaky_reason = "no speaker information: the split cannot be checked for speaker independence"
        elif overlap:
            leaky_reason = (f"speakers {', '.join(overlap[:10])}{' ...' if len(overlap) > 10 else ''} are in more "
                            "than one of train / validation / test")
        elif name in splits_mod.PARTITION_CORPORA and not all(speaker_of):
            logger.info("%s: %d clips have no speaker id; the official partitions are used as published",
                        name, int(np.sum(speaker_of == "")))
    elif no_speakers:
        if split != "speaker" and split != "random":
            raise ValueError(f"{name}: split {split!r} needs speaker ids and this corpus has none "
                             f"({'no speaker column in the manifest' if name == 'manifest' else 'no speaker_regex'}); "
                             "add them, or use split=speaker (an utterance-level split marked not speaker-independent)")
        if split == "speaker":
            leaky_reason = ("no speaker information: utterance-level random split, the same speakers may be in "
                            "train and test")
            logger.warning("!" * 80)
            logger.warning("%s has NO SPEAKER INFORMATION: split=speaker falls back to an utterance-level random "
                           "split; results are NOT speaker-independent (add a speaker column / speaker_regex)", name)
            logger.warning("!" * 80)
        labels = np.asarray(_column(decoded, "label"))[rows]
        parts = splits_mod.random_split(labels.tolist(), seed)
        indices = {k: rows[np.asarray(parts[k], dtype=int)] for k in SPLIT_NAMES}
        speakers = {k: [] for k in SPLIT_NAMES}
    elif split == "random":
        labels = np.asarray(_column(decoded, "label"))[rows]
        parts = splits_mod.random_split(labels.tolist(), seed)
        indices = {k: rows[np.asarray(parts[k], dtype=int)] for k in SPLIT_NAMES}
        speakers = {k: sorted(set(speaker_of[np.asarray(parts[k], dtype=int)])) for k in SPLIT_NAMES}
    else:
        genders = dict(zip(_column(decoded, "speaker_id"), _column(decoded, "gender")))
        speakers = splits_mod.speaker_split(name, sorted(set(speaker_of)), split, fold, genders)
        _check_speaker_split(speakers, set(speaker_of))
        indices = {k: rows[np.isin(speaker_of, speakers[k])] for k in SPLIT_NAMES}

    info = SplitInfo(
        corpus=name,
        split=split,
        fold=fold,
        seed=seed,
        sampling_rate=sampling_rate,
        label_set=label_set,
        label_names=label_names,
        speakers={k: list(speakers[k]) for k in SPLIT_NAMES},
        leaky=splits_mod.is_leaky(split) or bool(leaky_reason),
        skipped=skipped,
        leaky_reason=leaky_reason,
    )
    out = CorpusDict({k: decoded.select(indices[k]) for k in SPLIT_NAMES}, info)
    logger.info(
        "%s split=%s fold=%s: %s",
        name,
        split,
        fold,
        ", ".join(f"{k} {len(out[k])} clips / {len(speakers[k])} speakers" for k in SPLIT_NAMES),
    )
    return out


def _check_speaker_split(speakers: dict[str, list[str]], present: set[str]) -> None:
    """Every present speaker in exactly one part: a speaker on two sides would leak."""
    seen: dict[str, str] = {}
    for part in SPLIT_NAMES:
        for spk in speakers.get(part, []):
            if spk in seen:
                raise RuntimeError(f"speaker {spk!r} is in both {seen[spk]} and {part}: speaker split is not disjoint")
            seen[spk] = part
    missing = present - set(seen)
    if missing:
        raise RuntimeError(f"speakers {sorted(missing)} were assigned to no split; their clips would be lost")

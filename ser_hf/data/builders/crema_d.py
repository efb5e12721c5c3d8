"""CREMA-D from its own layout.

``<data_dir>/AudioWAV/AAAA_SSS_EEE_LL.wav`` (or flat in data_dir): actor id,
sentence, acted emotion, level (LO, MD, HI, XX = unspecified). When present in
data_dir, ``VideoDemographics.csv`` (age, sex, race, ethnicity per actor) and
``processedResults/summaryTable.csv`` (crowd-sourced perceived emotion per clip)
are joined. ``label_source="voice"`` labels each clip with the emotion raters
perceived from the voice alone instead of the acted one; clips whose vote is tied
(e.g. "A:D") or absent are left out and counted.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import datasets

from ser_hf.data.builders._common import (
    NAN,
    CorpusBuilder,
    ExcludeClip,
    SERBuilderConfig,
    SkipFile,
    list_audio,
)
from ser_hf.data.labels import CREMA_D_CODES, CREMA_D_LABELS, CREMA_D_VOTE_CODES

logger = logging.getLogger(__name__)

NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
LEVELS = ("LO", "MD", "HI", "XX")
LABEL_SOURCES = ("acted", "voice")
DEMOGRAPHICS_FILE = "VideoDemographics.csv"
SUMMARY_FILES = ("processedResults/summaryTable.csv", "summaryTable.csv")


@dataclass
class CremaDConfig(SERBuilderConfig):
    """label_source: "acted" (the emotion the actor was asked to show) or "voice" (the perceived voice-only vote)."""

    label_source: str = "acted"

    def __post_init__(self):
        super().__post_init__()
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"crema_d: label_source must be one of {LABEL_SOURCES}, got {self.label_source!r}")


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"crema_d: {path} lacks the column(s) {', '.join(missing)} (has {reader.fieldnames}); "
                f"it should be the file shipped with CREMA-D, or remove it to build without it"
            )
        return list(reader)


def read_demographics(path: Path) -> dict[str, dict]:
    """``VideoDemographics.csv`` -> {actor id: {gender, age, race, ethnicity}}."""
    table = {}
    for row in _read_csv(path, ("ActorID", "Age", "Sex", "Race", "Ethnicity")):
        age = row["Age"].strip()
        table[row["ActorID"].strip()] = {
            "gender": row["Sex"].strip().lower(),
            "age": int(age) if age.isdigit() else -1,
            "race": row["Race"].strip(),
            "ethnicity": row["Ethnicity"].strip(),
        }
    return table


def read_voice_votes(path: Path) -> dict[str, tuple[list[str], float]]:
    """``summaryTable.csv`` -> {clip name: (voted label names, mean perceived intensity)}.

    The intensity (VoiceLevel, 0-100) is NaN for tied votes, which list one value per tied emotion.
    """
    table = {}
    for row in _read_csv(path, ("FileName", "VoiceVote", "VoiceLevel")):
        letters = [v.strip() for v in row["VoiceVote"].split(":") if v.strip()]
        if not letters or any(v not in CREMA_D_VOTE_CODES for v in letters):
            continue
        names = [CREMA_D_VOTE_CODES[v] for v in letters]
        try:
            level = float(row["VoiceLevel"]) if len(names) == 1 else NAN
        except ValueError:
            level = NAN
        table[row["FileName"].strip()] = (names, level)
    return table


class CremaD(CorpusBuilder):
    """CREMA-D: 91 actors, 6 emotions, 12 sentences. One "train" split with every clip."""

    CORPUS = "crema_d"
    LABELS = CREMA_D_LABELS
    BUILDER_CONFIG_CLASS = CremaDConfig
    LAYOUT = (
        "CREMA-D's layout: <data_dir>/AudioWAV/1001_DFA_ANG_XX.wav ... (actor_sentence_emotion_level) or the "
        "same files flat in <data_dir>, optional <data_dir>/VideoDemographics.csv and "
        "<data_dir>/processedResults/summaryTable.csv"
    )
    HOMEPAGE = "https://github.com/CheyneyComputerScience/CREMA-D"
    CITATION = (
        "Cao, H., Cooper, D. G., Keutmann, M. K., Gur, R. C., Nenkova, A., Verma, R. (2014). CREMA-D: "
        "Crowd-sourced Emotional Multimodal Actors Dataset. IEEE Trans. Affective Computing 5(4), 377-390."
    )
    LICENSE = "Open Database License (ODbL) 1.0; contents under the Database Contents License 1.0"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.config.label_source == "voice" and self._summary_file(self.root) is None:
            raise FileNotFoundError(
                f"crema_d: label_source='voice' needs the perceived-emotion table, but neither "
                f"{' nor '.join(SUMMARY_FILES)} exists in {self.root}; copy processedResults/summaryTable.csv "
                f"from the CREMA-D release or use label_source='acted'"
            )

    def extra_features(self):
        return {
            "sentence": datasets.Value("string"),
            "level": datasets.Value("string"),
            "age": datasets.Value("int32"),
            "race": datasets.Value("string"),
            "ethnicity": datasets.Value("string"),
            "voice_vote": datasets.Value("string"),
            "voice_level": datasets.Value("float32"),
        }

    @staticmethod
    def _summary_file(root: Path) -> Path | None:
        return next((root / name for name in SUMMARY_FILES if (root / name).is_file()), None)

    def find_audio(self, root: Path) -> list[Path]:
        return list_audio(root / "AudioWAV") or list_audio(root)

    def metadata_files(self, root: Path) -> list[Path]:
        files = [root / DEMOGRAPHICS_FILE] if (root / DEMOGRAPHICS_FILE).is_file() else []
        summary = self._summary_file(root)
        return files + ([summary] if summary else [])

    def load_metadata(self, root: Path):
        demographics = root / DEMOGRAPHICS_FILE
        summary = self._summary_file(root)
        meta = {
            "demographics": read_demographics(demographics) if demographics.is_file() else None,
            "votes": read_voice_votes(summary) if summary else None,
            "unknown_actors": set(),  # actors missing from the demographics table, warned once each
        }
        if meta["demographics"] is None:
            logger.warning("crema_d: no %s in %s: gender is '' and age -1 for every clip", DEMOGRAPHICS_FILE, root)
        return meta

    def parse(self, path: Path, rel: str, meta) -> dict:
        match = NAME.match(path.stem)
        if match is None:
            raise SkipFile("name is not AAAA_SSS_EEE_LL (e.g. 1001_DFA_ANG_XX.wav)")
        actor, sentence, emotion, level = match["actor"], match["sentence"], match["emotion"], match["level"]
        if sentence not in SENTENCES:
            raise SkipFile(f"unknown sentence {sentence!r}; expected one of {' '.join(SENTENCES)}")
        if emotion not in CREMA_D_CODES:
            raise SkipFile(f"unknown emotion {emotion!r}; expected one of {' '.join(CREMA_D_CODES)}")
        if level not in LEVELS:
            raise SkipFile(f"unknown level {level!r}; expected one of {' '.join(LEVELS)}")
        votes = (meta["votes"] or {}).get(path.stem)
        label = CREMA_D_CODES[emotion]
        if self.config.label_source == "voice":
            if votes is None:
                raise ExcludeClip("no voice-only vote in summaryTable.csv")
            if len(votes[0]) > 1:
                raise ExcludeClip("tied voice-only vote")
            label = votes[0][0]
        person = (meta["demographics"] or {}).get(actor)
        if person is None and meta["demographics"] is not None and actor not in meta["unknown_actors"]:
            meta["unknown_actors"].add(actor)
            logger.warning("crema_d: actor %s of %s is not in %s; gender '' and age -1", actor, rel, DEMOGRAPHICS_FILE)
        person = person or {"gender": "", "age": -1, "race": "", "ethnicity": ""}
        return {
            "label": label,
            "speaker_id": actor,
            "gender": person["gender"],
            "sentence": sentence,
            "level": level,
            "age": person["age"],
            "race": person["race"],
            "ethnicity": person["ethnicity"],
            "voice_vote": ":".join(votes[0]) if votes else "",
            "voice_level": votes[1] if votes else NAN,
        }

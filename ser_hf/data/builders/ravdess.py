"""RAVDESS speech from its own layout.

``<data_dir>/Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (or every file flat in data_dir):
modality MM (01 audio-video, 02 video-only, 03 audio-only), vocal channel VV (01
speech, 02 song), emotion EE, intensity II, statement SS, repetition RR, actor AA
(odd male, even female). Only audio-only speech (03, 01) is kept; the rest is
counted and reported.
"""

from __future__ import annotations

import re
from pathlib import Path

import datasets

from ser_hf.data.builders._common import CorpusBuilder, ExcludeClip, SkipFile, list_audio
from ser_hf.data.labels import RAVDESS_CODES, RAVDESS_LABELS

NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
ACTOR_DIR = re.compile(r"^Actor_(\d{2})$")
MODALITIES = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
CHANNELS = {"01": "speech", "02": "song"}
INTENSITIES = {"01": "normal", "02": "strong"}


class RAVDESS(CorpusBuilder):
    """RAVDESS speech: 24 actors, 8 emotions, two statements. One "train" split with every clip."""

    CORPUS = "ravdess"
    LABELS = RAVDESS_LABELS
    LAYOUT = (
        "RAVDESS's layout: <data_dir>/Actor_01/03-01-05-01-02-01-01.wav ... (modality-channel-emotion-intensity-"
        "statement-repetition-actor) or the same files flat in <data_dir>"
    )
    HOMEPAGE = "https://zenodo.org/records/1188976"
    CITATION = (
        "Livingstone, S. R., Russo, F. A. (2018). The Ryerson Audio-Visual Database of Emotional Speech and Song "
        "(RAVDESS). PLoS ONE 13(5): e0196391."
    )
    LICENSE = "CC BY-NC-SA 4.0"

    def extra_features(self):
        return {
            "intensity": datasets.Value("string"),
            "statement": datasets.Value("string"),
            "repetition": datasets.Value("string"),
        }

    def find_audio(self, root: Path) -> list[Path]:
        files = list_audio(root)
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and ACTOR_DIR.match(folder.name):
                files += list_audio(folder)
        return files

    def parse(self, path: Path, rel: str, meta) -> dict:
        match = NAME.match(path.stem)
        if match is None:
            raise SkipFile("name is not MM-VV-EE-II-SS-RR-AA (e.g. 03-01-05-01-02-01-01.wav)")
        modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
        if modality not in MODALITIES:
            raise SkipFile(f"unknown modality {modality!r}; expected 01, 02 or 03")
        if channel not in CHANNELS:
            raise SkipFile(f"unknown vocal channel {channel!r}; expected 01 (speech) or 02 (song)")
        if modality != "03":
            raise ExcludeClip(f"modality {modality} ({MODALITIES[modality]}), not audio-only 03")
        if channel != "01":
            raise ExcludeClip(f"vocal channel {channel} ({CHANNELS[channel]}), not speech 01")
        if emotion not in RAVDESS_CODES:
            raise SkipFile(f"unknown emotion code {emotion!r}; expected 01..08")
        if intensity not in INTENSITIES:
            raise SkipFile(f"unknown intensity {intensity!r}; expected 01 (normal) or 02 (strong)")
        if statement not in ("01", "02") or repetition not in ("01", "02"):
            raise SkipFile(f"statement {statement!r} / repetition {repetition!r}: each must be 01 or 02")
        if actor == "00":
            raise SkipFile("actor 00 does not exist; actors are 01..24")
        folder = ACTOR_DIR.match(path.parent.name)
        if folder and folder.group(1) != actor:
            raise SkipFile(f"actor {actor} in the name but the file is in {path.parent.name}/")
        return {
            "label": RAVDESS_CODES[emotion],
            "speaker_id": actor,
            "gender": "male" if int(actor) % 2 else "female",
            "intensity": INTENSITIES[intensity],
            "statement": statement,
            "repetition": repetition,
        }

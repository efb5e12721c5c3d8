"""EmoDB (Berlin Database of Emotional Speech) from its own layout.

``<data_dir>/wav/SSTTTEV.wav``: speaker (2 digits), text id (a01..b10), emotion
letter (German initial), version letter; e.g. ``wav/03a01Fa.wav``. The optional
``erkennung.txt`` (Latin-1, tab separated, comma decimals) holds the perception
test: recognition and naturalness in percent per utterance.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import datasets

from ser_hf.data.builders._common import CorpusBuilder, SkipFile, list_audio, nan_if_missing
from ser_hf.data.labels import EMODB_CODES, EMODB_LABELS

logger = logging.getLogger(__name__)

# speaker -> (gender, age at recording), from the corpus documentation.
SPEAKERS = {
    "03": ("male", 31),
    "08": ("female", 34),
    "09": ("female", 21),
    "10": ("male", 32),
    "11": ("male", 26),
    "12": ("male", 30),
    "13": ("female", 32),
    "14": ("female", 35),
    "15": ("male", 25),
    "16": ("female", 31),
}
NAME = re.compile(r"^(?P<speaker>\d{2})(?P<text>[ab]\d{2})(?P<emotion>[A-Z])(?P<version>[a-z])$")
PERCEPTION_FILE = "erkennung.txt"


def read_perception(path: Path) -> dict[str, tuple[float, float]]:
    """``erkennung.txt`` -> {clip name without extension: (recognition %, naturalness %)}."""
    table: dict[str, tuple[float, float]] = {}
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        fields = line.split()
        if not fields or not fields[0].isdigit():  # header ("Nr. Satz erkannt natuerlich") or blank
            continue
        try:
            _, name, recognition, naturalness = fields[:4]
            table[Path(name).stem] = (float(recognition.replace(",", ".")), float(naturalness.replace(",", ".")))
        except ValueError:
            logger.warning("emodb: %s line %d is not 'Nr file recognition naturalness': %r", path, number, line)
    if not table:
        logger.warning("emodb: %s holds no usable rows; recognition and naturalness will be NaN", path)
    return table


class EmoDB(CorpusBuilder):
    """EmoDB: 10 actors, 7 emotions, German. One "train" split with every clip."""

    CORPUS = "emodb"
    LABELS = EMODB_LABELS
    LAYOUT = (
        "EmoDB's layout: <data_dir>/wav/03a01Fa.wav ... (speaker 2 digits, text a01..b10, emotion letter "
        "W/L/E/A/F/T/N, version letter), optional <data_dir>/erkennung.txt"
    )
    HOMEPAGE = "http://emodb.bilderbar.info/"
    CITATION = (
        "Burkhardt, F., Paeschke, A., Rolfes, M., Sendlmeier, W. F., Weiss, B. (2005). "
        "A database of German emotional speech. Interspeech 2005."
    )
    LICENSE = "free for research use (as distributed by its authors)"

    def extra_features(self):
        return {
            "age": datasets.Value("int32"),
            "text_id": datasets.Value("string"),
            "version": datasets.Value("string"),
            "recognition": datasets.Value("float32"),
            "naturalness": datasets.Value("float32"),
        }

    def find_audio(self, root: Path) -> list[Path]:
        # The corpus ships wav/; copies that flattened it keep the clips in data_dir itself.
        return list_audio(root / "wav") or list_audio(root)

    def metadata_files(self, root: Path) -> list[Path]:
        return [p for p in [root / PERCEPTION_FILE] if p.is_file()]

    def load_metadata(self, root: Path):
        path = root / PERCEPTION_FILE
        return read_perception(path) if path.is_file() else {}

    def parse(self, path: Path, rel: str, meta) -> dict:
        match = NAME.match(path.stem)
        if match is None:
            raise SkipFile("name is not SSTTTEV (e.g. 03a01Fa.wav: speaker, text a01..b10, emotion letter, version)")
        speaker, emotion = match["speaker"], match["emotion"]
        if speaker not in SPEAKERS:
            raise SkipFile(f"unknown speaker {speaker!r}; EmoDB speakers are {', '.join(SPEAKERS)}")
        if emotion not in EMODB_CODES:
            raise SkipFile(f"unknown emotion letter {emotion!r}; expected one of {' '.join(EMODB_CODES)}")
        gender, age = SPEAKERS[speaker]
        recognition, naturalness = meta.get(path.stem, (None, None))
        return {
            "label": EMODB_CODES[emotion],
            "speaker_id": speaker,
            "gender": gender,
            "age": age,
            "text_id": match["text"],
            "version": match["version"],
            "recognition": nan_if_missing(recognition),
            "naturalness": nan_if_missing(naturalness),
        }

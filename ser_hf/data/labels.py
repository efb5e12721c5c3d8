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

CORPORA = ("emodb", "ravdess", "crema_d")

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

CORPUS_LABELS = {"emodb": EMODB_LABELS, "ravdess": RAVDESS_LABELS, "crema_d": CREMA_D_LABELS}

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


def check_corpus(name: str) -> str:
    """Return ``name`` if it is a known corpus, else raise a ValueError listing the known ones."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; expected one of {', '.join(CORPORA)}")
    return name


def labels_of(corpus: str, label_set: str = "corpus") -> list[str]:
    """The label names of ``corpus`` (``label_set="corpus"``) or the common set (``"common"``)."""
    check_corpus(corpus)
    if label_set == "corpus":
        return list(CORPUS_LABELS[corpus])
    if label_set == "common":
        return list(COMMON_LABELS)
    raise ValueError(f"unknown label_set {label_set!r}; expected 'corpus' or 'common'")


def common_label(corpus: str, label: str) -> str | None:
    """The common-set name of a corpus label, or None when the label has no counterpart."""
    return TO_COMMON[check_corpus(corpus)][label]


def common_label_index(corpus: str, label: str) -> int:
    """Index of ``label`` in COMMON_LABELS, or -1 (a missing ClassLabel) when it is dropped."""
    name = common_label(corpus, label)
    return -1 if name is None else COMMON_LABELS.index(name)

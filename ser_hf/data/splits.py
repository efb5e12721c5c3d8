"""Which speakers train, validate and test: speaker-independent splits by default.

A model that has heard a test speaker during training is scored on that
speaker's voice as much as on emotion, so every split here except ``"random"``
keeps each speaker in exactly one of train / validation / test. All functions
are pure: the same arguments always give the same lists.

Split types (``SPLITS``; folds are 1-based):

``"speaker"`` -- the published speaker-independent split (one fold; ``fold`` must be None or 1):
    * EmoDB: test 12, 14, 15, 16 (audEERING's audb ``emodb`` test set); every other speaker is on the
      training side.
    * RAVDESS: EmoBox fold 1 (test actors 01, 11, 20, 21).
    * CREMA-D: audb ``crema-d`` 1.1.0 -- train/dev/test lists in ``CREMA_D_AUDB``; its dev list *is* the
      validation set.
    * IEMOCAP: Session 5 (Ses05F, Ses05M) is the test side (the usual speaker-independent protocol).
    * MSP-Podcast: its official ``Split_Set`` partitions, row by row (``corpus.load_corpus``); not here.
    * Corpora without a published split (TESS, SAVEE, EMOVO, manifest, folder): ``"kfold"`` fold 1.
``"loso"`` -- leave one speaker out: fold k tests the k-th speaker of the sorted speaker ids, so there are as
    many folds as speakers (EmoDB: 10) and every speaker is tested exactly once.
``"kfold"`` -- speaker-grouped folds:
    * RAVDESS: the 6 EmoBox folds (``EMOBOX_RAVDESS_FOLDS``).
    * EmoDB, CREMA-D: 5 folds dealt round-robin: speakers sorted by (gender: female, male, unknown; then id),
      the i-th (0-based) goes to fold ``i % 5 + 1``. Dealing by gender first keeps both genders in every
      fold. With fewer than 5 speakers there is one fold per speaker.
    * IEMOCAP: 5 folds = its 5 sessions (as ``"session"``).
    * Every other corpus: dealt the same way over its speakers.
``"session"`` -- IEMOCAP leave-one-session-out: fold k (1..5) tests both speakers of Session k.
``"manifest"`` -- the ``split`` column of a manifest (train / validation / test per row), checked for
    speaker overlap when a speaker column exists (``corpus.load_corpus`` applies it, row by row).
``"random"`` -- utterance-level stratified split (``random_split``). Leaky: one speaker's clips land in train
    and test, so scores are optimistic. It exists only to reproduce published numbers that used it;
    ``is_leaky`` flags it and it is never the default.

Published lists are filtered to the speakers present. A present speaker that is on no list of the corpus
(e.g. an unknown EmoDB id) goes to train, with a warning, and is never chosen for validation.
A split whose test (or train) side ends up empty is returned as is, with a warning.

Validation rule (every split type except CREMA-D ``"speaker"``, which uses the audb dev list): validation
speakers come from the training side (present, non-test speakers on a list). Walk the sorted speaker ids
cyclically, starting just after the highest test id of the fold (at the first id when the test side is
empty), skipping test speakers and speakers on no list; take the first male and the first female met. When
genders are unknown, or one gender is missing on the training side, the missing pick is the next speaker
met. Sizes: a training side of 4 or more speakers gives 2 validation speakers, exactly 3 gives 1 (so two
remain to train on), fewer than 3 gives none (warning). Starting the walk after the test speakers rotates
the validation speakers across loso/kfold folds instead of always holding out the same two.

Genders: EmoDB from the corpus documentation (03, 10, 11, 12, 15 male); RAVDESS odd actor = male; CREMA-D
only when the caller passes ``genders`` (from ``VideoDemographics.csv``). A passed ``genders`` mapping
overrides the built-in table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from ser_hf.data.labels import check_corpus

logger = logging.getLogger(__name__)

SPLITS = ("speaker", "loso", "kfold", "session", "manifest", "random")
LEAKY_SPLITS = frozenset({"random"})
# Corpora whose "speaker" split is a published partition of the rows, not a speaker list.
PARTITION_CORPORA = ("msp_podcast",)
# Corpora without a published split: "speaker" is "kfold" fold 1.
KFOLD_DEFAULT_CORPORA = ("tess", "savee", "emovo", "manifest", "folder")
SESSION_CORPORA = ("iemocap",)
IEMOCAP_SESSIONS = 5
IEMOCAP_SPEAKERS = tuple(f"Ses0{k}{g}" for k in range(1, IEMOCAP_SESSIONS + 1) for g in "FM")
IEMOCAP_TEST = ("Ses05F", "Ses05M")
TESS_SPEAKERS = ("OAF", "YAF")
SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
EMOVO_SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")

EMODB_GENDERS = {
    "03": "male",
    "08": "female",
    "09": "female",
    "10": "male",
    "11": "male",
    "12": "male",
    "13": "female",
    "14": "female",
    "15": "male",
    "16": "female",
}
EMODB_SPEAKERS = tuple(sorted(EMODB_GENDERS))
# audEERING audb emodb: test speakers; the rest is training side.
EMODB_TEST = ("12", "14", "15", "16")

RAVDESS_ACTORS = tuple(f"{i:02d}" for i in range(1, 25))
# EmoBox (Ma et al., 2024) RAVDESS folds: test actors per fold.
EMOBOX_RAVDESS_FOLDS = {
    1: ("01", "11", "20", "21"),
    2: ("04", "10", "12", "14"),
    3: ("08", "09", "19", "23"),
    4: ("03", "05", "07", "24"),
    5: ("02", "15", "16", "18"),
    6: ("06", "13", "17", "22"),
}


def _ids(*ranges: tuple[int, int] | int) -> tuple[str, ...]:
    out: list[int] = []
    for r in ranges:
        if isinstance(r, tuple):
            out.extend(range(r[0], r[1] + 1))
        else:
            out.append(r)
    return tuple(str(i) for i in out)


# audb crema-d 1.1.0 speaker-independent split.
CREMA_D_AUDB = {
    "train": _ids((1001, 1047), (1050, 1052), 1056, 1057, 1060, 1072, 1073, 1081),
    "validation": _ids(1049, (1053, 1055), 1058, 1059, (1061, 1068), 1070, 1075, 1080, 1085),
    "test": _ids(1048, 1069, 1071, 1074, (1076, 1079), (1082, 1084), (1086, 1091)),
}
CREMA_D_SPEAKERS = tuple(sorted(s for ids in CREMA_D_AUDB.values() for s in ids))

KFOLD_FOLDS = 5

_GENDERS = ("male", "female")


def is_leaky(split: str) -> bool:
    """True for split types that put one speaker's clips on both sides (scores are optimistic)."""
    _check_split(split)
    return split in LEAKY_SPLITS


def builtin_genders(corpus: str, speakers: Iterable[str] = ()) -> dict[str, str]:
    """Genders known from the corpus documentation (EmoDB table, RAVDESS odd = male, IEMOCAP/EMOVO from the
    id, TESS all female, SAVEE all male); CREMA-D, MSP-Podcast, manifest, folder: none (passed by the caller)."""
    check_corpus(corpus)
    if corpus == "emodb":
        return dict(EMODB_GENDERS)
    if corpus == "ravdess":
        return {a: ("male" if int(a) % 2 else "female") for a in RAVDESS_ACTORS}
    if corpus == "iemocap":
        return {s: ("female" if s.endswith("F") else "male") for s in IEMOCAP_SPEAKERS}
    if corpus == "emovo":
        return {s: ("female" if s[0] == "f" else "male") for s in EMOVO_SPEAKERS}
    if corpus == "tess":
        return {s: "female" for s in TESS_SPEAKERS}
    if corpus == "savee":
        return {s: "male" for s in SAVEE_SPEAKERS}
    return {}


def num_folds(corpus: str, split: str, speakers: Iterable[str]) -> int:
    """How many folds ``split`` has for these speakers: 1 for "speaker"/"manifest"/"random", one per speaker
    for "loso", 6 (EmoBox) for RAVDESS "kfold", 5 for IEMOCAP "kfold"/"session", else min(5, speakers)."""
    check_corpus(corpus)
    _check_split(split)
    n = len(_unique_speakers(speakers, allow_empty=True))
    if split in ("speaker", "manifest", "random"):
        return 1
    _check_split_for_corpus(corpus, split)
    if split == "loso":
        return n
    if corpus == "ravdess":
        return len(EMOBOX_RAVDESS_FOLDS)
    if corpus == "iemocap":
        return IEMOCAP_SESSIONS
    return min(KFOLD_FOLDS, n)


def _check_split_for_corpus(corpus: str, split: str) -> None:
    """Splits that only some corpora have: a clear error naming what the corpus offers."""
    if split == "session" and corpus not in SESSION_CORPORA:
        raise ValueError(f"split 'session' (leave-one-session-out) exists for {', '.join(SESSION_CORPORA)} only, "
                         f"not {corpus}; use loso or kfold")
    if split == "manifest" and corpus != "manifest":
        raise ValueError(f"split 'manifest' reads the split column of a manifest (data.corpus=manifest), "
                         f"not {corpus}")
    if corpus in PARTITION_CORPORA and split in ("loso", "kfold"):
        raise ValueError(f"{corpus} is evaluated on its official Split_Set partitions (split 'speaker'); "
                         f"{split!r} folds are not defined for it")


def speaker_split(
    corpus: str,
    speakers: Iterable[str],
    split: str = "speaker",
    fold: int | None = None,
    genders: Mapping[str, str | None] | None = None,
) -> dict[str, list[str]]:
    """Speaker ids of train / validation / test for ``split`` (and ``fold``); sorted and disjoint.

    See the module docstring for every rule. ``genders`` maps speaker id -> "male"/"female"
    (None or "" = unknown) and overrides the built-in table.
    """
    check_corpus(corpus)
    _check_split(split)
    if split == "random":
        raise ValueError(
            "split='random' is utterance-level, not a speaker split: use random_split(labels, seed) "
            f"(speaker splits are {', '.join(s for s in SPLITS if s != 'random')})"
        )
    if split == "manifest" or (split == "speaker" and corpus in PARTITION_CORPORA):
        raise ValueError(f"{corpus} split={split!r} assigns rows, not speakers: load_corpus applies it from the "
                         "rows' partition column")
    _check_split_for_corpus(corpus, split)
    present = _unique_speakers(speakers)
    fold = _check_fold(corpus, split, fold, present)
    gender_of = builtin_genders(corpus)
    gender_of.update(_check_genders(genders))

    known = _known_speakers(corpus, split, present)
    unknown = [s for s in present if s not in known]
    if unknown:
        logger.warning(
            "%s split=%r: speakers %s are on no published list of the corpus; they go to train "
            "(check the speaker ids, e.g. zero padding)", corpus, split, ", ".join(unknown))

    validation: list[str]
    if corpus == "crema_d" and split == "speaker":
        test = _present(CREMA_D_AUDB["test"], present)
        validation = _present(CREMA_D_AUDB["validation"], present)
        if not validation:
            logger.warning("crema_d split='speaker': none of the audb dev speakers is present; "
                           "validation is empty")
    else:
        test = _test_speakers(corpus, split, fold, present, gender_of)
        validation = _pick_validation(present, test, known, gender_of, corpus, split, fold)
    train = sorted(s for s in present if s not in set(test) | set(validation))

    where = f"{corpus} split={split!r}" + (f" fold {fold}" if fold is not None else "")
    if not test:
        logger.warning("%s: no test speakers among the %d present (%s); the test set is empty",
                       where, len(present), ", ".join(present))
    if not train:
        logger.warning("%s: no training speakers left; the train set is empty", where)

    out = {"train": train, "validation": sorted(validation), "test": sorted(test)}
    _assert_disjoint(out, present)
    return out


def random_split(
    labels: Sequence[int], seed: int, validation: float = 0.1, test: float = 0.2
) -> dict[str, np.ndarray]:
    """Row indices of an utterance-level split, stratified by label (scikit-learn).

    Leaky on purpose (a speaker's clips land on both sides): only for reproducing published numbers.
    Falls back to an unstratified shuffle, with a warning, when a class is too small to stratify.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"random_split: labels must be a non-empty 1-D sequence, got shape {y.shape}")
    if not (0 < test < 1) or not (0 <= validation < 1) or validation + test >= 1:
        raise ValueError(
            f"random_split: need 0 < test < 1, 0 <= validation < 1 and validation + test < 1; "
            f"got validation={validation}, test={test}")
    logger.warning("split='random' is utterance-level: speakers overlap between train and test, "
                   "so scores are optimistic (use it only to reproduce published numbers)")
    idx = np.arange(len(y))

    def cut(rows: np.ndarray, fraction: float, stage: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            return train_test_split(rows, test_size=fraction, random_state=seed, stratify=y[rows])
        except ValueError as err:  # a class with 1 clip, or fewer held-out rows than classes
            logger.warning("random_split: cannot stratify the %s cut (%s); using an unstratified shuffle",
                           stage, err)
            return train_test_split(rows, test_size=fraction, random_state=seed, stratify=None)

    rest, test_idx = cut(idx, test, "test")
    if validation > 0:
        train_idx, val_idx = cut(rest, validation / (1 - test), "validation")
    else:
        train_idx, val_idx = rest, np.array([], dtype=int)
    return {"train": np.sort(train_idx), "validation": np.sort(val_idx), "test": np.sort(test_idx)}


# --- rules -------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _unique_speakers(speakers: Iterable[str], allow_empty: bool = False) -> list[str]:
    if isinstance(speakers, str):
        raise ValueError(f"speakers must be an iterable of speaker ids, not the string {speakers!r}")
    given = list(speakers)
    bad = [s for s in given if not isinstance(s, str) or not s]
    if bad:
        raise ValueError(f"speaker ids must be non-empty strings as in the file names (e.g. '03'), got {bad!r}")
    out = sorted({str(s) for s in given})  # str(): numpy string scalars become plain str
    if not out and not allow_empty:
        raise ValueError("speaker_split: no speakers given")
    return out


def _check_fold(corpus: str, split: str, fold: int | None, present: list[str]) -> int | None:
    if split in ("speaker", "manifest"):
        if fold not in (None, 1):
            raise ValueError(f"fold {fold!r} out of range: {corpus} split 'speaker' has one fold "
                             "(fold must be None or 1)")
        return None
    n = num_folds(corpus, split, present)
    if split == "loso" and n < 2:
        raise ValueError(f"{corpus} split 'loso' needs at least 2 speakers, got {present}")
    if fold is None:
        raise ValueError(f"{corpus} split {split!r} needs a fold: one of 1..{n}")
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)):
        raise ValueError(f"fold must be an integer in 1..{n}, got {fold!r}")
    if not 1 <= fold <= n:
        raise ValueError(f"fold {fold} out of range: {corpus} {split} has folds 1..{n}")
    return int(fold)


def _check_genders(genders: Mapping[str, str | None] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for spk, g in (genders or {}).items():
        if g is None or g == "":
            continue
        g_norm = str(g).strip().lower()
        if g_norm not in _GENDERS:
            raise ValueError(f"genders[{spk!r}] = {g!r}: expected 'male' or 'female' (or None/'' if unknown)")
        out[spk] = g_norm
    return out


def _present(ids: Iterable[str], present: list[str]) -> list[str]:
    have = set(present)
    return sorted(s for s in ids if s in have)


def _known_speakers(corpus: str, split: str, present: list[str]) -> set[str]:
    """Speakers the split's rules place; others go to train (with a warning)."""
    listed = {"emodb": EMODB_SPEAKERS, "ravdess": RAVDESS_ACTORS, "crema_d": CREMA_D_SPEAKERS,
              "iemocap": IEMOCAP_SPEAKERS}.get(corpus)
    if listed is None or split == "loso" or (split == "kfold" and corpus not in ("ravdess", "iemocap")):
        return set(present)  # rotations over whoever is present, no published list
    return set(present) & set(listed)


def kfold_assignment(speakers: Iterable[str], genders: Mapping[str, str] | None = None,
                     n_folds: int = KFOLD_FOLDS) -> dict[str, int]:
    """EmoDB/CREMA-D kfold: speaker -> fold (1-based), dealt round-robin over (gender, id)-sorted speakers."""
    present = _unique_speakers(speakers)
    gender_of = dict(genders or {})
    rank = {"female": 0, "male": 1}
    order = sorted(present, key=lambda s: (rank.get(gender_of.get(s, ""), 2), s))
    k = min(n_folds, len(order))
    return {s: i % k + 1 for i, s in enumerate(order)}


def _test_speakers(corpus: str, split: str, fold: int | None, present: list[str],
                   gender_of: dict[str, str]) -> list[str]:
    if split == "loso":
        return [present[fold - 1]]
    if corpus == "ravdess":
        return _present(EMOBOX_RAVDESS_FOLDS[1 if split == "speaker" else fold], present)
    if corpus == "iemocap":  # speaker: Session 5; session / kfold: Session k
        session = IEMOCAP_SESSIONS if split == "speaker" else fold
        return sorted(s for s in present if s.startswith(f"Ses0{session}"))
    if split == "speaker" and corpus == "emodb":  # (crema_d speaker split is handled by the caller)
        return _present(EMODB_TEST, present)
    folds = kfold_assignment(present, gender_of)
    return sorted(s for s, f in folds.items() if f == (1 if split == "speaker" else fold))


def _pick_validation(present: list[str], test: list[str], known: set[str], gender_of: dict[str, str],
                     corpus: str, split: str, fold: int | None) -> list[str]:
    test_set = set(test)
    train_side = [s for s in present if s not in test_set]
    candidates = [s for s in train_side if s in known]
    where = f"{corpus} split={split!r}" + (f" fold {fold}" if fold is not None else "")
    if len(train_side) < 3:
        if train_side:
            logger.warning("%s: only %d training-side speakers (%s); validation is empty (needs >= 3)",
                           where, len(train_side), ", ".join(train_side))
        return []
    want = 1 if len(train_side) == 3 else 2
    # Walk cyclically from just after the highest test id, so folds rotate their validation speakers.
    start = 0
    if test:
        last = max(present.index(s) for s in test)
        start = last + 1
    walk = [present[(start + i) % len(present)] for i in range(len(present))]
    walk = [s for s in walk if s in set(candidates)]
    if want == 1:
        return walk[:1]
    picked = []
    for g in _GENDERS:
        first = next((s for s in walk if gender_of.get(s) == g), None)
        if first is not None:
            picked.append(first)
    for s in walk:  # a gender unknown or missing on the training side: next speaker met
        if len(picked) >= want:
            break
        if s not in picked:
            picked.append(s)
    return sorted(picked[:want])


def _assert_disjoint(parts: dict[str, list[str]], present: list[str]) -> None:
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = set(parts[a]) & set(parts[b])
            if both:
                raise AssertionError(f"speaker split is not disjoint: {sorted(both)} in both {a} and {b}")
    placed = sorted(s for p in parts.values() for s in p)
    if placed != present:
        raise AssertionError(f"speaker split lost or invented speakers: {placed} vs {present}")

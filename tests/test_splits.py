"""Speaker splits: published lists, the validation rule, disjointness over every fold, errors."""

from __future__ import annotations

import logging
import random
from collections import Counter

import numpy as np
import pytest

from ser_hf.data.splits import (
    CREMA_D_AUDB,
    EMOBOX_RAVDESS_FOLDS,
    EMODB_GENDERS,
    SPLITS,
    builtin_genders,
    is_leaky,
    num_folds,
    random_split,
    speaker_split,
)
from ser_hf.data.synthetic import CREMA_D_GENDERS, speaker_order

EMODB = sorted(EMODB_GENDERS)
RAVDESS = [f"{i:02d}" for i in range(1, 25)]
CREMA_D = [str(i) for i in range(1001, 1092)]
ALL = {"emodb": EMODB, "ravdess": RAVDESS, "crema_d": CREMA_D}


def genders_of(corpus):
    return CREMA_D_GENDERS if corpus == "crema_d" else builtin_genders(corpus)


def folds_of(corpus, split, speakers):
    n = num_folds(corpus, split, speakers)
    return [None] if split == "speaker" else list(range(1, n + 1))


# --- published lists ----------------------------------------------------------------------------------


def test_emodb_speaker_split_is_audb_test_set_with_rule_validation():
    out = speaker_split("emodb", EMODB)
    assert out["test"] == ["12", "14", "15", "16"]
    # Walk after the highest test id (16) wraps to 03 (male) and 08 (female).
    assert out["validation"] == ["03", "08"]
    assert out["train"] == ["09", "10", "11", "13"]


def test_ravdess_speaker_split_is_emobox_fold_1():
    out = speaker_split("ravdess", RAVDESS)
    assert out["test"] == ["01", "11", "20", "21"]
    assert out == speaker_split("ravdess", RAVDESS, "kfold", 1)
    assert out["validation"] == ["22", "23"]  # first female (22) and male (23) after actor 21


def test_ravdess_kfold_is_emobox():
    assert num_folds("ravdess", "kfold", RAVDESS) == 6
    tested = Counter()
    for k, actors in EMOBOX_RAVDESS_FOLDS.items():
        out = speaker_split("ravdess", RAVDESS, "kfold", k)
        assert out["test"] == sorted(actors)
        tested.update(out["test"])
    assert tested == Counter(RAVDESS)  # the six folds partition the 24 actors
    assert speaker_split("ravdess", RAVDESS, "kfold", 2)["test"] == ["04", "10", "12", "14"]


def test_crema_d_speaker_split_is_audb_1_1_0():
    out = speaker_split("crema_d", CREMA_D)
    assert (len(out["train"]), len(out["validation"]), len(out["test"])) == (56, 18, 17)
    assert out["test"][:4] == ["1048", "1069", "1071", "1074"] and out["test"][-1] == "1091"
    assert "1049" in out["validation"] and "1085" in out["validation"] and "1060" in out["train"]
    assert out == {k: sorted(CREMA_D_AUDB[k]) for k in ("train", "validation", "test")}
    assert sorted(s for ids in CREMA_D_AUDB.values() for s in ids) == CREMA_D


def test_published_lists_are_filtered_to_present_speakers():
    assert speaker_split("emodb", ["03", "08", "09", "14"]) == {
        "train": ["08", "09"], "validation": ["03"], "test": ["14"]}
    out = speaker_split("crema_d", ["1001", "1002", "1048", "1049"])
    assert out == {"train": ["1001", "1002"], "validation": ["1049"], "test": ["1048"]}


# --- every fold of every split type -------------------------------------------------------------------


@pytest.mark.parametrize("corpus", ["emodb", "ravdess", "crema_d"])
@pytest.mark.parametrize("subset", ["all", "generated4", "generated7"])
def test_every_fold_is_disjoint_sorted_and_complete(corpus, subset):
    speakers = ALL[corpus] if subset == "all" else list(speaker_order(corpus)[: int(subset[-1])])
    genders = genders_of(corpus)
    for split in ("speaker", "loso", "kfold"):
        for fold in folds_of(corpus, split, speakers):
            out = speaker_split(corpus, speakers, split, fold, genders=genders)
            parts = [set(out[k]) for k in ("train", "validation", "test")]
            assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), (split, fold, out)
            assert sorted(parts[0] | parts[1] | parts[2]) == sorted(speakers)
            for k in out:
                assert out[k] == sorted(out[k])
            if subset == "all" or split == "loso":
                assert out["test"] and out["train"], (split, fold, out)


@pytest.mark.parametrize("corpus", ["emodb", "ravdess", "crema_d"])
def test_loso_tests_every_speaker_exactly_once(corpus):
    speakers = ALL[corpus]
    assert num_folds(corpus, "loso", speakers) == len(speakers)
    tested = [speaker_split(corpus, speakers, "loso", k)["test"] for k in range(1, len(speakers) + 1)]
    assert all(len(t) == 1 for t in tested)
    assert sorted(t[0] for t in tested) == speakers
    assert tested[0] == [speakers[0]]  # fold k tests the k-th sorted speaker


@pytest.mark.parametrize("corpus", ["emodb", "crema_d"])
def test_kfold_deals_five_gender_balanced_folds(corpus):
    speakers, genders = ALL[corpus], genders_of(corpus)
    assert num_folds(corpus, "kfold", speakers) == 5
    tests = [speaker_split(corpus, speakers, "kfold", k, genders=genders)["test"] for k in range(1, 6)]
    assert sorted(s for t in tests for s in t) == speakers  # a partition
    sizes = [len(t) for t in tests]
    assert max(sizes) - min(sizes) <= 1
    for t in tests:
        assert {genders[s] for s in t} == {"male", "female"}
    if corpus == "emodb":  # females then males, dealt round-robin
        assert tests[0] == ["03", "08"] and tests[4] == ["15", "16"]


def test_kfold_with_fewer_speakers_than_folds_has_one_fold_per_speaker():
    assert num_folds("emodb", "kfold", ["03", "08", "14"]) == 3
    tests = [speaker_split("emodb", ["03", "08", "14"], "kfold", k)["test"] for k in (1, 2, 3)]
    assert sorted(s for t in tests for s in t) == ["03", "08", "14"]


def test_num_folds():
    assert num_folds("emodb", "loso", EMODB) == 10
    assert num_folds("emodb", "speaker", EMODB) == 1
    assert num_folds("emodb", "random", EMODB) == 1
    assert num_folds("ravdess", "kfold", ["01", "02"]) == 6
    assert num_folds("crema_d", "kfold", CREMA_D) == 5


def test_split_is_deterministic_and_independent_of_input_order():
    shuffled = list(CREMA_D)
    random.Random(3).shuffle(shuffled)
    for split, fold in (("speaker", None), ("loso", 17), ("kfold", 4)):
        a = speaker_split("crema_d", CREMA_D, split, fold, genders=CREMA_D_GENDERS)
        b = speaker_split("crema_d", shuffled, split, fold, genders=CREMA_D_GENDERS)
        assert a == b


# --- validation rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("corpus", ["emodb", "ravdess", "crema_d"])
def test_validation_is_one_male_one_female_from_the_training_side(corpus):
    speakers, genders = ALL[corpus], genders_of(corpus)
    for split in ("loso", "kfold"):
        for fold in folds_of(corpus, split, speakers):
            out = speaker_split(corpus, speakers, split, fold, genders=genders)
            assert len(out["validation"]) == 2
            assert sorted(genders[s] for s in out["validation"]) == ["female", "male"]
            assert not set(out["validation"]) & set(out["test"])


def test_validation_rotates_across_loso_folds():
    vals = [tuple(speaker_split("emodb", EMODB, "loso", k)["validation"]) for k in range(1, 11)]
    assert vals[0] == ("08", "10")  # test 03 -> next female 08, next male 10
    assert vals[8] == ("03", "16")  # test 15 -> 16 (female), wraps to 03 (male)
    assert len(set(vals)) >= 8
    held_out = Counter(s for v in vals for s in v)
    assert set(held_out) == set(EMODB)  # every speaker validates in some fold


def test_validation_size_shrinks_with_a_small_training_side(caplog):
    # Training side of 3 -> one validation speaker, two left to train on.
    out = speaker_split("emodb", ["03", "08", "10", "14"])
    assert out == {"train": ["08", "10"], "validation": ["03"], "test": ["14"]}
    # Training side of 2 -> no validation, with a warning.
    with caplog.at_level(logging.WARNING, logger="ser_hf.data.splits"):
        out = speaker_split("emodb", ["03", "08", "14"])
    assert out == {"train": ["03", "08"], "validation": [], "test": ["14"]}
    assert "validation is empty" in caplog.text


def test_genders_unknown_take_next_two_and_given_genders_override():
    speakers = [str(i) for i in range(1001, 1011)]
    out = speaker_split("crema_d", speakers, "loso", 1)  # no genders: next two after 1001
    assert out["validation"] == ["1002", "1003"]
    genders = {s: "female" for s in speakers} | {"1005": "male"}
    out = speaker_split("crema_d", speakers, "loso", 1, genders=genders)
    assert out["validation"] == ["1002", "1005"]  # first female met, first male met
    # Overriding a built-in gender changes the pick.
    flipped = builtin_genders("emodb") | {"08": "male", "10": "female"}
    assert speaker_split("emodb", EMODB, "loso", 1, genders=flipped)["validation"] == ["08", "09"]


def test_unknown_speaker_goes_to_train_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ser_hf.data.splits"):
        out = speaker_split("emodb", EMODB + ["99"])
    assert "99" in out["train"] and "99" not in out["validation"]
    assert "99" in caplog.text and "no published list" in caplog.text
    out = speaker_split("ravdess", RAVDESS + ["25"], "kfold", 3)
    assert "25" in out["train"]


def test_empty_test_side_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="ser_hf.data.splits"):
        out = speaker_split("crema_d", ["1001", "1002", "1003"])
    assert out == {"train": ["1001", "1002", "1003"], "validation": [], "test": []}
    assert "test set is empty" in caplog.text


# --- random split -------------------------------------------------------------------------------------


def test_random_split_is_stratified_disjoint_and_deterministic(caplog):
    labels = np.repeat(np.arange(5), [40, 40, 60, 20, 40])
    with caplog.at_level(logging.WARNING, logger="ser_hf.data.splits"):
        out = random_split(labels, seed=0)
    assert "utterance-level" in caplog.text  # flagged as leaky when used
    rows = np.concatenate([out["train"], out["validation"], out["test"]])
    assert sorted(rows.tolist()) == list(range(len(labels)))
    assert (len(out["test"]), len(out["validation"])) == (40, 20)
    # Stratified: each class keeps its share (within one clip).
    for part, n in (("test", 40), ("validation", 20)):
        counts = np.bincount(labels[out[part]], minlength=5)
        expected = np.bincount(labels) * n / len(labels)
        assert np.all(np.abs(counts - expected) <= 1), (part, counts, expected)
    again = random_split(labels, seed=0)
    assert all(np.array_equal(out[k], again[k]) for k in out)
    other = random_split(labels, seed=1)
    assert not np.array_equal(out["test"], other["test"])


def test_random_split_is_flagged_leaky():
    assert is_leaky("random") and not any(is_leaky(s) for s in SPLITS if s != "random")
    with pytest.raises(ValueError, match="random_split"):
        speaker_split("emodb", EMODB, "random")


def test_random_split_falls_back_when_a_class_is_too_small(caplog):
    labels = [0] * 20 + [1] * 20 + [2]
    with caplog.at_level(logging.WARNING, logger="ser_hf.data.splits"):
        out = random_split(labels, seed=0, validation=0.0)
    assert "cannot stratify" in caplog.text
    assert len(out["validation"]) == 0 and len(out["train"]) + len(out["test"]) == 41


@pytest.mark.parametrize("kw", [{"test": 0.0}, {"validation": 0.5, "test": 0.5}, {"validation": -0.1}])
def test_random_split_rejects_bad_fractions(kw):
    with pytest.raises(ValueError, match="validation \\+ test < 1"):
        random_split([0, 1] * 10, seed=0, **kw)


# --- errors -------------------------------------------------------------------------------------------


def test_error_messages_list_valid_values():
    with pytest.raises(ValueError, match=r"^fold 11 out of range: emodb loso has folds 1\.\.10$"):
        speaker_split("emodb", EMODB, "loso", 11)
    with pytest.raises(ValueError, match=r"fold 7 out of range: ravdess kfold has folds 1\.\.6"):
        speaker_split("ravdess", RAVDESS, "kfold", 7)
    with pytest.raises(ValueError, match=r"fold 0 out of range: crema_d kfold has folds 1\.\.5"):
        speaker_split("crema_d", CREMA_D, "kfold", 0)
    with pytest.raises(ValueError, match=r"needs a fold: one of 1\.\.10"):
        speaker_split("emodb", EMODB, "loso")
    with pytest.raises(ValueError, match="has one fold"):
        speaker_split("emodb", EMODB, "speaker", 2)
    with pytest.raises(ValueError, match="expected one of speaker, loso, kfold, session, manifest, random"):
        speaker_split("emodb", EMODB, "holdout")
    with pytest.raises(ValueError, match="unknown corpus 'timit'"):
        speaker_split("timit", EMODB)
    with pytest.raises(ValueError, match="no speakers"):
        speaker_split("emodb", [])
    with pytest.raises(ValueError, match="at least 2 speakers"):
        speaker_split("emodb", ["03"], "loso", 1)
    with pytest.raises(ValueError, match=r"genders\['03'\] = 'x'"):
        speaker_split("emodb", EMODB, genders={"03": "x"})
    with pytest.raises(ValueError, match="non-empty strings"):
        speaker_split("emodb", [3, 8])
    with pytest.raises(ValueError, match="integer"):
        speaker_split("emodb", EMODB, "loso", "2")


# --- real corpora (file names only) -------------------------------------------------------------------


@pytest.mark.shared_data
def test_splits_of_the_shared_corpora(shared_data):
    emodb = sorted({p.name[:2] for p in (shared_data / "emodb" / "wav").glob("*.wav")})
    assert emodb == EMODB
    assert speaker_split("emodb", emodb)["test"] == ["12", "14", "15", "16"]
    ravdess = sorted({p.name[-6:-4] for p in (shared_data / "ravdess").rglob("*.wav")})
    assert speaker_split("ravdess", ravdess) == {"train": ["02"], "validation": [], "test": ["01"]}
    crema = sorted({p.name.split("_")[0] for p in (shared_data / "crema-d" / "AudioWAV").glob("*.wav")})
    out = speaker_split("crema_d", crema)
    assert out["train"] == crema and out["test"] == [] and out["validation"] == []

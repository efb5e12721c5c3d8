"""Corpora: builders, decoding, splits, generated corpora.

    from ser_hf.data import load_corpus
    corpus = load_corpus("emodb", "path/to/emodb")   # CorpusDict: train / validation / test + .info
"""

from ser_hf.data.audio import AudioDecodeError, decode_audio
from ser_hf.data.corpus import CorpusDict, SplitInfo, load_corpus
from ser_hf.data.labels import (
    COMMON_LABELS,
    CORPORA,
    CORPUS_LABELS,
    DIMENSION_SCALES,
    DIMENSIONAL_CORPORA,
    DIMENSIONS,
    TO_COMMON,
    check_corpus,
    common_label,
    common_label_index,
    labels_of,
)
from ser_hf.data.synthetic import generate_corpus

__all__ = [
    "AudioDecodeError",
    "COMMON_LABELS",
    "CORPORA",
    "CORPUS_LABELS",
    "CorpusDict",
    "DIMENSIONAL_CORPORA",
    "DIMENSIONS",
    "DIMENSION_SCALES",
    "SplitInfo",
    "TO_COMMON",
    "check_corpus",
    "common_label",
    "common_label_index",
    "decode_audio",
    "generate_corpus",
    "labels_of",
    "load_corpus",
]


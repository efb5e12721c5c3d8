"""Corpora: builders, decoding, splits, generated corpora."""

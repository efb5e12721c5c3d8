"""Shared fixtures: the real corpora beside the repo (skipped when absent) and small generated corpora."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$SER_HF_SHARED_DATA`` or ``<repo>/../shared/data``; None when neither exists."""
    env = os.environ.get("SER_HF_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data not found: real-corpus tests need the shared corpora beside the repo "
                    "(or SER_HF_SHARED_DATA pointing at them)")
    return path


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """Factory for generated corpora, cached per (corpus, speakers, per_class, seed) within the session."""
    from ser_hf.data.synthetic import generate_corpus

    made: dict[tuple, Path] = {}

    def make(corpus: str, speakers: int = 4, per_class: int = 2, seed: int = 0, **kw) -> Path:
        key = (corpus, speakers, per_class, seed, tuple(sorted(kw.items())))
        if key not in made:
            out = tmp_path_factory.mktemp(f"{corpus}_gen")
            made[key] = generate_corpus(corpus, out, speakers=speakers, per_class=per_class, seed=seed, **kw)
        return made[key]

    return make


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A private datasets cache, so tests never read or pollute the user's."""
    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    return cache


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection attempt fails the test (the Hub must never be contacted)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def w2v_dir(tmp_path_factory):
    """A tiny random wav2vec2-base-like classifier folder (no attention mask), built once per session."""
    from tiny_models import tiny_wav2vec2

    return tiny_wav2vec2(tmp_path_factory.mktemp("w2v"), attention_mask=False)


@pytest.fixture(scope="session")
def hubert_dir(tmp_path_factory):
    """A tiny random HuBERT-large-like classifier folder (with attention mask), built once per session."""
    from tiny_models import tiny_hubert

    return tiny_hubert(tmp_path_factory.mktemp("hubert"), attention_mask=True)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; a test using it builds its own Accelerator from scratch."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()

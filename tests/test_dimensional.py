"""Dimensional emotion (issue 14 items 3-4): the task contract, regression metrics/losses, spec errors,
regression training per family, saved-model round trips."""

from __future__ import annotations

import numpy as np
import pytest

from ser_hf.tasks import ModelTask


def test_model_task_config_round_trip_and_split():
    multi = ModelTask("multitask", ("arousal", "valence"), ("angry", "sad", "neutral"))
    cfg = {"id2label": {"0": "angry", "1": "sad", "2": "neutral"}, **multi.to_config()}
    assert cfg["ser_hf_task"] == "multitask" and cfg["ser_hf_targets"] == ["arousal", "valence"]
    assert ModelTask.from_config(cfg) == multi
    out = np.arange(10, dtype=float).reshape(2, 5)
    logits, values = multi.split_outputs(out)
    np.testing.assert_array_equal(logits, [[0, 1, 2], [5, 6, 7]])
    np.testing.assert_array_equal(values, [[3, 4], [8, 9]])

    reg = ModelTask.from_config({"ser_hf_task": "regression", "ser_hf_targets": ["arousal", "valence", "dominance"],
                                 "problem_type": "regression",
                                 "id2label": {"0": "arousal", "1": "valence", "2": "dominance"}})
    assert reg.labels == () and reg.n_outputs == 3
    logits, values = reg.split_outputs(out[:, :3])
    assert logits is None and values.tolist() == [[0, 1, 2], [5, 6, 7]]

    old = ModelTask.from_config({"id2label": {"1": "b", "0": "a"}})  # no task keys: classification
    assert old == ModelTask("classification", (), ("a", "b"))
    logits, values = old.split_outputs(out[:, :2])
    assert values is None and logits.shape == (2, 2)


def test_model_task_errors():
    with pytest.raises(ValueError, match="task must be one of"):
        ModelTask("ranking")
    with pytest.raises(ValueError, match="needs at least one target"):
        ModelTask("regression")
    with pytest.raises(ValueError, match="outputs 2 values per row, got 3"):
        ModelTask("regression", ("arousal", "valence")).split_outputs(np.zeros((4, 3)))

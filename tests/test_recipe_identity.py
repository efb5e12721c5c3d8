"""Recipe inheritance must not change what any recipe means: every recipe's resolved ``load_config``
output equals the snapshot taken from the code without inheritance (``tests/fixtures/recipes_resolved.json``:
first written at commit 737fa2b; refreshed from main at c4642ea-era, when issue 12 added the top-level keys
overwrite/debug to every recipe and new recipes arrived; the two snapshots differ in those keys only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ser_hf.config import available_recipes, load_config

SNAPSHOT = json.loads((Path(__file__).parent / "fixtures" / "recipes_resolved.json").read_text())


def test_every_snapshot_recipe_still_exists():
    assert sorted(SNAPSHOT) == [r for r in available_recipes() if r in SNAPSHOT]
    assert set(SNAPSHOT) <= set(available_recipes())


@pytest.mark.parametrize("recipe", sorted(SNAPSHOT))
def test_resolved_recipe_unchanged(recipe):
    resolved = OmegaConf.to_container(load_config([f"recipe={recipe}"]), resolve=True)
    assert json.loads(json.dumps(resolved, sort_keys=True)) == SNAPSHOT[recipe]

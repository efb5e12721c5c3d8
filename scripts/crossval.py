"""Every fold of a recipe (LOSO / EmoBox k-fold), resumable: ``scripts/crossval.py recipe=NAME [jobs=N] [key=value ...]``."""

import sys

from ser_hf.config import configure_logging, run_cli
from ser_hf.crossval import crossval_recipe

if __name__ == "__main__":
    configure_logging()
    print(run_cli(crossval_recipe, sys.argv[1:]))

"""Every fold of a recipe (LOSO / EmoBox k-fold), resumable: ``scripts/crossval.py recipe=NAME [jobs=N] [key=value ...]``."""

import sys

from ser_hf.config import check_crossval_args, configure_logging, run_cli

if __name__ == "__main__":
    configure_logging()
    run_cli(check_crossval_args, sys.argv[1:])  # every section checked before torch & co. are imported

    from ser_hf.crossval import crossval_recipe  # noqa: E402  (heavy: imported once the recipe is valid)

    print(run_cli(crossval_recipe, sys.argv[1:]))

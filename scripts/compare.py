"""Compare recipes on identical folds: ``scripts/compare.py recipes=[a,b] [key=value ...]`` or ``runs=[dir,...]``
(classification runs on macro-F1; regression runs on CCC per target and mean CCC; never one against the other)."""

import sys

from ser_hf.config import configure_logging, run_cli, split_compare_args

if __name__ == "__main__":
    configure_logging()
    run_cli(split_compare_args, sys.argv[1:])  # every recipe's spec checked before torch & co. are imported

    from ser_hf.compare import compare_from_args  # noqa: E402  (heavy: imported once the recipes are valid)

    print(run_cli(compare_from_args, sys.argv[1:]))

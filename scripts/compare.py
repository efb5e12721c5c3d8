"""Compare recipes on identical folds: ``scripts/compare.py recipes=[a,b] [key=value ...]`` or ``runs=[dir,...]``."""

import sys

from ser_hf.compare import compare_from_args
from ser_hf.config import configure_logging, run_cli

if __name__ == "__main__":
    configure_logging()
    print(run_cli(compare_from_args, sys.argv[1:]))

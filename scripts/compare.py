"""Compare recipes on identical folds: ``scripts/compare.py recipes=[a,b] [key=value ...]`` or ``runs=[dir,...]``."""

import sys

from ser_hf.config import configure_logging
from ser_hf.compare import compare_from_args

if __name__ == "__main__":
    configure_logging()
    print(compare_from_args(sys.argv[1:]))

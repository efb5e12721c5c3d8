"""Late fusion of cross-validations: ``scripts/ensemble.py runs=[CV_DIR,...] [weights=equal|validation]
[output_dir=OUT] [name=NAME]`` (see ser_hf/ensemble.py)."""

import sys

from ser_hf.config import configure_logging
from ser_hf.ensemble import ensemble_from_args

if __name__ == "__main__":
    configure_logging()
    print(ensemble_from_args(sys.argv[1:]))

"""Train and evaluate one recipe: ``[accelerate launch] scripts/finetune.py recipe=NAME [key=value ...]``."""

import sys

from ser_hf.config import configure_logging, load_config
from ser_hf.experiment import run

if __name__ == "__main__":
    configure_logging()
    run(load_config(sys.argv[1:]))

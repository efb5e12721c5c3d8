"""Train and evaluate one recipe: ``[accelerate launch] scripts/finetune.py recipe=NAME [key=value ...] [debug=true]``."""

import sys

from ser_hf.config import run_cli
from ser_hf.experiment import main

if __name__ == "__main__":
    run_cli(main, sys.argv[1:])

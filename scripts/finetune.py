"""Train and evaluate one recipe: ``[accelerate launch] scripts/finetune.py recipe=NAME [key=value ...] [debug=true]``."""

import sys

from ser_hf.config import configure_logging, load_spec, run_cli

if __name__ == "__main__":
    configure_logging()
    spec = run_cli(load_spec, sys.argv[1:])  # every section checked before torch & co. are imported

    from ser_hf.experiment import run  # noqa: E402  (heavy: imported once the recipe is known to be valid)

    run_cli(lambda argv: run(spec), sys.argv[1:])

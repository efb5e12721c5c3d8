"""Train and evaluate one recipe: ``[accelerate launch] scripts/finetune.py recipe=NAME [key=value ...]``."""

import sys

from ser_hf.config import configure_logging, load_spec

if __name__ == "__main__":
    configure_logging()
    spec = load_spec(sys.argv[1:])  # every section checked before torch & co. are imported

    from ser_hf.experiment import run  # noqa: E402  (heavy: imported once the recipe is known to be valid)

    run(spec)

"""Train and evaluate one recipe: ``[accelerate launch] scripts/finetune.py recipe=NAME [key=value ...]``."""

from ser_hf.experiment import main

if __name__ == "__main__":
    main()

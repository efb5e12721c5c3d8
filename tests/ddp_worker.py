"""Tiny synthetic training problem for the training-loop tests, and the script the DDP test launches.

As a script (``python tests/ddp_worker.py --out DIR --result FILE`` or under ``accelerate launch``) it
trains the tiny model, then rank 0 writes FILE (JSON: world size seen by every rank, history,
clip-level validation predictions), and every other rank writes ``FILE.rank<i>.json``: the list of
file-system changes it made under DIR (recorded with an audit hook), to check that only rank 0
writes outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from transformers.modeling_outputs import SequenceClassifierOutput

NUM_CLASSES = 3
DIM = 8


class WindowDataset(Dataset):
    """Rows = windows of clips; a clip's windows share its label. Batches collate to dicts."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, clip_ids: np.ndarray, crash_at_epoch=None):
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.clip_ids = torch.as_tensor(clip_ids, dtype=torch.long)
        self.crash_at_epoch = crash_at_epoch  # simulate a killed run: raise when this epoch starts

    def set_epoch(self, epoch: int) -> None:
        if self.crash_at_epoch is not None and epoch == self.crash_at_epoch:
            raise Interrupted(f"simulated interruption at the start of epoch index {epoch}")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_values": self.features[i], "labels": self.labels[i], "clip_id": self.clip_ids[i]}


class Interrupted(Exception):
    pass


def make_split(num_clips: int, seed: int, windows=(1, 3), spread: float = 1.0, **kw) -> WindowDataset:
    """Gaussian classes (means on fixed directions); each clip has 1-3 windows around its own centre."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(1234).normal(0.0, 1.5, size=(NUM_CLASSES, DIM))
    feats, labels, clips = [], [], []
    for clip in range(num_clips):
        label = clip % NUM_CLASSES
        centre = means[label] + rng.normal(0.0, spread, DIM)
        for _ in range(rng.integers(windows[0], windows[1] + 1)):
            feats.append(centre + rng.normal(0.0, 0.5, DIM))
            labels.append(label)
            clips.append(clip)
    return WindowDataset(np.stack(feats), np.array(labels), np.array(clips), **kw)


class TinyNet(nn.Module):
    """Linear -> ReLU -> Dropout -> Linear; named ``encoder``/``head`` for the group/freeze tests."""

    def __init__(self, hidden: int = 16, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(DIM, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, input_values):
        # a ModelOutput (dict-like) as real models return: DDP must find the tensors in it
        return SequenceClassifierOutput(logits=self.head(self.encoder(input_values)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    writes = record_writes(args.out) if rank != 0 else None

    import torch.distributed as dist

    from ser_hf.training import Trainer, TrainerConfig, make_dataloader

    cfg = TrainerConfig(max_epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=4, learning_rate=0.02,
                        optimizer="adamw", seed=3, progress_bar=False)
    train = make_split(60, seed=1, spread=2.0)
    val = make_split(25, seed=2, spread=2.0)  # odd sizes: the distributed sampler pads the last batch
    trainer = Trainer(TinyNet(seed=0), cfg, args.out)
    acc = trainer.accelerator
    result = trainer.fit(make_dataloader(train, cfg, train=True), make_dataloader(val, cfg, train=False))
    clip_ids, logits, labels = trainer.predict(make_dataloader(val, cfg, train=False))
    from accelerate.utils import gather_object

    ranks = gather_object([{"rank": acc.process_index, "num_processes": acc.num_processes,
                            "dist_world": dist.get_world_size() if dist.is_initialized() else 1,
                            "backend": dist.get_backend() if dist.is_initialized() else None}])
    if acc.is_main_process:
        with open(args.result, "w") as f:
            json.dump({"world_size": acc.num_processes, "ranks": ranks, "history": result.history,
                       "best_epoch": result.best_epoch, "best_metric": result.best_metric,
                       "clip_ids": clip_ids.tolist(), "predictions": logits.argmax(1).tolist(),
                       "labels": labels.tolist(), "num_val_windows": len(val)}, f)
    if writes is not None:
        with open(f"{args.result}.rank{rank}.json", "w") as f:
            json.dump(writes, f)
    acc.wait_for_everyone()


def record_writes(root: str) -> list:
    """Record (event, path relative to ``root``) for every file-system change this process makes under
    ``root`` through Python (open for writing, mkdir, rename/replace, remove, rmtree) via an audit hook."""
    root = os.path.abspath(root)
    events: list = []
    changing = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.move", "os.truncate"}

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            paths = [path] if writing else []
        elif event in changing:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        else:
            return
        for path in paths:
            if isinstance(path, (str, bytes, os.PathLike)):
                full = os.path.abspath(os.fsdecode(path))
                if full == root or full.startswith(root + os.sep):
                    events.append([event, os.path.relpath(full, root)])

    sys.addaudithook(hook)

    # torch.save and safetensors write from native code, which the audit hook does not see: wrap them.
    import accelerate.utils.other
    import safetensors.torch

    def recording(name, fn):
        def wrapper(obj, f, *a, **kw):
            if isinstance(f, (str, os.PathLike)):
                hook(name, (f,))
            return fn(obj, f, *a, **kw)
        return wrapper

    changing.update({"torch.save", "safetensors.save_file"})
    torch.save = recording("torch.save", torch.save)
    safetensors.torch.save_file = recording("safetensors.save_file", safetensors.torch.save_file)
    accelerate.utils.other.safe_save_file = recording("safetensors.save_file", accelerate.utils.other.safe_save_file)
    return events


if __name__ == "__main__":
    main()

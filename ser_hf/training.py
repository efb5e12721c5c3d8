"""The one Accelerate training loop every neural model family uses.

(Over 500 lines: one class, the Trainer, whose fit / evaluate / checkpoint / resume parts share its state;
its configuration lives in ser_hf.spec and clip averaging in ser_hf.metrics.)

The loop knows nothing about features: it takes torch ``DataLoader``\\ s whose batches are dicts

- ``input_values`` (+ optional ``attention_mask`` or any other tensor the model's ``forward`` takes),
- ``labels``: int64 class indices (required for training and scoring),
- ``clip_id``: int64, the clip a row (window / chunk) belongs to (required for evaluation/prediction),
- ``targets``: float (rows, targets), the standardised dimensional values of a regression/multitask run
  (``task=``: a :class:`~ser_hf.tasks.ModelTask`; the loss is then :class:`ser_hf.losses.TaskLoss` and model
  selection uses the validation mean CCC for regression, macro-F1 otherwise).

The model is called with every *tensor* entry except ``labels`` and ``clip_id`` and must return an
object with ``.logits``; the loss is computed here from the logits (:mod:`ser_hf.losses`), so one recipe
switch changes the criterion for every family. Validation/test scores are per clip: window logits are
averaged per ``clip_id`` (gathered across processes, padding duplicates dropped) before arg-max.

Reproducibility: at the start of epoch ``e`` every RNG (python, numpy, torch, the sampler's generator)
is reseeded from ``(seed, e)``, and the loader's ``set_epoch(e)`` is called (which forwards to a
dataset's ``set_epoch``). The order and randomness of epoch ``e`` therefore never depends on what ran
before, which is what makes ``resume=True`` end with exactly the metrics of an uninterrupted run.

Launching: ``python script.py`` and ``accelerate launch script.py`` run one process;
``accelerate launch --multi_gpu --num_processes N script.py`` runs DDP on N GPUs. On a machine without
GPUs DDP over CPU processes (gloo) needs ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes N script.py`` (``--multi_gpu`` alone starts N processes that each think they are alone,
which :func:`check_launch` refuses; ``--cpu`` alone starts one process).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.data_loader import get_sampler
from accelerate.utils import ProjectConfiguration, is_tensorboard_available, is_wandb_available, set_seed
from safetensors.torch import save_file
from sklearn.metrics import f1_score
from tqdm.auto import tqdm
from transformers import get_scheduler
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from .losses import TaskLoss, build_loss, build_regression_loss
from .clips import aggregate_clips
from .metrics import ccc
from .models.batching import seed_worker
from .runfolder import (RunFolderError, atomic_write, load_safetensors, load_state, replace_dir, save_state,
                        verify_checksums, write_checksums)
from .spec import TrainerConfig
from .tasks import ModelTask

logger = logging.getLogger(__name__)

# Batch entries that are targets/bookkeeping, never model inputs.
NON_MODEL_KEYS = ("labels", "clip_id", "targets")
STATE_FILE = "trainer_state.json"
BEST_FILE = "best.json"
BEST_WEIGHTS = "model.safetensors"
CHECKPOINT_FORMAT = 2  # 2: safetensors + JSON (1: Accelerate's pickles, refused)
# Config keys that may change between an interrupted run and its resumption without changing results.
_RESUME_FREE_KEYS = {"max_epochs", "early_stopping_patience", "log_with", "num_workers", "progress_bar",
                     "eval_batch_size"}
# Trainer keys added after checkpoints existed: absent from an older checkpoint's config = their default.
_ADDED_KEYS = {"regression_loss": "ccc", "regression_weight": 1.0}


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns. ``best_epoch`` is 1-based; with no validation it is the last
    epoch and ``best_metric`` is None."""

    best_epoch: int
    best_metric: float | None
    history: list[dict]
    train_seconds: float
    stopped_early: bool
    epochs_completed: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------- helpers


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed for epoch ``epoch`` of a run seeded ``seed`` (SeedSequence mixes both, so
    (seed=0, epoch=1) and (seed=1, epoch=0) do not collide)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def make_dataloader(dataset, cfg: TrainerConfig, train: bool, collate_fn=None) -> DataLoader:
    """A loader with the trainer's conventions: shuffled for training, in order for evaluation,
    nothing dropped, non-persistent workers seeded by :func:`seed_worker`."""
    return DataLoader(dataset, batch_size=cfg.batch_size if train else cfg.eval_batch, shuffle=train,
                      num_workers=cfg.num_workers, collate_fn=collate_fn, drop_last=False,
                      worker_init_fn=seed_worker if cfg.num_workers > 0 else None)


def macro_f1(references, predictions) -> float:
    """Macro-F1 over the classes present in ``references`` (same definition as
    ``ser_hf.metrics.compute_metrics``' macro_f1, so model selection and the report agree)."""
    refs = np.asarray(references).reshape(-1)
    if refs.size == 0:
        raise ValueError("macro_f1: no references to score")
    return float(f1_score(refs, np.asarray(predictions).reshape(-1), labels=np.unique(refs), average="macro",
                          zero_division=0))


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _save_weights(weights: Mapping[str, torch.Tensor], path: Path) -> None:
    """Weights as safetensors from own CPU copies: safetensors refuses tensors sharing one storage (an
    nn.LSTM's weights on cuDNN), and Accelerate's save_model would drop them."""
    save_file({k: v.detach().cpu().clone() for k, v in weights.items()}, str(path), metadata={"format": "pt"})


def check_launch(accelerator) -> None:
    """Refuse a multi-process launch that Accelerate runs as independent single processes.

    ``accelerate launch --multi_gpu --num_processes N`` on a machine without GPUs starts N processes
    that each see a world of one (every process would train alone and write the same outputs).
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and accelerator.num_processes == 1:
        raise RuntimeError(
            f"this process was launched as one of {world} (WORLD_SIZE={world}) but Accelerate runs it as a single "
            "process, so each process would train alone and overwrite the others' outputs. On a machine without "
            "GPUs run DDP over CPU processes (gloo) with: "
            f"ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {world} <script> ...")


# ------------------------------------------------------------------------------------------------ trainer


class Trainer:
    """Fit / evaluate / predict one model with Accelerate.

    ``accelerator``: None builds one from ``cfg`` (mixed precision, gradient accumulation, trackers
    logging to ``output_dir/logs``, DDP with ``find_unused_parameters=True`` as the HF Trainer does).
    A caller-built Accelerator must use ``gradient_accumulation_steps=cfg.grad_accum_steps``.
    ``class_weights``: per-class weights for ``loss='weighted_ce'`` / ``focal_alpha='balanced'``.
    ``param_groups``: a family's torch optimizer groups (dicts with "params", optional "lr" /
    "weight_decay" / "name"), e.g. head and encoder; ``cfg.group_learning_rates`` prefixes still apply
    inside them (see the learning-rate story in :mod:`ser_hf.spec`).

    One ``fit`` per Trainer. Only the main process writes (checkpoints, trackers), except the
    per-process RNG-state file Accelerate's ``save_state`` adds to the checkpoint; every process takes
    the same decisions because they are made on gathered/reduced values.
    """

    def __init__(self, model: nn.Module, cfg: TrainerConfig | Mapping, output_dir, accelerator=None,
                 class_weights: Sequence[float] | torch.Tensor | None = None, param_groups: list[dict] | None = None,
                 task: ModelTask | None = None):
        self.cfg = cfg if isinstance(cfg, TrainerConfig) else TrainerConfig.from_dict(cfg)
        self.output_dir = Path(output_dir)
        self.accelerator = accelerator if accelerator is not None else self._make_accelerator()
        acc = self.accelerator
        check_launch(acc)
        if acc.gradient_accumulation_steps != self.cfg.grad_accum_steps:
            raise ValueError(f"the Accelerator accumulates {acc.gradient_accumulation_steps} steps but "
                             f"trainer.grad_accum_steps={self.cfg.grad_accum_steps}; build it with "
                             "gradient_accumulation_steps=cfg.grad_accum_steps or pass accelerator=None")
        if acc.num_processes > 1 and self.cfg.freeze_steps > 0:
            handler = getattr(acc, "ddp_handler", None)
            if handler is None or not handler.find_unused_parameters:
                raise ValueError("trainer.freeze_steps under DDP needs DistributedDataParallelKwargs("
                                 "find_unused_parameters=True) in the Accelerator (or pass accelerator=None)")
        self.task = task if task is not None else ModelTask()
        class_loss = build_loss(self.cfg.loss, class_weights=class_weights, focal_alpha=self.cfg.focal_alpha,
                                focal_gamma=self.cfg.focal_gamma,
                                label_smoothing=self.cfg.label_smoothing) if self.task.has_classes else None
        if self.task.has_values:
            self.criterion = TaskLoss(self.task, class_loss, build_regression_loss(self.cfg.regression_loss),
                                      self.cfg.regression_weight).to(acc.device)
        else:
            self.criterion = class_loss.to(acc.device)
        # model selection: validation mean CCC for regression, macro-F1 otherwise (multitask included)
        self.select_key = "ccc_mean" if self.task.task == "regression" else "macro_f1"
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters (every parameter has requires_grad=False)")
        self._freeze_params = self._select(named, self.cfg.freeze_prefixes, "freeze_prefixes")
        # L1 on weight matrices / kernels only, like a Keras kernel_regularizer (biases and norms are left alone).
        self._l1_params = [p for _, p in named if p.ndim >= 2]
        self._all_named = list(model.named_parameters())
        groups = self._param_groups(named, param_groups)
        optimizer = self._make_optimizer(groups)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.scheduler = None
        self._frozen: bool | None = None
        self._eval_loaders: dict[int, tuple[Any, Any]] = {}
        self._fitted = False

    # ---------------------------------------------------------------------------------------- set-up

    def _make_accelerator(self):
        log_with = self.cfg.log_with
        if log_with == "tensorboard" and not is_tensorboard_available():
            warnings.warn("trainer.log_with='tensorboard' but tensorboard is not installed; training without a "
                          "tracker (pip install tensorboard to get curves in output_dir/logs)")
            log_with = None
        if log_with == "wandb" and not is_wandb_available():
            warnings.warn("trainer.log_with='wandb' but wandb is not installed; training without a tracker "
                          "(pip install wandb)")
            log_with = None
        return Accelerator(
            mixed_precision=self.cfg.mixed_precision,
            gradient_accumulation_steps=self.cfg.grad_accum_steps,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir),
                                                logging_dir=str(self.output_dir / "logs")),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )

    @staticmethod
    def _select(named, prefixes: Sequence[str], key: str) -> list[nn.Parameter]:
        chosen = []
        for prefix in prefixes:
            hits = [p for n, p in named if _matches(n, prefix)]
            if not hits:
                raise ValueError(f"trainer.{key}: prefix {prefix!r} matches no trainable parameter; names look like "
                                 f"{[n for n, _ in named[:8]]}")
            chosen.extend(hits)
        return chosen

    def _param_groups(self, named, base: list[dict] | None = None) -> list[dict]:
        """Optimizer groups: ``base`` (a family's groups, e.g. head / encoder) or one default group at
        ``learning_rate``, each split further by ``group_learning_rates`` prefixes (the longest matching
        prefix wins), so per-prefix rates work the same for every family."""
        prefixes = sorted(self.cfg.group_learning_rates, key=len, reverse=True)
        self._select(named, prefixes, "group_learning_rates")  # typo guard: every prefix must match
        if base is None:
            base = [{"params": [p for _, p in named], "lr": self.cfg.learning_rate, "name": "default"}]
        names = {id(p): n for n, p in self._all_named}
        groups = []
        for group in base:
            keep = {k: group[k] for k in ("lr", "weight_decay", "name") if k in group}
            buckets: dict[str | None, list] = {None: []}
            for p in group["params"]:
                prefix = next((pre for pre in prefixes if _matches(names[id(p)], pre)), None)
                buckets.setdefault(prefix, []).append(p)
            groups.append({**keep, "params": buckets.pop(None)})
            groups += [{**keep, "params": ps, "lr": self.cfg.group_learning_rates[pre], "name": pre}
                       for pre, ps in buckets.items()]
        return [g for g in groups if g["params"]]

    def _make_optimizer(self, groups):
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[self.cfg.optimizer]
        return cls(groups, lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay)

    def _make_scheduler(self, total_steps: int, has_eval: bool):
        cfg = self.cfg
        if cfg.scheduler == "none":
            return None
        if cfg.scheduler == "plateau":
            # without validation the plateau watches the training loss
            mode = "max" if cfg.plateau_monitor == "val_macro_f1" and has_eval else "min"
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer.optimizer, mode=mode,
                                                              factor=cfg.plateau_factor, patience=cfg.plateau_patience)
        warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
        # Not accelerator.prepare()d: AcceleratedScheduler steps num_processes times per step, which
        # assumes a schedule sized on the unsharded loader; ours is sized on the per-process one.
        return get_scheduler(cfg.scheduler, self.optimizer.optimizer, num_warmup_steps=warmup,
                             num_training_steps=total_steps)

    def _prepare_eval(self, loader):
        key = id(loader)
        if key not in self._eval_loaders:
            self._eval_loaders[key] = (loader, self.accelerator.prepare(loader))
        return self._eval_loaders[key][1]

    @property
    def unwrapped_model(self) -> nn.Module:
        """The bare model (for save_pretrained); its weights are the best epoch's after fit."""
        return self.accelerator.unwrap_model(self.model)

    # ---------------------------------------------------------------------------------------- pieces

    @staticmethod
    def model_inputs(batch) -> dict:
        if not isinstance(batch, Mapping):
            raise TypeError(f"batches must be dicts (input_values, labels, clip_id, ...); got {type(batch).__name__}. "
                            "Return a dict from the dataset or collate_fn")
        return {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS and torch.is_tensor(v)}

    @staticmethod
    def _labels(batch) -> torch.Tensor:
        if "labels" not in batch:
            raise ValueError(f"training/validation batches need a 'labels' entry; got keys {sorted(batch)}")
        return batch["labels"].reshape(-1).long()

    def _loss(self, logits: torch.Tensor, batch) -> torch.Tensor:
        """The criterion on one batch (class labels and/or the ``targets`` values, per the task)."""
        if not self.task.has_values:
            return self.criterion(logits, self._labels(batch))
        if "targets" not in batch:
            raise ValueError(f"task={self.task.task}: batches need a 'targets' entry; got keys {sorted(batch)}")
        labels = self._labels(batch) if self.task.has_classes else None
        return self.criterion(logits, labels, batch["targets"].reshape(len(logits), -1))

    def l1_penalty(self) -> torch.Tensor:
        """``cfg.l1 * sum |W|`` over the weight matrices/kernels (0 when l1 == 0)."""
        if not self.cfg.l1:
            return torch.zeros((), device=self.accelerator.device)
        return self.cfg.l1 * sum(p.abs().sum() for p in self._l1_params)

    def _apply_freeze(self, global_step: int) -> None:
        frozen = global_step < self.cfg.freeze_steps
        if frozen != self._frozen and self._freeze_params:
            for p in self._freeze_params:
                p.requires_grad_(not frozen)
            logger.info("%s %s at optimizer step %d", "froze" if frozen else "unfroze", self.cfg.freeze_prefixes,
                        global_step)
        self._frozen = frozen

    def _seed_epoch(self, train_dl, epoch: int) -> None:
        s = epoch_seed(self.cfg.seed, epoch)
        set_seed(s)  # python, numpy, torch (+ accelerator devices); same on every process
        sampler = get_sampler(train_dl)
        generator = getattr(sampler, "generator", None)
        if generator is not None:  # under DDP Accelerate gives the sampler its own generator
            generator.manual_seed(s)
        if hasattr(train_dl, "set_epoch"):
            train_dl.set_epoch(epoch - 1)
        # Accelerate forwards set_epoch to the dataset only for some sampler set-ups; a dataset that draws
        # per-epoch crops from it must always get it (calling it twice with the same epoch is harmless).
        dataset = getattr(train_dl, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch - 1)

    def _train_epoch(self, train_dl, epoch: int, state: dict) -> float:
        acc, cfg = self.accelerator, self.cfg
        self.model.train()
        acc.step = 0  # accumulation groups start afresh each epoch (matches steps_per_epoch)
        per_step = self.scheduler is not None and cfg.scheduler != "plateau"
        total = torch.zeros((), dtype=torch.float64, device=acc.device)
        count = torch.zeros((), dtype=torch.float64, device=acc.device)
        bar = tqdm(train_dl, desc=f"epoch {epoch}/{cfg.max_epochs}", leave=False,
                   disable=not (cfg.progress_bar and acc.is_local_main_process))
        for batch in bar:
            self._apply_freeze(state["global_step"])
            with acc.accumulate(self.model):
                outputs = self.model(**self.model_inputs(batch))
                if acc.num_processes > 1 and not isinstance(outputs, (Mapping, tuple, list)):
                    raise TypeError(f"under DDP the model must return a ModelOutput/dict (got {type(outputs).__name__}):"
                                    " DDP looks for the output tensors in it to find unused parameters")
                logits = outputs.logits
                loss = self._loss(logits.float(), batch)
                acc.backward(loss + self.l1_penalty() if cfg.l1 else loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                if per_step and acc.sync_gradients and not acc.optimizer_step_was_skipped:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            if acc.sync_gradients:
                state["global_step"] += 1
            total += loss.detach().double() * len(logits)
            count += len(logits)
            if not bar.disable:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        total, count = acc.reduce(total, "sum"), acc.reduce(count, "sum")
        return float(total / count)

    def _predict_prepared(self, dl, loader=None):
        ids, logits, labels, _ = self._predict_full(dl, loader)
        return ids, logits, labels

    def _predict_full(self, dl, loader=None):
        """:meth:`predict` plus the clip-level ``targets`` (None when batches carry none)."""
        acc = self.accelerator
        was_training = self.model.training
        self.model.eval()
        ids, outs, labs, tgts, with_labels = [], [], [], [], None
        with torch.no_grad():
            for batch in dl:
                if not isinstance(batch, Mapping) or "clip_id" not in batch:
                    keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
                    raise ValueError(f"evaluation batches need a 'clip_id' entry (int, the clip each row belongs to) "
                                     f"so window logits can be averaged per clip; got {keys}")
                logits = self.model(**self.model_inputs(batch)).logits.float()
                parts = [logits, batch["clip_id"].reshape(-1).long()]
                has = "labels" in batch
                if with_labels is None:
                    with_labels = has
                elif has != with_labels:
                    raise ValueError("some evaluation batches have 'labels' and others do not")
                if has:
                    parts.append(batch["labels"].reshape(-1).long())
                if "targets" in batch:
                    parts.append(batch["targets"].reshape(len(logits), -1).float())
                gathered = acc.gather_for_metrics(tuple(parts))
                outs.append(gathered[0].cpu().numpy())
                ids.append(gathered[1].cpu().numpy())
                if has:
                    labs.append(gathered[2].cpu().numpy())
                if "targets" in batch:
                    tgts.append(gathered[-1].cpu().numpy())
        if was_training:
            self.model.train()
        if not ids:
            raise ValueError("the evaluation loader yielded no batches; pass eval_loader=None when there is no "
                             "validation data")
        ids_np, out_np = np.concatenate(ids), np.concatenate(outs)
        expected = None
        if loader is not None and isinstance(getattr(loader, "sampler", None), SequentialSampler) \
                and not getattr(loader, "drop_last", False):
            expected = len(loader.dataset)
        if expected is not None and len(ids_np) != expected:
            raise RuntimeError(f"prediction gathered {len(ids_np)} rows but the loader holds {expected}: rows were "
                               "duplicated or lost across processes")
        clip_ids, clip_logits, clip_labels = aggregate_clips(ids_np, out_np, np.concatenate(labs) if with_labels else None)
        clip_targets = aggregate_clips(ids_np, np.concatenate(tgts))[1] if tgts else None  # one value per clip
        return clip_ids, clip_logits, clip_labels, clip_targets

    def predict(self, loader):
        """Clip-level predictions: ``(clip_ids, logits, labels)`` as numpy arrays ordered by clip id, window
        logits averaged per clip, gathered over all processes (padding duplicates dropped). ``labels`` is
        None when the batches carry none. Every process gets the full result."""
        return self._predict_prepared(self._prepare_eval(loader), loader)

    def evaluate(self, loader) -> dict:
        """``{"loss", "macro_f1", "num_clips"}`` on clip-averaged logits (loss = the training criterion
        without the L1 term); regression/multitask tasks add ``ccc_mean`` (regression: no macro_f1)."""
        return self._evaluate_prepared(self._prepare_eval(loader), loader)

    def _evaluate_prepared(self, dl, loader=None) -> dict:
        _, logits, labels, targets = self._predict_full(dl, loader)
        if labels is None and self.task.has_classes:
            raise ValueError("validation batches need 'labels' to be scored")
        device = self.accelerator.device
        batch = {"labels": torch.as_tensor(labels, device=device)} if labels is not None else {}
        if targets is not None:
            batch["targets"] = torch.as_tensor(targets, device=device)
        with torch.no_grad():
            loss = self._loss(torch.as_tensor(logits, device=device), batch)
        out = {"loss": float(loss), "num_clips": len(logits)}
        class_logits, values = self.task.split_outputs(logits) if self.task.has_values else (logits, None)
        if class_logits is not None:
            out["macro_f1"] = macro_f1(labels, class_logits.argmax(axis=1))
        if values is not None:  # CCC is unchanged by the targets' standardisation (same affine map on both sides)
            out["ccc_mean"] = float(np.mean([ccc(targets[:, j], values[:, j]) for j in range(values.shape[1])]))
        return out

    # ---------------------------------------------------------------------------------- checkpoints

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    def _write_checkpoint(self, name: str, write, marker: str, content: dict) -> None:
        """Checkpoint ``name`` written atomically: ``write(tmp)`` on every rank into a temporary folder, then
        the ``marker`` JSON (written last: it marks the folder complete) and a swap (``runfolder.replace_dir``:
        at every instant either ``final``, ``.final.old`` or the complete ``tmp`` holds a whole checkpoint)."""
        acc = self.accelerator
        final, tmp = self.checkpoint_dir / name, self.checkpoint_dir / f".{name}.tmp"
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)  # made here so the other ranks find it (they only add their own files)
        acc.wait_for_everyone()
        write(tmp)
        acc.wait_for_everyone()
        if acc.is_main_process:
            atomic_write(tmp / marker, json.dumps(content, indent=2))
            replace_dir(tmp, final)
        acc.wait_for_everyone()

    def _save_last(self, state: dict) -> None:
        """Weights, optimizer, LR-scheduler (and fp16 grad-scaler) state as safetensors + JSON with sha256
        checksums; nothing is pickled, so resuming a downloaded run folder cannot run code. (Not Accelerate's
        save_state: it pickles the scheduler and RNG states. The RNGs need no saving: every epoch reseeds
        them from (seed, epoch).)"""
        acc = self.accelerator

        def write(tmp: Path) -> None:
            weights = acc.get_state_dict(self.model)  # unwrapped (and gathered, for sharded models)
            if acc.is_main_process:
                _save_weights(weights, tmp / BEST_WEIGHTS)
                save_state(tmp, "optimizer", self.optimizer.state_dict())
                if self.scheduler is not None:
                    save_state(tmp, "scheduler", self.scheduler.state_dict())
                if getattr(acc, "scaler", None) is not None:
                    save_state(tmp, "scaler", acc.scaler.state_dict())
                write_checksums(tmp)

        self._write_checkpoint("last", write, STATE_FILE, state)

    def _save_best(self, epoch: int, metric: float | None) -> None:
        acc = self.accelerator

        def write(tmp: Path) -> None:
            state = acc.get_state_dict(self.model)  # unwrapped (and gathered, for sharded models)
            if acc.is_main_process:
                _save_weights(state, tmp / BEST_WEIGHTS)
                write_checksums(tmp, [BEST_WEIGHTS])

        self._write_checkpoint("best", write, BEST_FILE, {"epoch": epoch, f"val_{self.select_key}": metric})

    def _best_epoch_on_disk(self) -> int | None:
        path = self.checkpoint_dir / "best" / BEST_FILE
        return json.loads(path.read_text())["epoch"] if path.is_file() else None

    def _restore_best(self) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        path = self.checkpoint_dir / "best" / BEST_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"best checkpoint {path} is missing; delete {self.checkpoint_dir} to start over")
        # safetensors names CPU "cpu", not Accelerate's "cpu:0" under multi-CPU
        device = "cpu" if acc.device.type == "cpu" else str(acc.device)
        verify_checksums(path.parent)  # another run's or a damaged file is refused, naming it
        # load_state_dict copies into the live parameters. safetensors.torch.load_model refuses models
        # whose parameters share one storage, which every nn.LSTM on CUDA has (cuDNN flattens its weights).
        self.unwrapped_model.load_state_dict(load_safetensors(path, device=device))

    def find_checkpoint(self) -> Path | None:
        """The newest complete ``last`` checkpoint (also looks at the aside/temporary folders an
        interrupted swap can leave), or None."""
        best, best_epoch = None, -1
        for name in ("last", ".last.tmp", ".last.old"):
            path = self.checkpoint_dir / name / STATE_FILE
            if path.is_file():
                try:
                    epoch = json.loads(path.read_text())["epoch"]
                except (ValueError, KeyError):
                    continue
                if epoch > best_epoch:
                    best, best_epoch = path.parent, epoch
        return best

    def _fresh_state(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "epoch": 0, "global_step": 0, "history": [], "best_metric": None, "best_epoch": 0,
                "bad_epochs": 0, "stopped_early": False, "train_seconds": 0.0,
                "num_processes": self.accelerator.num_processes, "config": self.cfg.to_dict()}

    def _load_checkpoint(self, path: Path) -> dict:
        state = json.loads((path / STATE_FILE).read_text())
        saved = state.get("config", {})
        changed = sorted(k for k, v in self.cfg.to_dict().items()
                         if k not in _RESUME_FREE_KEYS and saved.get(k, _ADDED_KEYS.get(k)) != v)
        if changed:
            logger.warning("resuming %s with changed trainer options %s: the result will differ from an "
                           "uninterrupted run", path, changed)
        if saved.get("max_epochs") != self.cfg.max_epochs and self.cfg.scheduler in ("cosine", "linear"):
            logger.warning("max_epochs changed (%s -> %s) with a %s schedule sized on the old value",
                           saved.get("max_epochs"), self.cfg.max_epochs, self.cfg.scheduler)
        if state.get("num_processes") != self.accelerator.num_processes:
            logger.warning("checkpoint written by %s process(es), resuming with %s: batches differ from an "
                           "uninterrupted run", state.get("num_processes"), self.accelerator.num_processes)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunFolderError(
                f"{path} was written by an older ser_hf in Accelerate's pickle format (format {state.get('format')}); "
                "it is not loaded, because unpickling a file can run code. Start afresh (overwrite=true, or delete "
                f"{path.parent})")
        acc = self.accelerator
        verify_checksums(path, required=True)
        device = "cpu" if acc.device.type == "cpu" else str(acc.device)
        self.unwrapped_model.load_state_dict(load_safetensors(path / BEST_WEIGHTS, device=device))
        self.optimizer.load_state_dict(load_state(path, "optimizer"))
        if self.scheduler is not None:
            self.scheduler.load_state_dict(load_state(path, "scheduler"))
        if getattr(acc, "scaler", None) is not None and (path / "scaler.json").is_file():
            acc.scaler.load_state_dict(load_state(path, "scaler"))
        state["config"] = self.cfg.to_dict()
        state["num_processes"] = self.accelerator.num_processes
        return state

    # ------------------------------------------------------------------------------------------- fit

    def fit(self, train_loader: DataLoader, eval_loader: DataLoader | None = None, resume: bool = False) -> TrainResult:
        """Train for ``cfg.max_epochs`` epochs (or until early stopping) and restore the best weights.

        Model selection: the epoch with the highest validation macro-F1 (clip level; ties keep the earlier
        epoch). Without an eval loader (None, or one holding no rows) every epoch trains, early stopping
        is off, and the last epoch's weights are kept. Each epoch ends with ``checkpoints/last`` (full
        Accelerate state + ``trainer_state.json``) and, on improvement, ``checkpoints/best`` (weights +
        ``best.json``). ``resume=True`` continues from the newest complete ``last`` (a fresh start when there
        is none) and ends with the same history and weights as an uninterrupted run.
        """
        if self._fitted:
            raise RuntimeError("Trainer.fit was already called; build a new Trainer (and model) for another run")
        self._fitted = True
        acc, cfg = self.accelerator, self.cfg
        try:
            n_train = len(train_loader)
        except TypeError:
            raise ValueError("the training loader must have a length (a map-style dataset) so the learning-rate "
                             "schedule can be sized") from None
        if n_train == 0:
            raise ValueError("the training loader is empty: no training rows")
        train_dl = acc.prepare(train_loader)
        eval_dl = None
        if eval_loader is not None:
            try:
                empty = len(eval_loader.dataset) == 0
            except TypeError:
                empty = False
            if empty:
                logger.warning("the validation loader holds no rows: training without model selection (last epoch "
                               "kept, no early stopping)")
            else:
                eval_dl = self._prepare_eval(eval_loader)
        steps_per_epoch = math.ceil(len(train_dl) / cfg.grad_accum_steps)
        # Not registered for Accelerate's checkpointing (that pickles it): _save_last stores its state_dict.
        self.scheduler = self._make_scheduler(steps_per_epoch * cfg.max_epochs, has_eval=eval_dl is not None)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if acc.log_with:
            acc.init_trackers("ser_hf", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                for k, v in cfg.to_dict().items()})

        state = self._fresh_state()
        checkpoint = self.find_checkpoint()
        if resume and checkpoint is not None:
            state = self._load_checkpoint(checkpoint)
            logger.info("resumed from %s after epoch %d", checkpoint, state["epoch"])
            if eval_dl is not None and state["best_epoch"] and self._best_epoch_on_disk() != state["best_epoch"]:
                if state["best_epoch"] != state["epoch"]:
                    raise RuntimeError(f"{self.checkpoint_dir / 'best'} does not hold epoch {state['best_epoch']} "
                                       "recorded in the last checkpoint; resume is impossible, start afresh")
                # interrupted between saving `last` and `best`: the loaded weights are the best ones
                self._save_best(state["best_epoch"], state["best_metric"])
        elif resume:
            logger.info("resume requested but %s holds no checkpoint: starting from scratch", self.checkpoint_dir)
        elif checkpoint is not None:
            logger.warning("%s holds checkpoints of an earlier run; they will be overwritten (resume=True continues "
                           "it instead)", self.checkpoint_dir)

        patience = cfg.early_stopping_patience if eval_dl is not None else None
        if cfg.early_stopping_patience and eval_dl is None:
            logger.warning("early stopping needs validation data; it is off for this run")
        epoch = state["epoch"]
        while not state["stopped_early"] and epoch < cfg.max_epochs:
            epoch += 1
            start = time.perf_counter()
            self._seed_epoch(train_dl, epoch)
            train_loss = self._train_epoch(train_dl, epoch, state)
            lr = self.optimizer.param_groups[0]["lr"]
            val = self._evaluate_prepared(eval_dl, eval_loader) if eval_dl is not None else None
            if cfg.scheduler == "plateau":  # val_macro_f1 watches the selection score (mean CCC for regression)
                monitor = train_loss if val is None else val[self.select_key if cfg.plateau_monitor == "val_macro_f1"
                                                             else "loss"]
                self.scheduler.step(monitor)
            seconds = time.perf_counter() - start
            record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val and val["loss"],
                      "val_macro_f1": val and val.get("macro_f1"), "lr": lr, "seconds": seconds}
            if self.task.has_values:
                record["val_ccc_mean"] = val and val["ccc_mean"]
            score = val and val[self.select_key]
            state["history"].append(record)
            state["epoch"], state["train_seconds"] = epoch, state["train_seconds"] + seconds
            improved = False
            if val is None:
                state["best_epoch"] = epoch
            elif state["best_metric"] is None or score > state["best_metric"]:
                state.update(best_metric=score, best_epoch=epoch, bad_epochs=0)
                improved = True
            else:
                state["bad_epochs"] += 1
                if patience and state["bad_epochs"] >= patience:
                    state["stopped_early"] = True
            acc.log({k: v for k, v in {"train/loss": train_loss, "val/loss": record["val_loss"],
                                       "val/macro_f1": record["val_macro_f1"], "val/ccc_mean": record.get("val_ccc_mean"),
                                       "lr": lr}.items() if v is not None},
                    step=epoch)
            if acc.is_main_process:
                val_text = "" if val is None else f" val_loss {val['loss']:.4f} val_{self.select_key} {score:.4f}"
                logger.info("epoch %d/%d train_loss %.4f%s lr %.3g (%.1fs)%s", epoch, cfg.max_epochs, train_loss,
                            val_text, lr, seconds, " *" if improved else "")
            # `last` before `best`: an interruption in between is repaired on resume (see above)
            self._save_last(state)
            if improved:
                self._save_best(epoch, score)
            if state["stopped_early"]:
                logger.info("early stopping after epoch %d (no better validation %s for %d epochs)",
                            epoch, self.select_key, patience)

        if eval_dl is not None and state["best_epoch"]:
            self._restore_best()
        for tracker in acc.trackers:  # not accelerator.end_training(): that also ends the process group
            tracker.finish()
        acc.trackers = []
        return TrainResult(best_epoch=state["best_epoch"], best_metric=state["best_metric"],
                           history=state["history"], train_seconds=state["train_seconds"],
                           stopped_early=state["stopped_early"], epochs_completed=state["epoch"])

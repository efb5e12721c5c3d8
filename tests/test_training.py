"""The Accelerate training loop on a tiny synthetic 3-class problem (see tests/ddp_worker.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from ddp_worker import NUM_CLASSES, Interrupted, TinyNet, WindowDataset, make_split
from ser_hf.losses import FocalLoss, balanced_class_weights, build_loss
from ser_hf.training import (Trainer, TrainerConfig, aggregate_clips, epoch_seed, macro_f1, make_dataloader)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


def config(**kw) -> TrainerConfig:
    base = dict(max_epochs=4, batch_size=8, eval_batch_size=5, learning_rate=0.01, log_with=None,
                progress_bar=False, seed=0)
    base.update(kw)
    return TrainerConfig(**base)


def loaders(cfg, train_clips=36, val_clips=13, spread=1.0, **train_kw):
    train = make_split(train_clips, seed=1, spread=spread, **train_kw)
    val = make_split(val_clips, seed=2, spread=spread)
    return make_dataloader(train, cfg, train=True), make_dataloader(val, cfg, train=False)


def run(tmp_path, name, cfg, model=None, resume=False, **loader_kw):
    trainer = Trainer(model or TinyNet(seed=0), cfg, tmp_path / name)
    train_dl, val_dl = loaders(cfg, **loader_kw)
    result = trainer.fit(train_dl, val_dl, resume=resume)
    return trainer, result, val_dl


def without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


# ------------------------------------------------------------------------------------------ config


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError, match="unknown key 'trainer.learnin_rate'.*did you mean trainer.learning_rate"):
        TrainerConfig.from_dict({"learnin_rate": 0.1})
    with pytest.raises(ValueError, match="optimizer.*adamw"):
        TrainerConfig.from_dict({"optimizer": "sgd"})
    with pytest.raises(ValueError, match="warmup"):
        TrainerConfig.from_dict({"scheduler": "plateau", "warmup_ratio": 0.1})
    with pytest.raises(ValueError, match="freeze_prefixes"):
        TrainerConfig.from_dict({"freeze_steps": 3})
    cfg = TrainerConfig.from_dict({"scheduler": None, "log_with": "none", "max_epochs": 2})
    assert (cfg.scheduler, cfg.log_with, cfg.max_epochs) == ("none", None, 2)


def test_config_from_omegaconf():
    from omegaconf import OmegaConf

    cfg = TrainerConfig.from_dict(OmegaConf.create({"group_learning_rates": {"head": 0.1},
                                                    "freeze_prefixes": ["encoder"], "freeze_steps": 2}))
    assert cfg.group_learning_rates == {"head": 0.1} and cfg.freeze_prefixes == ["encoder"]


# ------------------------------------------------------------------------------------------ losses


def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits, dim=1)
    alpha = torch.tensor([0.25, 1.0, 2.0])
    gamma = 2.0
    pt = p[torch.arange(2), labels]
    expected = (-(alpha[labels]) * (1 - pt) ** gamma * torch.log(pt)).mean()
    got = FocalLoss(alpha=alpha, gamma=gamma)(logits, labels)
    assert torch.allclose(got, expected)
    # gamma = 0 and no alpha is plain cross-entropy, label smoothing included
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    assert torch.allclose(FocalLoss(gamma=0.0, label_smoothing=0.1)(logits, labels), ce)
    with pytest.raises(ValueError, match="one weight per class"):
        FocalLoss(alpha=[1.0, 2.0])(logits, labels)


def test_weighted_ce_and_balanced_weights():
    labels = [0, 0, 0, 1, 2, 2]
    w = balanced_class_weights(labels, 4)  # class 3 absent: weight 1
    assert torch.allclose(w, torch.tensor([6 / (4 * 3), 6 / (4 * 1), 6 / (4 * 2), 1.0]))
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1, 2])
    weights = torch.tensor([1.0, 2.0, 3.0])
    nll = -torch.log_softmax(logits, 1)[torch.arange(3), y]
    expected = (weights[y] * nll).sum() / weights[y].sum()
    assert torch.allclose(build_loss("weighted_ce", class_weights=weights)(logits, y), expected)
    with pytest.raises(ValueError, match="class_weights"):
        build_loss("weighted_ce")
    focal = build_loss("focal", class_weights=weights, focal_alpha="balanced", focal_gamma=0.0)
    assert torch.allclose(focal(logits, y), (weights[y] * nll).mean())


# ------------------------------------------------------------------------------------ aggregation


def test_aggregate_clips_averages_window_logits():
    ids = np.array([7, 3, 7, 3, 3, 5])
    logits = np.array([[1, 0], [0, 3], [3, 0], [0, 0], [0, 6], [2, 2]], dtype=np.float32)
    labels = np.array([1, 0, 1, 0, 0, 1])
    clip_ids, mean, clip_labels = aggregate_clips(ids, logits, labels)
    assert clip_ids.tolist() == [3, 5, 7]
    assert np.allclose(mean, [[0, 3], [2, 2], [2, 0]])
    assert clip_labels.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="clip\\(s\\) \\[7\\]"):
        aggregate_clips(ids, logits, np.array([1, 0, 0, 0, 0, 1]))


class Passthrough(nn.Module):
    """logits = scale * input_values, so clip logits are exactly the averaged inputs."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, input_values, attention_mask=None):
        return SequenceClassifierOutput(logits=self.scale * input_values)


def test_predict_scores_clips_not_windows(tmp_path):
    feats = np.array([[1, 0, 0], [0, 0, 5], [0, 2, 0], [0, 2, 0], [4, 0, 0]], dtype=np.float32)
    ds = WindowDataset(feats, labels=np.array([2, 2, 1, 1, 0]), clip_ids=np.array([10, 10, 11, 11, 12]))
    cfg = config(eval_batch_size=2)
    trainer = Trainer(Passthrough(), cfg, tmp_path)
    clip_ids, logits, labels = trainer.predict(make_dataloader(ds, cfg, train=False))
    assert clip_ids.tolist() == [10, 11, 12] and labels.tolist() == [2, 1, 0]
    assert np.allclose(logits, [[0.5, 0, 2.5], [0, 2, 0], [4, 0, 0]])
    # per window, clip 10's first window would be wrong (argmax 0); per clip every clip is right
    assert trainer.evaluate(make_dataloader(ds, cfg, train=False))["macro_f1"] == 1.0


# ---------------------------------------------------------------------------------------- training


def test_learns_above_chance_and_writes_checkpoints(tmp_path):
    cfg = config(max_epochs=5, log_with="tensorboard", progress_bar=True)
    trainer, result, val_dl = run(tmp_path, "run", cfg)
    h = result.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4, 5]
    assert set(h[0]) >= {"epoch", "train_loss", "val_loss", "val_macro_f1", "lr", "seconds"}
    assert h[-1]["train_loss"] < 0.7 * h[0]["train_loss"]
    assert result.best_metric > 0.6  # chance is 1/3
    assert result.best_epoch == 1 + int(np.argmax([r["val_macro_f1"] for r in h]))
    clip_ids, logits, labels = trainer.predict(val_dl)
    assert clip_ids.tolist() == list(range(13)) and logits.shape == (13, NUM_CLASSES)
    assert macro_f1(labels, logits.argmax(1)) == pytest.approx(result.best_metric)
    ckpt = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best", "last"]  # no temporary folders left
    state = json.loads((ckpt / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 5 and without_seconds(state["history"]) == without_seconds(h)
    assert json.loads((ckpt / "best" / "best.json").read_text())["epoch"] == result.best_epoch
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents*")), "no TensorBoard events written"


def test_same_seed_gives_identical_runs(tmp_path):
    cfg = config(max_epochs=3)
    model_a, model_b = TinyNet(dropout=0.3, seed=0), TinyNet(dropout=0.3, seed=0)
    ta, ra, val = run(tmp_path, "a", cfg, model_a)
    tb, rb, _ = run(tmp_path, "b", cfg, model_b)
    assert without_seconds(ra.history) == without_seconds(rb.history)
    assert np.array_equal(ta.predict(val)[1], tb.predict(val)[1])
    _, rc, _ = run(tmp_path, "c", config(max_epochs=3, seed=1), TinyNet(dropout=0.3, seed=0))
    assert without_seconds(rc.history) != without_seconds(ra.history)  # the seed matters


def test_resume_matches_uninterrupted_run(tmp_path):
    # everything that carries state across epochs: dropout, shuffling, warm-up + cosine schedule,
    # gradient accumulation, AdamW moments, early-stopping bookkeeping
    cfg = config(max_epochs=4, scheduler="cosine", warmup_ratio=0.2, grad_accum_steps=2, optimizer="adamw",
                 weight_decay=0.01, early_stopping_patience=10, loss="focal", focal_gamma=1.0)
    full, full_result, val = run(tmp_path, "full", cfg, TinyNet(dropout=0.3, seed=0))

    with pytest.raises(Interrupted):  # killed when epoch 3 starts: `last` holds epoch 2
        run(tmp_path, "cut", cfg, TinyNet(dropout=0.3, seed=0), crash_at_epoch=2)
    assert json.loads((tmp_path / "cut/checkpoints/last/trainer_state.json").read_text())["epoch"] == 2
    # epoch e's randomness comes from (seed, e): checkpoints hold no RNG states (and no pickles at all)
    assert not list((tmp_path / "cut/checkpoints/last").glob("*.pkl"))

    # a different initialisation: everything must come from the checkpoint
    resumed, result, _ = run(tmp_path, "cut", cfg, TinyNet(dropout=0.3, seed=99), resume=True)
    assert without_seconds(result.history) == without_seconds(full_result.history)
    assert (result.best_epoch, result.best_metric) == (full_result.best_epoch, full_result.best_metric)
    assert np.array_equal(resumed.predict(val)[1], full.predict(val)[1])


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    cfg = config(max_epochs=3, scheduler="plateau", plateau_patience=0)
    full, full_result, val = run(tmp_path, "full", cfg)

    import ser_hf.training as training

    real_swap, calls = training.replace_dir, []

    def crash_on_third_last(tmp, final):
        if final.name == "last":
            calls.append(1)
            if len(calls) == 3:  # epoch 3's `last` is fully written to the temporary folder, then we die
                raise Interrupted("killed while swapping in the epoch-3 checkpoint")
        real_swap(tmp, final)

    monkeypatch.setattr(training, "replace_dir", crash_on_third_last)
    with pytest.raises(Interrupted):
        run(tmp_path, "cut", cfg)
    monkeypatch.setattr(training, "replace_dir", real_swap)
    ckpt = tmp_path / "cut" / "checkpoints"
    assert json.loads((ckpt / "last" / "trainer_state.json").read_text())["epoch"] == 2

    # simulate a half-written temporary folder: resume must ignore it and redo epoch 3
    (ckpt / ".last.tmp" / "trainer_state.json").unlink()
    resumed, result, _ = run(tmp_path, "cut", cfg, resume=True)
    assert without_seconds(result.history) == without_seconds(full_result.history)
    assert np.array_equal(resumed.predict(val)[1], full.predict(val)[1])
    assert sorted(p.name for p in ckpt.iterdir()) == ["best", "last"]


def test_resume_of_finished_run_trains_nothing(tmp_path):
    cfg = config(max_epochs=2)
    _, first, _ = run(tmp_path, "r", cfg)
    again, second, _ = run(tmp_path, "r", cfg, TinyNet(seed=5), resume=True)
    assert without_seconds(second.history) == without_seconds(first.history)
    assert second.history[0]["seconds"] == first.history[0]["seconds"]  # not re-run


def test_early_stopping_stops(tmp_path):
    # lr 0: the validation score never improves after epoch 1
    cfg = config(max_epochs=20, learning_rate=0.0, early_stopping_patience=2)
    _, result, _ = run(tmp_path, "es", cfg)
    assert result.stopped_early and result.epochs_completed == 3 and len(result.history) == 3
    assert result.best_epoch == 1


class ScriptedTrainer(Trainer):
    """Validation macro-F1 follows a script; the weights at each evaluation are recorded."""

    script = [0.2, 0.6, 0.4, 0.3]

    def _evaluate_prepared(self, dl, loader=None):
        out = super()._evaluate_prepared(dl, loader)
        self.snapshots = getattr(self, "snapshots", [])
        self.snapshots.append({k: v.clone() for k, v in self.unwrapped_model.state_dict().items()})
        out["macro_f1"] = self.script[len(self.snapshots) - 1]
        return out


def test_best_epoch_weights_are_restored(tmp_path):
    cfg = config(max_epochs=4, learning_rate=0.05)
    trainer = ScriptedTrainer(TinyNet(seed=0), cfg, tmp_path)
    result = trainer.fit(*loaders(cfg))
    assert result.best_epoch == 2 and result.best_metric == 0.6
    final = trainer.unwrapped_model.state_dict()
    for k, v in final.items():
        assert torch.equal(v, trainer.snapshots[1][k]), k
    assert not torch.equal(final["head.weight"], trainer.snapshots[3]["head.weight"])


def share_one_storage(module: nn.Module) -> None:
    """Make all parameters views of one flat buffer, as cuDNN does to an nn.LSTM's weights on CUDA."""
    params = list(module.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()


def test_best_epoch_is_restored_into_parameters_that_share_storage(tmp_path):
    # Found on a GPU: restoring the best checkpoint of an LSTM baseline failed because cuDNN had
    # flattened the LSTM weights into one storage (safetensors.torch.load_model refuses that).
    cfg = config(max_epochs=4, learning_rate=0.05)
    model = TinyNet(seed=0)
    share_one_storage(model)
    trainer = ScriptedTrainer(model, cfg, tmp_path)
    result = trainer.fit(*loaders(cfg))
    assert result.best_epoch == 2
    for k, v in trainer.unwrapped_model.state_dict().items():
        assert torch.equal(v, trainer.snapshots[1][k]), k
    ptrs = {p.untyped_storage().data_ptr() for p in trainer.unwrapped_model.parameters()}
    assert len(ptrs) == 1, "restoring must copy into the live (shared) parameters, not replace them"


def test_no_validation_keeps_last_epoch(tmp_path):
    cfg = config(max_epochs=3, early_stopping_patience=1)
    trainer = Trainer(TinyNet(seed=0), cfg, tmp_path)
    train_dl, _ = loaders(cfg)
    empty = make_dataloader(WindowDataset(np.zeros((0, 8)), np.zeros(0), np.zeros(0)), cfg, train=False)
    result = trainer.fit(train_dl, empty)
    assert result.best_epoch == 3 and result.best_metric is None and not result.stopped_early
    assert all(h["val_macro_f1"] is None for h in result.history)
    assert not (tmp_path / "checkpoints" / "best").exists()


def test_l1_adds_to_the_loss(tmp_path):
    cfg = config(l1=1e-2)
    model = TinyNet(seed=0)
    trainer = Trainer(model, cfg, tmp_path / "l1")
    expected = 1e-2 * (model.encoder[0].weight.abs().sum() + model.head.weight.abs().sum())  # not biases
    assert torch.allclose(trainer.l1_penalty(), expected)
    trainer.fit(loaders(cfg)[0])
    plain = Trainer(TinyNet(seed=0), config(), tmp_path / "plain")
    plain.fit(loaders(config())[0])
    norm = lambda m: sum(p.abs().sum() for n, p in m.named_parameters() if p.ndim >= 2)  # noqa: E731
    assert norm(trainer.unwrapped_model) < 0.9 * norm(plain.unwrapped_model)


def test_gradient_accumulation_matches_bigger_batches(tmp_path):
    weights = []
    for batch_size, accum in ((16, 1), (8, 2)):
        cfg = config(batch_size=batch_size, grad_accum_steps=accum, max_epochs=2, optimizer="adam")
        trainer = Trainer(TinyNet(seed=0), cfg, tmp_path / f"b{batch_size}")
        train = make_split(48, seed=1, windows=(1, 1))  # 48 rows: whole accumulation groups only
        trainer.fit(make_dataloader(train, cfg, train=True))
        weights.append(trainer.unwrapped_model.state_dict())
    for k in weights[0]:
        assert torch.allclose(weights[0][k], weights[1][k], atol=1e-5), k


def test_group_learning_rates_and_frozen_warmup(tmp_path):
    cfg = config(max_epochs=1, group_learning_rates={"head": 0.05}, freeze_prefixes=["encoder"], freeze_steps=3,
                 batch_size=12)  # 3 optimizer steps per epoch (36 rows)
    model = TinyNet(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, cfg, tmp_path / "a")
    assert [(g["name"], g["lr"]) for g in trainer.optimizer.param_groups] == [("default", 0.01), ("head", 0.05)]
    trainer.fit(loaders(cfg, windows=(1, 1))[0])
    after = trainer.unwrapped_model.state_dict()
    assert torch.equal(after["encoder.0.weight"], before["encoder.0.weight"])  # frozen for all 3 steps
    assert not torch.equal(after["head.weight"], before["head.weight"])

    cfg2 = config(max_epochs=2, group_learning_rates={"head": 0.05}, freeze_prefixes=["encoder"], freeze_steps=3,
                  batch_size=12)
    trainer2 = Trainer(TinyNet(seed=0), cfg2, tmp_path / "b")
    trainer2.fit(loaders(cfg2, windows=(1, 1))[0])
    assert not torch.equal(trainer2.unwrapped_model.state_dict()["encoder.0.weight"], before["encoder.0.weight"])
    with pytest.raises(ValueError, match="prefix 'encoderr' matches no"):
        Trainer(TinyNet(), config(group_learning_rates={"encoderr": 0.1}), tmp_path / "c")


def test_linear_schedule_warms_up_and_decays_to_zero(tmp_path):
    cfg = config(max_epochs=3, scheduler="linear", warmup_steps=2, batch_size=12)
    trainer = Trainer(TinyNet(seed=0), cfg, tmp_path)
    lrs = []
    original = trainer.optimizer.step

    def step(*a, **kw):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return original(*a, **kw)

    trainer.optimizer.step = step
    result = trainer.fit(loaders(cfg, windows=(1, 1))[0])  # 3 steps per epoch, 9 in all
    assert lrs[:3] == [0.0, 0.005, 0.01]
    assert lrs[3] == pytest.approx(0.01 * 6 / 7)
    assert result.history[-1]["lr"] == 0.0


def test_plateau_reduces_lr(tmp_path):
    # encoder/head learn nothing (rate 0), so validation macro-F1 is flat; the default group's rate
    # (holding only a parameter without effect) shows the plateau halving it after each flat epoch
    cfg = config(max_epochs=3, scheduler="plateau", plateau_patience=0, plateau_factor=0.5,
                 plateau_monitor="val_macro_f1", group_learning_rates={"encoder": 0.0, "head": 0.0},
                 learning_rate=0.01)
    _, result, _ = run(tmp_path, "p", cfg, Passthrough3())
    assert len({h["val_macro_f1"] for h in result.history}) == 1
    assert [h["lr"] for h in result.history] == [0.01, 0.01, 0.005]  # lr used during each epoch


class Passthrough3(nn.Module):
    """TinyNet plus ``offset``, a parameter that never changes the logits."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.head = nn.Linear(8, NUM_CLASSES)
        self.offset = nn.Parameter(torch.zeros(()))

    def forward(self, input_values):
        return SequenceClassifierOutput(logits=self.head(self.encoder(input_values)) + 0 * self.offset)


def test_multi_process_launch_seen_as_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu"):
        Trainer(TinyNet(), config(), tmp_path)


def test_epoch_seeds_do_not_collide():
    assert epoch_seed(0, 1) != epoch_seed(1, 0)
    assert epoch_seed(3, 2) == epoch_seed(3, 2)


# ------------------------------------------------------------------------------------------ DDP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    worker = str(REPO / "tests" / "ddp_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, worker, "--out", str(tmp_path / "single"), "--result",
                             str(tmp_path / "single.json"), "--batch-size", "16"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    # On a machine without GPUs, `--multi_gpu` alone starts 2 processes that each run alone and
    # `--cpu` alone starts one; ACCELERATE_USE_CPU=1 + --multi_gpu gives DDP over gloo.
    launch = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port())]
    ddp = subprocess.run(launch + [worker, "--out", str(tmp_path / "ddp"), "--result", str(tmp_path / "ddp.json"),
                                   "--batch-size", "8"],  # same global batch as the single process
                         env={**env, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = json.loads((tmp_path / "single.json").read_text())
    two = json.loads((tmp_path / "ddp.json").read_text())
    assert one["world_size"] == 1
    assert two["world_size"] == 2
    assert [(r["rank"], r["num_processes"], r["dist_world"], r["backend"]) for r in two["ranks"]] == [
        (0, 2, 2, "gloo"), (1, 2, 2, "gloo")]
    # one prediction per validation clip, no duplicates from the distributed sampler's padding
    assert two["clip_ids"] == one["clip_ids"] == list(range(25))
    assert len(two["history"]) == len(one["history"]) == 8
    assert abs(two["best_metric"] - one["best_metric"]) <= 0.1
    assert two["best_metric"] > 0.7 and one["best_metric"] > 0.7
    agree = np.mean(np.array(two["predictions"]) == np.array(one["predictions"]))
    assert agree >= 0.8
    # rank 1 changed nothing under the output folder (checkpoints are written by rank 0 alone, without
    # pickles: no per-rank RNG-state files any more), at most re-creating the existing temporary folders
    rank1 = json.loads((tmp_path / "ddp.json.rank1.json").read_text())
    allowed = {("os.mkdir", "checkpoints/.last.tmp"), ("os.mkdir", "checkpoints/.best.tmp")}
    assert {tuple(e) for e in rank1} <= allowed, rank1
    events = list((tmp_path / "ddp" / "logs").rglob("events.out.tfevents*"))
    assert len({p.name.rsplit(".", 2)[1] for p in events}) == 1, events  # one writing process (pid in the name)
    shutil.rmtree(tmp_path / "single", ignore_errors=True)

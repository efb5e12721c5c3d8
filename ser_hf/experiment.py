"""One experiment from top to bottom; ``scripts/finetune.py`` only parses the recipe and calls :func:`run`.

corpus folder -> ``load_corpus`` (speaker split, decoded audio) -> features or processor inputs ->
model -> the Accelerate loop (or a scikit-learn fit) -> clip-level predictions -> reporter
(metrics.json, report, plots, predictions.csv) -> ``save_pretrained`` model -> model card -> Hub.

The model families:

- ``lstm``, ``cnn1d``, ``cnn2d``, ``cnn_lstm``, ``cnn7``: baselines on acoustic features (``features:``);
- ``classic``: a scikit-learn classifier on per-clip feature vectors (``features.kind`` stats or fft);
- ``transformer``: any ``AutoModelForAudioClassification`` checkpoint, fine-tuned (optionally with LoRA);
- ``embedding``: hidden states of a pretrained speech model, pooled, then a scikit-learn classifier;
- ``probe``: all pooled hidden states of a frozen encoder, a learned layer mix + small head (``ser_hf.probe``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .config import DataConfig, section
from .data.labels import labels_of

logger = logging.getLogger(__name__)

BASELINE_FAMILIES = ("lstm", "cnn1d", "cnn2d", "cnn_lstm", "cnn7")
FAMILIES = BASELINE_FAMILIES + ("classic", "transformer", "embedding", "probe")
GENERATED_CACHE_ENV = "SER_HF_CACHE"


# ------------------------------------------------------------------------------------------------ data


def process_state():
    """Accelerate's process state, created the way ``Accelerator`` creates it.

    The state is a singleton fixed by its first creation, so it must honour ``ACCELERATE_USE_CPU``
    (DDP over CPU processes) exactly as the Accelerator built later by the trainer would.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


@dataclass
class ExperimentData:
    """The splits one experiment sees. ``tests`` maps a corpus name to its test set (one entry except
    in multi-corpus runs; cross-corpus runs test on another corpus)."""

    train: Any
    validation: Any
    tests: dict[str, Any]
    label_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # corpus, split, fold, speakers, leaky, skipped


def generated_corpus_dir(corpus: str, synthetic: dict) -> Path:
    """Generate (once) a corpus with ``ser_hf.data.synthetic`` under ``$SER_HF_CACHE`` (default
    ``~/.cache/ser_hf``) and return its folder; the folder name holds every generation parameter.
    Call it inside ``main_process_first`` in distributed runs (``load_data`` does)."""
    from .data.synthetic import generate_corpus

    opts = {"speakers": 10, "per_class": 8, "seed": 0, **synthetic}
    root = Path(os.environ.get(GENERATED_CACHE_ENV) or Path.home() / ".cache" / "ser_hf") / "generated"
    name = corpus + "".join(f"-{k}{v}" for k, v in sorted(opts.items()))
    out = root / name
    done = out / ".complete"
    if not done.exists():
        generate_corpus(corpus, out, **opts)
        done.write_text("ok\n")
    return out


def _corpus_dir(corpus: str, data_dir: str | None, synthetic: dict | None) -> str | None:
    return str(generated_corpus_dir(corpus, synthetic)) if synthetic is not None else data_dir


def load_data(data: DataConfig, seed: int) -> ExperimentData:
    """Load and split the corpora named by the ``data:`` section (single, cross- or multi-corpus)."""
    from datasets import concatenate_datasets

    from .data import load_corpus

    cross = data.test_corpus is not None
    multi = bool(data.extra_train)
    label_set = "common" if (cross or multi) else data.label_set
    if (cross or multi) and data.label_set != "common":
        logger.info("cross/multi-corpus run: using the common label set %s", labels_of(data.corpus, "common"))

    def load(corpus, data_dir, synthetic=None, split=data.split, fold=data.fold, builder=None):
        root = _corpus_dir(corpus, data_dir, synthetic)
        if synthetic is not None:  # a generated manifest/folder corpus: its manifest file, its speaker regex
            from .data.synthetic import builder_options

            builder = {**builder_options(corpus, root), **(builder or {})}
        return load_corpus(corpus, root, split=split, fold=fold,
                           sampling_rate=data.sampling_rate, label_set=label_set, cache_dir=data.cache_dir,
                           num_proc=data.num_proc, seed=seed, **(builder or {}))

    with process_state().main_process_first():
        main = load(data.corpus, data.data_dir, data.synthetic, builder={**data.builder, **data.corpus_options()})
        trains, vals = [main["train"]], [main["validation"]]
        infos = {data.corpus: main.info.to_dict()}
        tests = {data.corpus: main["test"]}
        for extra in data.extra_train:
            extra = dict(extra)
            name = extra.pop("corpus")
            other = load(name, extra.pop("data_dir", None), extra.pop("synthetic", None), builder=extra)
            trains.append(other["train"])
            vals.append(other["validation"])
            tests[name] = other["test"]
            infos[name] = other.info.to_dict()
        if cross:
            # Every clip of the test corpus is unseen (other speakers, other recordings): test on all of it.
            other = load(data.test_corpus, data.test_data_dir, None, split="speaker", fold=None)
            tests = {data.test_corpus: concatenate_datasets([_common_columns(other[s]) for s in other
                                                             if len(other[s])])}
            infos[data.test_corpus] = other.info.to_dict()
    if len(trains) > 1:
        trains = [_common_columns(d) for d in trains]
        vals = [_common_columns(d) for d in vals if len(d)]
    train = concatenate_datasets(trains) if len(trains) > 1 else trains[0]
    validation = (concatenate_datasets(vals) if len(vals) > 1 else vals[0]) if vals else main["validation"].select([])
    info = {
        "corpus": data.corpus,
        "split": main.info.split,
        "fold": main.info.fold,
        "leaky": main.info.leaky,
        "leaky_reason": main.info.leaky_reason,
        "label_set": label_set,
        "speakers": main.info.speakers,
        "skipped": [s for i in infos.values() for s in i.get("skipped", [])],
    }
    if cross:
        info["train_corpus"], info["test_corpus"] = data.corpus, data.test_corpus
        # The whole test corpus is tested: its speakers from every split.
        info["speakers"] = {**main.info.speakers,
                            "test": sorted({s for v in infos[data.test_corpus]["speakers"].values() for s in v})}
    if multi:
        info["corpora"] = {k: {"speakers": v["speakers"]} for k, v in infos.items()}
    return ExperimentData(train, validation, tests, list(main.info.label_names), info)


# Columns every corpus has; concatenating corpora keeps these only.
COMMON_COLUMNS = ("audio", "file", "label", "speaker_id", "gender")


def _common_columns(ds):
    from datasets import ClassLabel

    ds = ds.remove_columns([c for c in ds.column_names if c not in COMMON_COLUMNS])
    return ds.cast_column("label", ClassLabel(names=labels_of("emodb", "common")))


# ------------------------------------------------------------------------------------------------ run


def run(cfg: DictConfig) -> Path:
    """Train and evaluate the recipe in ``cfg`` (see :func:`ser_hf.config.load_config`); returns the run folder."""
    from .runfolder import claim, parse_bool

    out = Path(cfg.output_dir)
    state = process_state()
    data_cfg = DataConfig.from_dict(section(cfg, "data"))
    model_cfg = section(cfg, "model")
    family = model_cfg.pop("family", None)
    if family not in FAMILIES:
        raise ValueError(f"model.family={family!r} is not one of {FAMILIES}")
    # The folder becomes this run's (lock, fingerprint, finished-run checks) before anything is written to it.
    lock = claim(out, cfg, resume=parse_bool(cfg.get("resume", False), "resume"),
                 overwrite=parse_bool(cfg.get("overwrite", False), "overwrite"), main_process=state.is_main_process)
    try:
        return _run_claimed(cfg, out, state, data_cfg, model_cfg, family)
    finally:
        if lock is not None:
            lock.release()


def experiment_files(data: ExperimentData) -> list[str]:
    """Every clip of an experiment (train, validation, tests) as ``corpus/file``: the data fingerprint's list."""
    from .runfolder import clip_files

    return clip_files([data.train, data.validation, *data.tests.values()], data.info.get("corpus"))


def _min_clip_s(cfg, family: str) -> float:
    """The shortest clip a family reads meaningfully: one analysis frame (``features.n_fft``) for feature
    families, 25 ms (a speech encoder's first frame) for transformers and embeddings."""
    if family in ("transformer", "embedding"):
        return 0.025
    from .features import FeatureConfig

    fcfg = FeatureConfig.from_dict({"sampling_rate": int(cfg.data.sampling_rate), **section(cfg, "features")})
    return fcfg.n_fft / fcfg.sampling_rate


def _run_claimed(cfg, out: Path, state, data_cfg: DataConfig, model_cfg: dict, family: str) -> Path:
    from accelerate.utils import set_seed

    from .runfolder import atomic_write, check_data, data_fingerprint, too_short_clips, write_fingerprint

    set_seed(int(cfg.seed))
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.yaml", OmegaConf.to_yaml(cfg))
        write_fingerprint(out, cfg)
    logger.info("recipe %s -> %s", cfg.recipe_name, out)

    data = load_data(data_cfg, int(cfg.seed))
    data.info["too_short"] = too_short_clips([data.train, data.validation, *data.tests.values()],
                                             _min_clip_s(cfg, family))
    data_fp = data_fingerprint(data.info, experiment_files(data))
    check_data(out, data_fp)
    state.wait_for_everyone()
    if state.is_main_process:
        write_fingerprint(out, cfg, data_fp)
    if len(data.train) == 0:
        raise ValueError(f"the training split of {data_cfg.corpus} is empty (speakers: {data.info['speakers']}); "
                         "check data.data_dir, data.split and data.fold")
    start = time.perf_counter()
    if family in BASELINE_FAMILIES:
        outcome = _run_baseline(cfg, family, model_cfg, data, out)
    elif family == "classic":
        outcome = _run_classic(cfg, model_cfg, data, out)
    elif family == "transformer":
        outcome = _run_transformer(cfg, model_cfg, data, out)
    elif family == "probe":
        from .probe import run_probe

        outcome = run_probe(cfg, model_cfg, data, out)
    else:
        outcome = _run_embedding(cfg, model_cfg, data, out)
    outcome.train_seconds = outcome.train_seconds or time.perf_counter() - start
    if state.is_main_process:
        _write_outputs(cfg, family, data, outcome, out)
    state.wait_for_everyone()
    return out


@dataclass
class Outcome:
    """What a model family hands back to the reporter."""

    predictions: dict[str, tuple[Any, np.ndarray]]  # split name -> (dataset, probabilities (n, C))
    save: Any  # callable(model_dir) writing the model with save_pretrained
    history: list[dict] | None = None
    best_epoch: int | None = None
    train_seconds: float | None = None
    num_parameters: int | None = None
    base_model: str | None = None


def _eval_sets(data: ExperimentData) -> dict[str, Any]:
    """Named evaluation sets: ``validation``, ``test`` (or ``test:<corpus>`` per corpus in multi-corpus runs)."""
    sets = {}
    if len(data.validation):
        sets["validation"] = data.validation
    if len(data.tests) == 1:
        (only,) = data.tests.values()
        if len(only):
            sets["test"] = only
    else:
        sets.update({f"test:{name}": ds for name, ds in data.tests.items() if len(ds)})
    return sets


from .clips import softmax as _softmax  # noqa: E402  the one clip-level softmax (ser_hf.clips)


# -------------------------------------------------------------------------------------- baselines


def _feature_sets(cfg, data: ExperimentData):
    """Features for every split (cached by datasets); the training split gets its augmented copies."""
    from .features import FeatureConfig, compute_features

    fcfg = FeatureConfig.from_dict({"sampling_rate": int(cfg.data.sampling_rate), **section(cfg, "features")})
    num_proc = cfg.data.get("num_proc")
    train = _augmented_train(data.train, section(cfg, "augment"), int(cfg.seed))
    feats = {"train": compute_features(train, fcfg, num_proc=num_proc)}
    for name, ds in _eval_sets(data).items():
        feats[name] = compute_features(ds, fcfg, num_proc=num_proc)
    return fcfg, feats


def _augmented_train(train, augment: dict, seed: int):
    """Offline waveform augmentation, as the seed projects did it: ``augment.copies`` augmented copies of
    every training clip join the training split (evaluation splits are never augmented)."""
    from .augment import augment_dataset

    return augment_dataset(train, augment, seed=seed)


def _torch_loader(ds, tcfg, train: bool, spec: dict | None = None):
    """Window rows -> batches ``{input_values, labels, clip_id}``; SpecAugment on training batches only.

    The masks draw from torch's global RNG, which the trainer reseeds from (seed, epoch) at every epoch,
    so a resumed run masks exactly as an uninterrupted one.
    """
    import torch

    from .augment import SPEC_KEYS, spec_augment
    from .training import make_dataloader

    files = dict(zip(ds["clip_id"], ds["file"])) if "file" in ds.column_names else None  # names clips in errors
    ds = ds.with_format("torch", columns=["features", "label", "clip_id"])
    spec = dict(spec or {})
    bad = sorted(set(spec) - set(SPEC_KEYS))
    if bad:
        raise ValueError(f"augment.spec_augment: unknown key(s) {bad}; valid keys: {list(SPEC_KEYS)}")


    from .collate import pad_features

    def collate(rows):
        x, mask = pad_features([r["features"] for r in rows], [int(r["clip_id"]) for r in rows], files)
        if train and spec:
            axes = {"time_axis": -1, "freq_axis": -2} if x.ndim == 4 else {"time_axis": 1, "freq_axis": 2}
            x = spec_augment(x, generator=None, **{"time_masks": 0, "time_width": 0, "freq_masks": 0,
                                                   "freq_width": 0, **spec}, **axes)
        batch = {"input_values": x, "labels": torch.stack([r["label"] for r in rows]).long(),
                 "clip_id": torch.stack([r["clip_id"] for r in rows]).long()}
        if mask is not None:
            batch["attention_mask"] = mask
        return batch

    return make_dataloader(ds, tcfg, train=train, collate_fn=collate)


def _run_baseline(cfg, family: str, model_cfg: dict, data: ExperimentData, out: Path) -> Outcome:
    from .features import make_windows
    from .losses import balanced_class_weights
    from .models import build_baseline, count_parameters
    from .training import Trainer, TrainerConfig

    fcfg, feats = _feature_sets(cfg, data)
    windows = {name: make_windows(ds, fcfg) for name, ds in feats.items()}
    tcfg = TrainerConfig.from_dict({"seed": int(cfg.seed), **section(cfg, "trainer")})
    input_shape = tuple(np.asarray(windows["train"].with_format("numpy")[0]["features"]).shape)
    model = build_baseline(family, input_shape, id2label=data.label_names, **model_cfg)
    spec = section(cfg, "augment").get("spec_augment")
    train_loader = _torch_loader(windows["train"], tcfg, train=True, spec=spec)
    eval_loaders = {name: _torch_loader(ds, tcfg, train=False) for name, ds in windows.items() if name != "train"}
    trainer = Trainer(model, tcfg, out, class_weights=balanced_class_weights(feats["train"]["label"], len(data.label_names)))
    from .runfolder import parse_bool

    result = trainer.fit(train_loader, eval_loaders.get("validation"),
                         resume=parse_bool(cfg.get("resume", False), "resume"))
    predictions = {}
    sets = _eval_sets(data)
    for name, loader in eval_loaders.items():
        clip_ids, logits, _ = trainer.predict(loader)
        predictions[name] = (sets[name].select(clip_ids.tolist()), _softmax(logits))
    best = trainer.unwrapped_model

    def save(model_dir: Path):
        best.save_pretrained(model_dir)
        fcfg.save_pretrained(model_dir)

    return Outcome(predictions, save, history=result.history, best_epoch=result.best_epoch,
                   train_seconds=result.train_seconds, num_parameters=count_parameters(best))


# -------------------------------------------------------------------------------------- classic


def _matrix(ds, column: str) -> np.ndarray:
    return np.asarray(ds.with_format("numpy")[column], dtype=np.float32).reshape(len(ds), -1)


def _fit_classic(model_cfg: dict, data: ExperimentData, sets: dict[str, Any], column: str):
    """Fit a scikit-learn classifier on the training split's vectors and score every evaluation set.

    ``model.train_on_validation`` (default true): a classic model selects nothing on the validation
    speakers, so by default they join the training data; validation scores are then not reported
    (they would be training scores). Set it false to keep them out and report them.
    """
    from datasets import concatenate_datasets

    from .models.classic import ClassicClassifier

    kwargs = dict(model_cfg)
    classifier = kwargs.pop("classifier", "svm")
    merge = bool(kwargs.pop("train_on_validation", True)) and "validation" in sets
    clf = ClassicClassifier(classifier, id2label=data.label_names, **kwargs)
    train = concatenate_datasets([sets["train"], sets["validation"]]) if merge else sets["train"]
    start = time.perf_counter()
    clf.fit(_matrix(train, column), np.asarray(train["label"]), groups=train["speaker_id"])
    seconds = time.perf_counter() - start
    if clf.best_params:
        logger.info("inner speaker-grouped CV chose %s", clf.best_params)
    names = _eval_sets(data)
    predictions = {name: (names[name], clf.predict_proba(_matrix(ds, column)))
                   for name, ds in sets.items() if name != "train" and not (merge and name == "validation")}
    if merge:
        data.info["speakers"] = {**data.info["speakers"],
                                 "train": sorted(data.info["speakers"]["train"] + data.info["speakers"]["validation"]),
                                 "validation": []}
    return clf, predictions, seconds


def _run_classic(cfg, model_cfg: dict, data: ExperimentData, out: Path) -> Outcome:
    fcfg, feats = _feature_sets(cfg, data)
    clf, predictions, seconds = _fit_classic(model_cfg, data, feats, "features")

    def save(model_dir: Path):
        clf.save_pretrained(model_dir)
        fcfg.save_pretrained(model_dir)

    return Outcome(predictions, save, train_seconds=seconds)


# ------------------------------------------------------------------------------------ transformers


def _run_transformer(cfg, model_cfg: dict, data: ExperimentData, out: Path) -> Outcome:
    from .models import transformer as tf

    return tf.run_finetune(cfg, model_cfg, data, out)


def _run_embedding(cfg, model_cfg: dict, data: ExperimentData, out: Path) -> Outcome:
    from .embeddings import EmbeddingSettings, embed_splits

    emb = dict(section(cfg, "embeddings"))
    name = emb.pop("name_or_path", None) or model_cfg.pop("name_or_path", None)
    if not name:
        raise ValueError("the embedding family needs embeddings.name_or_path (a Hub id or a local model folder)")
    sets = {"train": data.train, **_eval_sets(data)}
    embedded = embed_splits(sets, name, EmbeddingSettings.from_dict(emb))
    clf, predictions, seconds = _fit_classic(model_cfg, data, embedded, "embedding")

    def save(model_dir: Path):
        clf.save_pretrained(model_dir)
        (model_dir / "embedding_config.json").write_text(json.dumps({"name_or_path": name, **emb}, indent=2))

    from .models.ct2_whisper import source_hub_id

    return Outcome(predictions, save, train_seconds=seconds, base_model=source_hub_id(name))


# ---------------------------------------------------------------------------------------- outputs


def _write_outputs(cfg, family: str, data: ExperimentData, outcome: Outcome, out: Path) -> None:
    from .groups import group_metrics
    from .groups import summary as group_summary
    from .metrics import compute_metrics
    from .reporting import write_json, write_predictions, write_report

    names = data.label_names
    metrics: dict[str, Any] = {
        "recipe": cfg.recipe_name,
        "corpus": data.info["corpus"],
        "split": data.info["split"],
        "fold": data.info["fold"],
        "seed": int(cfg.seed),
        "leaky": bool(data.info["leaky"]),
        "leaky_reason": data.info.get("leaky_reason", ""),
        "label_set": data.info["label_set"],
        "speakers": data.info["speakers"],
        "skipped": data.info["skipped"],
        "too_short": data.info.get("too_short", []),
        "best_epoch": outcome.best_epoch,
        "train_seconds": round(float(outcome.train_seconds or 0.0), 3),
        "model_family": family,
        "features": section(cfg, "features") or None,
        "num_parameters": outcome.num_parameters,
        "label_names": names,
    }
    for key in ("train_corpus", "test_corpus", "corpora"):
        if key in data.info:
            metrics[key] = data.info[key]
    rows = []
    for split, (ds, probs) in outcome.predictions.items():
        labels = np.asarray(ds["label"])
        pred = probs.argmax(axis=1)
        metrics[split] = compute_metrics(labels, pred, names)
        genders = ds["gender"] if "gender" in ds.column_names else [""] * len(ds)  # per-speaker/gender (issue 15)
        metrics[split].update(group_metrics(labels, pred, ds["speaker_id"], genders, names))
        corpus = split.split(":", 1)[1] if ":" in split else data.info.get("test_corpus", data.info["corpus"]) \
            if split == "test" else data.info["corpus"]
        for i, (f, spk) in enumerate(zip(ds["file"], ds["speaker_id"])):
            rows.append({"split": split if ":" not in split else "test", "corpus": corpus, "file": f,
                         "speaker_id": spk, "label": names[labels[i]], "prediction": names[pred[i]],
                         **{f"prob_{n}": float(probs[i, j]) for j, n in enumerate(names)}, "gender": genders[i]})
    if any(k.startswith("test:") for k in metrics):
        metrics["test_per_corpus"] = {k.split(":", 1)[1]: metrics.pop(k) for k in list(metrics) if k.startswith("test:")}
        pooled = [r for r in rows if r["split"] == "test"]
        metrics["test"] = compute_metrics([r["label"] for r in pooled], [r["prediction"] for r in pooled], names)
        metrics["test"].update(group_metrics([r["label"] for r in pooled], [r["prediction"] for r in pooled],
                                             [f"{r['corpus']}:{r['speaker_id']}" for r in pooled],
                                             [r["gender"] for r in pooled], names))
    metrics = {"speakers_and_gender": group_summary(metrics), **metrics}  # worst speaker + gender gap first
    write_predictions(out / "predictions.csv", rows, label_names=names)
    if outcome.history:
        write_json(out / "history.json", outcome.history)
    hub = section(cfg, "hub")
    from .hub import model_card, push_to_hub
    from .runfolder import replace_dir, write_checksums

    # The model folder is built aside, with sha256 checksums of its weights, and swapped in whole.
    model_dir, tmp_dir = out / "model", out / ".model.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    outcome.save(tmp_dir)
    write_checksums(tmp_dir)
    card = model_card(metrics, base_model=outcome.base_model, repo_id=hub.get("repo_id"),
                      dataset_name=data.info["corpus"])
    card.save(tmp_dir / "README.md")
    replace_dir(tmp_dir, model_dir)
    write_report(out, metrics, outcome.history)
    if hub.get("push"):
        if not hub.get("repo_id"):
            raise ValueError("hub.push=true needs hub.repo_id=ORG/NAME")
        push_to_hub(model_dir, hub["repo_id"], card=card, private=bool(hub.get("private", False)))
    test = metrics.get("test") or {}
    logger.info("%s: test macro-F1 %s  (%s)", cfg.recipe_name, test.get("macro_f1"), out)
    print(json.dumps({"output_dir": str(out), "test_macro_f1": test.get("macro_f1"),
                      "validation_macro_f1": (metrics.get("validation") or {}).get("macro_f1")}))


def main(argv: list[str] | None = None) -> Path:
    """Command line: ``[accelerate launch] scripts/finetune.py recipe=NAME [key=value ...]`` or
    ``python -m ser_hf.experiment recipe=NAME ...`` (what parallel cross-validation starts per fold)."""
    import sys

    from .config import configure_logging, load_config

    configure_logging()
    return run(load_config(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    import sys

    from .config import run_cli

    run_cli(main, sys.argv[1:])

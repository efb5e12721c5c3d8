"""Model card (README.md with a ``model-index``) and upload of a trained model folder to the Hugging Face Hub.

The card states the evaluation protocol next to every number (corpus, split,
fold, speakers per split) and says LEAKY when the split was an utterance-level
random split, so a Hub result cannot be mistaken for a speaker-independent one.
It is built with huggingface_hub's ``ModelCardData``/``EvalResult``, whose
serialiser writes the ``model-index`` the Hub and leaderboards parse.

Nothing here touches the network except :func:`push_to_hub`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from ser_hf.reporting import eval_splits, is_leaky, leaky_warning, protocol_description, read_run, skipped_lines

logger = logging.getLogger(__name__)

TASK = "audio-classification"
CORPUS_NAMES = {
    "emodb": "EmoDB (Berlin Database of Emotional Speech)",
    "ravdess": "RAVDESS (speech)",
    "crema_d": "CREMA-D",
}
CORPUS_LANGUAGES = {"emodb": "de", "ravdess": "en", "crema_d": "en"}
CORPUS_LICENCES = {
    "emodb": "free for research use, as distributed by its authors",
    "ravdess": "CC BY-NC-SA 4.0 (non-commercial)",
    "crema_d": "ODbL",
}
# (key in compute_metrics, Hub metric type, metric config, display name)
CARD_METRICS = (
    ("macro_f1", "f1", "macro", "macro-F1"),
    ("uar", "recall", "macro", "UAR (unweighted average recall)"),
    ("accuracy", "accuracy", None, "accuracy"),
    ("weighted_f1", "f1", "weighted", "weighted-F1"),
)
DEFAULT_PREDICT_COMMAND = "python scripts/predict.py --model {model} clip.wav"
TASK_TEXT = {"regression": "Dimensional speech emotion recognition",
             "multitask": "Speech emotion recognition (classes and dimensions)"}


def _split_corpus(metrics: Mapping[str, Any], split: str) -> str | None:
    """Corpus a split was drawn from: cross-corpus runs validate on the training corpus and test on another."""
    if split == "test":
        return metrics.get("test_corpus") or metrics.get("corpus")
    return metrics.get("train_corpus") or metrics.get("corpus")


def _protocol_config(metrics: Mapping[str, Any]) -> str:
    """Short ``dataset.config`` value: ``speaker``, ``loso-fold3``, ``random-leaky`` ..."""
    split = str(metrics.get("split") or "unknown")
    if metrics.get("fold") is not None:
        split += f"-fold{metrics['fold']}"
    if is_leaky(metrics) and "random" not in split:
        split += "-leaky"
    elif split.startswith("random"):
        split = split.replace("random", "random-leaky", 1)
    return split


def _dataset_args(metrics: Mapping[str, Any]) -> dict[str, Any]:
    speakers = metrics.get("speakers") or {}
    args: dict[str, Any] = {
        "split_protocol": protocol_description(metrics),
        "speaker_independent": not is_leaky(metrics),
        "leaky": is_leaky(metrics),
    }
    if metrics.get("fold") is not None:
        args["fold"] = metrics["fold"]
    for split in ("train", "validation", "test"):
        if split in speakers:
            args[f"speakers_{split}"] = " ".join(map(str, speakers[split]))
    if metrics.get("label_names"):
        args["labels"] = " ".join(map(str, metrics["label_names"]))
    return args


def eval_results(metrics: Mapping[str, Any], dataset_name: str | None = None) -> list[EvalResult]:
    """One EvalResult per (split, metric) for the test split, then validation; values rounded to 4 decimals."""
    splits = eval_splits(metrics)
    results = []
    for split in ("test", "validation"):
        if split not in splits:
            continue
        corpus = _split_corpus(metrics, split) or "unknown"
        name = dataset_name or CORPUS_NAMES.get(corpus, corpus)
        dims = [(f"ccc_{t}", "ccc", t, f"CCC {t}") for t in metrics.get("targets") or []]
        dims += [("ccc_mean", "ccc", "mean", "mean CCC")] if dims else []
        for key, metric_type, config, display in (*CARD_METRICS, *dims):
            value = splits[split].get(key)
            if value is None:
                continue
            results.append(EvalResult(
                task_type=TASK, task_name=TASK_TEXT.get(metrics.get("task"), "Speech emotion recognition"),
                dataset_type=corpus, dataset_name=name, dataset_config=_protocol_config(metrics),
                dataset_split=split, dataset_args=_dataset_args(metrics),
                metric_type=metric_type, metric_value=round(float(value), 4), metric_config=config,
                metric_name=f"{display} ({split})",
            ))
    return results


def _results_table(metrics: Mapping[str, Any]) -> str:
    splits = eval_splits(metrics)
    tables = []
    if any("macro_f1" in m for m in splits.values()):
        rows = ["| split | corpus | clips | macro-F1 | UAR | accuracy | weighted-F1 |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for split, m in splits.items():
            rows.append(f"| {split} | {_split_corpus(metrics, split) or '-'} | {m.get('num_examples', '-')} | "
                        f"{m['macro_f1']:.4f} | {m['uar']:.4f} | {m['accuracy']:.4f} | {m['weighted_f1']:.4f} |")
        tables.append("\n".join(rows))
    targets = list(metrics.get("targets") or [])
    if targets and any("ccc_mean" in m for m in splits.values()):
        rows = ["| split | corpus | clips | " + " | ".join(f"CCC {t}" for t in targets) + " | mean CCC | "
                + " | ".join(f"Pearson {t}" for t in targets) + " | " + " | ".join(f"MAE {t}" for t in targets) + " |",
                "|---|---|---:|" + "---:|" * (3 * len(targets) + 1)]
        for split, m in splits.items():
            cells = [f"{m[f'ccc_{t}']:.4f}" for t in targets] + [f"{m['ccc_mean']:.4f}"]
            cells += [f"{m[f'pearson_{t}']:.4f}" for t in targets] + [f"{m[f'mae_{t}']:.4f}" for t in targets]
            rows.append(f"| {split} | {_split_corpus(metrics, split) or '-'} | {m.get('num_examples', '-')} | "
                        + " | ".join(cells) + " |")
        tables.append("\n".join(rows))
    return "\n\n".join(tables)


def _labels(metrics: Mapping[str, Any]) -> list[str]:
    if metrics.get("label_names"):
        return list(metrics["label_names"])
    for m in eval_splits(metrics).values():
        return list(m.get("labels") or [])
    return []


def _how_to_use(model: str, pipeline_compatible: bool, predict_command: str) -> str:
    pipeline_part = f"""With 🤗 Transformers (the pipeline takes a mono float array at the model's sampling rate,
16 kHz; decoding it yourself means neither ffmpeg nor torchaudio is needed):

```python
import soundfile as sf
import soxr
from transformers import pipeline

classifier = pipeline("audio-classification", model="{model}")
audio, sr = sf.read("clip.wav", dtype="float32", always_2d=True)
audio = soxr.resample(audio.mean(axis=1), sr, 16000)  # mono, 16 kHz
print(classifier({{"raw": audio, "sampling_rate": 16000}}, top_k=None))
```
"""
    baseline_part = """This model is a ser_hf baseline on hand-made features (its `feature_config.json` says which);
the Transformers audio-classification pipeline cannot compute those features, so use ser_hf.
"""
    return "\n".join([
        "## How to use",
        "",
        pipeline_part if pipeline_compatible else baseline_part,
        "With ser_hf (long clips are cut into windows and the predictions averaged per clip):",
        "",
        "```bash",
        predict_command.format(model=model),
        "```",
    ])


def model_card(metrics: Mapping[str, Any], base_model: str | None = None, repo_id: str | None = None,
               dataset_name: str | None = None, *, model_name: str | None = None, license: str | None = None,
               language: str | Sequence[str] | None = None, tags: Sequence[str] = (),
               pipeline_compatible: bool | None = None,
               predict_command: str = DEFAULT_PREDICT_COMMAND) -> ModelCard:
    """Build the README.md card of a trained run from its metrics.json dict.

    ``metrics``: the run-folder dict (corpus, split, fold, speakers, leaky, label_names, validation, test ...).
    ``dataset_name`` overrides the corpus's display name in the model-index. ``pipeline_compatible``
    (default: ``base_model is not None``) chooses whether the card shows the Transformers pipeline example.
    ``predict_command`` is formatted with ``model`` (the repo id, or the local model folder name).
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"model_card: metrics must be the run's metrics.json dict, got {type(metrics).__name__}")
    if not eval_splits(metrics):
        raise ValueError("model_card: metrics holds no 'test' or 'validation' results (compute_metrics dicts); "
                         "pass the metrics.json of a finished run")
    corpora = list(dict.fromkeys(c for c in (metrics.get("corpus"), metrics.get("train_corpus"),
                                             metrics.get("test_corpus")) if c))
    leaky = is_leaky(metrics)
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else
                                f"ser_hf-{metrics.get('recipe') or '-'.join(corpora) or 'model'}")
    if language is None:
        language = sorted({CORPUS_LANGUAGES[c] for c in corpora if c in CORPUS_LANGUAGES}) or None
    card_tags = ["speech-emotion-recognition", "ser_hf", "audio-classification", *corpora, *tags]
    card_tags.append("leaky-split" if leaky else "speaker-independent")
    data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        library_name="transformers",
        pipeline_tag=TASK,
        language=language,
        license=license,
        tags=list(dict.fromkeys(card_tags)),
        metrics=["f1", "recall", "accuracy"],
        eval_results=eval_results(metrics, dataset_name),
    )
    task = metrics.get("task") or "classification"
    targets = list(metrics.get("targets") or [])
    if pipeline_compatible is None:  # the audio-classification pipeline softmaxes: no use for rating outputs
        pipeline_compatible = base_model is not None and task == "classification"
    model_ref = repo_id or model_name
    labels = _labels(metrics)
    speakers = metrics.get("speakers") or {}
    what = f"fine-tuned from [{base_model}](https://huggingface.co/{base_model})" if base_model else (
        f"a ser_hf `{metrics.get('model_family', 'baseline')}` model trained from scratch")
    body = [f"# {model_name}", ""]
    if leaky:
        body += [f"> **⚠️ {leaky_warning(metrics)}.** The scores below overestimate performance on unseen speakers.", ""]
    body += [
        f"Speech emotion recognition model, {what}, on {', '.join(CORPUS_NAMES.get(c, c) for c in corpora)} "
        f"with ser_hf (recipe `{metrics.get('recipe', '-')}`).",
        "",
    ]
    if task != "classification":
        test = eval_splits(metrics).get("test") or {}
        ccc = ", ".join(f"{t} {test[f'ccc_{t}']:.3f}" for t in targets if test.get(f"ccc_{t}") is not None)
        body += [f"**Task: {task}** — the model outputs "
                 + ("class logits followed by " if task == "multitask" else "")
                 + f"{', '.join(targets)} ratings in the training corpus's own units (not standardised). "
                 + (f"Test CCC per dimension: {ccc} (mean {test['ccc_mean']:.3f})." if ccc else ""), ""]
    body += [
        "## Results",
        "",
        f"Protocol: **{protocol_description(metrics)}**. Clip-level scores (window predictions averaged per "
        "clip); model selection used the validation split only, never the test split.",
        "",
        _results_table(metrics),
        "",
        "## Evaluation protocol",
        "",
        f"- corpus: {', '.join(corpora) or 'not recorded'}",
        f"- split: {protocol_description(metrics)}",
        f"- seed: {metrics.get('seed', 'not recorded')}",
    ]
    for split in ("train", "validation", "test"):
        if split in speakers:
            ids = list(speakers[split])
            body.append(f"- {split} speakers ({len(ids)}): {', '.join(map(str, ids)) or '-'}")
    if metrics.get("best_epoch") is not None:
        score = "mean CCC" if task == "regression" else "macro-F1"
        body.append(f"- best epoch (validation {score}): {metrics['best_epoch']}")
    for line in skipped_lines(metrics, limit=20):  # skipped and too-short clips, with their reasons
        body.append(f"  - `{line.strip()}`" if line.startswith("  ") else f"- {line}")
    outputs = ([] if task == "regression" else [(name, "class logit") for name in labels]) + \
        [(t, "rating") for t in (targets if task != "classification" else [])]
    if task == "classification":
        body += ["", "## Labels", "", "| id | label |", "|---:|---|"]
        body += [f"| {i} | {name} |" for i, name in enumerate(labels)]
    else:
        body += ["", "## Outputs", "", "| id | output | kind |", "|---:|---|---|"]
        body += [f"| {i} | {name} | {kind} |" for i, (name, kind) in enumerate(outputs)]
    body += ["", _how_to_use(model_ref, pipeline_compatible, predict_command), "", "## Training data licences", ""]
    body += [f"- {CORPUS_NAMES.get(c, c)}: {CORPUS_LICENCES.get(c, 'see the corpus distribution')}" for c in corpora]
    body += ["", "Models trained on a corpus may be bound by its terms; set the card's `license` accordingly.", ""]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)
    # Built from a string rather than ModelCard.from_template: the template path needs jinja2, an extra dependency.
    return ModelCard(content)


def card_from_run(run_dir: str | Path, **kwargs) -> ModelCard:
    """:func:`model_card` from a run folder's metrics.json (see :func:`ser_hf.reporting.read_run`)."""
    return model_card(read_run(run_dir)["metrics"], **kwargs)


def push_to_hub(model_dir: str | Path, repo_id: str, card: ModelCard | None = None, private: bool = False,
                token: str | None = None, commit_message: str = "Upload ser_hf speech emotion recognition model",
                ignore_patterns: Sequence[str] | None = None, api: HfApi | None = None):
    """Write ``card`` as ``model_dir/README.md`` and upload the folder (model, feature extractor, card).

    Creates the repo if needed (``exist_ok=True``). Returns the ``CommitInfo`` of the upload.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"push_to_hub: model folder {model_dir} not found; pass the run's model/ folder "
                                "(written by save_pretrained)")
    if not (model_dir / "config.json").is_file():
        found = sorted(p.name for p in model_dir.iterdir())[:20]
        raise ValueError(f"push_to_hub: {model_dir} has no config.json (found: {found or 'nothing'}); "
                         "pass a folder written by save_pretrained")
    if not repo_id or repo_id.count("/") > 1:
        raise ValueError(f"push_to_hub: repo_id {repo_id!r} must look like 'user/name' or 'name'")
    if card is not None:
        card.save(model_dir / "README.md")
    elif not (model_dir / "README.md").is_file():
        raise ValueError(f"push_to_hub: no card given and {model_dir / 'README.md'} missing; build one with "
                         "ser_hf.hub.model_card(metrics, ...)")
    api = api or HfApi(token=token)
    repo = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
    target = getattr(repo, "repo_id", None) or repo_id
    logger.info("uploading %s to %s", model_dir, target)
    return api.upload_folder(repo_id=target, folder_path=model_dir, commit_message=commit_message,
                             token=token, repo_type="model",
                             ignore_patterns=list(ignore_patterns) if ignore_patterns else None)

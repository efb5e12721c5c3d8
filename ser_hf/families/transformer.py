"""The transformer family: any ``AutoModelForAudioClassification`` checkpoint fine-tuned with the shared
Trainer, fully or with LoRA (``peft.enabled``). Training batches are random crops grouped by length (plus
augmented copies of the training clips when ``augment:`` names waveform transforms); evaluation averages
chunk logits per clip. The saved model is a plain transformers folder (LoRA merged), which
``pipeline("audio-classification")`` and :mod:`ser_hf.inference` load directly.

Learning rates follow the one story of :mod:`ser_hf.spec`: ``trainer.learning_rate`` for the encoder,
``model.head_learning_rate`` for the head, ``trainer.group_learning_rates`` prefixes on top of both;
``model.freeze_base_steps`` keeps the encoder frozen for the first optimizer steps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import AutoConfig

from ..augment import augment_dataset
from ..losses import balanced_class_weights
from ..models.batching import make_audio_loader
from ..models.ct2_whisper import source_hub_id
from ..models.heads import encoder_prefix, fold_target_scale, param_groups
from ..models.loading import from_pretrained_checked, load_audio_classifier, resolve_model_source
from ..models.lora import apply_lora, merge_and_save, save_adapter
from ..models.whisper_crop import crop_whisper
from ..spec import SpecError, TransformerModelConfig, unknown_key_error
from ..training import Trainer
from .base import ExperimentData, Family, Fitted, Predictions, output_scores, target_scale

__all__ = ["TransformerFamily"]


class TransformerFamily(Family):
    name = "transformer"

    def __init__(self, spec):
        super().__init__(spec)
        model: TransformerModelConfig = spec.model
        if model.freeze_base_steps and spec.trainer.freeze_steps:
            raise SpecError("model.freeze_base_steps and trainer.freeze_steps both set: use model.freeze_base_steps "
                            "to warm up the head with the encoder frozen, or trainer.freeze_steps + "
                            "trainer.freeze_prefixes to choose the frozen parameters yourself, not both")
        if model.config_overrides:
            # checked against the checkpoint's config.json now, before the corpus is read
            name, local_only = resolve_model_source(model.name_or_path, model.local_files_only)
            config = from_pretrained_checked(AutoConfig, name, local_only, "config")
            valid = [f.name for f in dataclasses.fields(TransformerModelConfig) if f.name != "config_overrides"]
            valid += [k for k in config.to_dict() if not k.startswith("_")]
            for key in model.config_overrides:
                if not hasattr(config, key):
                    raise unknown_key_error("model", key, valid, what=f"transformer option or {type(config).__name__} key")
        self.trainer: Trainer | None = None
        self.feature_extractor = None

    def _loader(self, ds, train: bool):
        spec, tcfg = self.spec, self.trainer.cfg
        return make_audio_loader(
            ds, self.feature_extractor, train=train, batch_size=tcfg.batch_size if train else tcfg.eval_batch,
            max_duration_s=spec.model.max_duration_s, seed=spec.seed, eval_chunk_s=spec.model.eval_chunk_s,
            eval_overlap_s=spec.model.eval_overlap_s, num_workers=tcfg.num_workers, targets=self.task.targets,
            target_scale=self.scale)

    def fit(self, data: ExperimentData, out: Path) -> Fitted:
        spec, settings, peft = self.spec, self.spec.model, self.spec.peft
        task = self.task = data.task
        model, self.feature_extractor = load_audio_classifier(
            settings.name_or_path, list(task.output_names) if task.has_values else data.label_names,
            freeze_feature_encoder=settings.freeze_feature_encoder,
            gradient_checkpointing=settings.gradient_checkpointing, local_files_only=settings.local_files_only,
            task=task, **settings.config_overrides,
        )
        # dimensional runs train on standardised targets; the scale is folded into the head after training
        self.scale = target_scale(data.train, task.targets) if task.has_values else None
        if settings.whisper_crop:  # no-op for non-Whisper models
            model, self.feature_extractor = crop_whisper(model, self.feature_extractor, settings.max_duration_s)
        if peft.enabled:
            model = apply_lora(model, peft.r, peft.alpha, peft.dropout, peft.target_modules)
        tcfg = spec.trainer
        if settings.freeze_base_steps:
            tcfg = dataclasses.replace(tcfg, freeze_steps=int(settings.freeze_base_steps),
                                       freeze_prefixes=[encoder_prefix(model)])
        groups = param_groups(model, head_lr=settings.head_learning_rate or tcfg.learning_rate,
                              encoder_lr=tcfg.learning_rate, weight_decay=tcfg.weight_decay)
        weights = balanced_class_weights(data.train["label"], len(data.label_names)) if task.has_classes else None
        self.trainer = Trainer(model, tcfg, out, class_weights=weights, param_groups=groups, task=task)
        train = augment_dataset(data.train, spec.augment.waveform, seed=spec.seed)
        validation = self.reported_sets(data).get("validation")
        result = self.trainer.fit(self._loader(train, True),
                                  self._loader(validation, False) if validation is not None else None,
                                  resume=spec.resume)
        if self.scale is not None:  # the saved model outputs ratings, not standardised values
            fold_target_scale(self.trainer.unwrapped_model, len(task.labels) if task.has_classes else 0,
                              self.scale.mean, self.scale.std)
        return Fitted(result.train_seconds, history=result.history, best_epoch=result.best_epoch)

    def predict(self, sets: dict) -> Predictions:
        out = {}
        for name, ds in sets.items():
            clip_ids, logits, _ = self.trainer.predict(self._loader(ds, False))
            out[name] = (ds.select(clip_ids.tolist()), output_scores(self.task, logits))
        return out

    def save(self, model_dir: Path) -> None:
        best, fe = self.trainer.unwrapped_model, self.feature_extractor
        if self.spec.peft.enabled:
            save_adapter(best, Path(model_dir) / "adapter", fe)
            merge_and_save(best, model_dir, fe)
        else:
            best.save_pretrained(model_dir)
            fe.save_pretrained(model_dir)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.trainer.unwrapped_model.parameters())

    @property
    def base_model(self) -> str:
        return source_hub_id(self.spec.model.name_or_path)

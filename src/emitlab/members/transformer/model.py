"""The network of a transformer member: an encoder with a multilabel emotion head.

The network is an encoder (any ``AutoModel``) plus a small head: CLS pooling through the
encoder's own pooler (what ``AutoModelForSequenceClassification`` uses for BERT) or attention-
masked mean pooling (how e5 was trained), dropout and a linear layer whose bias starts at each
label's prior log-odds. Training it (the HF ``Trainer`` with a pluggable loss, layer-wise decay,
R-Drop, the weight average) is in :mod:`emitlab.members.transformer.training`, so that
prediction never imports the ``Trainer``.

The fine-tuning options (issue 8) are each off by default, so an ablation can switch one on at a
time: layer-wise decay (``EmotionTrainer.create_optimizer``), multi-sample dropout (the head here),
R-Drop (``EmotionTrainer.compute_loss``), the weight average (a callback) and the asymmetric loss
(``losses.py``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from emitlab.errors import SettingsError
from emitlab.settings import TrainConfig

log = logging.getLogger("emitlab")

HEAD_FILE = "classifier.safetensors"
#: Training-set column of per-cell loss weights (row weight x label mask), when there are extra corpora.
LABEL_WEIGHTS = "label_weights"


# --------------------------------------------------------------------------------------
# Model


def resolve_model_source(name: str) -> Path | str:
    """``me5-small`` -> the converted folder in the cache; anything else unchanged."""
    from emitlab.members.transformer.me5 import ME5_SMALL, ensure_me5_small

    if name == ME5_SMALL:
        return ensure_me5_small()
    return name


def default_prefix(source: Path | str) -> str:
    meta = Path(source) / "emitlab_source.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("input_prefix", "")
    return "query: " if "e5" in str(source).lower() else ""


class EmotionModel(nn.Module):
    """Encoder + pooling + dropout + linear classifier over ``num_labels`` independent labels.

    With ``multi_sample_dropout`` N > 1 the head, in training, averages the logits of N
    independent dropout masks over the pooled vector (Inoue, 2019); in evaluation dropout is
    off, so it is one pass as with N = 1.
    """

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "mean", dropout: float = 0.1,
                 multi_sample_dropout: int = 1):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if pooling == "cls" and getattr(encoder, "pooler", None) is None:
            raise ValueError("pooling='cls' needs an encoder with a pooler (e.g. BERT); use pooling='mean'")
        if int(multi_sample_dropout) < 1:
            raise ValueError(f"multi_sample_dropout must be >= 1, got {multi_sample_dropout}")
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.multi_sample_dropout = int(multi_sample_dropout)
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
        if self.training and self.multi_sample_dropout > 1:
            logits = torch.stack([self.classifier(self.dropout(pooled))
                                  for _ in range(self.multi_sample_dropout)]).mean(0)
        else:
            logits = self.classifier(self.dropout(pooled))
        return {"logits": logits}

    # The encoder goes to a plain HF folder (AutoModel can load it); the head beside it.
    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        self.encoder.save_pretrained(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()},
                  str(folder / HEAD_FILE))

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


def encoder_layers(source: Path | str) -> int | None:
    """How many transformer layers the encoder at ``source`` has (its config's ``num_hidden_layers``;
    None where the config does not say)."""
    return getattr(AutoConfig.from_pretrained(source), "num_hidden_layers", None)


def _fewer_layers(source: Path | str, cfg: TrainConfig):
    """The encoder's config cut to its first ``cfg.num_layers`` layers (``from_pretrained`` then loads those
    layers' weights and leaves the upper ones out)."""
    config = AutoConfig.from_pretrained(source)
    have = getattr(config, "num_hidden_layers", None)
    if have is None:
        raise SettingsError(f"--num-layers: {cfg.model!r} does not say how many layers it has (num_hidden_layers)")
    if cfg.num_layers > have:
        raise SettingsError(f"--num-layers {cfg.num_layers}: {cfg.model!r} has only {have} layers")
    config.num_hidden_layers = cfg.num_layers
    return config


def build_model(source: Path | str, num_labels: int, cfg: TrainConfig, train_labels: np.ndarray | None,
                mask: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> EmotionModel:
    kwargs: dict[str, Any] = {}
    if _is_bert_like(source):
        kwargs["add_pooling_layer"] = cfg.pooling == "cls"
    try:
        config = {"config": _fewer_layers(source, cfg)} if cfg.num_layers > 0 else {}
        try:
            encoder = AutoModel.from_pretrained(source, **config, **kwargs)
        except TypeError:  # architectures without a pooler argument
            encoder = AutoModel.from_pretrained(source, **config)
    except OSError as exc:  # no weights in the folder, not on the Hub, no network
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingsError(f"--model (train.model) {cfg.model!r}: cannot load the encoder ({first})") from exc
    if cfg.pooling == "cls" and getattr(encoder, "pooler", None) is None:
        raise SettingsError(f"--pooling cls needs an encoder with a pooler (e.g. BERT) and {cfg.model!r} has none; "
                            "use --pooling mean")
    model = EmotionModel(encoder, num_labels, cfg.pooling, cfg.dropout, cfg.multi_sample_dropout)
    if cfg.pooling == "cls":
        # BertModel.from_pretrained leaves a pooler missing from the checkpoint randomly initialised
        log.info("CLS pooler: weights from the checkpoint where present, otherwise random")
    if cfg.bias_init and train_labels is not None:
        from emitlab.members.transformer.losses import prior_log_odds

        model.init_bias(prior_log_odds(train_labels, mask, sample_weight))
    if cfg.freeze_word_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    return model


def load_tokenizer(source: Path | str):
    return AutoTokenizer.from_pretrained(source)

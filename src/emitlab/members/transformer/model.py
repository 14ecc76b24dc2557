"""Fine-tuning a transformer encoder for multilabel emotions with the HF ``Trainer``.

The network is an encoder (any ``AutoModel``) plus a small head: CLS pooling through the
encoder's own pooler (what ``AutoModelForSequenceClassification`` uses for BERT) or attention-
masked mean pooling (how e5 was trained), dropout and a linear layer whose bias starts at each
label's prior log-odds. :class:`EmotionTrainer` is a ``Trainer`` with a pluggable loss module,
a learning rate of its own for the head, optional layer-wise learning-rate decay and R-Drop;
:class:`WeightAverage` keeps an exponential moving average of the weights during training.

The fine-tuning options (issue 8) are each off by default, so an ablation can switch one on at a
time: layer-wise decay (``create_optimizer``), multi-sample dropout (the head), R-Drop
(``compute_loss``), the weight average (a callback) and the asymmetric loss (``losses.py``).
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, Trainer, TrainerCallback

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


# --------------------------------------------------------------------------------------
# Trainer


#: A transformer layer's parameters: ``encoder.layer.<i>.`` (BERT, XLM-R, ELECTRA, ...),
#: ``transformer.layer.<i>.`` (DistilBERT) or ``layers.<i>.`` (ModernBERT and others).
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers)\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings\.")


def layer_lr_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """Learning-rate multiplier of each trainable parameter (by name) under layer-wise decay:
    encoder layer ``l`` (0-based, of ``n``) ``decay ** (n - l)``, the embeddings
    ``decay ** (n + 1)``; a parameter it cannot place (and the head) gets 1."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    head = {id(p) for p in model.head_parameters()} if hasattr(model, "head_parameters") else set()
    found = [int(m.group(1)) for name, _ in named if (m := _LAYER.search(name))]
    n_layers = max([getattr(getattr(model, "config", None), "num_hidden_layers", 0) or 0] + [i + 1 for i in found])
    scales, unplaced = {}, []
    for name, p in named:
        if id(p) in head:
            continue
        if (m := _LAYER.search(name)) is not None:
            scales[name] = decay ** (n_layers - int(m.group(1)))
        elif _EMBEDDINGS.search(name):
            scales[name] = decay ** (n_layers + 1)
        else:
            unplaced.append(name)
    if unplaced:
        log.info("layer-wise lr decay: %d parameter(s) in no layer keep the base learning rate: %s", len(unplaced),
                 ", ".join(unplaced[:5]) + (", ..." if len(unplaced) > 5 else ""))
    return scales


class WeightAverage(TrainerCallback):
    """Exponential moving average of the trainable weights, as a ``TrainerCallback``.

    After every optimizer step ``s_t = decay * s_(t-1) + (1 - decay) * w_t`` (``s_0 = 0``, float32
    copies on the model's device) and the average is ``s_t / (1 - decay ** t)``: bias-corrected as
    Adam's moments are, so it weighs the weights after steps 1..t by ``decay ** (t - i)`` and the
    starting weights (pretrained encoder, untrained head) get no share, however short the run.

    :class:`EmotionTrainer` evaluates with the average swapped in (:meth:`applied`), so the best
    evaluation is the best *average*. Checkpoints keep the raw weights (for resuming) plus the
    average's state in ``weight_average.safetensors``; at the end of training the average is
    copied into the model: from the best checkpoint when the Trainer loads it
    (``load_best_model_at_end``), else the last step's.
    """

    FILE = "weight_average.safetensors"

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"weight-average decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {}
        self.source = "none"

    @staticmethod
    def _params(model: nn.Module) -> dict[str, nn.Parameter]:
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    def _place(self, params: dict[str, nn.Parameter], create: bool = False) -> None:
        """Keep each copy on its weight's device (a loaded state comes in on the CPU); ``create``
        starts the missing ones at zero (the first update)."""
        for name, p in params.items():
            s = self.shadow.get(name)
            if s is None:
                if create:
                    self.shadow[name] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            elif s.device != p.device:
                self.shadow[name] = s.to(p.device)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = self._params(model)
        if self.updates and set(params) != set(self.shadow):
            raise RuntimeError("weight average: the trained weights are not those it has averaged so far "
                               f"({len(set(params) ^ set(self.shadow))} differ)")
        self._place(params, create=True)
        for name, p in params.items():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)
        self.updates += 1

    def average(self) -> dict[str, torch.Tensor]:
        """The bias-corrected average (float32) of every trainable weight."""
        if not self.updates:
            raise RuntimeError("weight average read before any optimizer step")
        correction = 1.0 - self.decay ** self.updates
        return {name: s / correction for name, s in self.shadow.items()}

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        params = self._params(model)
        self._place(params)
        for name, avg in self.average().items():
            params[name].copy_(avg)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The average in the model for the duration of the block; the raw weights afterwards."""
        if not self.updates:
            yield
            return
        params = self._params(model)
        backup = {name: p.detach().clone() for name, p in params.items()}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(backup[name])

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.shadow.items()}, str(Path(folder) / self.FILE),
                  metadata={"decay": repr(self.decay), "updates": str(self.updates)})

    def load(self, folder: str | Path) -> bool:
        """Restore the state saved in ``folder`` (a checkpoint); False when it holds none."""
        from safetensors import safe_open

        path = Path(folder) / self.FILE
        if not path.is_file():
            return False
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            self.shadow = {k: f.get_tensor(k) for k in f.keys()}
        self.updates = int(meta.get("updates", 0))
        if float(meta.get("decay", self.decay)) != self.decay:
            log.warning("%s: saved with decay %s, continuing with %s", path, meta.get("decay"), self.decay)
        return True

    def summary(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "source": self.source}

    # ---- TrainerCallback events

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.update(model)

    def on_save(self, args, state, control, **kwargs):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if args.should_save and folder.is_dir() and self.updates:
            self.save(folder)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        best = state.best_model_checkpoint if args.load_best_model_at_end else None
        if best:
            # the Trainer has just loaded the best checkpoint's raw weights; its average is what was evaluated
            if not self.load(best):
                log.warning("%s has no weight average (%s): keeping its raw weights", best, self.FILE)
                self.source = f"none ({Path(best).name} has no average)"
                return
            self.source = Path(best).name
        else:
            self.source = "last step"
        if not self.updates:
            self.source = "none (no optimizer step)"
            return
        self.copy_to(model)
        log.info("weight average (decay %s, %d steps) copied into the model from %s", self.decay, self.updates,
                 self.source)


class EmotionTrainer(Trainer):
    """A ``Trainer`` whose loss is a pluggable ``nn.Module(logits, labels)``, whose head can learn
    at its own rate, with optional layer-wise learning-rate decay (``layer_decay`` < 1), R-Drop
    (``rdrop_alpha`` > 0) and a weight average (``weight_average``, evaluated in place of the
    raw weights)."""

    def __init__(self, *args, loss_fn: nn.Module, head_learning_rate: float | None = None, layer_decay: float = 1.0,
                 rdrop_alpha: float = 0.0, weight_average: WeightAverage | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.head_learning_rate = head_learning_rate
        self.layer_decay = float(layer_decay)
        self.rdrop_alpha = float(rdrop_alpha)
        self.weight_average = weight_average
        if weight_average is not None:
            self.add_callback(weight_average)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The task loss; in training with R-Drop (Liang et al., 2021) the batch goes through the
        network twice (one forward over the batch stacked on itself, so each copy gets its own
        dropout masks) and the loss is ``(task_a + task_b) / 2 + alpha * KL_sym`` with
        ``KL_sym = (KL(a || b) + KL(b || a)) / 2`` per label (:func:`bernoulli_symmetric_kl`): the
        paper's sum of the two task losses halved, so this alpha is the paper's alpha / 2."""
        labels = inputs.pop("labels")
        weights = inputs.pop(LABEL_WEIGHTS, None)  # 0 where a label is masked, the row's weight elsewhere
        if self.rdrop_alpha > 0 and model.training:
            from emitlab.members.transformer.losses import bernoulli_symmetric_kl

            doubled = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            logits_a, logits_b = model(**doubled)["logits"].chunk(2)
            loss = 0.5 * (self.task_loss(logits_a, labels, weights) + self.task_loss(logits_b, labels, weights)) \
                + self.rdrop_alpha * bernoulli_symmetric_kl(logits_a, logits_b)
            outputs = {"logits": logits_a}
        else:
            outputs = model(**inputs)
            loss = self.task_loss(outputs["logits"], labels, weights)
        return (loss, outputs) if return_outputs else loss

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """``loss_fn(logits, labels)``, with the cell weights as a third argument when there are some
        (so a loss module that takes two arguments still works without extra corpora)."""
        return self.loss_fn(logits, labels) if weights is None else self.loss_fn(logits, labels, weights)

    def evaluate(self, *args, **kwargs):
        if self.weight_average is None:
            return super().evaluate(*args, **kwargs)
        with self.weight_average.applied(self.model):
            return super().evaluate(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is not None or (self.head_learning_rate is None and self.layer_decay == 1.0):
            return super().create_optimizer(model)
        model = self.model if model is None else model
        base = self.args.learning_rate
        head_lr = base if self.head_learning_rate is None else self.head_learning_rate
        head = {id(p) for p in model.head_parameters()}
        scales = layer_lr_scales(model, self.layer_decay) if self.layer_decay != 1.0 else {}
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[float, float], list] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                lr = head_lr if id(p) in head else base * scales.get(name, 1.0)
                groups.setdefault((lr, self.args.weight_decay if name in decay else 0.0), []).append(p)
        param_groups = [{"params": params, "weight_decay": wd, "lr": lr} for (lr, wd), params in groups.items()]
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=base, **optimizer_kwargs)
        return self.optimizer


def load_tokenizer(source: Path | str):
    return AutoTokenizer.from_pretrained(source)

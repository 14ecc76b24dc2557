"""Training the network of :mod:`emitlab.members.transformer.model` with the HF ``Trainer``.

:class:`EmotionTrainer` is a ``Trainer`` with a pluggable loss module, a learning rate of its own
for the head, optional layer-wise learning-rate decay (:func:`layer_lr_scales`) and R-Drop;
:class:`WeightAverage` keeps an exponential moving average of the weights during training. Kept
apart from the network so that loading an export for prediction never imports the ``Trainer``
(its import alone takes longer than torch's).
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from emitlab.members.transformer.model import LABEL_WEIGHTS

log = logging.getLogger("emitlab")


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

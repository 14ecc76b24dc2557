"""Multilabel losses and the label statistics they are built from.

Every loss takes logits ``(batch, labels)`` and 0/1 targets of any dtype and device, and is
computed in float32 whatever the logits' dtype: targets are cast and the weights moved to the
logits' device inside ``forward``, so mixed precision and GPUs need no care from the caller.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

POS_WEIGHT_STRATEGIES = ("none", "neg_pos", "sqrt")


def label_prevalence(labels: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Share of texts carrying each label, clipped away from 0 and 1."""
    return np.clip(np.asarray(labels, dtype=np.float64).mean(0), eps, 1 - eps)


def prior_log_odds(labels: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` per label: the classifier bias that predicts each label's prevalence."""
    p = label_prevalence(labels)
    return np.log(p / (1 - p))


def pos_weights(labels: np.ndarray, strategy: str) -> np.ndarray | None:
    """BCE ``pos_weight`` per label: ``none``, ``neg_pos`` (negatives / positives) or ``sqrt`` of it."""
    if strategy not in POS_WEIGHT_STRATEGIES:
        raise ValueError(f"pos_weight must be one of {POS_WEIGHT_STRATEGIES}, got {strategy!r}")
    if strategy == "none":
        return None
    y = np.asarray(labels, dtype=np.float64)
    pos = np.maximum(y.sum(0), 1.0)
    ratio = (len(y) - y.sum(0)) / pos
    return np.sqrt(ratio) if strategy == "sqrt" else ratio


class WeightedBCELoss(nn.Module):
    """Mean binary cross-entropy with logits; positives of label j weigh ``pos_weight[j]``."""

    def __init__(self, pos_weight: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        pw = None if pos_weight is None else torch.as_tensor(np.asarray(pos_weight), dtype=torch.float32)
        self.register_buffer("pos_weight", pw, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        targets = targets.to(device=logits.device, dtype=logits.dtype)
        pw = None if self.pos_weight is None else self.pos_weight.to(logits.device, logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017) for independent labels:
    ``-alpha_t (1 - p_t)^gamma log(p_t)``, averaged over texts and labels.

    ``alpha`` (optional) weighs positives by ``alpha`` and negatives by ``1 - alpha``;
    ``pos_weight`` (optional) multiplies the positive term, as in :class:`WeightedBCELoss`.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None,
                 pos_weight: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0 < alpha < 1:
            raise ValueError(f"focal alpha must be in (0, 1), got {alpha}")
        self.gamma = float(gamma)
        self.alpha = alpha
        pw = None if pos_weight is None else torch.as_tensor(np.asarray(pos_weight), dtype=torch.float32)
        self.register_buffer("pos_weight", pw, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        t = targets.to(device=logits.device, dtype=logits.dtype)
        log_p = F.logsigmoid(logits)        # log p      (stable)
        log_not_p = F.logsigmoid(-logits)   # log (1 - p)
        p = log_p.exp()
        pos_term = -t * (1 - p).pow(self.gamma) * log_p
        neg_term = -(1 - t) * p.pow(self.gamma) * log_not_p
        if self.pos_weight is not None:
            pos_term = pos_term * self.pos_weight.to(logits.device, logits.dtype)
        if self.alpha is not None:
            pos_term = self.alpha * pos_term
            neg_term = (1 - self.alpha) * neg_term
        return (pos_term + neg_term).mean()


def _pow(base: torch.Tensor, gamma: float) -> torch.Tensor:
    """``base ** gamma`` for ``base`` in [0, 1] with a finite gradient where ``base`` is 0 (a plain
    ``pow`` with ``0 < gamma < 1`` gives an infinite one there, and ``0 * inf`` is NaN)."""
    if gamma == 0:
        return torch.ones_like(base)
    return torch.where(base > 0, base.clamp(min=torch.finfo(base.dtype).tiny).pow(gamma), torch.zeros_like(base))


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al., 2021, "Asymmetric Loss For Multi-Label Classification")
    for independent labels, averaged over texts and labels::

        positive:  -(1 - p)^gamma_pos log(p)
        negative:  -p_m^gamma_neg log(1 - p_m),   p_m = max(p - clip, 0)

    Easy negatives are down-weighted twice: by the focusing term and, below ``clip``, discarded
    altogether (the probability margin). ``gamma_neg = gamma_pos = clip = 0`` is binary
    cross-entropy. ``pos_weight`` (optional) multiplies the positive term, as in
    :class:`WeightedBCELoss`; ``--pos-weight none`` gives the paper's loss.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 pos_weight: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        if gamma_neg < 0 or gamma_pos < 0:
            raise ValueError(f"ASL gammas must be >= 0, got gamma_neg={gamma_neg}, gamma_pos={gamma_pos}")
        if not 0 <= clip < 1:
            raise ValueError(f"ASL clip must be in [0, 1), got {clip}")
        self.gamma_neg, self.gamma_pos, self.clip = float(gamma_neg), float(gamma_pos), float(clip)
        pw = None if pos_weight is None else torch.as_tensor(np.asarray(pos_weight), dtype=torch.float32)
        self.register_buffer("pos_weight", pw, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        t = targets.to(device=logits.device, dtype=logits.dtype)
        p = torch.sigmoid(logits)
        pos_term = -t * _pow(1 - p, self.gamma_pos) * F.logsigmoid(logits)
        if self.clip > 0:
            not_p_m = (1 - p + self.clip).clamp(max=1.0)  # 1 - p_m >= clip: its log is finite
            log_not_p_m = torch.log(not_p_m)
        else:
            not_p_m, log_not_p_m = 1 - p, F.logsigmoid(-logits)
        neg_term = -(1 - t) * _pow(1 - not_p_m, self.gamma_neg) * log_not_p_m
        if self.pos_weight is not None:
            pos_term = pos_term * self.pos_weight.to(logits.device, logits.dtype)
        return (pos_term + neg_term).mean()


def bernoulli_symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """``(KL(P_a || P_b) + KL(P_b || P_a)) / 2`` between the per-label Bernoulli distributions
    of two sets of logits, averaged over texts and labels (R-Drop's consistency term).

    For Bernoulli distributions the two KLs add up to ``(p_a - p_b) (z_a - z_b)``: no logarithm
    of a probability, so it is stable for any logits, and never negative (the sigmoid is
    increasing)."""
    za, zb = logits_a.float(), logits_b.float()
    return 0.5 * ((torch.sigmoid(za) - torch.sigmoid(zb)) * (za - zb)).mean()


LOSSES = ("bce", "focal", "asl")


def build_loss(kind: str, train_labels: np.ndarray, pos_weight: str = "sqrt",
               focal_gamma: float = 2.0, focal_alpha: float | None = None,
               asl_gamma_neg: float = 4.0, asl_gamma_pos: float = 0.0, asl_clip: float = 0.05) -> nn.Module:
    pw = pos_weights(train_labels, pos_weight)
    if kind == "bce":
        return WeightedBCELoss(pw)
    if kind == "focal":
        return FocalLoss(focal_gamma, focal_alpha, pw)
    if kind == "asl":
        return AsymmetricLoss(asl_gamma_neg, asl_gamma_pos, asl_clip, pw)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")

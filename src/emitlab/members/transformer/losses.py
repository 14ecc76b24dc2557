"""Multilabel losses and the label statistics they are built from.

Every loss takes logits ``(batch, labels)`` and 0/1 targets of any dtype and device, and is
computed in float32 whatever the logits' dtype: targets are cast and the weights moved to the
logits' device inside ``forward``, so mixed precision and GPUs need no care from the caller.

``forward(logits, targets, weights=None)``: ``weights`` (optional, ``(batch, labels)``) multiplies
each cell's term before the mean: 0 where a row's corpus does not annotate a label (that cell then
gives no gradient at all), the corpus weight elsewhere (:mod:`emitlab.data.extra`). The label
statistics (prevalence, ``pos_weight``) take the same mask and row weights.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

POS_WEIGHT_STRATEGIES = ("none", "neg_pos", "sqrt")


def cell_weights(labels: np.ndarray, mask: np.ndarray | None = None,
                 sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Each cell's weight: the row's weight (default 1) where the label is annotated, 0 where masked."""
    y = np.asarray(labels)
    w = np.ones(y.shape, dtype=np.float64)
    if sample_weight is not None:
        w *= np.asarray(sample_weight, dtype=np.float64)[:, None]
    if mask is not None:
        w *= np.asarray(mask, dtype=bool)
    return w


def _counts(labels: np.ndarray, mask: np.ndarray | None, sample_weight: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(weighted positives, weighted annotated rows) per label."""
    w = cell_weights(labels, mask, sample_weight)
    return (w * np.asarray(labels, dtype=np.float64)).sum(0), w.sum(0)


def label_prevalence(labels: np.ndarray, eps: float = 1e-4, mask: np.ndarray | None = None,
                     sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Share of texts carrying each label (among those annotating it), clipped away from 0 and 1."""
    pos, total = _counts(labels, mask, sample_weight)
    return np.clip(pos / np.maximum(total, 1e-12), eps, 1 - eps)


def prior_log_odds(labels: np.ndarray, mask: np.ndarray | None = None,
                   sample_weight: np.ndarray | None = None) -> np.ndarray:
    """``log(p / (1 - p))`` per label: the classifier bias that predicts each label's prevalence."""
    p = label_prevalence(labels, mask=mask, sample_weight=sample_weight)
    return np.log(p / (1 - p))


def pos_weights(labels: np.ndarray, strategy: str, mask: np.ndarray | None = None,
                sample_weight: np.ndarray | None = None) -> np.ndarray | None:
    """BCE ``pos_weight`` per label: ``none``, ``neg_pos`` (negatives / positives) or ``sqrt`` of it."""
    if strategy not in POS_WEIGHT_STRATEGIES:
        raise ValueError(f"pos_weight must be one of {POS_WEIGHT_STRATEGIES}, got {strategy!r}")
    if strategy == "none":
        return None
    pos, total = _counts(labels, mask, sample_weight)
    ratio = (total - pos) / np.maximum(pos, 1.0)
    return np.sqrt(ratio) if strategy == "sqrt" else ratio


def weighted_mean(terms: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``terms.mean()``, each cell multiplied by ``weights`` first when given."""
    if weights is None:
        return terms.mean()
    return (terms * weights.to(device=terms.device, dtype=terms.dtype)).mean()


class WeightedBCELoss(nn.Module):
    """Mean binary cross-entropy with logits; positives of label j weigh ``pos_weight[j]``."""

    def __init__(self, pos_weight: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        pw = None if pos_weight is None else torch.as_tensor(np.asarray(pos_weight), dtype=torch.float32)
        self.register_buffer("pos_weight", pw, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
                ) -> torch.Tensor:
        logits = logits.float()
        targets = targets.to(device=logits.device, dtype=logits.dtype)
        pw = None if self.pos_weight is None else self.pos_weight.to(logits.device, logits.dtype)
        terms = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw, reduction="none")
        return weighted_mean(terms, weights)


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

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
                ) -> torch.Tensor:
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
        return weighted_mean(pos_term + neg_term, weights)


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

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
                ) -> torch.Tensor:
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
        return weighted_mean(pos_term + neg_term, weights)


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
               asl_gamma_neg: float = 4.0, asl_gamma_pos: float = 0.0, asl_clip: float = 0.05,
               mask: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> nn.Module:
    pw = pos_weights(train_labels, pos_weight, mask, sample_weight)
    if kind == "bce":
        return WeightedBCELoss(pw)
    if kind == "focal":
        return FocalLoss(focal_gamma, focal_alpha, pw)
    if kind == "asl":
        return AsymmetricLoss(asl_gamma_neg, asl_gamma_pos, asl_clip, pw)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")

"""Combining members: weighted averages, a stacker, and the nested choice between them.

Every combiner maps the members' probabilities ``P = [p_1, ..., p_M]`` (each ``(n, L)``) to one
``(n, L)`` matrix and is stored as plain numbers (JSON), never pickled:

- :class:`WeightedAverage` -- ``sum_m w_m p_m`` (``space="prob"``) or ``sigmoid(sum_m w_m
  logit(p_m))`` (``space="logit"``), the weights on a simplex grid, chosen for the macro-F1
  reached with per-label F1-optimal thresholds on the rows it is fitted on;
- :class:`Stacker` -- per label, a logistic regression over the logits of *all* members for
  *all* labels, so it can learn label co-occurrence (e.g. Joy with Love, Anger with Disgust);
- a single member (:class:`WeightedAverage` with all weight on it).

:func:`choose_combiner` scores every candidate by **nested** cross-validation over the
out-of-fold rows: for each outer fold, the combiner *and* the calibration (thresholds, decoding
rules) are fitted on the other folds and the held-out fold is decoded with them, so a choice is
never scored on the rows that made it. The candidate with the best nested macro-F1 is then
refitted on all out-of-fold rows.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from emitlab.engine.calibration import CalibrationReport, best_thresholds, calibrate, fast_macro_f1
from emitlab.errors import ModelFormatError
from emitlab.registry import COMBINERS

log = logging.getLogger("emitlab")

_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def tuned_macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    """Macro-F1 with each label's F1-optimal threshold on these same rows (a search criterion)."""
    return fast_macro_f1(y, p >= best_thresholds(y, p)[None, :])


def simplex_grid(m: int, step: float) -> np.ndarray:
    """All weight vectors of ``m`` non-negative multiples of ``step`` summing to 1."""
    k = int(round(1 / step))
    rows = [c for c in itertools.product(range(k + 1), repeat=m) if sum(c) == k]
    return np.asarray(rows, dtype=np.float64) / k


class WeightedAverage:
    """Weighted mean of the members' probabilities (or logits). ``weights`` fixed, or searched
    on a simplex grid by :meth:`fit`."""

    kind = "average"

    def __init__(self, space: str = "prob", step: float | None = None, weights: Sequence[float] | None = None):
        if space not in ("prob", "logit"):
            raise ValueError(f"space must be 'prob' or 'logit', got {space!r}")
        self.space = space
        self.step = step
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.search: list[dict] = []

    @property
    def name(self) -> str:
        return f"average_{self.space}"

    def combine(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        w = self.weights
        if w is None:
            raise RuntimeError("WeightedAverage.combine before fit")
        if len(probs) != len(w):
            raise ValueError(f"{len(probs)} members given, {len(w)} weights")
        if self.space == "prob":
            return sum(wi * np.asarray(p, dtype=np.float64) for wi, p in zip(w, probs))
        return sigmoid(sum(wi * logit(p) for wi, p in zip(w, probs)))

    def fit(self, probs: Sequence[np.ndarray], y: np.ndarray) -> "WeightedAverage":
        m = len(probs)
        if self.weights is not None and self.step is None:
            return self
        step = self.step or (0.1 if m <= 4 else 0.2)
        grid = simplex_grid(m, step)
        scores = []
        for w in grid:
            self.weights = w
            scores.append(tuned_macro_f1(y, self.combine(probs)))
        best = int(np.argmax(np.round(scores, 6)))
        self.weights = grid[best]
        self.search = [{"weights": w.tolist(), "tuned_macro_f1": s} for w, s in zip(grid, scores)]
        return self

    def fit_predict(self, probs: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
        """Fit, then the combined probabilities of the fitted rows (for calibration): a handful of
        weights barely overfit, so the in-sample combination is used."""
        return self.fit(probs, y).combine(probs)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "space": self.space, "weights": [float(w) for w in self.weights]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WeightedAverage":
        return cls(space=d["space"], weights=d["weights"])

    # ---- what it is (read from the JSON form by the export, report, compare and serving)

    @classmethod
    def candidates(cls, n_members: int, cfg, seed: int = 0) -> list[tuple[str, Any]]:
        """``(name, make)`` of the candidates it adds to the nested choice: the weighted mean of
        probabilities and of logits (each member alone is a candidate of its own, see :func:`candidates`)."""
        step = cfg.weight_step or None
        return [("average_prob", lambda: cls("prob", step=step)), ("average_logit", lambda: cls("logit", step=step))]

    @staticmethod
    def member_weights(d: dict[str, Any], members: Sequence[str]) -> list[float] | None:
        """Each member's weight (``None`` when they do not match ``members``)."""
        w = d.get("weights") or []
        return [float(x) for x in w] if len(w) == len(members) else None

    @staticmethod
    def members_used(d: dict[str, Any], members: Sequence[str]) -> list[str]:
        """The members with a weight above 0 (the others are not exported)."""
        w = WeightedAverage.member_weights(d, members)
        return list(members) if w is None else [m for m, x in zip(members, w) if x > 0]

    @staticmethod
    def restrict(d: dict[str, Any], members: Sequence[str], used: Sequence[str]) -> dict[str, Any]:
        """The same average over ``used`` only."""
        return dict(d, weights=[w for m, w in zip(members, d["weights"]) if m in used])

    @staticmethod
    def describe(d: dict[str, Any], members: Sequence[str], short: bool = False) -> str:
        """``average of probabilities (all weight on tfidf)``; short: ``prob avg tfidf=0.50 ...``."""
        w = WeightedAverage.member_weights(d, members) or []
        if short:
            return f"{d.get('space', 'prob')} avg " + " ".join(f"{m}={x:.2f}" for m, x in zip(members, w))
        text = f"average of {'logits' if d.get('space') == 'logit' else 'probabilities'}"
        if w and sum(x != 0 for x in w) == 1:
            text += f" (all weight on {members[int(np.argmax(w))]})"
        return text


class Stacker:
    """Per label ``j``: ``p_j = sigmoid(x @ W[j] + b[j])`` with ``x`` the logits of every member
    for every label (``M * L`` features), fitted by L2 logistic regression."""

    kind = "stacker"
    name = "stacker"

    def __init__(self, C: float = 1.0, inner_folds: int = 3, seed: int = 0,
                 W: np.ndarray | None = None, b: np.ndarray | None = None):
        self.C = C
        self.inner_folds = inner_folds
        self.seed = seed
        self.W = None if W is None else np.asarray(W, dtype=np.float64)
        self.b = None if b is None else np.asarray(b, dtype=np.float64)

    @staticmethod
    def features(probs: Sequence[np.ndarray]) -> np.ndarray:
        return np.hstack([logit(p) for p in probs])

    def _fit_arrays(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        W = np.zeros((y.shape[1], x.shape[1]))
        b = np.zeros(y.shape[1])
        for j in range(y.shape[1]):
            col = y[:, j]
            if col.min() == col.max():  # a constant label: its rate, whatever the input
                b[j] = float(logit(np.clip(col.mean(), _EPS, 1 - _EPS)))
                continue
            lr = LogisticRegression(C=self.C, max_iter=2000).fit(x, col)
            W[j], b[j] = lr.coef_[0], lr.intercept_[0]
        return W, b

    def fit(self, probs: Sequence[np.ndarray], y: np.ndarray) -> "Stacker":
        self.W, self.b = self._fit_arrays(self.features(probs), np.asarray(y))
        return self

    def combine(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        if self.W is None:
            raise RuntimeError("Stacker.combine before fit")
        x = self.features(probs)
        if x.shape[1] != self.W.shape[1]:
            raise ValueError(f"the stacker expects {self.W.shape[1]} inputs, got {x.shape[1]}")
        return sigmoid(x @ self.W.T + self.b)

    def fit_predict(self, probs: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
        """Fit on all rows; return *inner cross-validated* stacker probabilities for them, so
        that the thresholds calibrated on them are not fitted to the stacker's own overfit."""
        from emitlab.data.split import kfold_indices

        x, y = self.features(probs), np.asarray(y)
        out = np.zeros(y.shape)
        for tr, te in kfold_indices(y, self.inner_folds, self.seed):
            W, b = self._fit_arrays(x[tr], y[tr])
            out[te] = sigmoid(x[te] @ W.T + b)
        self.fit(probs, y)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "C": self.C, "W": self.W.tolist(), "b": self.b.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stacker":
        return cls(C=d.get("C", 1.0), W=d["W"], b=d["b"])

    # ---- what it is

    @classmethod
    def candidates(cls, n_members: int, cfg, seed: int = 0) -> list[tuple[str, Any]]:
        return [("stacker", lambda: cls(C=cfg.stacker_C, seed=seed))]

    @staticmethod
    def member_weights(d: dict[str, Any], members: Sequence[str]) -> list[float] | None:
        return None  # per label and member: the report draws them from W

    @staticmethod
    def members_used(d: dict[str, Any], members: Sequence[str]) -> list[str]:
        return list(members)

    @staticmethod
    def restrict(d: dict[str, Any], members: Sequence[str], used: Sequence[str]) -> dict[str, Any]:
        return d

    @staticmethod
    def describe(d: dict[str, Any], members: Sequence[str], short: bool = False) -> str:
        return f"stacker C={d.get('C', 1.0):g}" if short else f"stacker (C={d.get('C', 1.0):g})"


def combiner_class(d: dict[str, Any]):
    """The registered class of a combiner's JSON form (:data:`emitlab.registry.COMBINERS`); an
    unknown kind is an export-format error."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in COMBINERS:
        raise ModelFormatError(f"unknown combiner {kind if isinstance(d, dict) else d!r} "
                               f"(known: {', '.join(COMBINERS)})")
    return COMBINERS.get(kind)


def combiner_from_dict(d: dict[str, Any]):
    """Rebuild a combiner from its JSON form."""
    return combiner_class(d).from_dict(d)


def members_used(d: dict[str, Any], members: Sequence[str]) -> list[str]:
    """The members a combiner's JSON form ``d`` needs, in the order of ``members``."""
    return combiner_class(d).members_used(d, list(members))


def restrict_combiner(d: dict[str, Any], members: Sequence[str], used: Sequence[str]) -> dict[str, Any]:
    """``d`` over the members ``used`` only (those it does not need are not exported)."""
    return combiner_class(d).restrict(d, list(members), list(used))


def describe_combiner(d: dict[str, Any] | None, members: Sequence[str], short: bool = False) -> str | None:
    """A combiner in words (``None`` for none); a kind no longer registered is named as it is."""
    if not d:
        return None
    if d.get("kind") not in COMBINERS:
        return str(d.get("kind"))
    return combiner_class(d).describe(d, list(members), short)


def member_weights(d: dict[str, Any] | None, members: Sequence[str]) -> list[float] | None:
    """Each member's weight in a combiner's JSON form, where it has one weight per member."""
    if not d or d.get("kind") not in COMBINERS:
        return None
    return combiner_class(d).member_weights(d, list(members))


# --------------------------------------------------------------------------------------
# Choice


@dataclass
class Candidate:
    """A way of combining the members, and how it scored."""

    name: str
    make: Any  # () -> combiner
    nested_macro_f1: float = float("nan")
    nested_fold_scores: list[float] = field(default_factory=list)


def candidates(member_names: Sequence[str], cfg, seed: int = 0) -> list[Candidate]:
    """Each member alone, then the candidates of every combiner of ``cfg.combiners`` (registered in
    :data:`emitlab.registry.COMBINERS`: the averages of probabilities and logits, the stacker...)."""
    m = len(member_names)
    out = []
    for i, name in enumerate(member_names):
        w = np.zeros(m)
        w[i] = 1.0
        out.append(Candidate(name, lambda w=w: WeightedAverage("prob", weights=w)))
    if m > 1:
        for kind in [k for k in COMBINERS if k in cfg.combiners]:  # registry order: ties keep the earlier
            out.extend(Candidate(name, make) for name, make in COMBINERS.get(kind).candidates(m, cfg, seed))
    return out


def fit_and_calibrate(make, probs: Sequence[np.ndarray], y: np.ndarray, label_names: Sequence[str], cal):
    """Fit a combiner on ``(probs, y)`` and calibrate the decoding on its (honest) output."""
    comb = make()
    fitted_out = comb.fit_predict(probs, y)
    report = calibrate(y, fitted_out, list(label_names), cal.thresholds, cal.structure, cal.repeats)
    return comb, report, fitted_out


def nested_score(make, probs: Sequence[np.ndarray], y: np.ndarray, label_names: Sequence[str], cal,
                 folds: int, seed: int) -> tuple[float, list[float], np.ndarray]:
    """Macro-F1 of decoding each outer fold with a combiner and calibration fitted on the others.
    Returns the score over all rows, the per-fold scores and the decoded predictions."""
    from emitlab.data.split import kfold_indices

    y = np.asarray(y)
    pred = np.zeros(y.shape, dtype=np.int64)
    per_fold = []
    for tr, te in kfold_indices(y, folds, seed):
        comb, report, _ = fit_and_calibrate(make, [p[tr] for p in probs], y[tr], label_names, cal)
        pred[te] = report.decoder.decode(comb.combine([p[te] for p in probs]))
        per_fold.append(fast_macro_f1(y[te], pred[te]))
    return fast_macro_f1(y, pred), per_fold, pred


@dataclass
class Choice:
    """The chosen combiner (refitted on all out-of-fold rows), its calibration, and every
    candidate's nested score."""

    name: str
    combiner: Any
    calibration: CalibrationReport
    candidates: list[Candidate]
    oof_combined: np.ndarray  # the chosen combiner's (honest) output on the out-of-fold rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.name,
            "combiner": self.combiner.to_dict(),
            "nested_macro_f1": {c.name: c.nested_macro_f1 for c in self.candidates},
            "nested_fold_macro_f1": {c.name: c.nested_fold_scores for c in self.candidates},
        }


def choose_combiner(member_names: Sequence[str], probs: Sequence[np.ndarray], y: np.ndarray,
                    label_names: Sequence[str], cal, cfg, seed: int = 0) -> tuple[Choice, dict[str, tuple]]:
    """Score every candidate by nested CV on the out-of-fold rows, keep the best, refit it.

    Returns the choice and, for every candidate, ``(combiner, calibration, fitted output)``
    refitted on all rows (so that the report can show all of them side by side)."""
    from threadpoolctl import threadpool_limits

    cands = candidates(member_names, cfg, seed)
    fitted: dict[str, tuple] = {}
    with threadpool_limits(1):  # hundreds of small regressions: threads only add overhead
        _score_candidates(cands, probs, y, label_names, cal, cfg, seed, fitted)
    # ties keep the earlier (simpler) candidate
    best = max(cands, key=lambda c: (round(c.nested_macro_f1, 6), -cands.index(c)))
    comb, report, out = fitted[best.name]
    return Choice(best.name, comb, report, cands, out), fitted


def _score_candidates(cands, probs, y, label_names, cal, cfg, seed, fitted) -> None:
    for c in cands:
        c.nested_macro_f1, c.nested_fold_scores, _ = nested_score(c.make, probs, y, label_names, cal,
                                                                  cfg.nested_folds, seed)
        fitted[c.name] = fit_and_calibrate(c.make, probs, y, label_names, cal)
        log.info("combiner %-14s nested out-of-fold macro-F1 %.4f", c.name, c.nested_macro_f1)


__all__ = ["WeightedAverage", "Stacker", "combiner_from_dict", "combiner_class", "members_used", "restrict_combiner",
           "describe_combiner", "member_weights", "choose_combiner", "nested_score", "Choice",
           "logit", "sigmoid", "simplex_grid", "tuned_macro_f1"]

"""Per-label decision thresholds and label-structure decoding, chosen on validation.

For one label, sorting the validation probabilities in decreasing order turns every possible
threshold into a prefix of that order: predicting the top ``k`` texts positive gives
``TP = cumsum(y_sorted)[k-1]`` and ``F1 = 2 TP / (k + P)`` with ``P`` the positives. All
candidates of all labels are therefore scored at once with one sort and one cumulative sum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from emitlab.labels import NEUTRAL

DEFAULT_THRESHOLD = 0.5


def f1_threshold_curves(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1 of every prefix threshold, per label.

    Returns ``(thresholds, f1)``, both ``(n, k)``: column ``j`` row ``i`` is the F1 of label
    ``j`` when the ``i + 1`` most probable texts are predicted positive, i.e. with threshold
    ``thresholds[i, j]`` (the sorted probability itself; ties are merged so that a threshold
    never splits texts of equal probability).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, axis=0, kind="stable")
    p_sorted = np.take_along_axis(probs, order, axis=0)
    y_sorted = np.take_along_axis(y_true, order, axis=0)
    tp = np.cumsum(y_sorted, axis=0)
    k = np.arange(1, len(probs) + 1, dtype=np.float64)[:, None]
    positives = y_true.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(k + positives > 0, 2 * tp / (k + positives), 0.0)
    # Within a run of equal probabilities only the last position is reachable.
    tie_with_next = np.zeros_like(p_sorted, dtype=bool)
    tie_with_next[:-1] = p_sorted[:-1] == p_sorted[1:]
    f1 = np.where(tie_with_next, -1.0, f1)
    return p_sorted, f1


def best_thresholds(y_true: np.ndarray, probs: np.ndarray, default: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The threshold per label that maximises that label's F1 on ``(y_true, probs)``.

    The returned value lies halfway between the last probability predicted positive and the
    next one down, so small shifts in probabilities do not flip the decision. A label without
    positives in ``y_true`` keeps ``default``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    p_sorted, f1 = f1_threshold_curves(y_true, probs)
    best = np.argmax(f1, axis=0)
    cols = np.arange(probs.shape[1])
    upper = p_sorted[best, cols]
    below = np.where(best + 1 < len(probs), p_sorted[np.minimum(best + 1, len(probs) - 1), cols], 0.0)
    thresholds = (upper + below) / 2.0
    no_pos = np.asarray(y_true).sum(axis=0) == 0
    thresholds[no_pos] = default
    return thresholds


@dataclass
class Decoder:
    """Turns probabilities into 0/1 labels: thresholds plus optional label structure."""

    label_names: list[str]
    thresholds: list[float]
    at_least_one: bool = False
    neutral_exclusive: bool = False

    def decode(self, probs: np.ndarray) -> np.ndarray:
        return decode(probs, np.asarray(self.thresholds), self.label_names, self.at_least_one, self.neutral_exclusive)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Decoder":
        return cls(**d)


def decode(
    probs: np.ndarray,
    thresholds: np.ndarray | float,
    label_names: list[str],
    at_least_one: bool = False,
    neutral_exclusive: bool = False,
) -> np.ndarray:
    """0/1 predictions: ``probs >= thresholds`` then the optional structural rules.

    ``at_least_one``: a text with no label gets the label with the largest margin
    ``prob - threshold``. ``neutral_exclusive``: when Neutral comes with other labels, keep
    Neutral alone if its margin beats every other margin, else drop it.
    """
    probs = np.asarray(probs, dtype=np.float64)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), probs.shape[1:])
    pred = (probs >= thr).astype(np.int64)
    margin = probs - thr
    if neutral_exclusive and NEUTRAL in label_names:
        j = label_names.index(NEUTRAL)
        others = np.delete(np.arange(probs.shape[1]), j)
        clash = (pred[:, j] == 1) & (pred[:, others].sum(1) > 0)
        if clash.any():
            neutral_wins = margin[:, j] > margin[:, others].max(1)
            keep_neutral = clash & neutral_wins
            pred[np.ix_(keep_neutral, others)] = 0
            pred[clash & ~neutral_wins, j] = 0
    if at_least_one:
        empty = pred.sum(1) == 0
        if empty.any():
            pred[empty, np.argmax(margin[empty], axis=1)] = 1
    return pred


def fast_macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 from counts (labels without positives and predictions score 0, as sklearn's
    ``zero_division=0``); used inside searches, where sklearn's overhead adds up."""
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    tp = (y_true & y_pred).sum(0)
    denom = y_true.sum(0) + y_pred.sum(0)
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def best_global_threshold(y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray | None = None) -> float:
    """One threshold for all labels, maximising macro-F1 over a grid (default 0.05 .. 0.95)."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2) if grid is None else grid
    y = np.asarray(y_true, dtype=bool)[None]
    pred = np.asarray(probs)[None] >= grid[:, None, None]
    tp = (pred & y).sum(1)
    denom = pred.sum(1) + y.sum(1)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean(1)
    return float(grid[int(np.argmax(f1))])


THRESHOLD_STRATEGIES = ("fixed", "global", "per_label")


def fit_thresholds(y_true: np.ndarray, probs: np.ndarray, strategy: str) -> np.ndarray:
    k = np.asarray(probs).shape[1]
    if strategy == "fixed":
        return np.full(k, DEFAULT_THRESHOLD)
    if strategy == "global":
        return np.full(k, best_global_threshold(y_true, probs))
    if strategy == "per_label":
        return best_thresholds(y_true, probs)
    raise ValueError(f"unknown threshold strategy {strategy!r}; expected one of {THRESHOLD_STRATEGIES}")


@dataclass
class CalibrationReport:
    """What calibration measured on validation and what it chose."""

    decoder: Decoder
    chosen: str = ""
    #: macro-F1 of each variant fitted and scored on the whole validation split (optimistic)
    validation_macro_f1: dict[str, float] = field(default_factory=dict)
    #: macro-F1 of each variant fitted on one random half of validation and scored on the
    #: other half, averaged over repeats: the honest estimate used to choose
    validation_heldout_macro_f1: dict[str, float] = field(default_factory=dict)

    @property
    def selection_score(self) -> float:
        """The chosen variant's held-out validation macro-F1 (in-sample when nothing was searched):
        the score used to compare models and ensemble weights."""
        return self.validation_heldout_macro_f1.get(self.chosen, self.validation_macro_f1[self.chosen])

    def to_dict(self) -> dict:
        return {
            "chosen": self.chosen,
            "validation_macro_f1": self.validation_macro_f1,
            "validation_heldout_macro_f1": self.validation_heldout_macro_f1,
            "decoder": self.decoder.to_dict(),
        }


def _variant_name(strategy: str, alo: bool, nex: bool) -> str:
    return strategy + "+at_least_one" * alo + "+neutral_exclusive" * nex


def calibrate(
    y_val: np.ndarray,
    p_val: np.ndarray,
    label_names: list[str],
    thresholds: str = "auto",
    structure: str = "auto",
    repeats: int = 30,
    seed: int = 0,
) -> CalibrationReport:
    """Choose thresholds and decoding rules on validation.

    ``thresholds``: ``fixed`` (0.5), ``global`` (one threshold for all labels), ``per_label``
    (F1-optimal per label) or ``auto``. ``structure``: the rules "at least one label per text"
    and "Neutral alone" (``none``, ``both`` or ``auto``).

    With ``auto``, every candidate is fitted on a random half of the validation split and
    scored on the other half (``repeats`` times); the variant with the best held-out mean is
    then fitted on the whole validation split. A few hundred validation texts make per-label
    thresholds noisy, and this keeps the choice from rewarding that noise. Every variant's
    in-sample and held-out macro-F1 is reported.
    """
    if thresholds not in THRESHOLD_STRATEGIES + ("auto",):
        raise ValueError(f"thresholds must be one of {THRESHOLD_STRATEGIES + ('auto',)}, got {thresholds!r}")
    if structure not in ("auto", "none", "both"):
        raise ValueError(f"structure must be 'auto', 'none' or 'both', got {structure!r}")
    y_val = np.asarray(y_val)
    p_val = np.asarray(p_val, dtype=np.float64)
    has_neutral = NEUTRAL in label_names
    strategies = THRESHOLD_STRATEGIES if thresholds == "auto" else (thresholds,)
    if structure == "none":
        rules = [(False, False)]
    elif structure == "both":
        rules = [(True, has_neutral)]
    else:
        rules = [(False, False), (True, False)] + ([(False, True), (True, True)] if has_neutral else [])

    fitted = {s: fit_thresholds(y_val, p_val, s) for s in set(strategies) | {"fixed"}}
    in_sample = {
        _variant_name(s, alo, nex): fast_macro_f1(y_val, decode(p_val, fitted[s], label_names, alo, nex))
        for s in fitted for alo, nex in rules
    }
    candidates = [(s, alo, nex) for s in strategies for alo, nex in rules]
    heldout: dict[str, list[float]] = {_variant_name(*c): [] for c in candidates}
    if len(candidates) > 1:
        rng = np.random.default_rng(seed)
        n = len(y_val)
        for _ in range(repeats):
            perm = rng.permutation(n)
            a, b = perm[: n // 2], perm[n // 2:]
            for s in strategies:
                thr = fit_thresholds(y_val[a], p_val[a], s)
                for alo, nex in rules:
                    pred = decode(p_val[b], thr, label_names, alo, nex)
                    heldout[_variant_name(s, alo, nex)].append(fast_macro_f1(y_val[b], pred))
        # candidates are ordered simplest first; a tie keeps the simpler one
        best = max(candidates, key=lambda c: (round(float(np.mean(heldout[_variant_name(*c)])), 6),
                                               -candidates.index(c)))
    else:
        best = candidates[0]
    s, alo, nex = best
    decoder = Decoder(list(label_names), [float(t) for t in fitted[s]], alo, nex)
    return CalibrationReport(
        decoder=decoder,
        chosen=_variant_name(*best),
        validation_macro_f1=in_sample,
        validation_heldout_macro_f1={k: float(np.mean(v)) for k, v in heldout.items() if v},
    )

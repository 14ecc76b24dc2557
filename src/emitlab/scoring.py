"""The official metric, at the bottom of the layers: members choose their best epoch with it, the
engine scores combiners and calibrations with it, the report shows it."""

from __future__ import annotations

import numpy as np


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The official metric: sklearn's macro-F1 over the label columns (0 for a label with neither
    gold nor predicted positives)."""
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(y_true), np.asarray(y_pred), average="macro", zero_division=0))

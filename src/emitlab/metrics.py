"""Evaluation exactly as the EMit organizers compute it.

The official ``evaluate.py`` calls ``sklearn.metrics.f1_score(gold, pred, average="macro")`` on
the 0/1 label matrices; :func:`evaluate` reports that number as ``macro_f1``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The official metric: sklearn's macro-F1 over the label columns."""
    return float(f1_score(np.asarray(y_true), np.asarray(y_pred), average="macro", zero_division=0))


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Macro-F1 (official), micro-F1 and per-label precision / recall / F1 / support."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    return {
        "macro_f1": macro_f1(y_true, y_pred),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "n": int(len(y_true)),
        "per_label": {
            name: {
                "precision": float(p[j]),
                "recall": float(r[j]),
                "f1": float(f[j]),
                "support": int(s[j]),
                "predicted": int(y_pred[:, j].sum()),
            }
            for j, name in enumerate(label_names)
        },
    }

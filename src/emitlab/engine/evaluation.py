"""Evaluation exactly as the EMit organizers compute it, and official submission files.

The official ``evaluate.py`` calls ``sklearn.metrics.f1_score(gold, pred, average="macro")`` on
the 0/1 label matrices; :func:`evaluate` reports that number as ``macro_f1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

from emitlab.scoring import macro_f1


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


def evaluate_decoded(y_true: np.ndarray, probs: np.ndarray, decoder, label_names: list[str]) -> dict:
    """Metrics of ``decoder``'s labels (calibrated) with the raw 0.5 metrics under ``"raw"``."""
    from emitlab.engine.calibration import DEFAULT_THRESHOLD, decode

    out = evaluate(y_true, decoder.decode(probs), label_names)
    out["raw"] = evaluate(y_true, decode(probs, DEFAULT_THRESHOLD, label_names), label_names)
    return out


def write_submission(path: Path, ids: list[str], pred: np.ndarray, label_names: list[str]) -> Path:
    """An official submission CSV: ``id,<labels>`` with 0/1 values, rows in the input's order."""
    import pandas as pd

    from emitlab.io import atomic_path

    frame = pd.DataFrame(np.asarray(pred, dtype=int), columns=label_names)
    frame.insert(0, "id", ids)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path

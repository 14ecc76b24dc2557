"""Per-label logistic regression kept as plain arrays, and the no-pickle file helpers.

Both cheap members (:mod:`.tfidf`, :mod:`.lexicon`) end in one binary logistic regression per
label.  They are *fitted* with scikit-learn, but only the weights are kept::

    W: float64 (n_labels, n_features)    b: float64 (n_labels,)
    probs = sigmoid(X @ W.T + b)         # X sparse or dense, (n_texts, n_features)

so the prediction path is the same code before and after a save/load, and the saved files are
two ``.npy`` arrays (``np.save``; loaded with ``allow_pickle=False``).  A label whose training
column is constant (all 0 or all 1) gets no regression: its row of ``W`` is 0 and its intercept
is the logit of the (clipped) constant rate.

The ``read_*`` helpers raise :class:`~emitlab.errors.ModelFormatError` with a one-line message
naming the file and what is wrong.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import sparse
from scipy.special import expit

from emitlab.errors import ModelFormatError, SettingsError
from emitlab.io import atomic_path

#: Rate used for a constant label column is clipped into [EPS, 1 - EPS] before its logit.
EPS = 1e-6


def check_fit_inputs(texts: Sequence[str], labels: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
    """``labels`` as an int (n, L) 0/1 matrix that agrees with ``texts`` and ``label_names``."""
    y = np.asarray(labels)
    if y.ndim != 2 or y.shape != (len(texts), len(label_names)):
        raise ValueError(f"labels have shape {y.shape}, expected ({len(texts)}, {len(label_names)})")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return y.astype(np.int64)


def check_row_options(n: int, n_labels: int, mask: np.ndarray | None, sample_weight: np.ndarray | None
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``mask`` as a bool (n, L) matrix (True: the label is annotated on that row; a label that no
    row annotates cannot be learnt) and ``sample_weight`` as positive float64 (n,); None stays None."""
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n, n_labels):
            raise ValueError(f"mask has shape {mask.shape}, expected ({n}, {n_labels})")
        if not mask.any(0).all():
            raise ValueError("the mask leaves a label without any annotated row")
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != (n,) or not (np.isfinite(sample_weight).all() and (sample_weight > 0).all()):
            raise ValueError(f"sample_weight must be {n} finite numbers > 0")
    return mask, sample_weight


def fit_logistic_heads(X: Any, Y: np.ndarray, C: float = 1.0, class_weight: str = "balanced",
                       max_iter: int = 2000, mask: np.ndarray | None = None,
                       sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One liblinear logistic regression per column of ``Y``; returns ``(W, b)`` as float64.

    With ``mask`` (bool, like ``Y``), label ``j`` is fitted on the rows where ``mask[:, j]`` only
    (a masked cell is unknown, not 0); ``sample_weight`` (n,) weighs the rows (extra corpora)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    Y = np.asarray(Y)
    n_labels, n_features = Y.shape[1], X.shape[1]
    mask, sample_weight = check_row_options(Y.shape[0], n_labels, mask, sample_weight)
    W = np.zeros((n_labels, n_features), dtype=np.float64)
    b = np.zeros(n_labels, dtype=np.float64)
    cw = None if class_weight == "none" else class_weight
    for j in range(n_labels):
        rows = slice(None) if mask is None or mask[:, j].all() else np.flatnonzero(mask[:, j])
        y = Y[rows, j]
        w = None if sample_weight is None else sample_weight[rows]
        if y.min() == y.max():
            rate = float(np.clip(np.average(y, weights=w), EPS, 1 - EPS))
            b[j] = np.log(rate / (1 - rate))
            continue
        clf = LogisticRegression(C=C, class_weight=cw, solver="liblinear", max_iter=max_iter, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X[rows], y, sample_weight=w)
        W[j] = clf.coef_[0]
        b[j] = clf.intercept_[0]
    return W, b


def logistic_proba(X: Any, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sigmoid(X @ W.T + b)`` as float64 (n, L); ``X`` may be a scipy sparse matrix."""
    if sparse.issparse(X):
        scores = np.asarray(X @ W.T)
    else:
        scores = np.asarray(X, dtype=np.float64) @ W.T
    return expit(scores + b).astype(np.float64, copy=False)


# --- files -------------------------------------------------------------------------------------

def safe_file_name(folder: Path, name: Any, what: str) -> Path:
    """``folder / name`` for a plain file name taken from a spec (no paths, no '..')."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ModelFormatError(f"{folder}: bad file name for {what} in the member spec: {name!r}")
    return folder / name


def save_array(folder: Path, name: str, array: np.ndarray) -> str:
    with atomic_path(folder / name) as tmp:
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
    return name


def read_array(path: Path, ndim: int, shape: Sequence[int | None] | None = None) -> np.ndarray:
    """A finite float64 ``.npy`` array of ``ndim`` dimensions (``None`` in ``shape``: any size)."""
    if not path.is_file():
        raise ModelFormatError(f"{path}: file is missing")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError (object arrays, bad header), OSError, EOFError, ...
        raise ModelFormatError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or arr.ndim != ndim:
        raise ModelFormatError(f"{path}: expected a {ndim}-d float64 array, got "
                               f"{getattr(arr, 'ndim', '?')}-d {getattr(arr, 'dtype', type(arr).__name__)}")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(arr.shape, shape)):
            if want is not None and got != want:
                raise ModelFormatError(f"{path}: shape {arr.shape} does not match the model "
                                       f"(axis {axis} should be {want})")
    if not np.isfinite(arr).all():
        raise ModelFormatError(f"{path}: holds non-finite values")
    return arr


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelFormatError(f"{path}: file is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not valid UTF-8 JSON ({exc})") from None


def spec_config(cls: type, spec: dict[str, Any], folder: Path) -> Any:
    """Rebuild a settings dataclass from ``spec["config"]`` (unknown keys are a format error)."""
    cfg = spec.get("config", {})
    if not isinstance(cfg, dict):
        raise ModelFormatError(f"{folder}: member spec 'config' is not a mapping")
    try:
        return cls(**cfg)
    except (TypeError, SettingsError) as exc:  # an unknown key, or a value the settings refuse
        raise ModelFormatError(f"{folder}: member spec 'config' does not fit {cls.__name__} ({exc})") from None


def spec_label_names(spec: dict[str, Any], folder: Path) -> list[str]:
    names = spec.get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelFormatError(f"{folder}: member spec 'label_names' must be a non-empty list of strings")
    return names


def save_heads(folder: Path, W: np.ndarray, b: np.ndarray) -> dict[str, str]:
    return {"W": save_array(folder, "W.npy", W), "b": save_array(folder, "b.npy", b)}


def load_heads(folder: Path, files: dict[str, Any], n_labels: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    W = read_array(safe_file_name(folder, files.get("W"), "W"), 2, (n_labels, n_features))
    b = read_array(safe_file_name(folder, files.get("b"), "b"), 1, (n_labels,))
    return W, b

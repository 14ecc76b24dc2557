"""Seeded multilabel iterative stratification (Sechidis et al., 2011): the 90/10 split and k folds.

Too few rows is a :class:`DataError` naming the source, the rows found and the minimum needed,
checked here before iterstrat / scikit-learn would fail with "Found array with 0 sample(s)".
"""

from __future__ import annotations

import math

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from emitlab.data.loading import DataError, TextDataset


def _split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """(train, validation) sizes, rounded as scikit-learn's shuffle splits round them."""
    n_val = math.ceil(val_fraction * n)
    return n - n_val, n_val


def _multilabel(labels: np.ndarray) -> np.ndarray:
    """2-D labels iterstrat accepts: one label column gets its complement (same stratification)."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    return np.hstack([labels, 1 - labels]) if labels.shape[1] == 1 else labels


def min_rows_for_split(val_fraction: float) -> int:
    """The fewest rows that leave at least one row on each side of the split."""
    n = max(2, int(1 / (1 - val_fraction)))
    while min(_split_sizes(n, val_fraction)) < 1:
        n += 1
    return n


def stratified_split(
    labels: np.ndarray, val_fraction: float = 0.1, seed: int = 42, source: str = "the data"
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (train_index, validation_index) keeping each label's prevalence.

    ``source`` names the data in the :class:`DataError` raised when there are too few rows.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = _multilabel(labels)
    need = min_rows_for_split(val_fraction)
    if len(labels) < need:
        pct = round(100 * val_fraction, 2)
        raise DataError(f"{source}: {len(labels)} rows; the {100 - pct:g}/{pct:g} split needs at least {need}")
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(labels)), labels))
    return np.sort(train_idx), np.sort(val_idx)


def split_dataset(
    ds: TextDataset, val_fraction: float = 0.1, seed: int = 42
) -> tuple[TextDataset, TextDataset]:
    if ds.labels is None:
        raise DataError(f"{ds.source}: cannot stratify a split without labels")
    tr, va = stratified_split(ds.labels, val_fraction, seed, source=ds.source)
    return ds.subset(tr), ds.subset(va)


def kfold_indices(
    labels: np.ndarray, k: int, seed: int, source: str = "the data"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` stratified folds for cross-fitting: a list of sorted (train_index, validation_index).

    Every row is in exactly one validation fold, and each label's positives are spread evenly
    over the folds. The same ``seed`` gives the same folds. Fewer than ``k`` rows, or too few
    for every fold to get rows on both sides, is a :class:`DataError` naming ``source``.
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    labels = _multilabel(labels)
    if len(labels) < k:
        raise DataError(f"{source}: {len(labels)} rows; {k}-fold cross-fitting needs at least {k}")
    folds = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    out = [(np.sort(tr).astype(np.int64), np.sort(va).astype(np.int64))
           for tr, va in folds.split(np.zeros(len(labels)), labels)]
    if any(len(tr) == 0 or len(va) == 0 for tr, va in out):
        raise DataError(f"{source}: {len(labels)} rows are too few for {k} folds that each get rows; "
                        f"use fewer folds or more data")
    return out

"""Seeded 90/10 multilabel iterative stratification (Sechidis et al., 2011)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

from ..io import atomic_write_json
from .loading import DataError, TextDataset


def stratified_split(labels: np.ndarray, val_fraction: float = 0.1, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (train_index, validation_index) keeping each label's prevalence."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(labels)), labels))
    return np.sort(train_idx), np.sort(val_idx)


def split_dataset(
    ds: TextDataset, val_fraction: float = 0.1, seed: int = 42
) -> tuple[TextDataset, TextDataset]:
    if ds.labels is None:
        raise DataError(f"{ds.source}: cannot stratify a split without labels")
    tr, va = stratified_split(ds.labels, val_fraction, seed)
    return ds.subset(tr), ds.subset(va)


def save_split(path: Path, train: TextDataset, validation: TextDataset, seed: int, val_fraction: float) -> None:
    atomic_write_json(path, {"seed": seed, "val_fraction": val_fraction, "train_ids": train.ids,
                             "validation_ids": validation.ids})


def load_split(path: Path, ds: TextDataset) -> tuple[TextDataset, TextDataset]:
    """Re-create a saved split of ``ds`` (by id)."""
    saved = json.loads(Path(path).read_text())
    pos = {i: n for n, i in enumerate(ds.ids)}
    try:
        tr = [pos[i] for i in saved["train_ids"]]
        va = [pos[i] for i in saved["validation_ids"]]
    except KeyError as exc:
        raise DataError(f"{path}: id {exc.args[0]!r} is not in {ds.source}") from None
    return ds.subset(tr), ds.subset(va)

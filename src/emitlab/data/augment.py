"""Rare emotions: which labels are rare, and oversampling the texts that carry them.

EMit A's training file has Fear on 1.5% of its texts (89), Anger on 6%, Sadness, Anticipation
and Surprise on 9-10%. :func:`oversample_index` repeats every text carrying one of the rare labels
``factor`` times in an epoch (the transformer's ``--oversample-rare``), so each batch sees them
more often; the loss's ``pos_weight`` and the classifier's starting bias are still computed on the
rows as they are, not on the repeated ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SettingsError

#: A label on fewer training texts than this share is rare when no list is given.
RARE_PREVALENCE = 0.10


def rare_label_mask(labels: np.ndarray, label_names: Sequence[str], names: Sequence[str] = (),
                    mask: np.ndarray | None = None, what: str = "--rare-labels") -> np.ndarray:
    """Bool per label: those in ``names``, or (``names`` empty) those with a prevalence under
    :data:`RARE_PREVALENCE` among the rows annotating them."""
    names = list(names)
    unknown = [n for n in names if n not in label_names]
    if unknown:
        raise SettingsError(f"{what}: unknown label(s) {', '.join(unknown)}; the task's labels are "
                            f"{', '.join(label_names)}")
    if names:
        return np.array([n in names for n in label_names])
    y = np.asarray(labels, dtype=np.float64)
    annotated = np.ones_like(y, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    prevalence = (y * annotated).sum(0) / np.maximum(annotated.sum(0), 1)
    return prevalence < RARE_PREVALENCE


def oversample_index(labels: np.ndarray, rare: np.ndarray, factor: int, mask: np.ndarray | None = None
                     ) -> np.ndarray:
    """Row indices in which every row holding an (annotated) positive of a ``rare`` label appears
    ``factor`` times, every other row once; ``factor`` 1 gives ``arange(n)``."""
    n = len(labels)
    if factor <= 1 or not np.any(rare):
        return np.arange(n)
    pos = np.asarray(labels, dtype=bool)
    if mask is not None:
        pos &= np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(pos[:, np.asarray(rare, dtype=bool)].any(1))
    return np.concatenate([np.arange(n), np.tile(rows, factor - 1)])

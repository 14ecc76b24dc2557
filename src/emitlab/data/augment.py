"""Rare emotions: which labels are rare, oversampling the texts that carry them, and new
copies of them with their emotion words swapped.

EMit A's training file has Fear on 1.5% of its texts (89), Anger on 6%, Sadness, Anticipation
and Surprise on 9-10%. :func:`oversample_index` repeats every text carrying one of the rare labels
``factor`` times in an epoch (the transformer's ``--oversample-rare``), so each batch sees them
more often; the loss's ``pos_weight`` and the classifier's starting bias are still computed on the
rows as they are, not on the repeated ones. :class:`EmotionWordSwap` makes new texts instead
(``--augment-rare``): in a text with a rare label, each word ELIta rates high for that emotion is
replaced with another such word (``ho paura del buio`` -> ``ho terrore del buio``), so that a copy
carries the same labels with other words.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np

from emitlab.data.elita import EMOTIONS, lexicon_bytes, read_ratings
from emitlab.errors import SettingsError

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


_TOKEN = re.compile(r"([^\W\d_]+)")


@functools.lru_cache(maxsize=1 << 16)
def _lemma(word: str) -> str:
    import simplemma

    return simplemma.lemmatize(word, lang="it").lower()


class EmotionWordSwap:
    """ELIta-guided word substitution for texts of given labels.

    ``pools[label]``: ELIta's single words rated at least ``min_rating`` (0..1) on the emotion
    dimension naming ``label`` (``paura`` -> Fear, ...); a word of a text is swapped when it, or
    its ``simplemma`` lemma, is in the pool of one of the text's ``labels``. Labels that no ELIta
    dimension names (Neutral, task B's) get no pool.
    """

    def __init__(self, label_names: Sequence[str], min_rating: float = 0.7):
        ratings = read_ratings(lexicon_bytes())
        self.pools: dict[str, list[str]] = {}
        for dim, label in EMOTIONS.items():
            if label in label_names:
                self.pools[label] = sorted(w for w, r in ratings.items() if w.isalpha() and r.get(dim, 0) >= min_rating)
        self.members = {label: set(words) for label, words in self.pools.items()}

    def swap(self, text: str, labels: Sequence[str], rng: np.random.Generator) -> str | None:
        """``text`` with every word of one of ``labels``' pools replaced by another word of that
        pool (the first letter's case kept), or None when no word is in those pools."""
        pools = [lab for lab in labels if lab in self.pools]
        parts = _TOKEN.split(text)
        changed = False
        for i in range(1, len(parts), 2):  # the odd parts are the words
            word = parts[i].lower()
            hits = [lab for lab in pools if word in self.members[lab] or _lemma(word) in self.members[lab]]
            if not hits:
                continue
            pool = self.pools[hits[int(rng.integers(len(hits)))]]
            new = pool[int(rng.integers(len(pool)))]
            if new != word:
                parts[i] = new.capitalize() if parts[i][:1].isupper() else new
                changed = True
        return "".join(parts) if changed else None


def augment_rare_rows(texts: Sequence[str], labels: np.ndarray, label_names: Sequence[str], rare: np.ndarray,
                      copies: int, seed: int, mask: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    """Up to ``copies`` swapped copies (:class:`EmotionWordSwap`) of each text holding an annotated
    positive of a ``rare`` label; returns the new texts and the rows of ``labels`` they copy (the
    copies' labels, mask and weight are those rows')."""
    swap = EmotionWordSwap(label_names)
    rng = np.random.default_rng(seed)
    pos = np.asarray(labels, dtype=bool) & (True if mask is None else np.asarray(mask, dtype=bool))
    new_texts, source = [], []
    for i in np.flatnonzero(pos[:, np.asarray(rare, dtype=bool)].any(1)):
        names = [label_names[j] for j in np.flatnonzero(pos[i] & np.asarray(rare, dtype=bool))]
        seen = {texts[i]}
        for _ in range(copies):
            text = swap.swap(texts[i], names, rng)
            if text is not None and text not in seen:
                seen.add(text)
                new_texts.append(text)
                source.append(i)
    return new_texts, np.asarray(source, dtype=np.int64)

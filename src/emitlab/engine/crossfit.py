"""Cross-fitting: out-of-fold probabilities for every training text, fold-averaged elsewhere.

Every member is fitted ``K`` times, each time on all training texts but one fold, and predicts
the fold it did not see. Every training text thus gets exactly one *out-of-fold* (OOF)
prediction from a model that never saw it, and those 5,966 rows (on EMit A) are what the
ensemble weights, the stacker, the thresholds and the decoding rules are chosen on. The test
and out-of-domain probabilities are the mean of the ``K`` fold models (bagging).

A :class:`FoldPlan` with a single fold is the quick 90/10 mode: the OOF rows are then only the
validation texts.

**Extra corpora** (:mod:`emitlab.data.extra`) are rows ``n .. n + n_extra - 1`` after the task's
``n`` training rows. They only ever train, in every fold, except the out-of-domain proxy corpus
(MultiEmotions-It): its rows get folds of their own (:func:`with_extra_rows`), so each gets one
out-of-fold prediction too (``CrossFitted.oof_extra``), the proxy score of the out-of-domain test.
Every choice (combination, calibration) is still made on the task's out-of-fold rows alone
(``plan.rows``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from emitlab.members import Member

log = logging.getLogger("emitlab")


@dataclass
class FoldPlan:
    """``folds[i] = (train_idx, heldout_idx)`` over ``n`` training rows. ``rows`` are the rows
    that receive an out-of-fold prediction (all of them with K folds, the validation split in
    the 90/10 mode), sorted."""

    folds: list[tuple[np.ndarray, np.ndarray]]
    n: int
    seed: int
    #: extra-corpus rows after the ``n`` task rows (indices ``n ..``); see the module docstring
    n_extra: int = 0

    @property
    def held(self) -> np.ndarray:
        return np.sort(np.concatenate([held for _, held in self.folds]))

    @property
    def rows(self) -> np.ndarray:
        """The task's rows with an out-of-fold prediction (every choice is made on these)."""
        held = self.held
        return held[held < self.n]

    @property
    def extra_rows(self) -> np.ndarray:
        """Extra-corpus rows with an out-of-fold prediction (the proxy corpus), as indices ``>= n``."""
        held = self.held
        return held[held >= self.n]

    @property
    def k(self) -> int:
        return len(self.folds)

    def check(self) -> None:
        """Each row is held out at most once, and never trained on in the fold holding it out."""
        held = np.concatenate([h for _, h in self.folds])
        if len(np.unique(held)) != len(held):
            raise ValueError("a row is held out by more than one fold")
        for tr, h in self.folds:
            if np.intersect1d(tr, h).size:
                raise ValueError("a fold trains on a row it holds out")
            if max(tr.max(initial=-1), h.max(initial=-1)) >= self.n + self.n_extra:
                raise ValueError("a fold names a row beyond the training rows")

    def to_dict(self) -> dict:
        fold_of = np.full(self.n + self.n_extra, -1, dtype=int)
        for i, (_, h) in enumerate(self.folds):
            fold_of[h] = i
        out = {"k": self.k, "n": self.n, "seed": self.seed, "fold_of_row": fold_of[: self.n].tolist()}
        if self.n_extra:  # -1: trains in every fold
            out["extra"] = {"n": self.n_extra, "fold_of_row": fold_of[self.n:].tolist()}
        return out


def kfold_plan(labels: np.ndarray, k: int, seed: int, source: str = "the data") -> FoldPlan:
    """K folds by multilabel iterative stratification (every row held out exactly once)."""
    from emitlab.data.split import kfold_indices

    folds = kfold_indices(labels, k, seed, source=source)
    plan = FoldPlan([(np.asarray(tr), np.asarray(te)) for tr, te in folds], len(labels), seed)
    plan.check()
    return plan


def split_plan(train_idx: np.ndarray, val_idx: np.ndarray, n: int, seed: int) -> FoldPlan:
    """The quick mode: one fold, trained on ``train_idx`` and held out on ``val_idx``."""
    plan = FoldPlan([(np.asarray(train_idx), np.asarray(val_idx))], n, seed)
    plan.check()
    return plan


def with_extra_rows(plan: FoldPlan, extra_fold_of: np.ndarray) -> FoldPlan:
    """``plan`` with extra-corpus rows appended after its ``n`` rows: ``extra_fold_of[r]`` is the fold
    that holds extra row ``r`` out, or -1 for a row that trains in every fold."""
    extra_fold_of = np.asarray(extra_fold_of, dtype=np.int64)
    if extra_fold_of.size and (extra_fold_of.min() < -1 or extra_fold_of.max() >= plan.k):
        raise ValueError(f"extra rows' folds must be -1 or 0..{plan.k - 1}")
    index = plan.n + np.arange(len(extra_fold_of))
    folds = [(np.concatenate([tr, index[extra_fold_of != i]]), np.concatenate([held, index[extra_fold_of == i]]))
             for i, (tr, held) in enumerate(plan.folds)]
    out = FoldPlan(folds, plan.n, plan.seed, n_extra=len(extra_fold_of))
    out.check()
    return out


@dataclass
class CrossFitted:
    """One member cross-fitted: OOF probabilities on ``plan.rows`` (in that order), the mean of the
    fold models' probabilities on every prediction set, the fold models themselves, and the OOF
    probabilities of the extra rows held out (``plan.extra_rows``; empty without them)."""

    name: str
    oof: np.ndarray
    preds: dict[str, np.ndarray]
    models: list[Member]
    seconds: list[float] = field(default_factory=list)
    info: list[dict] = field(default_factory=list)
    oof_extra: np.ndarray | None = None


FOLD_FILE = "fold.json"
PREDICTIONS_FILE = "fold_predictions.npz"


def fit_fold(member: Member, texts: Sequence[str], labels: np.ndarray, label_names: Sequence[str],
             train_idx: np.ndarray, n: int, mask: np.ndarray | None = None,
             sample_weight: np.ndarray | None = None, use_extra: bool = True) -> Member:
    """``member.fit`` on the rows ``train_idx`` (rows ``>= n`` are extra-corpus rows: dropped
    unless ``use_extra``; with them the member gets their ``mask``, ``sample_weight`` and which
    rows they are, ``extra_rows``)."""
    tr = np.asarray(train_idx) if use_extra else np.asarray(train_idx)[np.asarray(train_idx) < n]
    options = {}
    if (tr >= n).any():
        options = {"mask": None if mask is None else mask[tr],
                   "sample_weight": None if sample_weight is None else sample_weight[tr], "extra_rows": tr >= n}
    return member.fit([texts[j] for j in tr], labels[tr], label_names, **options)


def crossfit(
    name: str,
    make_member: Callable[[int], Member],
    texts: Sequence[str],
    labels: np.ndarray,
    label_names: Sequence[str],
    plan: FoldPlan,
    sets: dict[str, Sequence[str]],
    cache: Path | None = None,
    resume: bool = False,
    mask: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    use_extra: bool = True,
) -> CrossFitted:
    """Fit ``make_member(fold)`` on each fold's training rows, predict its held-out rows and
    every set in ``sets``. ``texts`` are the cleaned training texts, ``labels`` their 0/1 matrix
    (``plan.n`` task rows, then ``plan.n_extra`` extra-corpus rows, which come with ``mask`` and
    ``sample_weight``: see :class:`~emitlab.members.Member`). With ``use_extra=False`` the member
    trains on the task's rows alone (it still predicts the held-out extra rows).

    With ``cache``, each fold model is saved to ``cache/fold-<i>`` with its predictions (the
    export takes these folders; each is written beside and swapped in whole); with ``resume``,
    a fold already saved there is loaded, not refitted, so an interrupted run continues at the
    fold it stopped in.
    """
    from emitlab.io import atomic_folder, atomic_write_json
    from emitlab.members import load_member

    texts = list(texts)
    n_labels = labels.shape[1]
    if len(texts) != plan.n + plan.n_extra or len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts and {len(labels)} label rows for a plan of "
                         f"{plan.n} + {plan.n_extra} extra rows")
    oof_full = np.full((plan.n + plan.n_extra, n_labels), np.nan)
    sums = {s: np.zeros((len(t), n_labels)) for s, t in sets.items()}
    models, seconds, info = [], [], []
    for i, (tr, held) in enumerate(plan.folds):
        t0 = time.time()
        folder = Path(cache) / f"fold-{i}" if cache is not None else None
        done = folder is not None and (folder / FOLD_FILE).is_file()
        if resume and done:
            record = json.loads((folder / FOLD_FILE).read_text(encoding="utf-8"))
            member = load_member(folder, record["spec"])
            with np.load(folder / PREDICTIONS_FILE, allow_pickle=False) as z:
                preds = {k: z[k] for k in z.files}
            log.info("%s: fold %d/%d loaded from %s", name, i + 1, plan.k, folder)
        else:
            member = make_member(i)
            fit_fold(member, texts, labels, label_names, tr, plan.n, mask, sample_weight, use_extra)
            preds = {"heldout": member.predict_proba([texts[j] for j in held])}
            for s, t in sets.items():
                preds[s] = member.predict_proba(list(t))
            record = {"spec": None, "seconds": round(time.time() - t0, 1),
                      "info": {k: v for k, v in (getattr(member, "fit_info", {}) or {}).items()}}
            if folder is not None:
                # filled beside and swapped in whole: a fold folder's files are never rewritten in
                # place, so the export may hard-link them (export.write_export)
                with atomic_folder(folder) as tmp:
                    record["spec"] = member.save(tmp)
                    with open(tmp / PREDICTIONS_FILE, "wb") as fh:
                        np.savez(fh, **preds)
                    atomic_write_json(tmp / FOLD_FILE, record)
                if hasattr(member, "cleanup"):  # e.g. training checkpoints, no longer needed once saved
                    member.cleanup()
        oof_full[held] = preds["heldout"]
        for s in sets:
            sums[s] += preds[s]
        seconds.append(record["seconds"])
        info.append(record.get("info") or {})
        models.append(member)
        log.info("%s: fold %d/%d done (%.0f s)", name, i + 1, plan.k, seconds[-1])
    oof, oof_extra = oof_full[plan.rows], oof_full[plan.extra_rows]
    if np.isnan(oof).any() or np.isnan(oof_extra).any():  # pragma: no cover - plan.check() makes this impossible
        raise RuntimeError(f"{name}: some held-out rows got no prediction")
    return CrossFitted(name, oof, {s: v / plan.k for s, v in sums.items()}, models, seconds, info, oof_extra)

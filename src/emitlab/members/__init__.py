"""Members of the ensemble: one model family each, all behind one interface.

A member is fitted on *cleaned* texts (the run cleans once, with the run's cleaning settings;
the export cleans the same way before any member sees a text) and a 0/1 label matrix, and
returns per-label probabilities. Rows of extra corpora (:mod:`emitlab.data.extra`) come with a
``mask`` (bool, like ``labels``: False where the row's corpus does not annotate that label, which
must then not enter the loss), a ``sample_weight`` per row and ``extra_rows`` (bool per row: from an
extra corpus; the transformer may train on those first, in a stage of their own); all are None for
the task's file alone::

    member = TfidfMember(TfidfConfig()).fit(texts, labels, label_names)
    probs = member.predict_proba(texts)            # (len(texts), n_labels), float64 in [0, 1]
    spec = member.save(folder)                     # arrays + JSON only: loading runs no code
    same = load_member(folder, spec)               # same.predict_proba(texts) == probs exactly

``save`` writes every file into ``folder`` (which it creates) and returns a JSON-able ``spec``:
``{"kind": <registry key>, "config": {...}, ...}``; :func:`load_member` dispatches on ``kind``
through :data:`emitlab.registry.MEMBERS`, where every member class is registered once. A run
builds each fold's member with the class's ``for_fold(context, fold)`` (:class:`FoldContext`: the
run's settings, texts and folds), so adding a member is its own module plus one registry line.
No member pickles anything: arrays go to ``.safetensors`` or ``.npy`` (``allow_pickle=False``),
everything else to JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from emitlab.errors import ModelFormatError
from emitlab.registry import MEMBERS


@runtime_checkable
class Member(Protocol):
    """What every member implements (see the module docstring). Class attributes: ``kind`` (its
    registry name) and ``network`` (True for a member that fine-tunes a network: its folds use
    ``--transformer-folds``, it is checked for devices and disk space, and every rank of a
    multi-process launch trains it); classmethods ``for_fold(context, fold)`` and ``load(folder,
    spec, **kwargs)``."""

    kind: str

    def fit(self, texts: Sequence[str], labels: np.ndarray, label_names: Sequence[str],
            mask: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
            extra_rows: np.ndarray | None = None) -> "Member": ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def save(self, folder: Path) -> dict[str, Any]: ...


@dataclass
class FoldContext:
    """What a run hands a member class to build the model of one fold (``for_fold``).

    ``configs`` maps each settings class to the run's instance (``context.config(TrainConfig)``);
    ``workdir`` is this member's scratch folder in the run (checkpoints, logs); ``texts`` and
    ``labels`` are every training row (the task's ``n_task_rows`` first, then extra corpora) and
    ``folds`` the ``(train, held)`` row indices of each fold; ``select_on_held``: the 90/10 mode,
    where a member may choose its best epoch on the held task rows (never in cross-fitting, where
    those rows must be predicted honestly)."""

    configs: Mapping[type, Any]
    workdir: Path
    texts: Sequence[str]
    labels: np.ndarray
    folds: Sequence[tuple[np.ndarray, np.ndarray]]
    n_task_rows: int
    seed: int
    resume: bool = False
    select_on_held: bool = False

    def config(self, cls: type) -> Any:
        return self.configs[cls]

    def held_task_rows(self, fold: int) -> np.ndarray:
        """The held rows of ``fold`` that come from the task's file (extra-corpus rows choose nothing)."""
        held = self.folds[fold][1]
        return held[held < self.n_task_rows]


def load_member(folder: Path, spec: dict[str, Any], **kwargs: Any) -> Member:
    """Rebuild a saved member from ``folder`` and the ``spec`` its ``save`` returned."""
    kind = spec.get("kind")
    if kind not in MEMBERS:
        raise ModelFormatError(f"{folder}: unknown member kind {kind!r} (known: {', '.join(MEMBERS)})")
    return MEMBERS.get(kind).load(Path(folder), spec, **kwargs)


def fold_mean_proba(folds: Sequence[Member], texts: Sequence[str]) -> np.ndarray:
    """The mean of a member's fold models' probabilities for (cleaned) ``texts``. A member class
    with a ``mean_proba(folds, texts)`` classmethod shares work across its folds (the TF-IDF folds
    split each text into n-grams once, the lexicon folds match ELIta once) for the same numbers."""
    shared = getattr(type(folds[0]), "mean_proba", None)
    if shared is not None and all(type(fm) is type(folds[0]) for fm in folds):
        return shared(folds, texts)
    return sum(fm.predict_proba(texts) for fm in folds) / len(folds)


def check_member_files(folder: Path, spec: dict[str, Any]) -> None:
    """Check a saved member's files before loading it (a kind may define ``check_files``: the
    transformer checks its weights, tokenizer and JSON files, so that a damaged one is named in one
    line before any network of an ensemble is loaded); an unknown kind is left to :func:`load_member`."""
    kind = spec.get("kind")
    check = getattr(MEMBERS.get(kind), "check_files", None) if kind in MEMBERS else None
    if check is not None:
        check(Path(folder), spec)

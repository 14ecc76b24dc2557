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
``{"kind": <registry key>, "config": {...}, ...}``; :func:`load_member` dispatches on ``kind``.
No member pickles anything: arrays go to ``.safetensors`` or ``.npy`` (``allow_pickle=False``),
everything else to JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import ModelFormatError


@runtime_checkable
class Member(Protocol):
    """What every member implements (see the module docstring)."""

    kind: str

    def fit(self, texts: Sequence[str], labels: np.ndarray, label_names: Sequence[str],
            mask: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
            extra_rows: np.ndarray | None = None) -> "Member": ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def save(self, folder: Path) -> dict[str, Any]: ...


def member_classes() -> dict[str, type]:
    """Registry: ``kind`` -> member class (imported lazily: the transformer pulls in torch)."""
    from .lexicon import LexiconMember
    from .tfidf import TfidfMember
    from .transformer import TransformerMember

    return {cls.kind: cls for cls in (TfidfMember, LexiconMember, TransformerMember)}


def load_member(folder: Path, spec: dict[str, Any], **kwargs: Any) -> Member:
    """Rebuild a saved member from ``folder`` and the ``spec`` its ``save`` returned."""
    kind = spec.get("kind")
    classes = member_classes()
    if kind not in classes:
        raise ModelFormatError(f"{folder}: unknown member kind {kind!r} (known: {', '.join(sorted(classes))})")
    return classes[kind].load(Path(folder), spec, **kwargs)


def check_member_files(folder: Path, spec: dict[str, Any]) -> None:
    """Check a saved member's files before loading it (a kind may define ``check_files``: the
    transformer checks its weights, tokenizer and JSON files, so that a damaged one is named in one
    line before any network of an ensemble is loaded); an unknown kind is left to :func:`load_member`."""
    cls = member_classes().get(spec.get("kind"))
    check = getattr(cls, "check_files", None)
    if check is not None:
        check(Path(folder), spec)

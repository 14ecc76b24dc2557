"""Predicting with an exported model from Python.

    >>> clf = EmotionClassifier.from_pretrained("runs/full/model")      # or the .zip
    >>> clf.predict(["Che bella giornata!"])
    [{"labels": ["Joy"], "probabilities": {...}}]

An export holds the whole ensemble (see :mod:`emitlab.export`): every member's fold models,
the combiner and the calibrated decoder. :meth:`EmotionClassifier.predict_proba` cleans the
texts once, averages each member's fold models, combines the members and returns
probabilities; :meth:`~EmotionClassifier.decode` applies thresholds and decoding rules.

Transformer members run on a *backend*: ``"torch"`` (default) or, through onnxruntime,
``"onnx"`` (fp32) and ``"onnx-int8"``; the cheap members run beside them in numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emitlab.data.cleaning import TextCleaner
from emitlab.engine.calibration import Decoder
from emitlab.errors import ModelFormatError, SettingsError
from emitlab.export import META_FILE, read_meta, resolve_export
from emitlab.members import fold_mean_proba
from emitlab.registry import BACKENDS, MEMBERS
from emitlab.settings import CleaningConfig


class EmotionClassifier:
    """A calibrated multilabel emotion classifier: members (each a list of fold models), a
    combiner and a decoder."""

    def __init__(self, members: list[tuple[str, list[Any]]], combiner, meta: dict, backend: str = "torch"):
        self.members = members
        self.combiner = combiner
        self.meta = meta
        self.backend = backend
        self.label_names: list[str] = list(meta["labels"])
        self.decoder = Decoder.from_dict(meta["decoder"])
        self.cleaner = TextCleaner(CleaningConfig.from_dict(meta["cleaning"]))
        marker = meta.get("domain_marker") or {}
        #: --domain-marker exports: domain -> the prefix of a cleaned text; ``domain`` is the one used
        self.markers: dict[str, str] = dict(marker.get("markers") or {})
        self.domain: str | None = marker.get("default")
        if self.domain is not None and not isinstance(self.markers.get(self.domain), str):
            raise ModelFormatError(f"{META_FILE}: domain_marker names the default domain {self.domain!r} "
                                   "without a marker for it")

    def set_domain(self, domain: str | None) -> None:
        """Predict as texts of ``domain`` (an export trained with ``--domain-marker``: e.g. ``youtube``
        for comments like EMit's out-of-domain file); ``None`` keeps the export's default."""
        if domain is None:
            return
        if domain not in self.markers:
            known = ", ".join(sorted(self.markers)) or "none: it was trained without --domain-marker"
            raise SettingsError(f"--domain {domain!r}: this export knows the domains {known}")
        self.domain = domain

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None,
                        backend: str = "torch") -> "EmotionClassifier":
        """Load an export folder or zip. ``backend="onnx"`` / ``"onnx-int8"`` run the transformer
        members with onnxruntime on CPU (their ONNX files are exported first if missing)."""
        from emitlab.engine.ensemble import combiner_from_dict

        if backend not in BACKENDS:
            raise SettingsError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if getattr(BACKENDS.get(backend), "cpu_only", False) and device not in (None, "cpu"):
            # checked here, before any fold is loaded
            raise SettingsError(f"the {backend} backend runs on CPU with onnxruntime; "
                                f"device {device!r} needs backend 'torch'")
        from emitlab.members import check_member_files

        folder = resolve_export(path)
        meta = read_meta(folder)
        for m in meta["members"]:  # every fold's files first: a damaged one is named before any loading
            for fold in m["folds"]:
                sub = folder / fold["path"]
                if not sub.resolve().is_relative_to(folder.resolve()):
                    raise ModelFormatError(f"{folder}: member path {fold['path']!r} leaves the export folder")
                if not sub.is_dir():
                    raise ModelFormatError(f"{sub}: missing (the export lists it in its {META_FILE})")
                check_member_files(sub, fold["spec"])
        members = []
        for m in meta["members"]:
            folds = [_load_fold(folder / fold["path"], fold["spec"], backend, device) for fold in m["folds"]]
            for fm in folds:
                if list(getattr(fm, "label_names", meta["labels"])) != list(meta["labels"]):
                    raise ModelFormatError(f"{folder / m['folds'][0]['path']}: labels {fm.label_names} do not match "
                                           f"the export's {meta['labels']}")
            members.append((m["name"], folds))
        combiner = combiner_from_dict(meta["combiner"])
        return cls(members, combiner, meta, backend)

    @property
    def transformer_folds(self) -> list[Any]:
        """Every fold model of every transformer member (what the ONNX backends run)."""
        return [fm for _, folds in self.members for fm in folds if getattr(fm, "kind", "") == "transformer"]

    def member_probas(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Each member's probabilities (the mean of its fold models) for raw ``texts``."""
        cleaned = self.cleaner.clean_many(list(texts))
        if self.domain is not None:
            cleaned = [self.markers[self.domain] + t for t in cleaned]
        return {name: fold_mean_proba(folds, cleaned) for name, folds in self.members}

    def predict_proba(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Per-label probabilities, ``(len(texts), n_labels)``, in the input order."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.label_names)))
        if batch_size:
            for fm in self.transformer_folds:
                fm.config.eval_batch_size = int(batch_size)
        per_member = self.member_probas(texts)
        return self.combiner.combine([per_member[name] for name, _ in self.members])

    def decode(self, probs: np.ndarray) -> np.ndarray:
        return self.decoder.decode(probs)

    def predict(self, texts: Sequence[str] | str, batch_size: int | None = None) -> list[dict[str, Any]]:
        """For each text: ``{"labels": [...], "probabilities": {label: p}}``."""
        single = isinstance(texts, str)
        probs = self.predict_proba([texts] if single else texts, batch_size)
        return rows_from_probs(probs, self.decode(probs), self.label_names)


def _load_fold(folder: Path, spec: dict, backend: str, device: str | None):
    """One fold model; anything unreadable in its files becomes a one-line ModelFormatError."""
    from safetensors import SafetensorError

    from emitlab.members import load_member

    kind = spec.get("kind")
    kwargs = {}
    if kind in MEMBERS and getattr(MEMBERS.get(kind), "network", False):
        kwargs = {"backend": backend, "device": device}
        if getattr(BACKENDS.get(backend), "onnx_export", False):  # a missing ONNX file: exported once, here
            from emitlab.inference.onnx_export import ensure_backend_file

            ensure_backend_file(folder, backend, device)
    try:
        return load_member(folder, spec, **kwargs)
    except (ModelFormatError, SettingsError):
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as exc:
        # the HF/safetensors loaders raise many kinds of errors for cut or mismatched files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"{folder}: cannot load this {spec.get('kind')} member ({first})") from exc


def rows_from_probs(probs: np.ndarray, pred: np.ndarray, label_names: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"labels": [n for n, on in zip(label_names, row) if on],
         "probabilities": {n: round(float(p), 6) for n, p in zip(label_names, prow)}}
        for prow, row in zip(probs, pred)
    ]

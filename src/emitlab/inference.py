"""Exported models: writing them atomically and predicting with them from Python.

An export is a folder holding the encoder as a Hugging Face ``save_pretrained`` folder (so
``AutoModel.from_pretrained`` loads it), its tokenizer, the classifier head
(``classifier.safetensors``) and ``emitlab.json``: labels, thresholds and decoding rules,
cleaning config, input prefix, max length, pooling, metrics and library versions.

    >>> clf = EmotionClassifier.from_pretrained("runs/me5/model")
    >>> clf.predict(["Che bella giornata!"])

The network runs on a *backend*: ``"torch"`` (the default) or, through onnxruntime, ``"onnx"``
(fp32) and ``"onnx-int8"`` (dynamically quantised weights); see :mod:`emitlab.onnx_export`.
Every backend only maps a padded batch of token ids to logits: cleaning, tokenisation,
length-sorted batching, the sigmoid and the thresholds are shared, so the backends agree.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from .calibration import Decoder
from .data.cleaning import CleaningConfig, TextCleaner

META_FILE = "emitlab.json"
FORMAT_VERSION = 1
#: Tokenizer outputs that the network takes (others, e.g. ``special_tokens_mask``, are dropped).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BACKENDS = ("torch", "onnx", "onnx-int8")


def encode_texts(tokenizer, texts: Sequence[str], prefix: str, max_length: int, cleaner: TextCleaner | None) -> dict:
    """Clean, prefix and tokenize (no padding: batches are padded when they are formed)."""
    cleaned = cleaner.clean_many(texts) if cleaner else list(texts)
    return tokenizer([prefix + t for t in cleaned], truncation=True, max_length=max_length)


def export_meta(task, label_names, scored, cleaner, prefix, tcfg, train_stats) -> dict:
    """What ``emitlab.json`` records beside the weights."""
    from .config import to_jsonable
    from .runs import versions

    return {
        "task": task,
        "labels": list(label_names),
        "model_kind": scored.name,
        "decoder": scored.calibration.decoder.to_dict(),
        "cleaning": cleaner.to_dict(),
        "input_prefix": prefix,
        "max_length": tcfg.max_length,
        "pooling": tcfg.pooling,
        "base_model": tcfg.model,
        "train_config": to_jsonable(tcfg),
        "metrics": {k: scored.metrics[k]["macro_f1"] for k in ("validation", "test", "ood") if k in scored.metrics},
        "training": train_stats,
        "versions": versions(),
    }


def write_export(dest: Path, model, tokenizer, meta: dict, make_zip: bool = True,
                 extra_files: dict[str, Path] | None = None) -> Path:
    """Write the export to a temporary sibling folder, then rename it into place, so that a
    crash never leaves a half model where a loadable one is expected."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        model.save(tmp)
        tokenizer.save_pretrained(tmp)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        (tmp / META_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2, ensure_ascii=False))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_zip:
        zip_tmp = dest.with_name(dest.name + ".zip.tmp")
        # stored, not deflated: weights barely compress and deflating 0.5 GB takes a minute
        with zipfile.ZipFile(zip_tmp, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(dest.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(dest))
        zip_tmp.replace(dest.with_name(dest.name + ".zip"))
    return dest


def resolve_export(path: str | Path) -> Path:
    """The export folder for ``path`` (a folder, or its .zip extracted once beside it)."""
    path = Path(path)
    if path.suffix == ".zip" and path.is_file():
        path = _unzip_cached(path)
    if not (path / META_FILE).is_file():
        raise FileNotFoundError(f"{path}: not an emitlab export (no {META_FILE})")
    return path


def read_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / META_FILE).read_text())


def _unzip_cached(path: Path) -> Path:
    """Extract an exported zip next to itself once (``<name>.unzipped``) and reuse it."""
    target = path.with_name(path.stem + ".unzipped")
    stamp = target / ".source-mtime"
    mtime = str(path.stat().st_mtime_ns)
    if stamp.is_file() and stamp.read_text() == mtime:
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=path.parent))
    with zipfile.ZipFile(path) as zf:
        zf.extractall(tmp)
    (tmp / ".source-mtime").write_text(mtime)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


class Backend(Protocol):
    """Maps one padded batch (``{name: int64 array (batch, seq)}``, keys from
    :data:`MODEL_INPUTS`) to logits ``(batch, n_labels)`` as a numpy array or torch tensor."""

    name: str

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray | torch.Tensor: ...


class TorchBackend:
    """The PyTorch :class:`~emitlab.models.transformer.EmotionModel` on ``device``."""

    name = "torch"

    def __init__(self, model, device: str | torch.device | None = None):
        self.device = torch.device(device or "cpu")
        self.model = model.eval().to(self.device)

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        inputs = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)).to(self.device) for k, v in batch.items()}
        return self.model(**inputs)["logits"]


class EmotionClassifier:
    """A calibrated multilabel emotion classifier loaded from an export folder or zip.

    ``model`` is the torch network; it may be ``None`` when ``engine`` (a :class:`Backend`,
    e.g. :class:`emitlab.onnx_export.OnnxBackend`) computes the logits instead.
    """

    def __init__(self, model, tokenizer, meta: dict, device: str | None = None, engine: Backend | None = None):
        if engine is None:
            if model is None:
                raise ValueError("EmotionClassifier needs a model or an engine")
            engine = TorchBackend(model, device)
        self.engine = engine
        self.model = model.eval() if model is not None else None
        self.tokenizer = tokenizer
        self.meta = meta
        self.label_names: list[str] = list(meta["labels"])
        self.decoder = Decoder.from_dict(meta["decoder"])
        self.cleaner = TextCleaner(CleaningConfig.from_dict(meta["cleaning"]))
        self.input_prefix: str = meta.get("input_prefix", "")
        self.max_length: int = int(meta.get("max_length", 128))
        self.device = getattr(engine, "device", torch.device("cpu"))
        #: with an ensemble export: (TF-IDF baseline, weight on the transformer)
        self.ensemble = None

    @property
    def backend(self) -> str:
        """``"torch"``, ``"onnx"`` or ``"onnx-int8"``."""
        return self.engine.name

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, backend: str = "torch") -> "EmotionClassifier":
        """Load an export folder or zip. ``backend="onnx"`` / ``"onnx-int8"`` run the network with
        onnxruntime on CPU (the ONNX file is exported into the folder first if it is missing)."""
        from transformers import AutoTokenizer

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        path = resolve_export(path)
        meta = read_meta(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if backend == "torch":
            from .models.transformer import EmotionModel

            model = EmotionModel.load(path, len(meta["labels"]), meta.get("pooling", "mean"))
            clf = cls(model, tokenizer, meta, device)
        else:
            from .onnx_export import load_onnx_backend

            engine, meta = load_onnx_backend(path, backend, device)
            clf = cls(None, tokenizer, meta, engine=engine)
        if meta.get("ensemble"):
            from .models.baseline import TfidfBaseline

            ens = meta["ensemble"]
            clf.ensemble = (TfidfBaseline.load(path / ens["baseline_file"]), float(ens["weight_on_transformer"]))
        return clf

    def padded_batches(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
                       ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """``(positions, batch)`` pairs: texts cleaned, prefixed and tokenized, sorted by length,
        cut into batches and padded; ``batch`` holds int64 arrays keyed by :data:`MODEL_INPUTS`."""
        texts = list(texts)
        if not texts:
            return
        enc = encode_texts(self.tokenizer, texts, self.input_prefix, self.max_length, self.cleaner)
        keys = [k for k in enc.keys() if k in MODEL_INPUTS]
        order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="predict", unit="batch")
        for start in starts:
            idx = order[start:start + batch_size]
            padded = self.tokenizer.pad([{k: enc[k][i] for k in keys} for i in idx], return_tensors="np")
            yield idx, {k: np.asarray(padded[k], dtype=np.int64) for k in keys}

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Per-label probabilities, ``(len(texts), n_labels)``. Texts are sorted by length and
        batched so that little padding is computed; the output keeps the input order."""
        texts = list(texts)
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float64)
        with torch.inference_mode():
            for idx, batch in self.padded_batches(texts, batch_size, progress):
                logits = torch.as_tensor(self.engine(batch)).float()
                out[idx] = torch.sigmoid(logits).cpu().numpy()
        if self.ensemble is not None:
            baseline, w = self.ensemble
            out = (1 - w) * baseline.predict_proba(self.cleaner.clean_many(texts)) + w * out
        return out

    def decode(self, probs: np.ndarray) -> np.ndarray:
        return self.decoder.decode(probs)

    def predict(self, texts: Sequence[str] | str, batch_size: int = 64) -> list[dict[str, Any]]:
        """For each text: ``{"labels": [...], "probabilities": {label: p}}``."""
        single = isinstance(texts, str)
        probs = self.predict_proba([texts] if single else texts, batch_size)
        return rows_from_probs(probs, self.decode(probs), self.label_names)


def rows_from_probs(probs: np.ndarray, pred: np.ndarray, label_names: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"labels": [n for n, on in zip(label_names, row) if on],
         "probabilities": {n: round(float(p), 6) for n, p in zip(label_names, prow)}}
        for prow, row in zip(probs, pred)
    ]


def read_texts(path: Path | None, texts: Iterable[str], text_col: str = "text") -> tuple[list[str], list[str]]:
    """Texts from CLI arguments, a CSV/JSONL file or stdin lines; returns (ids, texts)."""
    from .data.loading import load_table

    if path is not None:
        ds = load_table(path, text_col=text_col, id_col="id")
        return ds.ids, ds.texts
    texts = [t for t in texts if t.strip()]
    return [str(i) for i in range(len(texts))], texts

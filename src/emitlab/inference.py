"""Exported models: writing them atomically and predicting with them from Python.

An export is a folder holding the encoder as a Hugging Face ``save_pretrained`` folder (so
``AutoModel.from_pretrained`` loads it), its tokenizer, the classifier head
(``classifier.safetensors``) and ``emitlab.json``: labels, thresholds and decoding rules,
cleaning config, input prefix, max length, pooling, metrics and library versions.

    >>> clf = EmotionClassifier.from_pretrained("runs/me5/model")
    >>> clf.predict(["Che bella giornata!"])
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .calibration import Decoder
from .data.cleaning import CleaningConfig, TextCleaner

META_FILE = "emitlab.json"
FORMAT_VERSION = 1


def encode_texts(tokenizer, texts: Sequence[str], prefix: str, max_length: int, cleaner: TextCleaner | None) -> dict:
    """Clean, prefix and tokenize (no padding: batches are padded when they are formed)."""
    cleaned = cleaner.clean_many(texts) if cleaner else list(texts)
    return tokenizer([prefix + t for t in cleaned], truncation=True, max_length=max_length)


def write_export(dest: Path, model, tokenizer, meta: dict, make_zip: bool = True) -> Path:
    """Write the export to a temporary sibling folder, then rename it into place, so that a
    crash never leaves a half model where a loadable one is expected."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        model.save(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2, ensure_ascii=False))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_zip:
        zip_tmp = dest.with_name(dest.name + ".zip.tmp")
        with zipfile.ZipFile(zip_tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(dest.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(dest))
        zip_tmp.replace(dest.with_name(dest.name + ".zip"))
    return dest


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


class EmotionClassifier:
    """A calibrated multilabel emotion classifier loaded from an export folder or zip."""

    def __init__(self, model, tokenizer, meta: dict, device: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.label_names: list[str] = list(meta["labels"])
        self.decoder = Decoder.from_dict(meta["decoder"])
        self.cleaner = TextCleaner(CleaningConfig.from_dict(meta["cleaning"]))
        self.input_prefix: str = meta.get("input_prefix", "")
        self.max_length: int = int(meta.get("max_length", 128))
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None) -> "EmotionClassifier":
        from transformers import AutoTokenizer

        from .models.transformer import EmotionModel

        path = Path(path)
        if path.suffix == ".zip" and path.is_file():
            path = _unzip_cached(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: not an emitlab export (no {META_FILE})")
        meta = json.loads(meta_path.read_text())
        model = EmotionModel.load(path, len(meta["labels"]), meta.get("pooling", "mean"))
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, meta, device)

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Per-label probabilities, ``(len(texts), n_labels)``. Texts are sorted by length and
        batched so that little padding is computed; the output keeps the input order."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.label_names)))
        enc = encode_texts(self.tokenizer, texts, self.input_prefix, self.max_length, self.cleaner)
        order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float64)
        batches = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="predict", unit="batch")
        for start in batches:
            idx = order[start:start + batch_size]
            features = [{k: enc[k][i] for k in enc.keys()} for i in idx]
            batch = self.tokenizer.pad(features, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            logits = self.model(**batch)["logits"].float()
            out[idx] = torch.sigmoid(logits).cpu().numpy()
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

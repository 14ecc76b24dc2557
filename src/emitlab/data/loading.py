"""Loading and validating EMit and other multilabel text collections.

Every problem found in the input is reported as a :class:`DataError` whose message names the
file, the row (1-based data row, header excluded) and the column, so that a user can fix the
file; rows are never dropped silently. Files are read by :mod:`emitlab.data.readers` (CSV,
JSON Lines, JSON, Parquet). Three kinds of broken file that pandas would accept are refused too:
a CSV header naming a column twice (pandas would rename the second ``Anger.1`` and it would be
ignored; refused by the reader), a file with a header but no data rows, and a NUL byte in an id
or a text (social-media text never holds one: it means a corrupt or binary file, not a text to
keep).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from emitlab.data.readers import check_columns, read_frame
from emitlab.errors import DataError  # re-exported: callers import it from here
from emitlab.labels import NEUTRAL, labels_for_task


@dataclass
class TextDataset:
    """Texts with optional multi-hot labels (``labels[i, j] == 1``: text *i* has label *j*)."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray | None
    label_names: list[str]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.texts):
            raise ValueError("ids and texts differ in length")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (len(self.texts), len(self.label_names)):
                raise ValueError(
                    f"labels have shape {self.labels.shape}, expected "
                    f"({len(self.texts)}, {len(self.label_names)})"
                )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def subset(self, index: Sequence[int] | np.ndarray) -> "TextDataset":
        index = np.asarray(index, dtype=np.int64)
        return TextDataset(
            ids=[self.ids[i] for i in index],
            texts=[self.texts[i] for i in index],
            labels=None if self.labels is None else self.labels[index],
            label_names=list(self.label_names),
            source=self.source,
        )


@dataclass
class EmitData:
    """The parts of an EMit-style corpus. Only ``train`` is required."""

    task: str
    label_names: list[str]
    train: TextDataset
    test: TextDataset | None = None
    test_ood: TextDataset | None = None
    test_nolabel: TextDataset | None = None
    ood_nolabel: TextDataset | None = None
    warnings: list[str] = field(default_factory=list)
    #: extra labelled corpora that only train (:mod:`emitlab.data.extra`), after ``--extra-data``
    extra: list = field(default_factory=list)
    #: the out-of-domain proxy corpus when it is not one of ``extra``: scored zero-shot
    proxy: object | None = None
    #: the proxy corpus' rows that ``--extra-data-labels`` leaves out of training when it is one of
    #: ``extra``: predicted by every fold model and scored with its held-out rows
    proxy_untrained: object | None = None

    @property
    def prediction_sets(self) -> dict[str, TextDataset]:
        """Sets that get an official submission file: in-domain test and out-of-domain."""
        out: dict[str, TextDataset] = {}
        test = self.test or self.test_nolabel
        if test is not None:
            out["test"] = test
        ood = self.test_ood or self.ood_nolabel
        if ood is not None:
            out["ood"] = ood
        return out


# --------------------------------------------------------------------------------------
# Validating tables


def _row_list(rows: np.ndarray | list[int], limit: int = 5) -> str:
    rows = [int(r) + 1 for r in rows]
    shown = ", ".join(map(str, rows[:limit]))
    return shown + (f" (and {len(rows) - limit} more)" if len(rows) > limit else "")


def _check_no_nul(df: pd.DataFrame, cols: Sequence[str], name: str) -> None:
    for col in cols:
        nul = df[col].map(lambda v: isinstance(v, str) and "\x00" in v).to_numpy(dtype=bool)
        if nul.any():
            rows = np.flatnonzero(nul)
            raise DataError(
                f"{name}: row {rows[0] + 1}, column {col!r}: NUL byte (\\x00) in the value; the file is "
                f"probably corrupt ({len(rows)} such row(s): {_row_list(rows)})"
            )


def _parse_label_columns(df: pd.DataFrame, label_cols: Sequence[str], name: str) -> np.ndarray:
    out = np.zeros((len(df), len(label_cols)), dtype=np.int64)
    for j, col in enumerate(label_cols):
        values = df[col]
        as_num = pd.to_numeric(values, errors="coerce")
        bad = ~as_num.isin([0, 1])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{name}: row {i + 1}, column {col!r}: label value {values.iloc[i]!r} is not 0 or 1"
                f" ({int(bad.sum())} such row(s): {_row_list(np.flatnonzero(bad.to_numpy()))})"
            )
        out[:, j] = as_num.to_numpy().astype(np.int64)
    return out


def _parse_label_lists(
    df: pd.DataFrame, col: str, label_names: Sequence[str] | None, name: str
) -> tuple[np.ndarray, list[str]]:
    lists: list[list[str]] = []
    for i, value in enumerate(df[col].tolist()):
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise DataError(f"{name}: row {i + 1}, column {col!r}: cannot parse {value!r}") from None
            else:
                value = [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
        elif value is None or (isinstance(value, float) and np.isnan(value)):
            value = []
        lists.append([str(v) for v in value])
    names = list(label_names) if label_names else sorted({v for row in lists for v in row})
    index = {n: j for j, n in enumerate(names)}
    out = np.zeros((len(lists), len(names)), dtype=np.int64)
    for i, row in enumerate(lists):
        for v in row:
            if v not in index:
                raise DataError(
                    f"{name}: row {i + 1}, column {col!r}: unknown label {v!r}; "
                    f"known labels: {', '.join(names)}"
                )
            out[i, index[v]] = 1
    return out, names


def dataset_from_frame(
    df: pd.DataFrame,
    name: str,
    text_col: str = "text",
    id_col: str | None = "id",
    label_cols: Sequence[str] | None = None,
    label_list_col: str | None = None,
    label_names: Sequence[str] | None = None,
) -> TextDataset:
    """Validate a table and turn it into a :class:`TextDataset`.

    Labels come either from one 0/1 column per label (``label_cols``) or from one column
    holding a list of label names (``label_list_col``); with neither, the set is unlabelled.
    A table without rows, or with a NUL byte in an id or a text, is a :class:`DataError`.
    """
    if label_cols and label_list_col:
        raise DataError("give either label columns or one label-list column, not both")
    if len(df) == 0:
        raise DataError(f"{name}: 0 data rows (a header only); at least 1 is needed")
    needed = [text_col] + ([id_col] if id_col and id_col in df.columns else [])
    needed += list(label_cols or []) + ([label_list_col] if label_list_col else [])
    check_columns(df.columns, needed, name)

    texts = df[text_col]
    empty = texts.isna().to_numpy() | texts.astype(str).str.strip().eq("").to_numpy()
    if empty.any():
        rows = np.flatnonzero(empty)
        raise DataError(
            f"{name}: row {rows[0] + 1}, column {text_col!r}: empty or missing text "
            f"({len(rows)} such row(s): {_row_list(rows)})"
        )
    _check_no_nul(df, [text_col] + ([id_col] if id_col and id_col in df.columns else []), name)
    if id_col and id_col in df.columns:
        ids = df[id_col]
        if ids.isna().any():
            rows = np.flatnonzero(ids.isna().to_numpy())
            raise DataError(f"{name}: row {rows[0] + 1}, column {id_col!r}: missing id")
        ids = ids.astype(str)
        dup = ids.duplicated(keep="first").to_numpy()
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            first = int(np.flatnonzero((ids == ids.iloc[i]).to_numpy())[0])
            raise DataError(
                f"{name}: row {i + 1}, column {id_col!r}: duplicate id {ids.iloc[i]!r} "
                f"(first seen at row {first + 1}; {int(dup.sum())} duplicate(s) in all)"
            )
        id_list = ids.tolist()
    else:
        id_list = [str(i) for i in range(len(df))]

    labels = None
    names = list(label_names or label_cols or [])
    if label_cols:
        labels = _parse_label_columns(df, label_cols, name)
    elif label_list_col:
        labels, names = _parse_label_lists(df, label_list_col, label_names, name)
    return TextDataset(
        ids=id_list, texts=texts.astype(str).tolist(), labels=labels, label_names=names, source=name
    )


def load_table(
    path: str | Path,
    text_col: str = "text",
    id_col: str | None = "id",
    label_cols: Sequence[str] | None = None,
    label_list_col: str | None = None,
    label_names: Sequence[str] | None = None,
) -> TextDataset:
    """Load any CSV / JSONL / JSON / Parquet file with the given columns."""
    path = Path(path)
    df = read_frame(path, str(path))
    return dataset_from_frame(df, str(path), text_col, id_col, label_cols, label_list_col, label_names)


def label_warnings(ds: TextDataset) -> list[str]:
    """Facts about the labels that are legal but worth telling (never silently changed)."""
    if ds.labels is None:
        return []
    out = []
    none = np.flatnonzero(ds.labels.sum(1) == 0)
    if len(none) and NEUTRAL in ds.label_names:
        out.append(f"{ds.source}: {len(none)} row(s) with no label at all: rows {_row_list(none)}")
    if NEUTRAL in ds.label_names:
        j = ds.label_names.index(NEUTRAL)
        mixed = np.flatnonzero((ds.labels[:, j] == 1) & (ds.labels.sum(1) > 1))
        if len(mixed):
            out.append(f"{ds.source}: {len(mixed)} row(s) with Neutral and another label: rows {_row_list(mixed)}")
    return out


# --------------------------------------------------------------------------------------
# EMit

EMIT_FILES = {
    "train_A": "emit_train_A.csv",
    "train_B": "emit_train_B.csv",
    "test": "emit_test.csv",
    "test_ood": "emit_test_ood.csv",
    "test_nolabel": "emit_test_nolabel.csv",
    "ood_nolabel": "emit_test_nolabel_out_of_domain.csv",
}
EMIT_ZIPS = ("emit_2023-v1.zip", "emit_2023-test.zip", "emit_2023-test-labels.zip")
PASSWORD_ENV = "EMITLAB_ZIP_PASSWORD"


class _EmitFiles:
    """Finds EMit members among plain CSVs in a folder or inside the official zips."""

    def __init__(self, source: Path, password: str | None):
        self.source = source
        self.password = password if password is not None else os.environ.get(PASSWORD_ENV)
        self.plain: dict[str, Path] = {}
        self.zipped: dict[str, Path] = {}
        zips: list[Path] = []
        if source.is_dir():
            for key, fname in EMIT_FILES.items():
                if (source / fname).is_file():
                    self.plain[fname] = source / fname
            zips = [source / z for z in EMIT_ZIPS if (source / z).is_file()]
            zips += sorted(p for p in source.glob("*.zip") if p not in zips)
        elif source.suffix.lower() == ".zip" and source.is_file():
            zips = [source]
        else:
            raise DataError(f"{source}: not found (expected a folder with the EMit CSVs or an EMit zip)")
        for z in zips:
            try:
                with zipfile.ZipFile(z) as zf:
                    for member in zf.namelist():
                        base = Path(member).name
                        if base in EMIT_FILES.values() and base not in self.plain:
                            self.zipped.setdefault(base, z)
            except zipfile.BadZipFile:
                raise DataError(f"{z}: not a valid zip file") from None

    def has(self, fname: str) -> bool:
        return fname in self.plain or fname in self.zipped

    def read(self, fname: str) -> bytes:
        if fname in self.plain:
            return self.plain[fname].read_bytes()
        zpath = self.zipped[fname]
        with zipfile.ZipFile(zpath) as zf:
            member = next(m for m in zf.namelist() if Path(m).name == fname)
            encrypted = bool(zf.getinfo(member).flag_bits & 0x1)
            if encrypted and not self.password:
                raise DataError(
                    f"{zpath}: {fname} is password-protected; pass --zip-password or set "
                    f"{PASSWORD_ENV} (the organizers give the password through their form)"
                )
            try:
                return zf.read(member, pwd=self.password.encode() if encrypted else None)
            except RuntimeError as exc:
                if "password" in str(exc).lower():
                    raise DataError(f"{zpath}: wrong password for {fname}") from None
                raise
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                # ZipCrypto lets about 1 in 256 wrong passwords pass the header check;
                # those then fail decompression or the CRC.
                raise DataError(f"{zpath}: wrong password for {fname} ({exc})") from None

    def frame(self, fname: str) -> pd.DataFrame:
        where = self.plain.get(fname) or f"{self.zipped[fname]}:{fname}"
        return read_frame(self.read(fname), str(where))

    def where(self, fname: str) -> str:
        return str(self.plain.get(fname) or f"{self.zipped[fname]}:{fname}")


def load_emit(source: str | Path, task: str = "A", zip_password: str | None = None) -> EmitData:
    """Load EMit from a folder of CSVs, the official zip(s), or a Hugging Face dataset id.

    ``source`` may be ``hf:<dataset id>`` (or an id that is not a local path) to use the
    ``datasets`` library; that needs network access to the Hub or a local HF cache.
    """
    task = task.upper()
    label_names = labels_for_task(task)
    text = str(source)
    if text.startswith("hf:") or (not Path(text).exists() and "/" in text and not text.startswith((".", "/"))):
        return load_emit_hf(text.removeprefix("hf:"), task)
    files = _EmitFiles(Path(source), zip_password)
    train_file = EMIT_FILES[f"train_{task}"]
    if not files.has(train_file):
        raise DataError(
            f"{source}: no {train_file} (neither as a CSV nor inside an EMit zip); see the README "
            "for how to obtain EMit"
        )

    def labelled(fname: str) -> TextDataset:
        return dataset_from_frame(files.frame(fname), files.where(fname), label_cols=label_names)

    def unlabelled(fname: str) -> TextDataset:
        return dataset_from_frame(files.frame(fname), files.where(fname), label_names=label_names)

    data = EmitData(task=task, label_names=label_names, train=labelled(train_file))
    for attr, key, fn in (
        ("test", "test", labelled),
        ("test_ood", "test_ood", labelled),
        ("test_nolabel", "test_nolabel", unlabelled),
        ("ood_nolabel", "ood_nolabel", unlabelled),
    ):
        fname = EMIT_FILES[key]
        if files.has(fname):
            setattr(data, attr, fn(fname))
    for ds in (data.train, data.test, data.test_ood):
        if ds is not None:
            data.warnings += label_warnings(ds)
    if data.test is not None and data.test_nolabel is not None and data.test.ids != data.test_nolabel.ids:
        data.warnings.append(f"{data.test.source} and {data.test_nolabel.source} list different ids")
    return data


def load_emit_hf(dataset_id: str, task: str = "A") -> EmitData:
    """Load EMit from the Hugging Face Hub (e.g. ``MattiaSangermano/emit``).

    Splits named ``train``, ``test`` (or ``test_id``) and ``test_ood`` are used; labels may be
    one 0/1 column per label or a column ``labels`` / ``emotions`` holding label names.
    """
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError(f"the 'datasets' package is needed for {dataset_id}: {exc}") from None
    label_names = labels_for_task(task)
    try:
        dd = datasets.load_dataset(dataset_id)
    except Exception as exc:  # network, auth, not found: one line for the user
        raise DataError(f"hf:{dataset_id}: cannot load ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None

    def convert(split: str) -> TextDataset:
        df = dd[split].to_pandas()
        name = f"hf:{dataset_id}[{split}]"
        if all(c in df.columns for c in label_names):
            return dataset_from_frame(df, name, label_cols=label_names)
        for col in ("labels", "emotions", "label"):
            if col in df.columns:
                series = df[col]
                feature = dd[split].features[col]
                inner = getattr(feature, "feature", None)
                if inner is not None and hasattr(inner, "names"):  # ClassLabel ids -> names
                    df[col] = series.map(lambda ids: [inner.names[i] for i in ids])
                return dataset_from_frame(df, name, label_list_col=col, label_names=label_names)
        return dataset_from_frame(df, name, label_names=label_names)

    if "train" not in dd:
        raise DataError(f"hf:{dataset_id}: no 'train' split (splits: {', '.join(dd)})")
    data = EmitData(task=task, label_names=label_names, train=convert("train"))
    for attr, candidates in (("test", ("test", "test_id", "test_in_domain")), ("test_ood", ("test_ood", "ood"))):
        for split in candidates:
            if split in dd:
                setattr(data, attr, convert(split))
                break
    return data

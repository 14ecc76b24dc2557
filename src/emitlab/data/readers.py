"""Reading table files: the one module that knows the CSV, JSON Lines, JSON and Parquet formats.

It owns

* **format detection** by suffix (:func:`input_format`): ``.parquet``, ``.jsonl``/``.ndjson``,
  ``.json``; any other suffix is read as CSV (comma-separated, UTF-8 with or without a BOM).
  Compressed files are not read;
* **whole-file reading** (:func:`read_frame`) of a path, or of the bytes of a zip member, into
  a DataFrame with every column: :mod:`emitlab.data.loading` builds datasets on it;
* **chunked reading** (:func:`iter_column_chunks`) of the text and id columns only, at most
  ``chunk_size`` rows in memory (CSV through pandas ``chunksize``, JSON Lines one line at a
  time, Parquet through pyarrow ``iter_batches``): ``emitlab predict`` streams big files with it;
* **cheap look-ups**: a file's column names (:func:`column_names`) and, for Parquet, its row
  count (:func:`count_rows`).

CSV values stay strings (ids like ``0012`` must not become numbers); JSON and Parquet values
keep their types. A file that cannot be read (missing, a folder, not UTF-8, not parseable, a
column named twice in a CSV header, a missing text column) is a one-line :class:`DataError`
naming the file and, when known, the line. Checking the rows themselves (empty texts,
duplicate ids, labels) is the callers' job.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pandas as pd

from emitlab.errors import DataError

#: the suffixes with a format of their own; any other suffix is read as CSV
SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
#: keep ids and texts as strings: ids like "0012" must not become numbers
CSV_OPTIONS = {"dtype": str, "keep_default_na": False, "na_values": [""]}
#: stands in for NUL while pandas parses: some pandas releases (3.0.x) cut a value at a NUL byte
#: silently ("ci\x00ao" -> "ci"), so the byte is swapped out before parsing and back after, for
#: the callers' checks to find it on every pandas version
_NUL_MARK = "\ufffe"

#: one chunk of :func:`iter_column_chunks`: (the ids, or ``None`` without an id column; the texts)
ColumnChunk = tuple[list | None, list]


def input_format(path: str | Path) -> str:
    """``parquet``, ``jsonl``, ``json`` or ``csv`` (any other suffix), from the file's suffix."""
    return SUFFIX_FORMATS.get(Path(path).suffix.lower(), "csv")


# --------------------------------------------------------------------------------------
# Checks shared by both ways of reading


def check_columns(columns: Iterable, needed: Sequence[str], name: str) -> None:
    """A :class:`DataError` listing the ``needed`` columns that ``columns`` lacks, if any."""
    columns = list(columns)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"{name}: missing column(s) {', '.join(map(repr, missing))}; "
            f"found {', '.join(map(repr, map(str, columns)))}"
        )


def check_header(header: Sequence[str], name: str) -> None:
    """Refuse a CSV header naming a column twice: pandas would rename the second ``X.1`` silently."""
    seen: dict[str, int] = {}
    for pos, col in enumerate(header, 1):
        if col.strip() and col in seen:
            raise DataError(
                f"{name}: column {col!r} appears twice in the header (columns {seen[col]} and {pos}); "
                "rename or remove one"
            )
        seen.setdefault(col, pos)


def _require_file(path: Path, name: str) -> None:
    if not path.exists():
        raise DataError(f"{name}: file not found")
    if path.is_dir():
        raise DataError(f"{name}: is a folder, expected a file")


def _unreadable(name: str, exc: OSError) -> DataError:
    return DataError(f"{name}: cannot read it ({exc.strerror or exc})")


def _not_parquet(name: str, exc: Exception) -> DataError:
    return DataError(f"{name}: not a readable Parquet file ({exc})")


def _json_line(line: str, lineno: int, name: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{name}: line {lineno}: invalid JSON ({exc.msg})") from None


# --------------------------------------------------------------------------------------
# Whole files


def read_frame(source: bytes | Path, name: str) -> pd.DataFrame:
    """The whole file ``source`` (a path, or the bytes of a zip member) as a DataFrame; ``name``
    (whose suffix gives the format) names it in errors. CSV columns are all strings."""
    fmt = input_format(name)
    data = _file_bytes(source, name) if isinstance(source, Path) else source
    if fmt == "parquet":
        return _parquet_frame(data, name)
    text = _utf8_text(data, name)
    if not text.strip():
        raise DataError(f"{name}: the file is empty")
    parse = {"jsonl": _jsonl_frame, "json": _json_frame, "csv": _csv_frame}[fmt]
    try:
        return parse(text, name)
    except DataError:
        raise
    except (pd.errors.ParserError, json.JSONDecodeError, ValueError) as exc:
        raise DataError(f"{name}: cannot parse ({str(exc).splitlines()[0]})") from None


def _file_bytes(path: Path, name: str) -> bytes:
    _require_file(path, name)
    try:
        return path.read_bytes()
    except OSError as exc:  # permissions, I/O error
        raise _unreadable(name, exc) from exc


def _parquet_frame(data: bytes, name: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types
        raise _not_parquet(name, exc) from None


def _utf8_text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{name}: line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); re-save the file as UTF-8"
        ) from None


def _jsonl_frame(text: str, name: str) -> pd.DataFrame:
    lines = enumerate(text.splitlines(), 1)
    return pd.DataFrame([_json_line(line, lineno, name) for lineno, line in lines if line.strip()])


def _json_frame(text: str, name: str) -> pd.DataFrame:
    return pd.DataFrame(json.loads(text))


def _csv_frame(text: str, name: str) -> pd.DataFrame:
    check_header(next(csv.reader(io.StringIO(text)), []), name)
    has_nul = "\x00" in text
    if has_nul:
        text = text.replace("\x00", _NUL_MARK)
    df = pd.read_csv(io.StringIO(text), **CSV_OPTIONS)
    return df.replace(_NUL_MARK, "\x00", regex=True) if has_nul else df


# --------------------------------------------------------------------------------------
# In chunks


def iter_column_chunks(path: str | Path, text_col: str, id_col: str, chunk_size: int) -> Iterator[ColumnChunk]:
    """The raw values of ``text_col`` and ``id_col`` in chunks of at most ``chunk_size`` rows:
    ``(ids, texts)``, ``ids`` ``None`` when the file has no ``id_col``. Only the current chunk is
    in memory, except for a ``.json`` file (one JSON array), which is read whole and then cut."""
    path = Path(path)
    name = str(path)
    _require_file(path, name)
    read = {"csv": _csv_chunks, "jsonl": _jsonl_chunks, "parquet": _parquet_chunks, "json": _json_chunks}
    try:
        yield from read[input_format(path)](path, text_col, id_col, chunk_size)
    except OSError as exc:  # permissions, I/O error
        raise _unreadable(name, exc) from exc


def _columns(frame: pd.DataFrame, text_col: str, id_col: str | None) -> ColumnChunk:
    return (frame[id_col].tolist() if id_col else None), frame[text_col].tolist()


def _csv_chunks(path: Path, text_col: str, id_col: str, chunk_size: int) -> Iterator[ColumnChunk]:
    name = str(path)
    try:
        header = column_names(path, "csv")
    except UnicodeDecodeError:
        raise DataError(f"{name}: not valid UTF-8 in the header; re-save the file as UTF-8") from None
    if not header:
        raise DataError(f"{name}: the file is empty")
    check_header(header, name)
    check_columns(header, [text_col], name)
    id_col = id_col if id_col in header else None
    reader = pd.read_csv(path, **CSV_OPTIONS, encoding="utf-8-sig", usecols=lambda c: c in (text_col, id_col),
                         chunksize=chunk_size)
    rows = 0
    try:
        with reader:
            for frame in reader:
                rows += len(frame)
                yield _columns(frame, text_col, id_col)
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not valid UTF-8 after data row {rows} ({exc.reason}); re-save the file as UTF-8") \
            from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{name}: cannot parse after data row {rows} ({str(exc).splitlines()[0]})") from None


def _jsonl_chunks(path: Path, text_col: str, id_col: str, chunk_size: int) -> Iterator[ColumnChunk]:
    """The first object decides whether there is an id column, as the column set of a table would."""
    name = str(path)
    has_id: bool | None = None
    ids: list = []
    texts: list = []
    for row in _jsonl_objects(path, name):
        if has_id is None:
            check_columns(row, [text_col], name)
            has_id = id_col in row
        ids.append(row.get(id_col))
        texts.append(row.get(text_col))
        if len(texts) == chunk_size:
            yield (ids if has_id else None), texts
            ids, texts = [], []
    if texts:
        yield (ids if has_id else None), texts


def _jsonl_objects(path: Path, name: str) -> Iterator[dict]:
    """The JSON object on each non-blank line, one line in memory at a time."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{name}: line {lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
                                "re-save the file as UTF-8") from None
            if not line.strip():
                continue
            row = _json_line(line, lineno, name)
            if not isinstance(row, dict):
                raise DataError(f"{name}: line {lineno}: expected a JSON object, got {type(row).__name__}")
            yield row


def _parquet_chunks(path: Path, text_col: str, id_col: str, chunk_size: int) -> Iterator[ColumnChunk]:
    import pyarrow.parquet as pq

    name = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types
        raise _not_parquet(name, exc) from None
    check_columns(pf.schema_arrow.names, [text_col], name)
    id_col = id_col if id_col in pf.schema_arrow.names else None
    try:
        for batch in pf.iter_batches(batch_size=chunk_size, columns=[text_col] + ([id_col] if id_col else [])):
            yield _columns(batch.to_pandas(), text_col, id_col)
    except DataError:
        raise
    except Exception as exc:
        raise _not_parquet(name, exc) from None


def _json_chunks(path: Path, text_col: str, id_col: str, chunk_size: int) -> Iterator[ColumnChunk]:
    frame = read_frame(path, str(path))
    check_columns(frame.columns, [text_col], str(path))
    id_col = id_col if id_col in frame.columns else None
    for start in range(0, len(frame), chunk_size):
        yield _columns(frame.iloc[start:start + chunk_size], text_col, id_col)


# --------------------------------------------------------------------------------------
# Cheap look-ups


def column_names(path: str | Path, fmt: str | None = None) -> list[str]:
    """The column names of a file, read cheaply: the Parquet schema, the CSV header, the keys of
    the first JSON Lines object (``[]`` for an empty file). Errors are left as raised
    (``OSError``, ``ValueError``, ``UnicodeDecodeError``), for the caller to word."""
    fmt = fmt or input_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if fmt == "json":
        return [str(c) for c in read_frame(Path(path), str(path)).columns]
    with open(path, encoding="utf-8-sig", newline="") as f:
        if fmt == "csv":
            return next(csv.reader(f), [])
        for line in f:
            if line.strip():
                row = json.loads(line)
                return list(row) if isinstance(row, dict) else []
    return []


def count_rows(path: str | Path) -> int | None:
    """The number of rows when it is cheap to know (Parquet metadata), else ``None``."""
    if input_format(path) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # unreadable: the reader reports it properly
        return None

"""Streaming, resumable prediction with an exported model in one process.

``emitlab predict --input FILE`` reads the input in chunks of ``--chunk-size`` rows with
:func:`emitlab.data.readers.iter_column_chunks` (pandas ``chunksize`` for CSV, one JSON object
per line for JSONL, pyarrow ``iter_batches`` for Parquet), predicts each chunk with the whole
exported ensemble and appends its rows to the output, so that memory stays bounded whatever the
size of the file::

    emitlab predict --model runs/full/model.zip --input tweets.parquet --output preds.csv
    # killed half-way? the same command with --resume continues where it stopped:
    emitlab predict --model runs/full/model.zip --input tweets.parquet --output preds.csv --resume

Outputs: JSONL (``{"id", "text", "labels", "probabilities"}`` per line, the default), CSV (``id``,
``text``, ``p_<Label>``, one 0/1 column per label, ``labels`` joined by ``;``) or Parquet (the
CSV's columns, one row group per chunk).

**Resuming.** Beside an output file, ``<output>.progress.json`` records what the job is (input
file, its size and mtime, text column, model, backend, format) and, after every chunk, the rows
done and the byte length of the output. A chunk is written, flushed and fsynced *before* the
progress file is replaced (atomically) with the new counts, so after a crash the progress file
never claims more than the output holds; ``--resume`` truncates the output to the recorded length
(dropping a chunk written after the last record) and skips the recorded number of input rows.
Parquet cannot be appended to once its footer is missing, so each chunk is written as a part file
under ``<output>.parts/`` and the parts are joined into the output (one row group each) at the end.
The progress file stays after the job with ``"complete": true``; ``--resume`` of a finished job
does nothing. Without ``--resume`` an existing output is refused unless ``--overwrite``.

Validation is per chunk, with row numbers counted over the whole file (empty or missing texts,
missing ids, NUL bytes); duplicate ids are only detected inside a chunk: checking the whole file
would need memory that grows with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from emitlab.data.readers import ColumnChunk, count_rows, input_format, iter_column_chunks
from emitlab.errors import DataError, RunFolderError, SettingsError
from emitlab.io import atomic_path, atomic_write_json

log = logging.getLogger("emitlab")

DEFAULT_CHUNK_SIZE = 2048
PROGRESS_SUFFIX = ".progress.json"
PARTS_SUFFIX = ".parts"
OUTPUT_FORMATS = ("jsonl", "csv", "parquet")
#: What identifies a job: a progress file written for other values cannot be resumed.
JOB_KEYS = ("input", "input_bytes", "input_mtime_ns", "text_col", "model", "model_meta_sha256", "backend", "format")


class OutputExistsError(RunFolderError):
    """The output (or its progress file) exists and neither --resume nor --overwrite was given."""


# --------------------------------------------------------------------------------------
# Reading in chunks


@dataclass
class Chunk:
    """``len(texts)`` consecutive input rows, the first of them row ``start`` (0-based)."""

    start: int
    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def iter_input_chunks(path: str | Path, text_col: str = "text", id_col: str = "id",
                      chunk_size: int = DEFAULT_CHUNK_SIZE, skip: int = 0) -> Iterator[Chunk]:
    """The rows of a CSV/JSONL/Parquet file as :class:`Chunk` s of at most ``chunk_size`` rows,
    validated like :func:`~emitlab.data.loading.load_table` (row numbers count over the whole
    file). Ids come from ``id_col`` when the file has it, else they are the row numbers. The
    first ``skip`` rows are read but not returned (a resumed job). A ``.json`` file (one JSON
    array) cannot be read in parts: it is loaded whole, then cut into chunks."""
    if chunk_size < 1:
        raise SettingsError(f"--chunk-size must be at least 1, got {chunk_size}")
    name = str(path)
    start = 0
    for raw_ids, raw_texts in _raw_chunks(Path(path), text_col, id_col, chunk_size):
        n = len(raw_texts)
        if start + n <= skip:
            start += n
            continue
        chunk = _make_chunk(name, start, raw_ids, raw_texts, text_col, id_col)
        if start < skip:
            cut = skip - start
            chunk = Chunk(skip, chunk.ids[cut:], chunk.texts[cut:])
        start += n
        if len(chunk):
            yield chunk
    if start == 0:
        raise DataError(f"{name}: 0 data rows; at least 1 is needed")
    if start < skip:
        raise DataError(f"{name}: has {start} rows, but the progress file says {skip} were already done; "
                        "the input changed (rerun with --overwrite)")


def _raw_chunks(path: Path, text_col: str, id_col: str, chunk_size: int) -> Iterator[ColumnChunk]:
    """The file's raw ``(ids, texts)`` chunks (:func:`~emitlab.data.readers.iter_column_chunks`).
    A ``.json`` file is read whole anyway, so it is validated whole by ``load_table`` (duplicate
    ids over the whole file included) before it is cut into chunks."""
    if input_format(path) != "json":
        yield from iter_column_chunks(path, text_col, id_col, chunk_size)
        return
    from emitlab.data.loading import load_table

    ds = load_table(path, text_col=text_col, id_col=id_col)
    for s in range(0, len(ds), chunk_size):
        yield ds.ids[s:s + chunk_size], ds.texts[s:s + chunk_size]


@contextlib.contextmanager
def _writing(sink: "_Sink"):
    """An output that cannot be written (permissions, full disk) is the user's error, not a bug."""
    try:
        yield
    except OSError as exc:
        raise SettingsError(f"--output {sink.name}: cannot write it ({exc.strerror or exc})") from exc


def iter_text_chunks(texts: Iterable[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[Chunk]:
    """Non-blank ``texts`` (CLI arguments, stdin lines: read lazily) in chunks; ids are row numbers."""
    if chunk_size < 1:
        raise SettingsError(f"--chunk-size must be at least 1, got {chunk_size}")
    buf: list[str] = []
    start = 0
    for t in texts:
        if not t.strip():
            continue
        buf.append(t)
        if len(buf) == chunk_size:
            yield Chunk(start, [str(start + i) for i in range(len(buf))], buf)
            start, buf = start + len(buf), []
    if buf:
        yield Chunk(start, [str(start + i) for i in range(len(buf))], buf)


def stdin_lines(stream: IO[str]) -> Iterator[str]:
    """``stream.read().splitlines()``, lazily."""
    for line in stream:
        yield from line.splitlines()


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _row_list(rows: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" (and {len(rows) - limit} more)" if len(rows) > limit else "")


def _make_chunk(name: str, start: int, raw_ids: list | None, raw_texts: list, text_col: str, id_col: str) -> Chunk:
    """Validate one chunk's raw values (as ``dataset_from_frame`` does) and turn them into strings."""
    empty = [start + i + 1 for i, t in enumerate(raw_texts) if _missing(t) or not str(t).strip()]
    if empty:
        raise DataError(f"{name}: row {empty[0]}, column {text_col!r}: empty or missing text "
                        f"({len(empty)} such row(s) in rows {start + 1}-{start + len(raw_texts)}: {_row_list(empty)})")
    texts = [str(t) for t in raw_texts]
    if raw_ids is None:
        ids = [str(start + i) for i in range(len(texts))]
    else:
        gone = [start + i + 1 for i, v in enumerate(raw_ids) if _missing(v)]
        if gone:
            raise DataError(f"{name}: row {gone[0]}, column {id_col!r}: missing id")
        ids = [str(v) for v in raw_ids]
        seen: dict[str, int] = {}
        for i, v in enumerate(ids):
            if v in seen:
                raise DataError(f"{name}: row {start + i + 1}, column {id_col!r}: duplicate id {v!r} "
                                f"(first seen at row {start + seen[v] + 1})")
            seen[v] = i
    for col, values in ((text_col, texts), (id_col, ids if raw_ids is not None else [])):
        nul = [start + i + 1 for i, v in enumerate(values) if "\x00" in v]
        if nul:
            raise DataError(f"{name}: row {nul[0]}, column {col!r}: NUL byte (\\x00) in the value; the file is "
                            f"probably corrupt ({len(nul)} such row(s): {_row_list(nul)})")
    return Chunk(start, ids, texts)


# --------------------------------------------------------------------------------------
# Rows


def prediction_frame(ids: Sequence[str], probs: np.ndarray, pred: np.ndarray, label_names: Sequence[str],
                     texts: Sequence[str] | None = None):
    """The tabular output: ``id`` (, ``text``), ``p_<Label>`` (rounded to 6 decimals), one 0/1
    column per label and ``labels`` (the predicted labels joined by ``;``)."""
    import pandas as pd

    frame = pd.DataFrame({"id": list(ids)})
    if texts is not None:
        frame["text"] = list(texts)
    for j, name in enumerate(label_names):
        frame[f"p_{name}"] = np.round(np.asarray(probs[:, j], dtype=np.float64), 6)
    for j, name in enumerate(label_names):
        frame[name] = np.asarray(pred[:, j], dtype=np.int64)
    frame["labels"] = [";".join(n for n, on in zip(label_names, row) if on) for row in pred]
    return frame


def jsonl_lines(ids: Sequence[str], texts: Sequence[str], probs: np.ndarray, pred: np.ndarray,
                label_names: Sequence[str]) -> str:
    from emitlab.inference import rows_from_probs

    rows = rows_from_probs(probs, pred, label_names)
    return "".join(json.dumps({"id": i, "text": t, **r}, ensure_ascii=False) + "\n"
                   for i, t, r in zip(ids, texts, rows))


# --------------------------------------------------------------------------------------
# Output and progress


def output_format(output: str | None, fmt: str | None) -> str:
    if fmt:
        if fmt not in OUTPUT_FORMATS:
            raise SettingsError(f"unknown output format {fmt!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
        return fmt
    suffix = Path(output).suffix.lower() if output else ""
    return {".csv": "csv", ".parquet": "parquet"}.get(suffix, "jsonl")


def progress_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + PROGRESS_SUFFIX)


def parts_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + PARTS_SUFFIX)


def read_progress(output: str | Path) -> dict | None:
    path = progress_path(output)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: unreadable progress file ({exc}); rerun with --overwrite to start again") \
            from None
    if not isinstance(state, dict) or state.get("emitlab_predict") != 1:
        raise RunFolderError(f"{path}: not an emitlab predict progress file; rerun with --overwrite to start again")
    return state


def job_fingerprint(input_path: str | Path | None, text_col: str, model: str | Path, backend: str, fmt: str,
                    meta: dict | None = None) -> dict:
    """What a progress file must match to be resumed: the same input file (path, size, mtime;
    ``None`` for texts from the command line or stdin, which cannot be resumed), text column,
    model (path and the hash of its emitlab.json, read from ``model`` unless ``meta`` is
    given), backend and output format."""
    if meta is None:
        from emitlab.export import read_meta, resolve_export

        meta = read_meta(resolve_export(model))
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()
    if input_path is None:
        source: dict[str, Any] = {"input": None, "input_bytes": None, "input_mtime_ns": None}
    else:
        src = Path(input_path)
        if not src.is_file():
            raise DataError(f"{src}: file not found" if not src.exists() else f"{src}: is a folder, expected a file")
        st = src.stat()
        source = {"input": str(src.resolve()), "input_bytes": st.st_size, "input_mtime_ns": st.st_mtime_ns}
    return {**source, "text_col": text_col, "model": str(Path(model).resolve()), "model_meta_sha256": digest,
            "backend": backend, "format": fmt}


def check_output(output: str | Path, resume: bool, overwrite: bool) -> dict | None:
    """Before any work: refuse an existing output without --resume/--overwrite; with --overwrite
    remove it (and its progress file and parts); with --resume return its progress state
    (``None`` when there is nothing to resume: the job starts from the beginning)."""
    if resume and overwrite:
        raise SettingsError("give --resume or --overwrite, not both")
    output = Path(output)
    if output.is_dir():
        raise OutputExistsError(f"{output} is a folder; --output must name a file")
    progress, parts = progress_path(output), parts_path(output)
    present = [p for p in (output, progress, parts) if p.exists()]
    if not present:
        return None
    if overwrite:
        for p in present:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return None
    if not resume:
        raise OutputExistsError(f"{present[0]} already exists; choose another --output, pass --resume to continue "
                                f"an interrupted predict into it, or --overwrite to replace it")
    state = read_progress(output)
    if state is None:
        raise OutputExistsError(f"cannot resume into {output}: it has no {progress.name} (it was not written by a "
                                "resumable emitlab predict); pass --overwrite to replace it")
    if state.get("format") != "parquet" and not output.is_file():
        raise OutputExistsError(f"cannot resume into {output}: the file is gone but {progress.name} remains; "
                                "pass --overwrite to start again")
    return state


def check_resumable(state: dict, job: dict, output: str | Path) -> None:
    for key in JOB_KEYS:
        if state.get(key) != job[key]:
            what = {"input_bytes": "input size", "input_mtime_ns": "input modification time",
                    "model_meta_sha256": "model (its emitlab.json)", "text_col": "text column"}.get(key, key)
            raise OutputExistsError(
                f"cannot resume into {output}: its progress file was written for {what} {state.get(key)!r}, "
                f"this job has {job[key]!r}; rerun with the same arguments, or with --overwrite to start again")


class _Sink:
    """Where the rows go. ``rows_done`` counts the rows already committed."""

    rows_done = 0
    name = "<stdout>"

    def write(self, chunk: Chunk, probs: np.ndarray, pred: np.ndarray, label_names: Sequence[str]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def _remove_stale_temporaries(*paths: Path) -> None:
    """The temporary siblings (``.<name>.tmp-*``, see emitlab.io) that a killed job left behind."""
    for path in paths:
        for tmp in path.parent.glob(f".{glob_escape(path.name)}.tmp-*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)


def _encode(fmt: str, chunk: Chunk, probs, pred, label_names, header: bool) -> str:
    if fmt == "jsonl":
        return jsonl_lines(chunk.ids, chunk.texts, probs, pred, label_names)
    return prediction_frame(chunk.ids, probs, pred, label_names, chunk.texts).to_csv(index=False, header=header)


class StreamSink(_Sink):
    """JSONL or CSV to an open text stream (stdout): not resumable."""

    def __init__(self, stream: IO[str], fmt: str):
        if fmt == "parquet":
            raise SettingsError("Parquet output needs --output FILE (it is not written to stdout)")
        self.stream, self.fmt = stream, fmt

    def write(self, chunk, probs, pred, label_names) -> None:
        self.stream.write(_encode(self.fmt, chunk, probs, pred, label_names, header=self.rows_done == 0))
        self.stream.flush()
        self.rows_done += len(chunk)


class _FileSink(_Sink):
    def __init__(self, output: Path, job: dict, state: dict | None):
        self.output, self.job = Path(output), job
        self.name = str(output)
        self.progress = progress_path(output)
        if state is not None:
            check_resumable(state, job, output)
        self.state = dict(state) if state else {"emitlab_predict": 1, **job, "rows_done": 0, "chunks_done": 0,
                                                  "output_bytes": 0, "complete": False}
        self.rows_done = int(self.state["rows_done"])
        if state is not None:
            _remove_stale_temporaries(self.output, self.progress)

    def _commit(self, **updates) -> None:
        self.state.update(updates)
        atomic_write_json(self.progress, self.state)


class TextFileSink(_FileSink):
    """JSONL or CSV appended chunk by chunk; each chunk fsynced before the progress file."""

    def __init__(self, output: Path, fmt: str, job: dict, state: dict | None):
        super().__init__(output, job, state)
        self.fmt = fmt
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if state is None:
            self.file = open(self.output, "wb")
            self._commit()  # the progress file exists from the start: a killed job can always resume
        else:
            self.file = open(self.output, "r+b")
            size = self.file.seek(0, os.SEEK_END)
            done = int(self.state["output_bytes"])
            if size < done:
                raise OutputExistsError(f"cannot resume into {self.output}: it holds {size} bytes but its progress "
                                        f"file records {done}; it was changed, pass --overwrite to start again")
            if size > done:
                log.info("%s: dropping %d bytes written after the last complete chunk", self.output, size - done)
            self.file.truncate(done)
            self.file.seek(done)
            os.fsync(self.file.fileno())

    def write(self, chunk, probs, pred, label_names) -> None:
        data = _encode(self.fmt, chunk, probs, pred, label_names, header=self.rows_done == 0).encode("utf-8")
        self.file.write(data)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.rows_done += len(chunk)
        self._commit(rows_done=self.rows_done, chunks_done=self.state["chunks_done"] + 1,
                     output_bytes=self.file.tell())

    def finish(self) -> None:
        self._commit(complete=True)

    def close(self) -> None:
        self.file.close()


class ParquetFileSink(_FileSink):
    """One part file per chunk under ``<output>.parts/`` (each written atomically), joined into
    the output, one row group per part, by :meth:`finish`."""

    def __init__(self, output: Path, job: dict, state: dict | None):
        super().__init__(output, job, state)
        self.parts = parts_path(output)
        self.parts.mkdir(parents=True, exist_ok=True)
        done = int(self.state["chunks_done"])
        for p in self.parts.glob("part-*.parquet"):  # written after the last record: redone
            if int(p.stem.split("-")[1]) >= done:
                p.unlink()
        if state is None:
            self._commit()

    def _part(self, k: int) -> Path:
        return self.parts / f"part-{k:06d}.parquet"

    def write(self, chunk, probs, pred, label_names) -> None:
        frame = prediction_frame(chunk.ids, probs, pred, label_names, chunk.texts)
        k = int(self.state["chunks_done"])
        with atomic_path(self._part(k)) as tmp:
            frame.to_parquet(tmp, index=False)
        self.rows_done += len(chunk)
        self._commit(rows_done=self.rows_done, chunks_done=k + 1)

    def finish(self) -> None:
        import pyarrow.parquet as pq

        n = int(self.state["chunks_done"])
        if n == 0:
            raise DataError("no rows to write")
        with atomic_path(self.output) as tmp:
            writer = None
            try:
                for k in range(n):
                    table = pq.read_table(self._part(k))
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table, row_group_size=max(len(table), 1))
            finally:
                if writer is not None:
                    writer.close()
        self._commit(complete=True, output_bytes=self.output.stat().st_size)
        shutil.rmtree(self.parts, ignore_errors=True)


def open_sink(output: str | Path | None, fmt: str, job: dict | None = None, state: dict | None = None,
              stream: IO[str] | None = None) -> _Sink:
    if output is None:
        import sys

        return StreamSink(stream or sys.stdout, fmt)
    if job is None:
        raise ValueError("a file output needs the job's fingerprint")
    if fmt == "parquet":
        return ParquetFileSink(Path(output), job, state)
    return TextFileSink(Path(output), fmt, job, state)


# --------------------------------------------------------------------------------------
# The loop


def stream_predict(clf, chunks: Iterable[Chunk], sink: _Sink, batch_size: int | None = None,
                   total: int | None = None, progress: bool | None = None,
                   on_chunk: Callable[[Chunk], None] | None = None) -> int:
    """Predict every chunk with ``clf`` (anything with ``predict_proba``, ``decode`` and
    ``label_names``, e.g. an :class:`~emitlab.inference.EmotionClassifier`) and hand the rows to
    ``sink`` one chunk at a time. Returns the number of rows written by this call.
    ``progress``: ``None`` shows a tqdm bar only on a terminal, ``False`` never."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=sink.rows_done, unit="text", desc="predict", dynamic_ncols=True,
               disable=None if progress is None else not progress)
    written = 0
    try:
        for chunk in chunks:
            probs = clf.predict_proba(chunk.texts, batch_size)
            pred = clf.decode(probs)
            with _writing(sink):
                sink.write(chunk, probs, pred, clf.label_names)
            written += len(chunk)
            bar.update(len(chunk))
            if on_chunk is not None:
                on_chunk(chunk)
        with _writing(sink):
            sink.finish()
    finally:
        bar.close()
        sink.close()
    return written


def predict_chunks(clf, make_chunks: Callable[[int], Iterator[Chunk]], output: str | Path | None, *, fmt: str,
                   job: dict | None = None, state: dict | None = None, batch_size: int | None = None,
                   total: int | None = None, progress: bool | None = None) -> int:
    """Predict the chunks of ``make_chunks(skip)`` (the input without its first ``skip`` rows)
    with ``clf`` into ``output`` (``None``: stdout), resuming from ``state`` (see
    :func:`check_output`). The first chunk is read before the output is touched, so an input
    that fails at once leaves no output behind. Returns the rows written by this call."""
    if state is not None:
        check_resumable(state, job, output)
        if state.get("complete"):
            log.info("%s is already complete (%d rows); nothing to do", output, state.get("rows_done", 0))
            return 0
    skip = int(state["rows_done"]) if state else 0
    chunks = make_chunks(skip)
    first = next(chunks, None)
    if first is None and not skip and fmt == "parquet":
        raise DataError("no texts to classify: a Parquet output needs at least one row")
    try:
        sink = open_sink(output, fmt, job, state)
    except OSError as exc:
        raise SettingsError(f"--output {output}: cannot write it ({exc.strerror or exc})") from exc
    if skip:
        log.info("resuming %s after %d rows", output, skip)
    rest = itertools.chain([first], chunks) if first is not None else iter(())
    return stream_predict(clf, rest, sink, batch_size, total=total, progress=progress)


def predict_file(clf, input_path: str | Path, output: str | Path | None, *, fmt: str, job: dict | None = None,
                 state: dict | None = None, text_col: str = "text", chunk_size: int = DEFAULT_CHUNK_SIZE,
                 batch_size: int | None = None, progress: bool | None = None) -> int:
    """Stream the file ``input_path`` through ``clf`` into ``output``: :func:`predict_chunks`
    over :func:`iter_input_chunks`."""
    return predict_chunks(
        clf, lambda skip: iter_input_chunks(input_path, text_col=text_col, chunk_size=chunk_size, skip=skip),
        output, fmt=fmt, job=job, state=state, batch_size=batch_size, total=count_rows(input_path),
        progress=progress)

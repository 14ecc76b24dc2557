"""Batch inference on Ray Data: ``emitlab predict --engine ray``.

    emitlab predict --engine ray --model /shared/models/emit.zip \\
        --input 's3://bucket/tweets/*.parquet' --output /shared/preds   # a folder of Parquet files

The input files (Parquet, CSV or JSONL; files, folders or globs, all of one format) are read
with ``ray.data.read_parquet/read_csv/read_json`` and cut into blocks of at most ``--chunk-size``
rows (streaming); ``map_batches`` hands each block to one of a pool of actors
(:class:`EnsemblePredictor`), each of which loads the whole exported ensemble once
(:meth:`EmotionClassifier.from_pretrained`, ONNX fp32 by default, ``--backend`` overrides) and
predicts one batch at a time; the result is written with
``write_parquet`` to the output folder: ``id``, ``p_<Label>`` per label (rounded to 6 decimals
as in every emitlab output), one 0/1 column per label and ``labels`` (joined by ``;``). Rows are
not in input order: sort by ``id``. ``_emitlab_predict.json`` in the folder records the job
(pyarrow and pandas skip files starting with ``_``).

Ray runs locally by default (``ray.init(num_cpus=...)``, one CPU per actor plus one for the read
and write tasks, no dashboard, worker logs not copied to the console); ``--ray-address`` joins an
existing cluster (``auto`` for the one started on this machine with ``ray start``). The input,
the model and the output must then be at paths that every node can read (shared storage, or the
model zip copied to the same path on every node), and emitlab must be installed on every node.

Ray is imported only here, only for ``--engine ray``; without it the command fails with one
line that says how to install it (``pip install 'emitlab[ray]'``).

Ids come from the input's ``id`` column, which is required: Ray reads the files in parallel
blocks and cannot number rows the way the single-process engine does.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from emitlab.batch.predict import OutputExistsError, prediction_frame
from emitlab.data.readers import SUFFIX_FORMATS, column_names, input_format
from emitlab.errors import DataError, SettingsError, UserError

log = logging.getLogger("emitlab")

DEFAULT_BACKEND = "onnx"
MARKER = "_emitlab_predict.json"
RAY_FORMATS = ("parquet", "csv", "jsonl")
INSTALL_HINT = "pip install 'emitlab[ray]'"


def import_ray():
    """``ray`` with Ray Data, or a one-line :class:`SettingsError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise SettingsError(f"--engine ray needs Ray Data, which is not installed ({exc}): {INSTALL_HINT}") from None
    return ray


def local_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------
# Inputs and output


def expand_inputs(specs: Sequence[str]) -> tuple[list[str], str]:
    """Files, folders (their files of a known format, recursively) and globs -> sorted absolute
    paths and their one format. URIs (``s3://...``) are passed to Ray as they are."""
    paths: list[str] = []
    for spec in specs:
        if "://" in spec:
            paths.append(spec)
            continue
        p = Path(spec).expanduser()
        if glob.has_magic(spec):
            hits = sorted(h for h in glob.glob(str(p), recursive=True) if Path(h).is_file())
            if not hits:
                raise DataError(f"{spec}: no file matches")
        elif p.is_dir():
            hits = sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_"))
                          and SUFFIX_FORMATS.get(f.suffix.lower()) in RAY_FORMATS)
            if not hits:
                raise DataError(f"{spec}: no .parquet, .csv or .jsonl file in this folder")
        elif p.is_file():
            hits = [str(p)]
        else:
            raise DataError(f"{spec}: file not found")
        paths += [str(Path(h).resolve()) for h in hits]
    if not paths:
        raise SettingsError("--engine ray needs --input (files, folders or globs)")
    formats = {input_format(p.split("://")[-1]) for p in paths}
    if len(formats) > 1:
        raise SettingsError(f"--input mixes formats ({', '.join(sorted(formats))}); give files of one format")
    fmt = formats.pop()
    if fmt not in RAY_FORMATS:
        raise SettingsError(f"--engine ray reads Parquet, CSV or JSON Lines (.jsonl), not {fmt!r} "
                            f"(a .json file is one JSON array: convert it to .jsonl)")
    return paths, fmt


def local_columns(path: str, fmt: str) -> list[str] | None:
    """The column names of a local input file, read cheaply (Parquet schema, CSV header, first
    JSON line); ``None`` for a URI, which only the actors read."""
    if "://" in path:
        return None
    try:
        return column_names(path, fmt)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pyarrow's errors are ValueErrors too
        raise DataError(f"{path}: cannot read it ({exc})") from None


def check_columns(name: str, columns: Sequence[str] | None, text_col: str, id_col: str) -> None:
    if columns is None:
        return
    for col in (text_col, id_col):
        if col not in columns:
            raise DataError(f"{name}: missing column {col!r} (found {', '.join(map(repr, map(str, columns)))})"
                            + ("; --engine ray needs an id column: Ray reads the files in parallel and cannot "
                               "number the rows (add one, or use the single-process engine)"
                               if col == id_col else ""))


def check_output_dir(output: str, overwrite: bool) -> None:
    """The output is a folder of Parquet files: refuse a non-empty one unless ``overwrite``, and
    even then only one that holds nothing but Parquet files and our marker."""
    if "://" in output:
        return  # remote storage: Ray writes there, nothing to check from here
    out = Path(output)
    if out.is_file():
        raise OutputExistsError(f"{out} is a file; --engine ray writes a folder of Parquet files to --output")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(f"{out} already exists and is not empty; choose another --output, "
                                "or pass --overwrite to replace it")
    foreign = [p.name for p in out.iterdir() if not (p.is_file() and (p.suffix == ".parquet" or p.name == MARKER))]
    if foreign:
        raise OutputExistsError(f"refusing to replace {out} with --overwrite: it holds more than Parquet files "
                                f"({', '.join(sorted(foreign)[:3])}); choose another --output")
    for p in out.iterdir():
        p.unlink()


# --------------------------------------------------------------------------------------
# The model on each node


@contextlib.contextmanager
def _node_lock(key: str) -> Iterator[None]:
    """A lock shared by the processes of one machine (actors that unzip or ONNX-export the same model)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock (one actor per model folder is the safe use there)
        yield
        return
    name = hashlib.sha1(key.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"emitlab-model-{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_model(model: str | Path, backend: str) -> Path:
    """The export folder for ``model`` (a zip is extracted once per machine), with the ONNX
    files that ``backend`` needs written first if missing, under a per-machine lock so that the
    actors of one node do not unzip or export at the same time."""
    from emitlab.export import resolve_export

    with _node_lock(str(Path(model).resolve())):
        folder = resolve_export(model)
        if backend in ("onnx", "onnx-int8"):
            from emitlab.inference.onnx_export import export_network_onnx, network_folders, onnx_file
            from emitlab.members.transformer.member import read_network_meta

            for _, net in network_folders(folder):
                if not onnx_file(net, read_network_meta(net), backend).is_file():
                    log.warning("%s has no %s file: exporting it now (`emitlab export-onnx --model` does this "
                                "ahead of time)", net, backend)
                    try:
                        export_network_onnx(net, net, int8=(backend == "onnx-int8"))
                    except OSError as exc:
                        raise SettingsError(f"{net}: cannot write the {backend} graph there ({exc}); run "
                                            f"`emitlab export-onnx --model {model}` where it can be written") from None
    return folder


class EnsemblePredictor:
    """The ``map_batches`` callable class: loads the exported ensemble once per actor and maps a
    pandas batch (``id``, text column) to the prediction columns."""

    def __init__(self, model: str, backend: str, text_col: str = "text", id_col: str = "id",
                 batch_size: int | None = None):
        from emitlab.inference import EmotionClassifier

        folder = prepare_model(model, backend)
        self.clf = EmotionClassifier.from_pretrained(folder, backend=backend)
        self.text_col, self.id_col, self.batch_size = text_col, id_col, batch_size

    def __call__(self, batch):
        import math

        check_columns("an input file", list(batch.columns), self.text_col, self.id_col)
        texts, ids = batch[self.text_col].tolist(), batch[self.id_col].tolist()
        for i, t in zip(ids, texts):
            if i is None or (isinstance(i, float) and math.isnan(i)):
                raise DataError(f"a row with text {str(t)[:60]!r} has no id (column {self.id_col!r})")
            if t is None or (isinstance(t, float) and math.isnan(t)) or not str(t).strip():
                raise DataError(f"id {i!s}: empty or missing text (column {self.text_col!r})")
        texts = [str(t) for t in texts]
        probs = self.clf.predict_proba(texts, self.batch_size)
        return prediction_frame([str(i) for i in ids], probs, self.clf.decode(probs), self.clf.label_names)


# --------------------------------------------------------------------------------------
# The job


def _user_error(exc: BaseException) -> UserError | None:
    """The emitlab error behind a Ray task failure, if any. Ray Data wraps an exception raised
    in a ``map_batches`` actor in ``UserCodeException`` and ``RayTaskError`` and keeps the original
    only as text (its remote traceback), so it is found in the cause chain when it is there, else
    rebuilt from the traceback's last ``emitlab.errors.<Class>: message`` line."""
    from emitlab import errors

    seen, todo, texts = set(), [exc], []
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UserError) and type(e).__module__.startswith("emitlab"):
            return e
        texts.append(str(e))
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    for text in texts:
        found = re.findall(r"^emitlab\.errors\.(\w+): (.+)$", text, flags=re.MULTILINE)
        if found:
            name, message = found[-1]
            cls = getattr(errors, name, None)
            if isinstance(cls, type) and issubclass(cls, UserError):
                return cls(message.strip())
    return None


def _read(ray, paths: list[str], fmt: str, text_col: str, id_col: str, rows_per_block: int):
    """The input as a Ray dataset in blocks of at most ``rows_per_block`` rows.

    Ray sizes read blocks by bytes (at least 1 MiB each): a few megabytes of short texts arrive as
    one block, however many files hold them, and one block goes to one actor -- the others would
    sit idle while it classifies every row. Text costs by the row, so the blocks are cut (streaming,
    no shuffle) to one ``map_batches`` batch each, and every actor gets its share."""
    if fmt == "parquet":
        ds = ray.data.read_parquet(paths)
    elif fmt == "csv":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        # strings, as the single-process reader keeps them: ids like "0012" stay "0012";
        # quoted newlines are common in social-media text
        ds = ray.data.read_csv(paths, convert_options=pacsv.ConvertOptions(
            column_types={id_col: pa.string(), text_col: pa.string()}),
            parse_options=pacsv.ParseOptions(newlines_in_values=True))
    else:
        ds = ray.data.read_json(paths)
    return ds.repartition(target_num_rows_per_block=rows_per_block)


def ray_predict(model: str | Path, inputs: Sequence[str], output: str | Path, *, backend: str | None = None,
                actors: int | None = None, address: str | None = None, text_col: str = "text", id_col: str = "id",
                chunk_size: int = 2048, batch_size: int | None = None, overwrite: bool = False,
                quiet: bool = False) -> dict[str, Any]:
    """Predict every row of ``inputs`` with the whole exported ensemble at ``model`` on Ray
    Data and write Parquet files into the folder ``output``. Returns the job summary that is
    also written to ``output/_emitlab_predict.json``."""
    from emitlab.io import atomic_write_json

    backend = backend or DEFAULT_BACKEND
    if actors is not None and actors < 1:
        raise SettingsError(f"--ray-actors must be at least 1, got {actors}")
    if chunk_size < 1:
        raise SettingsError(f"--chunk-size must be at least 1, got {chunk_size}")
    ray = import_ray()
    paths, fmt = expand_inputs(inputs)
    for path in paths:
        check_columns(path, local_columns(path, fmt), text_col, id_col)
    output = str(output)
    check_output_dir(output, overwrite)
    if "://" not in output:
        output = str(Path(output).expanduser().resolve())  # Ray's write tasks do not run in this folder
    model = str(Path(model).expanduser().resolve())
    label_names = None
    if address and not Path(model).exists():
        log.info("%s is not on this machine: the actors will look for it on theirs", model)
    else:
        # unzip and ONNX-export once here, before any actor starts (actors on other machines
        # do it again for their own copy, one at a time per machine)
        from emitlab.export import read_meta

        label_names = list(read_meta(prepare_model(model, backend))["labels"])

    t0 = time.time()
    started = False
    ray_data_log = logging.getLogger("ray.data")
    log_level = ray_data_log.level
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            n = actors or local_cores()
            # one CPU per actor, plus one for the read and write tasks (else they could wait
            # forever for a CPU the actors hold)
            ray.init(address="local", num_cpus=n + 1, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        if actors is None:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            actors = max(1, cpus - 1)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = not quiet
        if quiet:  # Ray Data logs each failed task with its traceback; the error is raised below
            ray_data_log.setLevel(logging.CRITICAL)
        ds = _read(ray, paths, fmt, text_col, id_col, chunk_size)
        out = ds.map_batches(
            EnsemblePredictor,
            fn_constructor_kwargs={"model": str(model), "backend": backend, "text_col": text_col,
                                   "id_col": id_col, "batch_size": batch_size},
            batch_size=chunk_size, batch_format="pandas", num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=actors))
        try:
            out.write_parquet(str(output))
        except Exception as exc:
            err = _user_error(exc)
            if err is not None:
                raise type(err)(str(err)) from None
            raise
    finally:
        ray_data_log.setLevel(log_level)
        if started:
            ray.shutdown()
    summary = {"emitlab_predict": 1, "engine": "ray", "model": str(model), "backend": backend,
               "inputs": paths, "format": fmt, "text_col": text_col, "labels": label_names, "actors": actors,
               "ray_address": address or "local", "seconds": round(time.time() - t0, 2)}
    if "://" not in str(output):
        atomic_write_json(Path(output) / MARKER, summary)
    log.info("predictions written to %s (Parquet, %d actors, %.1f s)", output, actors, summary["seconds"])
    return summary


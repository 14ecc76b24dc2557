"""Streaming, resumable single-process prediction (emitlab/batch_predict.py, ``emitlab predict``).

Unit tests use a fake classifier (deterministic probabilities from a hash of the text); the
integration tests use the whole tiny ensemble export (``tiny_ensemble_export``: the cheap
members and the tiny BERT folds, combined and calibrated) through the real command line.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emitlab.batch import predict as bp
from emitlab.batch.predict import (
    OutputExistsError,
    check_output,
    iter_input_chunks,
    iter_text_chunks,
    job_fingerprint,
    predict_file,
    progress_path,
)
from emitlab.cli import main
from emitlab.data import readers
from emitlab.data.loading import load_table
from emitlab.errors import DataError, SettingsError

REPO = Path(__file__).resolve().parents[1]
LABELS = ["Anger", "Joy", "Neutral"]


class FakeClassifier:
    """Probabilities from a hash of each text (the same text always gets the same row);
    records the size of every call."""

    label_names = LABELS

    def __init__(self, fail_after: int | None = None):
        self.calls: list[int] = []
        self.fail_after = fail_after

    def predict_proba(self, texts, batch_size=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("killed")  # what a Ctrl-C half-way looks like to the loop
        self.calls.append(len(texts))
        return np.array([[(zlib.crc32(f"{t}|{j}".encode()) % 10_000) / 10_000 for j in range(len(LABELS))]
                         for t in texts])

    def decode(self, probs):
        return (probs >= 0.5).astype(np.int64)


def make_texts(n: int) -> tuple[list[str], list[str]]:
    """Short texts with what CSV writers quote (commas, quotes, newlines) and non-ASCII."""
    extras = ["", ", con una virgola", ' e "virgolette"', "\nsu due righe", " 😂 perché"]
    ids = [f"{i:05d}" for i in range(n)]  # leading zeros: must stay strings
    texts = [f"testo numero {i}{extras[i % len(extras)]}" for i in range(n)]
    return ids, texts


def write_input(path: Path, ids: list[str] | None, texts: list[str]) -> Path:
    frame = pd.DataFrame({"id": ids, "text": texts} if ids is not None else {"text": texts})
    frame["other"] = 1  # a column predict does not need
    fmt = bp.input_format(path)
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in frame.to_dict("records")),
                        encoding="utf-8")
    else:
        frame.to_csv(path, index=False)
    return path


def fake_job(path: Path | None, fmt: str) -> dict:
    return job_fingerprint(path, "text", "fake-model", "torch", fmt, meta={"fake": 1})


def read_output(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return pd.DataFrame({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows],
                             "labels": [";".join(r["labels"]) for r in rows],
                             **{f"p_{n}": [r["probabilities"][n] for r in rows] for n in rows[0]["probabilities"]}})
    if fmt == "csv":
        return pd.read_csv(path, dtype={"id": str, "text": str, "labels": str}, keep_default_na=False)
    return pd.read_parquet(path)


# --------------------------------------------------------------------------------------
# Reading in chunks


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("with_ids", [True, False])
def test_chunks_match_load_table(tmp_path, suffix, with_ids):
    ids, texts = make_texts(1000)
    path = write_input(tmp_path / f"in{suffix}", ids if with_ids else None, texts)
    chunks = list(iter_input_chunks(path, chunk_size=64))
    assert max(len(c) for c in chunks) <= 64 and sum(len(c) for c in chunks) == 1000
    assert [c.start for c in chunks] == list(np.cumsum([0] + [len(c) for c in chunks[:-1]]))
    ds = load_table(path)
    assert [i for c in chunks for i in c.ids] == ds.ids == (ids if with_ids else [str(i) for i in range(1000)])
    assert [t for c in chunks for t in c.texts] == ds.texts == texts

    skipped = list(iter_input_chunks(path, chunk_size=64, skip=130))
    assert skipped[0].start == 130 and [t for c in skipped for t in c.texts] == texts[130:]
    assert [i for c in skipped for i in c.ids] == ds.ids[130:]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_bad_rows_are_named_by_their_row_in_the_whole_file(tmp_path, suffix):
    ids, texts = make_texts(300)
    texts[257] = "   "
    path = write_input(tmp_path / f"in{suffix}", ids, texts)
    with pytest.raises(DataError, match=r"row 258, column 'text': empty or missing text"):
        list(iter_input_chunks(path, chunk_size=50))
    path = write_input(tmp_path / f"nocol{suffix}", ids, texts)
    with pytest.raises(DataError, match="missing column"):
        list(iter_input_chunks(path, text_col="tweet", chunk_size=50))


def test_readers_hold_at_most_one_chunk(tmp_path, monkeypatch):
    """Instrument every format's raw reader: while the loop predicts and writes, the readers
    have never produced more than one chunk beyond what has been written."""
    chunk_size = 40
    ids, texts = make_texts(1000)
    state = {"pulled": 0, "written": 0, "max_ahead": 0}

    def instrument(name):
        original = getattr(readers, name)

        def wrapped(*args, **kwargs):
            for raw_ids, raw_texts in original(*args, **kwargs):
                assert len(raw_texts) <= chunk_size
                state["pulled"] += len(raw_texts)
                state["max_ahead"] = max(state["max_ahead"], state["pulled"] - state["written"])
                yield raw_ids, raw_texts

        monkeypatch.setattr(readers, name, wrapped)

    for name in ("_csv_chunks", "_jsonl_chunks", "_parquet_chunks"):
        instrument(name)

    class CountingSink(bp._Sink):
        def write(self, chunk, probs, pred, label_names):
            assert len(chunk) <= chunk_size
            state["written"] += len(chunk)

    for suffix in (".csv", ".jsonl", ".parquet"):
        state.update(pulled=0, written=0, max_ahead=0)
        path = write_input(tmp_path / f"in{suffix}", ids, texts)
        clf = FakeClassifier()
        bp.stream_predict(clf, iter_input_chunks(path, chunk_size=chunk_size), CountingSink(), progress=False)
        assert state["pulled"] == state["written"] == 1000, suffix
        assert state["max_ahead"] <= chunk_size, suffix
        assert max(clf.calls) <= chunk_size and sum(clf.calls) == 1000


def test_text_chunks_are_lazy():
    """stdin is read one chunk at a time: an endless stream still gives its first chunks."""
    def endless():
        i = 0
        while True:
            yield "" if i % 7 == 0 else f"riga {i}"  # blank lines are skipped
            i += 1

    chunks = iter_text_chunks(endless(), chunk_size=10)
    first, second = next(chunks), next(chunks)
    assert (len(first), len(second)) == (10, 10)
    assert first.ids == [str(i) for i in range(10)] and second.ids[0] == "10"
    assert list(bp.stdin_lines(iter(["a\n", "b\r\n", "c\u2028d\n"]))) == "a\nb\r\nc\u2028d\n".splitlines()


# --------------------------------------------------------------------------------------
# Output, resume, overwrite (fake classifier)


def uninterrupted(tmp_path: Path, inp: Path, fmt: str, chunk_size: int) -> pd.DataFrame:
    out = tmp_path / f"reference.{fmt}"
    predict_file(FakeClassifier(), inp, out, fmt=fmt, job=fake_job(inp, fmt), state=None, chunk_size=chunk_size,
                 progress=False)
    return read_output(out, fmt)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_resume_after_a_crash_drops_the_partial_chunk(tmp_path, fmt):
    ids, texts = make_texts(500)
    inp = write_input(tmp_path / "in.csv", ids, texts)
    out = tmp_path / f"out.{fmt}"
    job = fake_job(inp, fmt)
    with pytest.raises(KeyboardInterrupt):
        predict_file(FakeClassifier(fail_after=3), inp, out, fmt=fmt, job=job, state=None, chunk_size=64,
                     progress=False)
    progress = json.loads(progress_path(out).read_text())
    assert progress["rows_done"] == 3 * 64 and not progress["complete"]
    # what a kill in the middle of the next chunk leaves: bytes (or a part file) past the record
    if fmt == "parquet":
        (bp.parts_path(out) / "part-000003.parquet").write_bytes(b"half a part")
    else:
        with open(out, "ab") as f:
            f.write(b'{"id": "00192", "te')
    with pytest.raises(OutputExistsError, match="--resume"):
        check_output(out, resume=False, overwrite=False)
    state = check_output(out, resume=True, overwrite=False)
    clf = FakeClassifier()
    assert predict_file(clf, inp, out, fmt=fmt, job=job, state=state, chunk_size=100, progress=False) == 500 - 192
    assert sum(clf.calls) == 500 - 192  # the rows done before were not predicted again
    got = read_output(out, fmt)
    assert got["id"].tolist() == ids  # every id exactly once, in input order
    pd.testing.assert_frame_equal(got, uninterrupted(tmp_path, inp, fmt, 64))
    assert json.loads(progress_path(out).read_text())["complete"]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert not bp.parts_path(out).exists()
        assert pq.ParquetFile(out).metadata.num_row_groups == 3 + 4  # one row group per chunk
    # resuming a finished job does nothing
    state = check_output(out, resume=True, overwrite=False)
    before = out.read_bytes()
    assert predict_file(FakeClassifier(fail_after=0), inp, out, fmt=fmt, job=job, state=state,
                        progress=False) == 0
    assert out.read_bytes() == before


def test_resume_refuses_another_job(tmp_path):
    ids, texts = make_texts(200)
    inp = write_input(tmp_path / "in.csv", ids, texts)
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        predict_file(FakeClassifier(fail_after=1), inp, out, fmt="jsonl", job=fake_job(inp, "jsonl"), state=None,
                     chunk_size=50, progress=False)
    state = check_output(out, resume=True, overwrite=False)
    other = job_fingerprint(inp, "text", "fake-model", "torch", "jsonl", meta={"fake": 2})
    with pytest.raises(OutputExistsError, match="model"):
        predict_file(FakeClassifier(), inp, out, fmt="jsonl", job=other, state=state, progress=False)
    write_input(inp, ids[:150], texts[:150])  # the input changed
    with pytest.raises(OutputExistsError, match="input size"):
        predict_file(FakeClassifier(), inp, out, fmt="jsonl", job=fake_job(inp, "jsonl"), state=state,
                     progress=False)
    # --overwrite starts again
    assert check_output(out, resume=False, overwrite=True) is None
    assert not out.exists() and not progress_path(out).exists()
    with pytest.raises(SettingsError, match="not both"):
        check_output(out, resume=True, overwrite=True)
    out.write_text("someone else's file\n")
    with pytest.raises(OutputExistsError, match="no out.jsonl.progress.json"):
        check_output(out, resume=True, overwrite=False)


def test_stdout_output(tmp_path, capsys):
    sink = bp.open_sink(None, "csv")
    chunks = iter_text_chunks(["uno", "", "due", "tre"], chunk_size=2)
    assert bp.stream_predict(FakeClassifier(), chunks, sink, progress=False) == 3
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype={"id": str})
    assert frame["id"].tolist() == ["0", "1", "2"] and frame["text"].tolist() == ["uno", "due", "tre"]
    assert list(frame.columns) == ["id", "text"] + [f"p_{n}" for n in LABELS] + LABELS + ["labels"]
    with pytest.raises(SettingsError, match="Parquet output needs --output"):
        bp.open_sink(None, "parquet")


def test_ray_missing_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError
    from emitlab.batch.ray_predict import import_ray

    with pytest.raises(SettingsError, match=r"pip install 'emitlab\[ray\]'"):
        import_ray()
    rc = main(["-q", "predict", "--engine", "ray", "--model", str(tmp_path), "--input", str(tmp_path / "x.parquet"),
               "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "pip install 'emitlab[ray]'" in err


# --------------------------------------------------------------------------------------
# The real ensemble, through the command line


@pytest.fixture(scope="module")
def model(tiny_ensemble_export) -> Path:
    return tiny_ensemble_export


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """A few thousand short texts with the synthetic cues, in a CSV with ids."""
    from synthetic import make_rows

    ids, texts, _, _ = make_rows(3000, 7, "big")
    path = tmp_path_factory.mktemp("stream") / "big.csv"
    pd.DataFrame({"id": ids, "text": texts}).to_csv(path, index=False)
    return path, ids, texts


@pytest.fixture(scope="module")
def reference(model, big_input):
    """What the whole file gets in one call (no streaming)."""
    from emitlab.inference import EmotionClassifier

    path, ids, texts = big_input
    clf = EmotionClassifier.from_pretrained(model)
    probs = clf.predict_proba(texts)
    return bp.prediction_frame(ids, probs, clf.decode(probs), clf.label_names, texts)


def assert_same_predictions(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert got["id"].tolist() == ref["id"].tolist()
    assert got["text"].tolist() == ref["text"].tolist()
    p_cols = [c for c in ref.columns if c.startswith("p_")]
    assert np.abs(got[p_cols].to_numpy(float) - ref[p_cols].to_numpy(float)).max() <= 1e-6 + 1e-12
    assert got["labels"].fillna("").tolist() == ref["labels"].tolist()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_streaming_equals_whole_file_predict(model, big_input, reference, tmp_path, fmt):
    path, ids, _ = big_input
    out = tmp_path / f"preds.{fmt}"
    assert main(["-q", "predict", "--model", str(model), "--input", str(path), "--output", str(out),
                 "--chunk-size", "256"]) == 0
    got = read_output(out, fmt)
    assert_same_predictions(got, reference)
    if fmt != "jsonl":
        labels = [c for c in reference.columns if not c.startswith("p_") and c not in ("id", "text", "labels")]
        assert (got[labels].to_numpy() == reference[labels].to_numpy()).all()
    assert json.loads(progress_path(out).read_text())["rows_done"] == len(ids)
    # the same command again is refused; --resume does nothing; --overwrite redoes it
    assert main(["-q", "predict", "--model", str(model), "--input", str(path), "--output", str(out)]) == 2
    assert main(["-q", "predict", "--model", str(model), "--input", str(path), "--output", str(out), "--resume"]) == 0
    assert main(["-q", "predict", "--model", str(model), "--input", str(path), "--output", str(out),
                 "--overwrite", "--chunk-size", "1000"]) == 0
    assert_same_predictions(read_output(out, fmt), reference)


def test_texts_and_stdin_still_work(model, capsys, monkeypatch):
    assert main(["-q", "predict", "--model", str(model), "che bella giornata felice", "che paura"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == ["0", "1"] and rows[1]["text"] == "che paura"
    monkeypatch.setattr(sys, "stdin", io.StringIO("uno felice\n\ndue triste\n"))
    assert main(["-q", "predict", "--model", str(model), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype={"id": str})
    assert frame["id"].tolist() == ["0", "1"] and frame["text"].tolist() == ["uno felice", "due triste"]


def test_killed_job_resumes_without_loss_or_duplicates(model, big_input, reference, tmp_path):
    """A real ``python -m emitlab.cli predict`` is SIGKILLed after a few chunks, then rerun with
    --resume: every id exactly once, in input order, as an uninterrupted run."""
    path, ids, _ = big_input
    out = tmp_path / "preds.jsonl"
    cmd = [sys.executable, "-m", "emitlab.cli", "-q", "predict", "--model", str(model), "--input", str(path),
           "--output", str(out), "--chunk-size", "50", "--batch-size", "16"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = json.loads(progress_path(out).read_text())["rows_done"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                done = 0
            if done >= 150:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the job ended before it was killed: {err.decode()[-2000:]}"
    state = json.loads(progress_path(out).read_text())
    assert 150 <= state["rows_done"] < len(ids) and not state["complete"]

    # without --resume the half-written output is refused
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--resume" in res.stderr
    res = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    got = read_output(out, "jsonl")
    assert got["id"].tolist() == ids
    assert_same_predictions(got, reference)
    assert json.loads(progress_path(out).read_text())["complete"]


def test_quiet_predict_draws_no_hugging_face_progress_bar(tiny_ensemble_export, tmp_path, capsys):
    """``-q``: only warnings and results, so not transformers' "Loading weights" bar for each network; the
    bars' switches are as they were afterwards (main() can run again in the same process)."""
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    before = (are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled())
    out = tmp_path / "out.jsonl"
    assert main(["-q", "predict", "--model", str(tiny_ensemble_export), "--output", str(out), "ciao", "che paura"]) == 0
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err, err
    assert len(out.read_text().splitlines()) == 2
    assert (are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()) == before
    assert main(["predict", "--model", str(tiny_ensemble_export), "--output", str(out), "--overwrite", "ciao"]) == 0
    assert "Loading weights" in capsys.readouterr().err  # without -q the bars are there as before

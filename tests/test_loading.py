"""Data layer: EMit folders and zips, generic files, and clear errors for malformed input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emitlab.cli import main
from emitlab.data.loading import DataError, load_emit, load_table
from emitlab.labels import TASK_A_LABELS

HEADER_A = "id,text," + ",".join(TASK_A_LABELS)


def row(i: int, text: str, labels: list[int]) -> str:
    return f"id{i},{text}," + ",".join(map(str, labels))


def one_hot(j: int) -> list[int]:
    return [int(k == j) for k in range(10)]


def write_emit(folder: Path, n: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [HEADER_A] + [row(i, f"testo numero {i} bello", one_hot(i % 10)) for i in range(n)]
    (folder / "emit_train_A.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    rows_b = ["id,text,Direction,Topic"] + [f"id{i},testo numero {i} bello,{i % 2},{(i // 2) % 2}" for i in range(n)]
    (folder / "emit_train_B.csv").write_text("\n".join(rows_b) + "\n", encoding="utf-8")
    (folder / "emit_test_nolabel.csv").write_text("id,text\nt1,ciao\nt2,che bello\n", encoding="utf-8")
    return folder


def test_emit_folder_task_a_and_b(tmp_path):
    d = write_emit(tmp_path / "emit")
    a = load_emit(d, "A")
    assert len(a.train) == 40 and a.train.labels.shape == (40, 10)
    assert a.test is None and a.test_nolabel.ids == ["t1", "t2"]
    b = load_emit(d, "B")
    assert b.label_names == ["Direction", "Topic"]
    assert b.train.labels[:4].tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]


def test_real_emit_folder(emit_data_dir):
    data = load_emit(emit_data_dir, "A")
    assert len(data.train) == 5966 and len(data.test) == 1000
    assert data.test.ids == data.test_nolabel.ids
    assert len(data.ood_nolabel) == 1000 and data.ood_nolabel.labels is None
    assert data.train.labels.sum(0).tolist()[3] == 91  # Fear, as the data's SOURCE.md counts


@pytest.mark.skipif(shutil.which("zip") is None, reason="the 'zip' program is needed to make a ZipCrypto test zip")
def test_password_zip(tmp_path, monkeypatch):
    d = write_emit(tmp_path / "plain")
    z = tmp_path / "emit_2023-v1.zip"
    subprocess.run(["zip", "-q", "-j", "-P", "segreto", str(z), str(d / "emit_train_A.csv")], check=True)
    monkeypatch.delenv("EMITLAB_ZIP_PASSWORD", raising=False)
    assert len(load_emit(z, "A", zip_password="segreto").train) == 40
    with pytest.raises(DataError, match="password-protected"):
        load_emit(z, "A")
    with pytest.raises(DataError, match="wrong password"):
        load_emit(z, "A", zip_password="sbagliata")
    monkeypatch.setenv("EMITLAB_ZIP_PASSWORD", "segreto")
    assert len(load_emit(z, "A").train) == 40


def test_generic_jsonl_with_label_list(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text('{"id": "a", "t": "uno", "emo": ["Joy", "Love"]}\n{"id": "b", "t": "due", "emo": []}\n')
    ds = load_table(p, text_col="t", label_list_col="emo", label_names=["Joy", "Love", "Fear"])
    assert ds.labels.tolist() == [[1, 1, 0], [0, 0, 0]]


def test_generic_csv_keeps_string_ids(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id,text,x,y\n007,ciao,1,0\n008,addio,0,1\n")
    ds = load_table(p, label_cols=["x", "y"])
    assert ds.ids == ["007", "008"]


# ---- malformed inputs: each one a clear message naming file, row and column, no traceback


def _bad_csv(tmp_path: Path, body: str, name: str = "bad.csv", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(body.encode(encoding) if isinstance(body, str) else body)
    return p


LAB = ",".join(["0"] * 9)
MALFORMED = {
    "missing_label_column": ("id,text,Anger\na,ciao,1\n", ["missing column", "'Anticipation'"]),
    "missing_text_column": (f"id,testo,{','.join(TASK_A_LABELS)}\na,ciao,1,{LAB}\n", ["missing column", "'text'"]),
    "label_not_binary": (f"{HEADER_A}\na,ciao,1,{LAB}\nb,ciao,2,{LAB}\n", ["row 2", "'Anger'", "not 0 or 1"]),
    "label_not_number": (f"{HEADER_A}\na,ciao,sì,{LAB}\n", ["row 1", "'Anger'", "'sì'"]),
    "empty_text": (f"{HEADER_A}\na,ciao,1,{LAB}\nb,   ,1,{LAB}\n", ["row 2", "'text'", "empty"]),
    "missing_text": (f"{HEADER_A}\na,ciao,1,{LAB}\nb,,1,{LAB}\n", ["row 2", "'text'", "empty or missing"]),
    "duplicate_id": (f"{HEADER_A}\na,ciao,1,{LAB}\nb,hey,1,{LAB}\na,ola,1,{LAB}\n",
                     ["row 3", "'id'", "duplicate id 'a'", "row 1"]),
    "missing_label_value": (f"{HEADER_A}\na,ciao,,{LAB}\n", ["row 1", "'Anger'", "not 0 or 1"]),
    "empty_file": ("", ["empty"]),
    "bad_quote": (f'{HEADER_A}\na,"ciao,1,{LAB}\n', ["cannot parse"]),
    "duplicate_column": (f"{HEADER_A},Anger\na,ciao,1,{LAB},0\n", ["'Anger'", "twice", "columns 3 and 13"]),
    "nul_in_text": (f"{HEADER_A}\na,ciao,1,{LAB}\nb,ci\x00ao,1,{LAB}\n", ["row 2", "'text'", "NUL byte"]),
    "header_only": (f"{HEADER_A}\n", ["0 data rows", "at least 1"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_csv_cli(tmp_path, capsys, case):
    body, expected = MALFORMED[case]
    p = _bad_csv(tmp_path, body)
    code = main(["data", "validate", "--data", str(p)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.startswith("emitlab: error:") and err.count("\n") == 1
    assert str(p) in err
    for piece in expected:
        assert piece in err, (piece, err)


def test_nul_byte_in_a_quoted_text_and_in_jsonl(tmp_path):
    p = _bad_csv(tmp_path, f'{HEADER_A}\na,"uno, due",1,{LAB}\nb,ok,1,{LAB}\nc,"tre\x00 quattro",1,{LAB}\n')
    with pytest.raises(DataError, match=r"bad.csv: row 3, column 'text': NUL byte.*1 such row\(s\): 3"):
        load_table(p, label_cols=TASK_A_LABELS)
    j = tmp_path / "d.jsonl"
    j.write_text('{"id": "a", "text": "uno"}\n{"id": "b", "text": "d\\u0000ue"}\n')
    with pytest.raises(DataError, match=r"d.jsonl: row 2, column 'text': NUL byte"):
        load_table(j)


def test_nul_byte_found_where_pandas_cuts_the_value(tmp_path, monkeypatch):
    """pandas 3.0.x's CSV parser ends a value at a NUL byte without a word ("ci\\x00ao" -> "ci"),
    which would let a corrupt row through as a shorter text; the check must not depend on it."""
    import io

    import pandas as pd

    read_csv = pd.read_csv

    def cutting_read_csv(buf, **kw):  # what pandas 3.0.6 does to a NUL byte
        text = buf.getvalue()
        cut = "\n".join(",".join(f.split("\x00")[0] for f in line.split(",")) for line in text.split("\n"))
        return read_csv(io.StringIO(cut), **kw)

    monkeypatch.setattr(pd, "read_csv", cutting_read_csv)
    p = _bad_csv(tmp_path, f"{HEADER_A}\na,ciao,1,{LAB}\nb,ci\x00ao,1,{LAB}\n")
    with pytest.raises(DataError, match=r"bad.csv: row 2, column 'text': NUL byte"):
        load_table(p, label_cols=TASK_A_LABELS)
    ok = load_table(_bad_csv(tmp_path, f"{HEADER_A}\na,ciao \ufffe,1,{LAB}\n", "ok.csv"), label_cols=TASK_A_LABELS)
    assert ok.texts == ["ciao \ufffe"]


def test_header_only_training_file_in_an_emit_folder(tmp_path):
    d = write_emit(tmp_path / "emit")
    (d / "emit_train_A.csv").write_text(HEADER_A + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"emit_train_A.csv: 0 data rows"):
        load_emit(d, "A")


def test_bad_encoding(tmp_path, capsys):
    p = _bad_csv(tmp_path, f"{HEADER_A}\na,perché,1,{LAB}\n", encoding="latin-1")
    assert main(["data", "validate", "--data", str(p)]) == 2
    err = capsys.readouterr().err
    assert "not valid UTF-8" in err and "line 2" in err


def test_unknown_label_name(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "uno", "labels": ["Joy"]}\n{"text": "due", "labels": ["Gioia"]}\n')
    with pytest.raises(DataError, match=r"row 2, column 'labels': unknown label 'Gioia'"):
        load_table(p, id_col=None, label_list_col="labels", label_names=["Joy", "Love"])


def test_invalid_jsonl_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "uno"}\n{"text": \n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_table(p, id_col=None)


def test_rows_without_label_are_reported_not_dropped(tmp_path, capsys):
    p = _bad_csv(tmp_path, f"{HEADER_A}\na,ciao,1,{LAB}\nb,niente,0,{LAB}\n")
    assert main(["data", "validate", "--data", str(p)]) == 0
    out = capsys.readouterr().out
    assert "2 rows" in out and "1 row(s) with no label at all: rows 2" in out


def test_missing_folder_and_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EMITLAB_DATA", raising=False)
    assert main(["data", "validate"]) == 2
    assert "no data given" in capsys.readouterr().err
    assert main(["data", "validate", "--data", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["data", "validate", "--data", str(tmp_path)]) == 2
    assert "no emit_train_A.csv" in capsys.readouterr().err


def test_cli_entry_point_has_no_traceback(tmp_path):
    p = _bad_csv(tmp_path, f"{HEADER_A}\na,ciao,7,{LAB}\n")
    res = subprocess.run([sys.executable, "-m", "emitlab.cli", "data", "validate", "--data", str(p)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "not 0 or 1" in res.stderr


# --------------------------------------------------------------------------------------
# emitlab.data.readers: one reader for every format, whole or in chunks

READER_IDS = ["0012", "a,b", "3", "4", "5", "6", "7"]
READER_TEXTS = ["uno", "due, con virgola", 'tre "virgolette"', "quattro\nsu due righe", "cinque 😂", "sei", "sette"]


def _write_table(path: Path, with_ids: bool = True) -> Path:
    import json

    import pandas as pd

    frame = pd.DataFrame({"id": READER_IDS, "text": READER_TEXTS} if with_ids else {"text": READER_TEXTS})
    frame["other"] = "x"
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in frame.to_dict("records")),
                        encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(frame.to_dict("records"), ensure_ascii=False), encoding="utf-8")
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet", ".txt"])
@pytest.mark.parametrize("with_ids", [True, False])
def test_reader_whole_and_in_chunks_give_the_same_rows(tmp_path, suffix, with_ids):
    from emitlab.data.readers import iter_column_chunks, read_frame

    path = _write_table(tmp_path / f"in{suffix}", with_ids)
    whole = read_frame(path, str(path))
    assert whole["text"].tolist() == READER_TEXTS
    assert ("id" in whole.columns) == with_ids and (not with_ids or whole["id"].tolist() == READER_IDS)
    chunks = list(iter_column_chunks(path, "text", "id", chunk_size=3))
    assert [len(texts) for _, texts in chunks] == [3, 3, 1]
    assert [t for _, texts in chunks for t in texts] == READER_TEXTS
    if with_ids:
        assert [i for ids, _ in chunks for i in ids] == READER_IDS
    else:
        assert all(ids is None for ids, _ in chunks)


def _one_line_naming(exc_info, path: Path) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


@pytest.mark.parametrize("name,content,expected", [
    ("table.xlsx", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xa4\xff", "not valid UTF-8"),  # read as CSV
    ("bad.csv", b"id,text,id\na,uno,b\n", "column 'id' appears twice"),
    ("bad.jsonl", b'{"id": "a", "text": "uno"}\n{"id": "b", "text": \n', "line 2: invalid JSON"),
    ("bad.json", b'[{"id": "a", "text": "uno"}', "cannot parse"),
    ("bad.parquet", b"PAR1 not really parquet", "not a readable Parquet file"),
    ("empty.csv", b"", "the file is empty"),
])
def test_reader_errors_are_one_line_naming_the_file(tmp_path, name, content, expected):
    from emitlab.data.readers import iter_column_chunks, read_frame

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as whole:
        read_frame(path, str(path))
    assert expected in _one_line_naming(whole, path)
    with pytest.raises(DataError) as chunked:
        list(iter_column_chunks(path, "text", "id", chunk_size=2))
    _one_line_naming(chunked, path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_reader_missing_file_folder_and_text_column(tmp_path, suffix):
    from emitlab.data.readers import iter_column_chunks, read_frame

    for path, expected in ((tmp_path / f"nope{suffix}", "file not found"),
                           (tmp_path, "is a folder, expected a file")):
        with pytest.raises(DataError, match=expected):
            read_frame(path, str(path))
        with pytest.raises(DataError, match=expected):
            list(iter_column_chunks(path, "text", "id", chunk_size=2))
    path = _write_table(tmp_path / f"in{suffix}")
    with pytest.raises(DataError) as exc_info:
        list(iter_column_chunks(path, "tweet", "id", chunk_size=2))
    assert "missing column(s) 'tweet'; found 'id', 'text', 'other'" in _one_line_naming(exc_info, path)


def test_reader_formats_and_cheap_lookups(tmp_path):
    from emitlab.data.readers import column_names, count_rows, input_format

    assert [input_format(f"x{s}") for s in (".CSV", ".jsonl", ".ndjson", ".json", ".parquet", ".tsv", "")] == \
        ["csv", "jsonl", "jsonl", "json", "parquet", "csv", "csv"]
    for suffix in (".csv", ".jsonl", ".parquet"):
        path = _write_table(tmp_path / f"in{suffix}")
        assert column_names(path) == ["id", "text", "other"]
        assert count_rows(path) == (len(READER_TEXTS) if suffix == ".parquet" else None)

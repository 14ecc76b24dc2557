"""Duplicate-text report (``emitlab data validate``): planted duplicates, and the real EMit overlap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emitlab.cli import main
from emitlab.data.duplicates import duplicate_report, report_lines
from emitlab.data.loading import EmitData, TextDataset
from emitlab.labels import TASK_A_LABELS

NAMES = ["a", "b", "c"]
A, B, C = [1, 0, 0], [0, 1, 0], [0, 0, 1]


def ds(prefix: str, texts: list[str], labels: list[list[int]] | None = None) -> TextDataset:
    return TextDataset(ids=[f"{prefix}{i}" for i in range(len(texts))], texts=texts,
                       labels=None if labels is None else np.array(labels), label_names=NAMES, source=f"{prefix}.csv")


def planted() -> EmitData:
    train = ds("tr", ["oggi piove", "che bella giornata https://t.co/aaa", "oggi piove",
                      "Che  bella giornata https://t.co/bbb", "unico testo", "@mario ciao a tutti"],
               [A, B, B, B, A, A])
    test_texts = ["oggi piove", "CHE BELLA GIORNATA http://x.it", "niente"]
    return EmitData(
        task="A", label_names=NAMES, train=train,
        test=ds("te", test_texts, [A, C, B]),
        test_nolabel=ds("te", test_texts),
        ood_nolabel=ds("ood", ["RT @x: @luca Ciao a  tutti", "nuovo " * 30]),
    )


def test_planted_duplicates_are_counted_at_both_levels():
    r = duplicate_report(planted())
    exact, cleaned = r["train"]["exact"], r["train"]["cleaned"]
    assert (exact["groups"], exact["rows"], exact["label_conflicts"]) == (1, 2, 1)
    assert exact["examples"] == [{"ids": ["tr0", "tr2"], "text": "oggi piove"}]
    assert (cleaned["groups"], cleaned["rows"], cleaned["label_conflicts"]) == (2, 4, 1)
    assert [e["ids"] for e in cleaned["examples"]] == [["tr1", "tr3"]]  # only what exact matching misses

    assert set(r["against_train"]) == {"test", "test_nolabel", "ood_nolabel"}  # test_ood is absent
    test = r["against_train"]["test"]
    assert test["source"] == "te.csv" and test["rows"] == 3
    assert {k: test["exact"][k] for k in ("rows", "texts", "same_labels")} == {"rows": 1, "texts": 1, "same_labels": 1}
    assert test["exact"]["examples"] == [{"id": "te0", "train_ids": ["tr0", "tr2"], "text": "oggi piove"}]
    counts = {k: test["cleaned"][k] for k in ("rows", "texts", "same_labels")}
    assert counts == {"rows": 2, "texts": 2, "same_labels": 1}
    assert [(e["id"], e["train_ids"]) for e in test["cleaned"]["examples"]] == [("te1", ["tr1", "tr3"])]
    nolabel = r["against_train"]["test_nolabel"]
    assert "same_labels" not in nolabel["exact"] and nolabel["cleaned"]["rows"] == 2
    ood = r["against_train"]["ood_nolabel"]
    assert ood["exact"]["rows"] == 0 and ood["cleaned"]["rows"] == 1  # RT prefix, mention and spacing folded
    json.dumps(r)  # JSON-ready


def test_report_lines_and_truncated_examples():
    data = planted()
    data.train.texts[4] = data.test.texts[2] = "molto lungo " * 20
    r = duplicate_report(data)
    shown = r["against_train"]["test"]["exact"]["examples"][-1]["text"]
    assert len(shown) == 60 and shown.endswith("…")
    lines = report_lines(r)
    assert "duplicates exact   train: 1 texts repeated, 2 rows, 1 with different labels" in lines
    assert "duplicates exact   test vs train: 2 of 3 rows (2 distinct texts) also in train, 1 with the same labels" \
        in lines
    assert "    test id te0 = train id tr0, tr2: 'oggi piove'" in lines


def _write(path, ids, texts, labels=None) -> None:
    header = "id,text" + ("," + ",".join(TASK_A_LABELS) if labels is not None else "")
    rows = [f"{i},{t}" + ("," + ",".join(map(str, labels[n])) if labels is not None else "")
            for n, (i, t) in enumerate(zip(ids, texts))]
    path.write_text("\n".join([header] + rows) + "\n", encoding="utf-8")


def test_data_validate_reports_duplicates_and_writes_json(tmp_path, capsys):
    folder = tmp_path / "emit"
    folder.mkdir()
    y = np.eye(10, dtype=int)[np.arange(40) % 10]
    train = [f"testo numero {i} bello" for i in range(40)]
    train[7] = train[3]  # planted within train, other label
    _write(folder / "emit_train_A.csv", [f"tr{i}" for i in range(40)], train, y)
    test = [f"prova {i}" for i in range(10)]
    test[2], test[5] = train[10], "TESTO numero 11  bello"  # one exact copy, one after cleaning
    _write(folder / "emit_test.csv", [f"te{i}" for i in range(10)], test, y[:10])
    _write(folder / "emit_test_nolabel.csv", [f"te{i}" for i in range(10)], test)

    out = tmp_path / "report.json"
    assert main(["data", "validate", "--data", str(folder), "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "duplicates exact   train: 1 texts repeated, 2 rows, 1 with different labels" in stdout
    assert "duplicates exact   test vs train: 1 of 10 rows (1 distinct texts) also in train, 0 with the same labels" \
        in stdout
    assert "duplicates cleaned test vs train: 2 of 10 rows" in stdout and "test id te5 = train id tr11" in stdout
    report = json.loads(out.read_text())
    assert report["sets"]["train"]["rows"] == 40 and report["sets"]["test_nolabel"]["labels"] == []
    assert report["duplicates"]["against_train"]["test_nolabel"]["cleaned"]["rows"] == 2
    assert report["duplicates"]["train"]["exact"]["examples"][0]["ids"] == ["tr3", "tr7"]


@pytest.mark.slow
def test_real_emit_train_test_overlap_is_reported(emit_data_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["data", "validate", "--data", str(emit_data_dir), "--json", str(out)]) == 0
    dups = json.loads(out.read_text())["duplicates"]
    test = dups["against_train"]["test"]
    n = test["exact"]["rows"]
    assert n > 0 and test["exact"]["texts"] <= n <= test["cleaned"]["rows"]
    assert f"duplicates exact   test vs train: {n} of {test['rows']} rows" in capsys.readouterr().out
    # the numbers the README quotes
    assert (n, test["exact"]["texts"], test["exact"]["same_labels"]) == (97, 91, 64)
    assert [dups["train"]["exact"][k] for k in ("groups", "rows", "label_conflicts")] == [202, 500, 84]

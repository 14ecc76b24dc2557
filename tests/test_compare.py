"""``emitlab compare``: single-model folders and ``emitlab run`` folders side by side."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from emitlab.compare import compare_runs, format_table, register_cli

LABELS = ["Direction", "Topic"]


def _metrics(name: str, val: float, test_raw: float | None, test_cal: float | None, per_label=(0.5, 0.6)) -> dict:
    m = {"model": name, "calibration": {"chosen": "per_label", "validation_macro_f1": {}, "validation_heldout_macro_f1": {},
                                         "decoder": {"label_names": LABELS, "thresholds": [0.5, 0.5],
                                                     "at_least_one": False, "neutral_exclusive": False}},
         "validation": {"macro_f1": val, "micro_f1": val, "per_label": {}, "raw": {"macro_f1": val - 0.01}}}
    if test_cal is not None:
        m["test"] = {"macro_f1": test_cal, "micro_f1": test_cal, "raw": {"macro_f1": test_raw},
                     "per_label": {lab: {"f1": f} for lab, f in zip(LABELS, per_label)}}
    return m


TRAIN_CFG = {"model": "me5-small", "pooling": "mean", "loss": "focal", "pos_weight": "sqrt", "learning_rate": 5e-5,
             "epochs": 3.0, "max_length": 128, "batch_size": 16}


def _write(folder: Path, config: dict, metrics: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture()
def runs(tmp_path) -> list[Path]:
    baseline = _write(tmp_path / "baseline-1", {"baseline": {"C": 1.0}},
                      _metrics("tfidf-logreg", 0.51, 0.44, 0.47) | {"task": "B", "timings_s": {"fit": 30.0, "total": 35.8}})
    train = _write(tmp_path / "train-1", {"train": TRAIN_CFG},
                   _metrics("me5-small", 0.60, None, None) | {"training": {"train_seconds": 900}, "timings_s": {"total": 1000.0}})
    models = {"baseline": _metrics("tfidf-logreg", 0.50, 0.43, 0.46),
              "transformer": _metrics("me5-small", 0.62, 0.58, 0.61, (0.7, 0.52)),
              "ensemble": _metrics("ensemble", 0.64, 0.59, 0.63) | {"weight_on_transformer": 0.7}}
    full = _write(tmp_path / "run-1", {"train": TRAIN_CFG, "baseline": {"C": 1.0}},
                  {"task": "B", "label_names": LABELS, "models": models, "best_model": "ensemble",
                   "timings_s": {"baseline": 31.0, "transformer": 1200.5, "total": 1300.0}})
    return [baseline, train, full]


def test_one_row_per_model_with_settings_and_scores(runs):
    df = compare_runs(runs)
    assert list(zip(df["run"], df["model"])) == [("baseline-1", "tfidf-logreg"), ("train-1", "me5-small"),
                                                 ("run-1", "baseline"), ("run-1", "transformer"), ("run-1", "ensemble")]
    cols = list(df.columns)
    assert cols[:2] == ["run", "model"] and cols[-1] == "time_s"
    assert cols[-3:-1] == ["test_f1_Direction", "test_f1_Topic"]
    for c in ("model_name", "pooling", "loss", "pos_weight", "lr", "epochs", "max_length", "weight", "calibration",
              "val_macro_f1", "test_macro_f1_raw", "test_macro_f1"):
        assert c in cols
    by = df.set_index(["run", "model"])
    tr = by.loc[("run-1", "transformer")]
    assert (tr["model_name"], tr["pooling"], tr["loss"], tr["lr"], tr["max_length"]) == ("me5-small", "mean", "focal", 5e-5, 128)
    assert tr["test_macro_f1"] == 0.61 and tr["test_macro_f1_raw"] == 0.58 and tr["test_f1_Direction"] == 0.7
    assert tr["time_s"] == 1200.5
    assert by.loc[("run-1", "ensemble")]["model_name"] == "ensemble"
    assert by.loc[("run-1", "ensemble")]["loss"] == "focal"  # the ensemble's transformer settings
    assert by.loc[("run-1", "ensemble")]["weight"] == 0.7 and by.loc[("run-1", "ensemble")]["time_s"] == 1231.5
    base = by.loc[("run-1", "baseline")]
    assert base["model_name"] == "tfidf-logreg" and (base["pooling"] is None or math.isnan(base["pooling"]))
    assert by.loc[("baseline-1", "tfidf-logreg")]["time_s"] == 35.8
    single_train = by.loc[("train-1", "me5-small")]
    assert single_train["val_macro_f1"] == 0.60 and math.isnan(single_train["test_macro_f1"])
    assert single_train["loss"] == "focal"


def test_settings_absent_everywhere_are_dropped(runs):
    df = compare_runs(runs[:1])
    assert "pooling" not in df.columns and "weight" not in df.columns and "model_name" in df.columns


def test_plain_and_markdown_tables(runs):
    df = compare_runs(runs)
    text = format_table(df)
    lines = text.splitlines()
    assert len(lines) == 2 + len(df) and lines[0].startswith("run") and set(lines[1]) <= {"-", " "}
    assert "0.6100" in text and "1200.5" in text and "5e-05" in text and "nan" not in text.lower()
    md = format_table(df, markdown=True).splitlines()
    assert md[0].startswith("| run | model |") and md[1].startswith("|---|---|")
    assert len(md) == 2 + len(df) and all(r.startswith("| ") and r.endswith(" |") for r in md[2:])
    assert "| run-1 | ensemble |" in md[-1] and "0.6300" in md[-1]


def test_cli(runs, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="emitlab")
    register_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cmp" / "table.md"
    args = parser.parse_args(["compare", *map(str, runs), "--markdown", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "run-1" in printed and "transformer" in printed and str(out) in printed
    assert out.read_text().startswith("| run |")


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        compare_runs([tmp_path / "nope"])

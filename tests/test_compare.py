"""``emitlab compare``: schema-2 run folders (every candidate of the cross-fitting engine) next to
schema-1 folders (single-model ``baseline`` / ``train`` and the old ``run`` with an ensemble)."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import pytest

from emitlab.cli import main as cli_main
from emitlab.errors import RunFolderError
from emitlab.report.compare import compare_runs, format_table, register_cli

from test_report_helpers import baseline_split_run, schema2_run

LABELS = ["Direction", "Topic"]


def _metrics(name: str, val: float, test_raw: float | None, test_cal: float | None, per_label=(0.5, 0.6)) -> dict:
    m = {"model": name, "calibration": {"chosen": "per_label", "validation_macro_f1": {},
                                         "validation_heldout_macro_f1": {},
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
    """Schema 1: a single-model baseline, a single-model train and an old ``emitlab run``."""
    baseline = _write(tmp_path / "baseline-1", {"baseline": {"C": 1.0}},
                      _metrics("tfidf-logreg", 0.51, 0.44, 0.47)
                      | {"task": "B", "timings_s": {"fit": 30.0, "total": 35.8}})
    train = _write(tmp_path / "train-1", {"train": TRAIN_CFG},
                   _metrics("me5-small", 0.60, None, None)
                   | {"training": {"train_seconds": 900}, "timings_s": {"total": 1000.0}})
    models = {"baseline": _metrics("tfidf-logreg", 0.50, 0.43, 0.46),
              "transformer": _metrics("me5-small", 0.62, 0.58, 0.61, (0.7, 0.52)),
              "ensemble": _metrics("ensemble", 0.64, 0.59, 0.63) | {"weight_on_transformer": 0.7}}
    full = _write(tmp_path / "run-1", {"train": TRAIN_CFG, "baseline": {"C": 1.0}},
                  {"task": "B", "label_names": LABELS, "models": models, "best_model": "ensemble",
                   "timings_s": {"baseline": 31.0, "transformer": 1200.5, "total": 1300.0}})
    return [baseline, train, full]


def _candidate(name: str, nested: float, val: float, test_raw: float, test_cal: float, combiner: dict,
               per_label=(0.5, 0.6)) -> dict:
    return _metrics(name, val, test_raw, test_cal, per_label) | {
        "combiner": combiner, "nested_macro_f1": nested, "nested_fold_macro_f1": [nested - 0.01, nested + 0.01]}


def _average(weights: list[float], space: str = "prob") -> dict:
    return {"kind": "average", "space": space, "weights": weights}


@pytest.fixture()
def schema2(tmp_path) -> Path:
    """A schema-2 folder written by hand: three members (5, 5 and 3 folds), two combiners."""
    models = {"tfidf": _candidate("tfidf", 0.55, 0.57, 0.50, 0.54, _average([1.0, 0.0, 0.0])),
              "lexicon": _candidate("lexicon", 0.40, 0.41, 0.30, 0.39, _average([0.0, 1.0, 0.0])),
              "transformer": _candidate("transformer", 0.61, 0.62, 0.58, 0.60, _average([0.0, 0.0, 1.0]), (0.7, 0.5)),
              "average_logit": _candidate("average_logit", 0.63, 0.66, 0.60, 0.64, _average([0.4, 0.0, 0.6], "logit")),
              "stacker": _candidate("stacker", 0.62, 0.67, 0.61, 0.62,
                                    {"kind": "stacker", "C": 0.5, "W": [[0.0] * 6] * 2, "b": [0.0, 0.0]})}
    members = {"tfidf": {"folds": 5, "fold_seconds": [1.0] * 5, "training": None},
               "lexicon": {"folds": 5, "fold_seconds": [0.5] * 5, "training": None},
               "transformer": {"folds": 3, "fold_seconds": [100.0] * 3, "training": [{"train_seconds": 99.0}] * 3}}
    metrics = {"schema": 2, "task": "B", "label_names": LABELS,
               "selection": {"rows": "out-of-fold", "n": 100, "folds": {"default": 5, "transformer": 3}},
               "members": members, "models": models, "best_model": "average_logit",
               "ensemble": {"chosen": "average_logit", "combiner": models["average_logit"]["combiner"],
                            "nested_macro_f1": {k: v["nested_macro_f1"] for k, v in models.items()}},
               "timings_s": {"cleaning": 0.5, "member_tfidf": 6.0, "member_lexicon": 3.0, "member_transformer": 310.0,
                             "combination": 20.0, "export": 2.0, "total": 345.0}}
    config = {"train": TRAIN_CFG, "tfidf": {"C": 1.0}, "run": {"folds": 5, "transformer_folds": 3}}
    return _write(tmp_path / "run-2", config, metrics)


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ----------------------------------------------------------------------------- schema 1


def test_schema1_one_row_per_model_with_settings_and_scores(runs):
    df = compare_runs(runs)
    assert list(zip(df["run"], df["model"])) == [("baseline-1", "tfidf-logreg"), ("train-1", "me5-small"),
                                                 ("run-1", "baseline"), ("run-1", "transformer"), ("run-1", "ensemble")]
    cols = list(df.columns)
    assert cols[:3] == ["run", "model", "best"] and cols[-1] == "time_s"
    assert cols[-3:-1] == ["test_f1_Direction", "test_f1_Topic"]
    for c in ("model_name", "pooling", "loss", "pos_weight", "lr", "epochs", "max_length", "weight", "calibration",
              "selection", "val_macro_f1", "test_macro_f1_raw", "test_macro_f1"):
        assert c in cols
    assert "nested_macro_f1" not in cols and "members" not in cols  # schema-2 only, empty here
    by = df.set_index(["run", "model"])
    tr = by.loc[("run-1", "transformer")]
    assert (tr["model_name"], tr["pooling"], tr["loss"], tr["lr"], tr["max_length"]) == (
        "me5-small", "mean", "focal", 5e-5, 128)
    assert tr["test_macro_f1"] == 0.61 and tr["test_macro_f1_raw"] == 0.58 and tr["test_f1_Direction"] == 0.7
    assert tr["time_s"] == 1200.5 and tr["selection"] == "split"
    ens = by.loc[("run-1", "ensemble")]
    assert ens["model_name"] == "ensemble" and ens["loss"] == "focal"  # the ensemble's transformer settings
    assert ens["weight"] == 0.7 and ens["time_s"] == 1231.5 and ens["best"] == "*"
    base = by.loc[("run-1", "baseline")]
    assert base["model_name"] == "tfidf-logreg" and _nan(base["pooling"]) and _nan(base["best"])
    assert by.loc[("baseline-1", "tfidf-logreg")]["time_s"] == 35.8
    single_train = by.loc[("train-1", "me5-small")]
    assert single_train["val_macro_f1"] == 0.60 and math.isnan(single_train["test_macro_f1"])
    assert single_train["loss"] == "focal"


def test_settings_absent_everywhere_are_dropped(runs):
    df = compare_runs(runs[:1])
    assert "pooling" not in df.columns and "weight" not in df.columns and "model_name" in df.columns
    assert "best" not in df.columns and "folds" not in df.columns


# ----------------------------------------------------------------------------- schema 2


def test_schema2_every_candidate_with_nested_scores_members_and_folds(schema2, runs):
    df = compare_runs([schema2, *runs])
    assert list(df["model"][:5]) == ["tfidf", "lexicon", "transformer", "average_logit", "stacker"]
    assert len(df) == 5 + 5
    cols = list(df.columns)
    order = ["run", "model", "best", "members", "combiner", "model_name", "pooling", "loss", "pos_weight", "lr",
             "epochs", "max_length", "weight", "folds", "selection", "calibration", "nested_macro_f1", "val_macro_f1",
             "test_macro_f1_raw", "test_macro_f1"]
    assert cols[:len(order)] == order  # the same order whichever schema comes first
    assert cols[-3:] == ["test_f1_Direction", "test_f1_Topic", "time_s"]
    assert list(compare_runs([*runs, schema2]).columns) == cols
    by = df.set_index(["run", "model"])
    tfidf, tr = by.loc[("run-2", "tfidf")], by.loc[("run-2", "transformer")]
    avg, stk = by.loc[("run-2", "average_logit")], by.loc[("run-2", "stacker")]
    assert (tfidf["nested_macro_f1"], tfidf["val_macro_f1"], tfidf["test_macro_f1_raw"], tfidf["test_macro_f1"]) == \
        (0.55, 0.57, 0.50, 0.54)
    assert tfidf["members"] == "tfidf" and _nan(tfidf["combiner"]) and tfidf["folds"] == "5"
    assert _nan(tfidf["model_name"]) and _nan(tfidf["epochs"])  # no transformer in it: no transformer settings
    assert tfidf["time_s"] == 6.0 and tfidf["selection"] == "oof" and _nan(tfidf["best"])
    assert (tr["model_name"], tr["epochs"], tr["max_length"], tr["folds"]) == ("me5-small", 3.0, 128, "3")
    assert tr["test_f1_Direction"] == 0.7 and tr["time_s"] == 310.0
    # the average uses tfidf and the transformer (lexicon weight 0); its time: those members + combination
    assert avg["best"] == "*" and avg["members"] == "tfidf+transformer" and avg["nested_macro_f1"] == 0.63
    assert avg["combiner"] == "logit avg tfidf=0.40 lexicon=0.00 transformer=0.60"
    assert avg["folds"] == "5 (transformer 3)" and avg["time_s"] == 6.0 + 310.0 + 20.0 and avg["loss"] == "focal"
    assert stk["members"] == "tfidf+lexicon+transformer" and stk["combiner"] == "stacker C=0.5"
    assert stk["time_s"] == 6.0 + 3.0 + 310.0 + 20.0 and stk["test_macro_f1"] == 0.62


def test_schema2_nested_scores_fall_back_to_the_ensemble_entry(schema2):
    metrics = json.loads((schema2 / "metrics.json").read_text())
    for m in metrics["models"].values():
        del m["nested_macro_f1"]
    (schema2 / "metrics.json").write_text(json.dumps(metrics))
    assert compare_runs([schema2])["nested_macro_f1"].tolist() == [0.55, 0.40, 0.61, 0.63, 0.62]


def test_plain_and_markdown_tables(runs, schema2):
    df = compare_runs([*runs, schema2])
    text = format_table(df)
    lines = text.splitlines()
    assert len(lines) == 2 + len(df) and lines[0].startswith("run") and set(lines[1]) <= {"-", " "}
    assert "0.6100" in text and "1200.5" in text and "5e-05" in text and "nan" not in text.lower()
    assert "5 (transformer 3)" in text and "336.0" in text
    md = format_table(df, markdown=True).splitlines()
    assert md[0].startswith("| run | model | best |") and md[1].startswith("|---|---|---|")
    assert len(md) == 2 + len(df) and all(r.startswith("| ") and r.endswith(" |") for r in md[2:])
    assert "| run-1 | ensemble | * |" in md[6] and "0.6300" in md[6]
    assert md[-1].startswith("| run-2 | stacker |  | tfidf+lexicon+transformer | stacker C=0.5 |")


def test_cli(runs, schema2, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="emitlab")
    register_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cmp" / "table.md"
    args = parser.parse_args(["compare", *map(str, runs), str(schema2), "--markdown", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "run-1" in printed and "average_logit" in printed and str(out) in printed
    assert out.read_text().startswith("| run |")


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="metrics.json"):
        compare_runs([tmp_path / "nope"])


# ----------------------------------------------------------------------------- real run folders


def test_real_run_folders(tmp_path_factory, tiny_model, runs, tmp_path, capsys):
    """What ``emitlab run`` and ``emitlab baseline --folds 1`` write today, through ``emitlab compare``."""
    full, split = schema2_run(tmp_path_factory, tiny_model), baseline_split_run(tmp_path_factory)
    md = tmp_path / "cmp.md"
    assert cli_main(["compare", str(full), str(split), str(runs[2]), "--markdown", str(md)]) == 0
    printed = capsys.readouterr().out
    df = compare_runs([full, split, runs[2]])
    metrics = json.loads((full / "metrics.json").read_text())
    names = list(metrics["models"])
    assert {"tfidf", "lexicon", "transformer", "average_prob", "average_logit", "stacker"} <= set(names)
    assert list(df["model"]) == [*names, "tfidf", "baseline", "transformer", "ensemble"]
    by = df.set_index(["run", "model"])
    for name, m in metrics["models"].items():
        row = by.loc[(full.name, name)]
        assert row["nested_macro_f1"] == m["nested_macro_f1"] and row["val_macro_f1"] == m["validation"]["macro_f1"]
        assert row["test_macro_f1"] == m["test"]["macro_f1"]
        assert row["test_macro_f1_raw"] == m["test"]["raw"]["macro_f1"]
        assert row["test_f1_Joy"] == m["test"]["per_label"]["Joy"]["f1"]
        assert row["selection"] == "oof" and row["time_s"] >= 0
        assert (row["best"] == "*") == (name == metrics["best_model"])
    assert by.loc[(full.name, "transformer")]["folds"] == "2"
    assert by.loc[(full.name, "tfidf")]["folds"] == "3"
    assert by.loc[(full.name, "stacker")]["folds"] == "3 (transformer 2)"
    assert by.loc[(full.name, "transformer")]["max_length"] == 32 and _nan(by.loc[(full.name, "lexicon")]["max_length"])
    base = by.loc[(split.name, "tfidf")]
    assert base["selection"] == "split" and base["folds"] == "1" and base["best"] == "*" and _nan(base["model_name"])
    assert full.name in printed and "average_prob" in printed
    assert md.read_text().count("\n") == 2 + len(df)


def test_terminal_view_fits_120_columns(runs, schema2, tmp_path, capsys):
    from emitlab.report.compare import format_terminal, terminal_view

    long = tmp_path / ("a-very-long-run-folder-name-" * 3)
    shutil.copytree(schema2, long)
    df = compare_runs([*runs, schema2, long])
    view = terminal_view(df)
    assert list(view.columns)[:4] == ["run", "model", "members", "combiner"] and list(view.columns)[-1] == "time_s"
    assert not [c for c in view.columns if c.startswith("test_f1_") or c in ("lr", "pooling", "epochs")]
    text = format_terminal(view, 120)
    assert max(map(len, text.splitlines())) <= 120 and "…" in text  # the long run name was cut
    assert text.splitlines()[0].split()[:7] == ["run", "model", "members", "combiner", "nested", "test", "time"]
    assert "stacker *" in text or "ensemble *" in text  # the run's choice is marked in the model column
    wide = terminal_view(df, labels=True, settings=True)
    assert {"test_f1_Direction", "lr", "epochs", "val_macro_f1"} <= set(wide.columns)
    parser = argparse.ArgumentParser(prog="emitlab")
    register_cli(parser.add_subparsers(dest="command"))
    csv = tmp_path / "t.csv"
    args = parser.parse_args(["compare", *map(str, runs), str(schema2), "--csv", str(csv)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "test_f1_Direction" not in printed and "5e-05" not in printed
    import pandas as pd

    assert list(pd.read_csv(csv).columns) == list(compare_runs([*runs, schema2]).columns)  # every column kept

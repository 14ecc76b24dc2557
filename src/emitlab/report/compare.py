"""Compare run folders side by side: one row per model, its key settings and its scores.

Reads ``config.json`` and ``metrics.json`` of

- schema-2 folders (``"schema": 2``, every job since the cross-fitting engine): one row per
  candidate -- each member alone and each combiner -- with its nested out-of-fold macro-F1;
- schema-1 ``emitlab run`` folders (``baseline`` / ``transformer`` / ``ensemble`` under
  ``"models"``, scored on a validation split);
- schema-1 single-model folders (``emitlab baseline`` / ``emitlab train``: ``metrics.json``
  holds one model at the top level).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from emitlab.errors import RunFolderError
from emitlab.io import atomic_write_text

__all__ = ["compare_runs", "format_table", "register_cli"]

#: column -> key of the ``train`` config section (transformer settings)
TRAIN_SETTINGS = {"pooling": "pooling", "loss": "loss", "pos_weight": "pos_weight", "lr": "learning_rate",
                  "epochs": "epochs", "max_length": "max_length"}
#: columns dropped when no row has a value
OPTIONAL = ["best", "members", "combiner", "model_name", *TRAIN_SETTINGS, "weight", "folds", "selection",
            "nested_macro_f1", "ood_macro_f1", "ood_proxy_macro_f1", "extra_data"]
SELECTION_SHORT = {"out-of-fold": "oof", "validation split": "split"}
#: column order (per-label test F1 and time_s follow)
ORDER = ["run", "model", "best", "members", "combiner", "model_name", *TRAIN_SETTINGS, "weight", "folds", "selection",
         "calibration", "extra_data", "nested_macro_f1", "val_macro_f1", "test_macro_f1_raw", "test_macro_f1",
         "ood_macro_f1", "ood_proxy_macro_f1"]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _is_baseline(key: str, metrics: dict) -> bool:
    return key == "baseline" or metrics.get("model") == "tfidf-logreg"


def _seconds(key: str, timings: dict, single: bool) -> float | None:
    """Schema 1: time of one model: the folder's total for single-model runs; in ``emitlab run``
    folders the model's own step (the ensemble: its step, else baseline + transformer)."""
    if single:
        return timings.get("total")
    if key in timings:
        return timings[key]
    if key == "ensemble" and "baseline" in timings and "transformer" in timings:
        return timings["baseline"] + timings["transformer"]
    return None


def _scores(m: dict) -> dict[str, Any]:
    """The score columns shared by both schemas (calibrated unless named raw)."""
    test = m.get("test") or {}
    row: dict[str, Any] = {"val_macro_f1": (m.get("validation") or {}).get("macro_f1"),
                           "test_macro_f1_raw": (test.get("raw") or {}).get("macro_f1"),
                           "test_macro_f1": test.get("macro_f1")}
    if "ood" in m:
        row["ood_macro_f1"] = m["ood"].get("macro_f1")
    if "ood_proxy" in m:  # MultiEmotions-It, out-of-fold or zero-shot (metrics["ood_proxy"]["mode"])
        row["ood_proxy_macro_f1"] = m["ood_proxy"].get("macro_f1")
    row |= {f"test_f1_{lab}": v["f1"] for lab, v in test.get("per_label", {}).items()}
    return row


def _rows_schema1(run_dir: Path, metrics: dict, config: dict) -> list[dict[str, Any]]:
    single = "models" not in metrics
    models = {metrics.get("model", "model"): metrics} if single else metrics["models"]
    timings = metrics.get("timings_s", {})
    best = metrics.get("best_model")
    rows = []
    for key, m in models.items():
        train = {} if _is_baseline(key, m) else config.get("train", {})
        name = m.get("model") if key == "ensemble" else train.get("model") or m.get("model")
        row: dict[str, Any] = {"run": run_dir.name, "model": key, "best": "*" if key == best else None,
                               "model_name": name}
        row |= {col: train.get(k) for col, k in TRAIN_SETTINGS.items()}
        row["weight"] = m.get("weight_on_transformer")
        row["selection"] = "split"
        row["calibration"] = m.get("calibration", {}).get("chosen")
        row |= _scores(m)
        row["time_s"] = _seconds(key, timings, single)
        rows.append(row)
    return rows


def _members_used(name: str, m: dict, members: list[str]) -> list[str]:
    """The members a schema-2 candidate draws on: itself for a member, else what its combiner says
    (:func:`~emitlab.engine.ensemble.members_used`: those with a weight > 0 for an average, all for a stacker)."""
    from emitlab.engine.ensemble import members_used
    from emitlab.registry import COMBINERS

    if name in members:
        return [name]
    comb = m.get("combiner") or {}
    if comb.get("kind") not in COMBINERS:
        return list(members)
    return members_used(comb, members)


def _combiner_text(name: str, m: dict, members: list[str]) -> str | None:
    from emitlab.engine.ensemble import describe_combiner

    if name in members:
        return None
    return describe_combiner(m.get("combiner"), members, short=True)


def _folds_text(used: list[str], info: dict) -> str | None:
    """K of the used members' cross-fitting: "5", or "5 (transformer 3)" when a member differs
    from the most common K."""
    from collections import Counter

    ks = {mem: (info.get(mem) or {}).get("folds") for mem in used}
    ks = {mem: k for mem, k in ks.items() if k is not None}
    if not ks:
        return None
    common = Counter(ks.values()).most_common(1)[0][0]
    odd = [f"{mem} {k}" for mem, k in ks.items() if k != common]
    return str(common) + (f" ({', '.join(odd)})" if odd else "")


def _rows_schema2(run_dir: Path, metrics: dict, config: dict) -> list[dict[str, Any]]:
    info = metrics.get("members") or {}
    members = list(info)
    timings = metrics.get("timings_s", {})
    best = metrics.get("best_model")
    selection = (metrics.get("selection") or {}).get("rows")
    train_cfg = config.get("train", {})
    rows = []
    for name, m in metrics["models"].items():
        used = _members_used(name, m, members)
        # transformer settings only where the candidate uses the transformer
        train = train_cfg if "transformer" in used else {}
        row: dict[str, Any] = {"run": run_dir.name, "model": name, "best": "*" if name == best else None,
                               "members": "+".join(used), "combiner": _combiner_text(name, m, members),
                               "model_name": train.get("model")}
        row |= {col: train.get(k) for col, k in TRAIN_SETTINGS.items()}
        row["folds"] = _folds_text(used, info)
        row["selection"] = SELECTION_SHORT.get(selection, selection)
        row["calibration"] = (m.get("calibration") or {}).get("chosen")
        row["extra_data"] = _extra_text(metrics, used)
        row["nested_macro_f1"] = m.get("nested_macro_f1",
                                       (metrics.get("ensemble") or {}).get("nested_macro_f1", {}).get(name))
        row |= _scores(m)
        # a member's own step; a combiner: the steps of the members it uses plus the combination step
        secs = [timings.get(f"member_{mem}") for mem in used]
        if any(s is None for s in secs):
            row["time_s"] = None
        else:
            row["time_s"] = sum(secs) + (timings.get("combination", 0.0) if name not in members else 0.0)
        rows.append(row)
    return rows


def _extra_text(metrics: dict, used: list[str]) -> str | None:
    """``multiemotions-it:1 xed-it:0.5`` for a candidate drawing on a member that trained on extra corpora."""
    extra = metrics.get("extra_data") or {}
    if not set(used) & set(extra.get("members") or []):
        return None
    return " ".join(f"{c['name']}:{c['weight']:g}" for c in extra.get("corpora") or []) or None


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise RunFolderError(f"{metrics_path} not found: is {run_dir} a run folder?")
    metrics = _read_json(metrics_path)
    config = _read_json(run_dir / "config.json")
    if int(metrics.get("schema", 1)) >= 2 and "models" in metrics:
        return _rows_schema2(run_dir, metrics, config) + _student_rows(run_dir, config)
    return _rows_schema1(run_dir, metrics, config)


def _student_rows(run_dir: Path, config: dict) -> list[dict[str, Any]]:
    """The distilled student of the run (``distill.json`` of ``emitlab distill``), if there is one."""
    path = run_dir / "distill.json"
    if not path.is_file():
        return []
    d = _read_json(path)
    student, speed = d.get("student") or {}, d.get("speed") or {}
    train = (d.get("settings") or {}).get("train") or {}
    members = student.get("members") or ["transformer"]  # the student's network and the members kept beside it
    kept = [m for m in members if m != "transformer"]
    row: dict[str, Any] = {"run": run_dir.name, "model": "student", "members": " ".join(members),
                           "combiner": f"distilled from {(d.get('teacher') or {}).get('model')}"
                                       + "".join(" + " + m for m in kept),
                           "model_name": train.get("model"), "selection": "split",
                           "calibration": ((student.get("calibration") or {}).get("chosen")),
                           "val_macro_f1": (student.get("held_out") or {}).get("macro_f1"),
                           "test_macro_f1": (student.get("test") or {}).get("macro_f1"),
                           "time_s": d.get("train_seconds")}
    if "ood_proxy" in student:
        row["ood_proxy_macro_f1"] = student["ood_proxy"].get("macro_f1")
    row |= {f"test_f1_{lab}": f1 for lab, f1 in ((student.get("test") or {}).get("per_label_f1") or {}).items()}
    if speed.get("student_texts_per_s"):
        row["texts_per_s"] = speed["student_texts_per_s"]
    return [row]


def compare_runs(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per (run, model): run, model, ``best`` (``*`` for the run's chosen model), the
    members a candidate uses and its combiner (schema 2), key transformer settings where the
    model uses the transformer, folds and selection rows (``oof`` / ``split``), calibration,
    nested out-of-fold macro-F1 (schema 2), validation / out-of-fold macro-F1 (calibrated), test
    macro-F1 raw (0.5) and calibrated, per-label test F1 and time in seconds (schema 2: the used
    members' steps, plus the combination step for a combiner). Columns that are empty for every
    row are dropped."""
    rows = [row for d in run_dirs for row in _rows(Path(d))]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    per_label = [c for c in frame.columns if c.startswith("test_f1_")]
    known = [c for c in ORDER if c in frame.columns]
    other = [c for c in frame.columns if c not in known and c not in per_label and c != "time_s"]
    frame = frame[known + other + per_label + ["time_s"]]
    empty = [c for c in OPTIONAL if c in frame.columns and frame[c].isna().all()]
    return frame.drop(columns=empty)


def _fmt(col: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        if col == "time_s":
            return f"{v:.1f}"
        if "f1" in col:
            return f"{v:.4f}"
        return f"{v:g}"
    return str(v)


def format_table(df: pd.DataFrame, markdown: bool = False, headers: dict[str, str] | None = None) -> str:
    """The comparison as aligned plain text, or as a Markdown (GitHub) table; ``headers`` renames
    columns for display (e.g. :data:`VIEW`)."""
    if df.empty:
        return "(no runs)"
    cells = [[_fmt(c, v) for c, v in zip(df.columns, row)] for row in df.itertuples(index=False)]
    header = [(headers or {}).get(c, str(c)) for c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    if markdown:
        def line(vals: list[str]) -> str:
            return "| " + " | ".join(v.replace("|", "\\|") for v in vals) + " |"

        rule = ["---:" if n else "---" for n in numeric]
        return "\n".join([line(header), "|" + "|".join(rule) + "|", *map(line, cells)]) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]

    def pad(vals: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(vals, widths, numeric)).rstrip()

    return "\n".join([pad(header), pad(["-" * w for w in widths]), *map(pad, cells)]) + "\n"


#: the terminal view: column -> its header (``--settings`` and ``--labels`` add more)
VIEW = {"run": "run", "model": "model", "members": "members", "combiner": "combiner", "nested_macro_f1": "nested",
        "test_macro_f1": "test", "ood_proxy_macro_f1": "ood proxy", "time_s": "time s"}
SETTINGS_VIEW = ["model_name", *TRAIN_SETTINGS, "folds", "selection", "calibration", "extra_data", "val_macro_f1",
                 "test_macro_f1_raw", "ood_macro_f1"]
#: text columns cut (with "…") when a row is wider than the terminal, widest first
CUTTABLE = ("run", "members", "combiner", "model_name", "extra_data", "calibration")


def terminal_view(df: pd.DataFrame, labels: bool = False, settings: bool = False) -> pd.DataFrame:
    """The columns ``emitlab compare`` prints: run, model (``*``: the run's choice), members,
    combiner (an average's weights of the members it uses, in their order), nested, test and
    OOD-proxy macro-F1 and time; ``settings`` adds the training settings and the other scores,
    ``labels`` the per-label test F1. Markdown and CSV files keep every column."""
    if df.empty:
        return df
    view = df.copy()
    if "best" in view:
        view["model"] = [m + (" *" if b == "*" else "") for m, b in zip(view["model"], view["best"])]
    if "combiner" in view:
        view["combiner"] = [_brief_combiner(c) for c in view["combiner"]]
    cols = [c for c in VIEW if c in view and c != "time_s"]
    if settings:
        cols += [c for c in SETTINGS_VIEW if c in view]
    if labels:
        cols += [c for c in view if c.startswith("test_f1_")]
    cols += ["time_s"] if "time_s" in view else []
    return view[cols]


def _brief_combiner(text: Any) -> Any:
    """``prob avg tfidf=0.50 lexicon=0.00 transformer=0.50`` -> ``prob avg 0.5/0.5`` (the members column
    names them)."""
    if not isinstance(text, str) or " avg " not in text:
        return text
    space, weights = text.split(" avg ", 1)
    kept = [w.split("=", 1)[1] for w in weights.split() if "=" in w and float(w.split("=", 1)[1]) > 0]
    return f"{space} avg " + "/".join(f"{float(w):g}" for w in kept)


def format_terminal(df: pd.DataFrame, width: int = 120) -> str:
    """:func:`format_table` of ``df`` with its widest text columns cut (``…``) until rows fit ``width``
    characters, where cutting can make them fit."""
    if df.empty:
        return format_table(df)
    df = df.copy()
    limits = {c: max(len(VIEW.get(c, c)), *(len(_fmt(c, v)) for v in df[c])) for c in df.columns if c in CUTTABLE}
    text = format_table(df, headers=VIEW)
    while max(map(len, text.splitlines())) > width and limits:
        col = max(limits, key=limits.get)
        if limits[col] <= max(8, len(VIEW.get(col, col))):
            del limits[col]
            continue
        limits[col] -= max(1, min(limits[col] - 8, max(map(len, text.splitlines())) - width))
        df[col] = [v if not isinstance(v, str) or len(v) <= limits[col] else v[: limits[col] - 1] + "…"
                   for v in df[col]]
        text = format_table(df, headers=VIEW)
    return text


def cmd_compare(args: argparse.Namespace) -> int:
    frame = compare_runs(args.run_dirs)
    print(format_terminal(terminal_view(frame, labels=args.labels, settings=args.settings), args.width), end="")
    if args.markdown:
        atomic_write_text(args.markdown, format_table(frame, markdown=True))
        print(f"markdown table written to {args.markdown} (every column)")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.csv, frame.to_csv(index=False))
        print(f"csv table written to {args.csv} (every column)")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``emitlab compare RUN_DIR... [--labels] [--settings] [--markdown FILE] [--csv FILE]``."""
    p = subparsers.add_parser("compare", help="Compare run folders: one row per model with its scores.",
                              description="One row per model of each run folder: the members and combiner it uses, "
                                          "nested out-of-fold, test and OOD-proxy macro-F1 and its time, fitted to "
                                          "the terminal's width. --labels and --settings add columns; --markdown and "
                                          "--csv write every column (settings, all scores, per-label F1).")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="Run folders (from emitlab baseline, train or run; old and new metrics.json schemas).")
    p.add_argument("--labels", action="store_true", help="Also print the per-label test F1.")
    p.add_argument("--settings", action="store_true", help=(
        "Also print the transformer settings, folds, selection rows, calibration, extra data and the other scores "
        "(out-of-fold, test at 0.5, out-of-domain)."))
    p.add_argument("--width", type=int, default=120, metavar="N",
                   help="Cut the longest text columns until rows fit N characters (default: 120).")
    p.add_argument("--markdown", type=Path, default=None, metavar="FILE",
                   help="Also write the table, every column, as Markdown here.")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE",
                   help="Also write the table, every column, as CSV here.")
    p.set_defaults(func=cmd_compare)
    return p

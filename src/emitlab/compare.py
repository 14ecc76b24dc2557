"""Compare run folders side by side: one row per model, its key settings and its scores.

Reads ``config.json`` and ``metrics.json`` of single-model folders (``emitlab baseline`` /
``emitlab train``: ``metrics.json`` holds one model at the top level) and of ``emitlab run``
folders (one entry per model under ``"models"``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_write_text

__all__ = ["compare_runs", "format_table", "register_cli"]

#: column -> key of the ``train`` config section (transformer settings)
TRAIN_SETTINGS = {"pooling": "pooling", "loss": "loss", "pos_weight": "pos_weight", "lr": "learning_rate",
                  "epochs": "epochs", "max_length": "max_length"}
OPTIONAL = ["model_name", *TRAIN_SETTINGS, "weight"]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _is_baseline(key: str, metrics: dict) -> bool:
    return key == "baseline" or metrics.get("model") == "tfidf-logreg"


def _seconds(key: str, timings: dict, single: bool) -> float | None:
    """Time of one model: the folder's total for single-model runs; in ``emitlab run`` folders the
    model's own step (the ensemble: its step, else baseline + transformer)."""
    if single:
        return timings.get("total")
    if key in timings:
        return timings[key]
    if key == "ensemble" and "baseline" in timings and "transformer" in timings:
        return timings["baseline"] + timings["transformer"]
    return None


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} not found: is {run_dir} a run folder?")
    metrics = _read_json(metrics_path)
    config = _read_json(run_dir / "config.json")
    single = "models" not in metrics
    models = {metrics.get("model", "model"): metrics} if single else metrics["models"]
    timings = metrics.get("timings_s", {})
    rows = []
    for key, m in models.items():
        train = {} if _is_baseline(key, m) else config.get("train", {})
        name = m.get("model") if key == "ensemble" else train.get("model") or m.get("model")
        row: dict[str, Any] = {"run": run_dir.name, "model": key, "model_name": name}
        row |= {col: train.get(k) for col, k in TRAIN_SETTINGS.items()}
        row["weight"] = m.get("weight_on_transformer")
        row["calibration"] = m.get("calibration", {}).get("chosen")
        row["val_macro_f1"] = m["validation"]["macro_f1"]
        test = m.get("test") or {}
        row["test_macro_f1_raw"] = test.get("raw", {}).get("macro_f1")
        row["test_macro_f1"] = test.get("macro_f1")
        row |= {f"test_f1_{lab}": v["f1"] for lab, v in test.get("per_label", {}).items()}
        row["time_s"] = _seconds(key, timings, single)
        rows.append(row)
    return rows


def compare_runs(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per (run, model): run, model, key settings where present, validation macro-F1
    (calibrated), test macro-F1 raw (0.5) and calibrated, per-label test F1 and time in seconds."""
    rows = [row for d in run_dirs for row in _rows(Path(d))]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    per_label = [c for c in frame.columns if c.startswith("test_f1_")]
    time_col = frame.pop("time_s")
    frame = frame[[c for c in frame.columns if c not in per_label] + per_label]
    frame["time_s"] = time_col
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


def format_table(df: pd.DataFrame, markdown: bool = False) -> str:
    """The comparison as aligned plain text, or as a Markdown (GitHub) table."""
    if df.empty:
        return "(no runs)"
    cells = [[_fmt(c, v) for c, v in zip(df.columns, row)] for row in df.itertuples(index=False)]
    header = [str(c) for c in df.columns]
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


def cmd_compare(args: argparse.Namespace) -> int:
    frame = compare_runs(args.run_dirs)
    print(format_table(frame), end="")
    if args.markdown:
        atomic_write_text(args.markdown, format_table(frame, markdown=True))
        print(f"markdown table written to {args.markdown}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``emitlab compare RUN_DIR... [--markdown FILE]`` to the ``emitlab`` subcommands."""
    p = subparsers.add_parser("compare", help="Compare run folders: one row per model with settings and scores.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="Run folders (from emitlab baseline, train or run).")
    p.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="Also write the table as Markdown here.")
    p.set_defaults(func=cmd_compare)
    return p

"""The steps every command shares: load data, split, calibrate, evaluate, write submissions."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .calibration import DEFAULT_THRESHOLD, CalibrationReport, calibrate, decode
from .data.loading import DataError, EmitData, TextDataset, label_warnings, load_emit, load_table
from .data.split import save_split, split_dataset
from .labels import labels_for_task
from .metrics import evaluate
from .runs import RunDir
from .settings import DATA_ENV, CalibrationConfig, DataConfig

log = logging.getLogger("emitlab")

def load_data(cfg: DataConfig) -> EmitData:
    """Load what ``cfg`` points at; a single file becomes an EmitData with train (and test)."""
    source = cfg.data or os.environ.get(DATA_ENV, "")
    if not source:
        raise DataError(f"no data given: pass --data DIR (or a file / hf:<id>) or set ${DATA_ENV}")
    path = Path(source)
    if path.is_file() and path.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"):
        if not cfg.label_cols and not cfg.label_list_col:
            if cfg.task.upper() in ("A", "B"):
                label_cols = labels_for_task(cfg.task)
            else:  # pragma: no cover - task is validated by argparse
                raise DataError("give --label-cols or --label-list-col for a single file")
        else:
            label_cols = cfg.label_cols
        kwargs = dict(text_col=cfg.text_col, id_col=cfg.id_col or None,
                      label_cols=None if cfg.label_list_col else label_cols,
                      label_list_col=cfg.label_list_col or None)
        train = load_table(path, **kwargs)
        data = EmitData(task=cfg.task, label_names=train.label_names, train=train)
        if cfg.test_file:
            data.test = load_table(cfg.test_file, **kwargs, label_names=train.label_names)
        data.warnings = label_warnings(train) + (label_warnings(data.test) if data.test else [])
        return data
    return load_emit(source, cfg.task, cfg.zip_password or None)


def split_and_save(data: EmitData, cfg: DataConfig, run: RunDir) -> tuple[TextDataset, TextDataset]:
    train, val = split_dataset(data.train, cfg.val_fraction, cfg.seed)
    save_split(run / "split.json", train, val, cfg.seed, cfg.val_fraction)
    log.info("split: %d train / %d validation texts (seed %d)", len(train), len(val), cfg.seed)
    return train, val


@dataclass
class ScoredModel:
    """Probabilities of one model on every set, and what calibration made of them."""

    name: str
    label_names: list[str]
    p_val: np.ndarray
    y_val: np.ndarray
    probs: dict[str, np.ndarray]  # set name ("test", "ood") -> probabilities
    calibration: CalibrationReport
    metrics: dict


def score_model(
    name: str,
    label_names: list[str],
    p_val: np.ndarray,
    y_val: np.ndarray,
    sets: dict[str, TextDataset],
    probs: dict[str, np.ndarray],
    cal_cfg: CalibrationConfig,
) -> ScoredModel:
    """Calibrate on validation, then evaluate raw (0.5) and calibrated decoding everywhere gold exists."""
    report = calibrate(y_val, p_val, label_names, cal_cfg.thresholds, cal_cfg.structure, cal_cfg.repeats)
    dec = report.decoder
    metrics: dict = {"model": name, "calibration": report.to_dict()}

    def both(y: np.ndarray, p: np.ndarray) -> dict:
        calibrated = evaluate(y, dec.decode(p), label_names)
        calibrated["raw"] = evaluate(y, decode(p, DEFAULT_THRESHOLD, label_names), label_names)
        return calibrated

    metrics["validation"] = both(y_val, p_val)
    for set_name, ds in sets.items():
        if ds.labels is not None:
            metrics[set_name] = both(ds.labels, probs[set_name])
    return ScoredModel(name, label_names, p_val, y_val, probs, report, metrics)


def write_submissions(run: RunDir, scored: ScoredModel, sets: dict[str, TextDataset], task: str, prefix: str = "") -> list[Path]:
    """Official submission CSVs (``id,<labels>`` in the input's order) for every prediction set."""
    paths = []
    for set_name, ds in sets.items():
        pred = scored.calibration.decoder.decode(scored.probs[set_name])
        frame = pd.DataFrame(pred, columns=scored.label_names)
        frame.insert(0, "id", ds.ids)
        path = run / f"{prefix}submission_task-{task}_{set_name}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def summary_line(metrics: dict) -> str:
    parts = [f"{metrics['model']}: validation macro-F1 {metrics['validation']['macro_f1']:.4f}"
             f" (raw {metrics['validation']['raw']['macro_f1']:.4f})"]
    for set_name in ("test", "ood"):
        if set_name in metrics:
            parts.append(f"{set_name} macro-F1 {metrics[set_name]['macro_f1']:.4f} (raw {metrics[set_name]['raw']['macro_f1']:.4f})")
    return "; ".join(parts)

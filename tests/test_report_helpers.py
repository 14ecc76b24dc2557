"""Run folders for the report and compare tests (no tests here; imported by test_report.py and
test_compare.py).

- :func:`schema2_run`: a real ``emitlab run`` (TF-IDF, lexicon and a tiny random BERT; 3 folds, 2
  for the transformer) on a small made-up EMit folder with some flipped labels (so that every
  model makes mistakes) and HTML-hostile texts. It is built once per test session and shared
  through the session's base temporary folder.
- :func:`baseline_split_run`: a real ``emitlab baseline --folds 1`` (one member, a validation split).
- :func:`make_schema1_folder`: a run folder of the old layout (``baseline`` / ``transformer`` /
  ``ensemble`` on a validation split, ``ensemble_weights.json``), written by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emitlab.labels import TASK_A_LABELS

from synthetic import make_rows, write_csv, write_emit_folder

#: appended to every training text: the report must show it escaped
HOSTILE = " <script>alert('x')</script> & «ciao»"
HOSTILE_ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; «ciao»"

#: a few seconds on 2 CPU cores: tiny BERT, 2 epochs, few calibration repeats and nested folds
TINY_RUN_FLAGS = ["--report-to", "none", "--epochs", "2", "--learning-rate", "3e-3", "--head-learning-rate", "1e-2",
                  "--max-length", "32", "--no-freeze-word-embeddings", "--logging-steps", "2", "--repeats", "4",
                  "--nested-folds", "3", "--weight-step", "0.25", "--no-report"]


def write_noisy_emit_folder(folder: Path, n_train: int = 180, n_test: int = 50, flip: float = 0.04,
                            seed: int = 7) -> Path:
    """write_emit_folder, then the task-A training file again with ``flip`` of its label cells
    flipped and :data:`HOSTILE` after every text."""
    write_emit_folder(folder, n_train=n_train, n_test=n_test)
    ids, texts, y, _ = make_rows(n_train, 0, "tr")
    rng = np.random.default_rng(seed)
    flips = rng.random(y.shape) < flip
    y = np.where(flips, 1 - y, y)
    write_csv(folder / "emit_train_A.csv", ids, [t + HOSTILE for t in texts], TASK_A_LABELS, y)
    return folder


def _cached_run(base: Path, name: str, argv: list[str]) -> Path:
    """Run ``emitlab <argv>`` into ``base/name`` unless a finished run is already there."""
    from threadpoolctl import threadpool_limits

    from emitlab.cli import main

    out = base / name
    if (out / "metrics.json").is_file():
        return out
    data = base / "emit-noisy"
    if not (data / "emit_train_A.csv").is_file():
        write_noisy_emit_folder(data)
    # one BLAS / OpenMP thread: on a busy 2-core machine the stacker's many small logistic
    # regressions are ~10x slower with multithreaded BLAS
    with threadpool_limits(1):
        rc = main(["-q", *argv[:1], "--data", str(data), "--out", str(out), "--overwrite", *argv[1:]])
    assert rc == 0, f"emitlab {argv[0]} failed with status {rc}"
    return out


def runs_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "report-compare-runs"
    path.mkdir(exist_ok=True)
    return path


def schema2_run(tmp_path_factory, tiny_model: Path) -> Path:
    """A real ``emitlab run`` folder (schema 2) with every member; shared by the whole session."""
    return _cached_run(runs_dir(tmp_path_factory), "run-full", [
        "run", "--model", str(tiny_model), "--folds", "3", "--transformer-folds", "2", *TINY_RUN_FLAGS])


def baseline_split_run(tmp_path_factory) -> Path:
    """A real ``emitlab baseline --folds 1``: the TF-IDF member alone on a 90/10 split."""
    return _cached_run(runs_dir(tmp_path_factory), "baseline-split", [
        "baseline", "--folds", "1", "--val-fraction", "0.3", "--repeats", "4"])


# ----------------------------------------------------------------------------- schema 1, by hand


def _probs(y: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Plausible probabilities: gold pushes the logit up, prevalence-ish bias pushes it down."""
    rng = np.random.default_rng(seed)
    logits = strength * (2 * y - 1) - 1.0 + rng.normal(0, 1.3, y.shape)
    return 1 / (1 + np.exp(-logits))


def _trainer_log(steps: int = 120) -> list[dict]:
    log = []
    for s in range(10, steps + 1, 10):
        log.append({"loss": round(0.7 * np.exp(-s / 60) + 0.1, 4), "step": s, "epoch": s / 40,
                    "learning_rate": 1e-4 * (1 - s / steps), "grad_norm": 1.0})
        if s % 40 == 0:
            log.append({"eval_macro_f1": 0.3 + s / 600, "eval_loss": 0.5 - s / 1000, "step": s, "epoch": s / 40})
    log.append({"train_runtime": 100.0, "train_loss": 0.3, "step": steps, "epoch": 3.0})
    return log


def make_schema1_folder(path: Path, n_val: int = 120, n_test: int = 80) -> Path:
    """An ``emitlab run`` folder as the engine wrote it before cross-fitting (metrics schema 1)."""
    from emitlab.engine.calibration import calibrate
    from emitlab.engine.evaluation import evaluate_decoded

    path.mkdir(parents=True, exist_ok=True)
    labels = list(TASK_A_LABELS)
    val_ids, val_texts, y_val, _ = make_rows(n_val, 11, "va")
    _, _, y_test, _ = make_rows(n_test, 12, "te")
    probs = {m: {"validation": _probs(y_val, s, 1 + i), "test": _probs(y_test, s, 10 + i),
                 "ood": _probs(np.zeros((20, 10)), s, 20 + i)}
             for i, (m, s) in enumerate((("baseline", 0.9), ("transformer", 1.5)))}
    probs["ensemble"] = {s: 0.7 * probs["transformer"][s] + 0.3 * probs["baseline"][s] for s in probs["baseline"]}
    models = {}
    for m, p in probs.items():
        rep = calibrate(y_val, p["validation"], labels, repeats=4)
        models[m] = {"model": {"baseline": "tfidf-logreg", "transformer": "me5-small"}.get(m, m),
                     "calibration": rep.to_dict(),
                     "validation": evaluate_decoded(y_val, p["validation"], rep.decoder, labels),
                     "test": evaluate_decoded(y_test, p["test"], rep.decoder, labels)}
    models["ensemble"]["weight_on_transformer"] = 0.7
    metrics = {"task": "A", "label_names": labels, "models": models, "best_model": "ensemble",
               "timings_s": {"baseline": 30.1, "transformer": 1400.2, "total": 1441.2},
               "training": {"train_seconds": 1400.2, "global_steps": 120, "device": "cpu"}}
    config = {"data": {"task": "A"}, "baseline": {"C": 1.0},
              "train": {"model": "me5-small", "pooling": "mean", "loss": "bce", "pos_weight": "sqrt",
                        "learning_rate": 1e-4, "epochs": 4.0, "max_length": 96},
              "versions": {"python": "3.11"}}
    arrays = {"y_validation": y_val, "y_test": y_test}
    for m, p in probs.items():
        arrays |= {f"{m}_{s}": v for s, v in p.items()}
    np.savez(path / "predictions.npz", **arrays)
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "config.json").write_text(json.dumps(config))
    (path / "validation_texts.json").write_text(json.dumps([{"id": i, "text": t} for i, t in zip(val_ids, val_texts)]))
    (path / "trainer_log.json").write_text(json.dumps(_trainer_log()))
    (path / "ensemble_weights.json").write_text(json.dumps(
        {"weights": [0.0, 0.25, 0.5, 0.75, 1.0], "validation_heldout_macro_f1": [0.4, 0.5, 0.55, 0.56, 0.52]}))
    return path

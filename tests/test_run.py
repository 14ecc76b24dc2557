"""`emitlab run`: the whole job on a tiny model, tracking read-back, and the quick profile on EMit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from emitlab.cli import main
from emitlab.inference import EmotionClassifier


TINY = ["--epochs", "3", "--learning-rate", "3e-3", "--head-learning-rate", "1e-2", "--max-length", "48",
        "--no-freeze-word-embeddings", "--logging-steps", "5"]


@pytest.fixture(scope="module")
def tiny_run(tiny_model, emit_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--report-to", "tensorboard"] + TINY) == 0
    return out


def test_run_folder_contents(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert set(m["models"]) == {"baseline", "transformer", "ensemble"}
    assert m["best_model"] in m["models"]
    assert 0.0 <= m["models"]["ensemble"]["weight_on_transformer"] <= 1.0
    for name in ("report.html", "model/emitlab.json", "model.zip", "predictions.npz", "data_stats.png",
                 "submission_task-A_test.csv", "submission_task-A_ood.csv", "baseline_submission_task-A_test.csv",
                 "ensemble_weights.json", "validation_texts.json", "trainer_log.json"):
        assert (tiny_run / name).exists(), name
    assert m["export"]["reload_max_abs_diff"] <= 1e-6
    # the official submission is the best model's decoded test predictions
    pred = np.load(tiny_run / "predictions.npz")
    sub = pd.read_csv(tiny_run / "submission_task-A_test.csv")
    from emitlab.calibration import Decoder

    best = m["models"][m["best_model"]]
    dec = Decoder.from_dict(best["calibration"]["decoder"])
    assert np.array_equal(sub.iloc[:, 1:].to_numpy(), dec.decode(pred[f"{m['best_model']}_test"]))


def test_ensemble_export_predicts_what_was_reported(tiny_model, emit_folder, tmp_path):
    # force the ensemble to be exported by running without structure search on a folder where
    # it wins or not: whichever model was exported, reloading reproduces its probabilities
    out = tmp_path / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--report-to", "none", "--no-report"] + TINY) == 0
    m = json.loads((out / "metrics.json").read_text())
    clf = EmotionClassifier.from_pretrained(out / "model")
    texts = [r["text"] for r in json.loads((out / "validation_texts.json").read_text())]
    exported = m["export"]["model"]
    ref = np.load(out / "predictions.npz")[f"{exported}_validation"]
    assert np.abs(clf.predict_proba(texts) - ref).max() <= 1e-6
    assert (clf.ensemble is not None) == (exported == "ensemble")


def test_tensorboard_scalars_read_back(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = {p.parent for p in (tiny_run / "tb").rglob("events.out.tfevents.*")}
    assert event_dirs, "no TensorBoard event file written"
    tags: set[str] = set()
    for d in event_dirs:
        acc = EventAccumulator(str(d))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
        if "eval/macro_f1" in acc.Tags()["scalars"]:
            values = [e.value for e in acc.Scalars("eval/macro_f1")]
            assert len(values) == 3 and all(0 <= v <= 1 for v in values)
    assert {"train/loss", "eval/macro_f1"} <= tags


def test_mlflow_sqlite_read_back(tiny_model, emit_folder, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is an optional extra (pip install emitlab[tracking])")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--report-to", "mlflow"] + TINY) == 0
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name("emitlab")
    runs = client.search_runs([exp.experiment_id])
    assert runs and "eval_macro_f1" in runs[0].data.metrics
    history = client.get_metric_history(runs[0].info.run_id, "eval_macro_f1")
    assert len(history) == 3


@pytest.mark.slow
def test_quick_profile_on_emit(emit_data_dir, tmp_path):
    """The README's main job in its quick form, exactly as a user runs it."""
    out = tmp_path / "quick"
    env = dict(os.environ, EMITLAB_DATA=str(emit_data_dir))
    res = subprocess.run([sys.executable, "-m", "emitlab.cli", "run", "--profile", "quick", "--out", str(out)],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["models"]["baseline"]["test"]["macro_f1"] > 0.45
    assert (out / "report.html").stat().st_size > 50_000
    assert len(pd.read_csv(out / "submission_task-A_ood.csv")) == 1000
    assert EmotionClassifier.from_pretrained(out / "model.zip").predict_proba(["Che bella giornata!"]).shape == (1, 10)
    print(res.stdout[-2500:])

"""`emitlab run`: the whole engine on a tiny model (cross-fitting, combination, export), the
test-label invariance of every choice, task B end to end, and the quick profile on EMit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from emitlab.cli import main
from emitlab.engine.calibration import Decoder
from emitlab.inference import EmotionClassifier

from conftest import TINY_FOLDS, TINY_TRAIN

CANDIDATES = {"tfidf", "lexicon", "transformer", "average_prob", "average_logit", "stacker"}


def test_run_folder_contents(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["schema"] == 2 and set(m["models"]) == CANDIDATES
    assert m["selection"] == {"rows": "out-of-fold", "n": 300, "folds": {"default": 3, "transformer": 2}}
    assert m["models"][m["best_model"]]["nested_macro_f1"] == max(v["nested_macro_f1"] for v in m["models"].values())
    assert [len(m["members"][k]["fold_seconds"]) for k in ("tfidf", "lexicon", "transformer")] == [3, 3, 2]
    for name in ("model/emitlab.json", "model.zip", "predictions.npz", "data_stats.png", "folds.json",
                 "submission_task-A_test.csv", "submission_task-A_ood.csv", "tfidf_submission_task-A_test.csv",
                 "stacker_submission_task-A_ood.csv", "validation_texts.json", "trainer_log.json", "config.json"):
        assert (tiny_run / name).exists(), name
    folds = json.loads((tiny_run / "folds.json").read_text())
    assert sorted(set(folds["default"]["fold_of_row"])) == [0, 1, 2] and len(folds["ids"]) == 300
    # the official submission is the chosen model's decoded test predictions
    pred = np.load(tiny_run / "predictions.npz")
    sub = pd.read_csv(tiny_run / "submission_task-A_test.csv")
    best = m["models"][m["best_model"]]
    dec = Decoder.from_dict(best["calibration"]["decoder"])
    assert np.array_equal(sub.iloc[:, 1:].to_numpy(), dec.decode(pred[f"{m['best_model']}_test"]))
    assert pred["y_validation"].shape == (300, 10) and np.array_equal(pred["validation_rows"], np.arange(300))


def test_whole_ensemble_export_reproduces_the_run(tiny_run, emit_folder):
    m = json.loads((tiny_run / "metrics.json").read_text())
    # exact on the CPU; on a GPU, kernels may pick other algorithms for other batch shapes
    assert m["export"]["reload_max_abs_diff"] <= (0.0 if m["export"]["reload_device"] == "cpu" else 1e-5)
    meta = json.loads((tiny_run / "model" / "emitlab.json").read_text())
    assert meta["format_version"] == 2 and meta["model_kind"] == m["best_model"]
    assert {mm["name"] for mm in meta["members"]} == set(m["export"]["members"])
    n_folds = {"tfidf": 3, "lexicon": 3, "transformer": 2}
    for mm in meta["members"]:
        assert len(mm["folds"]) == n_folds[mm["name"]]
    files = [p.name for p in (tiny_run / "model").rglob("*")]
    assert not [f for f in files if f.endswith((".pkl", ".joblib", ".pickle", ".bin"))]
    texts = pd.read_csv(emit_folder / "emit_test_nolabel.csv")["text"].tolist()
    ref = np.load(tiny_run / "predictions.npz")[f"{m['best_model']}_test"]
    for path in (tiny_run / "model", tiny_run / "model.zip"):
        clf = EmotionClassifier.from_pretrained(path)
        assert np.array_equal(clf.predict_proba(texts), ref)
    rows = clf.predict(["che paura terrore", "amore cuore"])
    assert set(rows[0]["probabilities"]) == set(meta["labels"])


def test_test_labels_choose_nothing(tiny_run, emit_folder, tmp_path, tiny_model):
    """Shuffling the test file's labels changes test scores, never a choice."""
    shuffled = tmp_path / "emit"
    shutil.copytree(emit_folder, shuffled)
    test = pd.read_csv(shuffled / "emit_test.csv", dtype={"id": str})
    label_cols = [c for c in test.columns if c not in ("id", "text")]
    rng = np.random.default_rng(0)
    test[label_cols] = test[label_cols].to_numpy()[rng.permutation(len(test))]
    test.to_csv(shuffled / "emit_test.csv", index=False)
    out = tmp_path / "run"
    assert main(["-q", "run", "--data", str(shuffled), "--model", str(tiny_model), "--out", str(out),
                 "--no-report"] + TINY_TRAIN + TINY_FOLDS) == 0
    a = json.loads((tiny_run / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert a["ensemble"] == b["ensemble"] and a["best_model"] == b["best_model"]  # weights, stacker, choice
    for name in a["models"]:
        assert a["models"][name]["calibration"] == b["models"][name]["calibration"]  # thresholds, decoding
        assert a["models"][name]["combiner"] == b["models"][name]["combiner"]
    ta = [{k: v for k, v in f.items() if k not in ("train_seconds", "train_examples_per_second")}
          for f in a["members"]["transformer"]["training"]]
    tb = [{k: v for k, v in f.items() if k not in ("train_seconds", "train_examples_per_second")}
          for f in b["members"]["transformer"]["training"]]
    assert [f["global_steps"] for f in ta] == [f["global_steps"] for f in tb]  # same checkpoint / epochs
    pa, pb = np.load(tiny_run / "predictions.npz"), np.load(out / "predictions.npz")
    for key in pa.files:
        if key.endswith(("_validation", "_ood")) or (key.endswith("_test") and not key.startswith("y_")):
            assert np.allclose(pa[key], pb[key], atol=1e-6), key
    assert not np.array_equal(pa["y_test"], pb["y_test"])
    assert a["models"]["tfidf"]["test"]["macro_f1"] != b["models"]["tfidf"]["test"]["macro_f1"]


def test_task_b_end_to_end(tiny_model, emit_folder, tmp_path):
    out = tmp_path / "b"
    assert main(["-q", "run", "--task", "B", "--data", str(emit_folder), "--model", str(tiny_model),
                 "--out", str(out), "--no-report"] + TINY_TRAIN + TINY_FOLDS) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "B" and m["label_names"] == ["Direction", "Topic"]
    assert set(m["models"][m["best_model"]]["test"]["per_label"]) == {"Direction", "Topic"}
    for name in ("submission_task-B_test.csv", "submission_task-B_ood.csv"):
        frame = pd.read_csv(out / name)
        assert list(frame.columns) == ["id", "Direction", "Topic"]
    clf = EmotionClassifier.from_pretrained(out / "model.zip")
    assert clf.predict_proba(["ciao"]).shape == (1, 2)


def test_quick_split_mode(tiny_model, emit_folder, tmp_path):
    """--folds 1: the single 90/10 split; choices on the validation rows only."""
    out = tmp_path / "split"
    assert main(["-q", "run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--no-report", "--folds", "1", "--members", "tfidf", "lexicon"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["selection"]["rows"] == "validation split" and abs(m["selection"]["n"] - 30) <= 2
    assert set(m["models"]) == {"tfidf", "lexicon", "average_prob", "average_logit", "stacker"}


@pytest.mark.slow
def test_quick_profile_on_emit(emit_data_dir, tmp_path):
    """The README's main job in its quick form, exactly as a user runs it."""
    out = tmp_path / "quick"
    env = dict(os.environ, EMITLAB_DATA=str(emit_data_dir))
    res = subprocess.run([sys.executable, "-m", "emitlab.cli", "run", "--profile", "quick", "--out", str(out)],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["models"]["tfidf"]["test"]["macro_f1"] > 0.45
    assert (out / "report.html").stat().st_size > 50_000
    assert len(pd.read_csv(out / "submission_task-A_ood.csv")) == 1000
    assert EmotionClassifier.from_pretrained(out / "model.zip").predict_proba(["Che bella giornata!"]).shape == (1, 10)
    print(res.stdout[-2500:])

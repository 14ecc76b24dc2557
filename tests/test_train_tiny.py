"""Fine-tuning, export, reload and prediction with a tiny local BERT (seconds each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from emitlab.cli import main
from emitlab.devices import pick_device
from emitlab.inference import EmotionClassifier

from conftest import TINY_TRAIN as TRAIN_ARGS


@pytest.fixture(scope="module")
def trained_run(tiny_model, emit_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "train"
    # fp32 whatever this CPU has: with bf16 autocast (``auto`` on an AVX512-BF16 CPU) the Trainer's
    # evaluation runs in bf16 and the kept model predicts in fp32, so the exact comparison of the two
    # below would hold only when no probability crosses 0.5 between them (test_cpu_precisions_train
    # covers the bf16 path)
    code = main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out)]
                + TRAIN_ARGS + ["--precision", "fp32"])
    assert code == 0
    return out


FOLD = "model/members/transformer/fold-0"


def test_train_run_folder(trained_run):
    m = json.loads((trained_run / "metrics.json").read_text())
    assert set(m["models"]) == {"transformer"} and m["selection"]["rows"] == "validation split"
    training = m["members"]["transformer"]["training"][0]
    assert training["global_steps"] > 0 and training["device"] == pick_device("auto")
    t = m["models"]["transformer"]
    assert {"raw", "macro_f1", "per_label"} <= set(t["test"])
    assert m["export"]["reload_device"] == training["device"]
    if training["device"] == "cpu":
        assert m["export"]["reload_max_abs_diff"] == 0.0
    else:  # GPU kernels may pick other algorithms for other batch shapes
        assert m["export"]["reload_max_abs_diff"] < 1e-5
    # the validation probabilities are aligned with the validation rows: scoring them at 0.5
    # reproduces the Trainer's own evaluation of the best checkpoint
    assert t["validation"]["raw"]["macro_f1"] == pytest.approx(training["best_eval_macro_f1_at_0.5"], abs=1e-6)
    for f in ("config.json", "folds.json", "trainer_log.json", "submission_task-A_test.csv",
              "submission_task-A_ood.csv",
              "model/emitlab.json", f"{FOLD}/classifier.safetensors", f"{FOLD}/config.json", f"{FOLD}/network.json",
              "model.zip"):
        assert (trained_run / f).exists(), f
    assert not (trained_run / FOLD / "checkpoints").exists()
    history = json.loads((trained_run / "trainer_log.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0]  # it learned
    assert t["validation"]["macro_f1"] > 0.4


def test_reload_equals_training_probabilities(trained_run):
    m = json.loads((trained_run / "metrics.json").read_text())
    meta = json.loads((trained_run / "model" / "emitlab.json").read_text())
    network = json.loads((trained_run / FOLD / "network.json").read_text())
    assert meta["labels"][0] == "Anger" and len(meta["decoder"]["thresholds"]) == 10
    assert meta["cleaning"]["urls"] == "token" and network["max_length"] == 48
    assert meta["metrics"]["test"] == pytest.approx(m["models"]["transformer"]["test"]["macro_f1"])
    a = EmotionClassifier.from_pretrained(trained_run / "model")
    b = EmotionClassifier.from_pretrained(trained_run / "model.zip")
    texts = ["che paura terrore oggi", "amore cuore 😂 #Bello", "x"]
    pa, pb = a.predict_proba(texts), b.predict_proba(texts)
    assert np.abs(pa - pb).max() <= 1e-6
    # batching and length sorting do not change the result
    assert np.abs(a.predict_proba(texts, batch_size=1) - pa).max() <= 1e-5
    rows = a.predict("amore cuore")
    assert set(rows[0]["probabilities"]) == set(meta["labels"])


def test_predict_cli_stdin_and_csv(trained_run, tmp_path):
    model = str(trained_run / "model")
    res = subprocess.run([sys.executable, "-m", "emitlab.cli", "predict", "--model", model],
                         input="felice evviva\nche schifo vergogna\n", capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 2 and rows[0]["text"] == "felice evviva" and len(rows[0]["probabilities"]) == 10
    inp = tmp_path / "in.csv"
    pd.DataFrame({"id": ["a", "b", "c"],
                  "text": ["rabbia", "triste lacrime", "fiducia bravo"]}).to_csv(inp, index=False)
    out = tmp_path / "out.csv"
    assert main(["predict", "--model", model, "--input", str(inp), "--output", str(out)]) == 0
    frame = pd.read_csv(out)
    assert frame["id"].tolist() == ["a", "b", "c"]
    assert {"p_Joy", "Joy", "labels"} <= set(frame.columns)
    assert ((frame["p_Joy"] >= 0) & (frame["p_Joy"] <= 1)).all()


def test_task_b_and_cls_pooling_and_focal(tiny_model, emit_folder, tmp_path):
    out = tmp_path / "b"
    args = ["-q", "train", "--data", str(emit_folder), "--task", "B", "--model", str(tiny_model), "--out", str(out),
            "--pooling", "cls", "--loss", "focal", "--pos-weight", "neg_pos"] + TRAIN_ARGS
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["models"]["transformer"]["test"]["per_label"]) == {"Direction", "Topic"}
    clf = EmotionClassifier.from_pretrained(out / "model")
    assert clf.predict_proba(["ciao"]).shape == (1, 2)


def test_resume_after_crash(tiny_model, emit_folder, tmp_path):
    out = tmp_path / "crash"
    cmd = [sys.executable, "-m", "emitlab.cli", "-q", "train", "--data", str(emit_folder), "--model", str(tiny_model),
           "--out", str(out), "--eval-steps", "5", "--max-steps", "20", "--early-stopping-patience", "0"] + TRAIN_ARGS
    env = dict(os.environ, EMITLAB_TEST_CRASH_AFTER_STEP="12")
    crashed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert crashed.returncode == 3, crashed.stderr[-2000:]
    assert not (out / "model").exists() and not (out / "metrics.json").exists()
    checkpoints = sorted(p.name for p in (out / "work" / "transformer" / "fold-0" / "checkpoints").iterdir())
    assert "checkpoint-10" in checkpoints
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in (out / "run.log").read_text()
    m = json.loads((out / "metrics.json").read_text())
    assert m["members"]["transformer"]["training"][0]["global_steps"] == 20
    assert EmotionClassifier.from_pretrained(out / "model").predict_proba(["ciao"]).shape == (1, 10)


def test_resume_after_sigkill(tiny_model, emit_folder, tmp_path):
    """A real ``emitlab train`` killed with SIGKILL once it has begun writing checkpoints leaves
    nothing half-written under the final names, and ``--resume`` finishes it."""
    import signal
    import time
    import zipfile

    out = tmp_path / "killed"
    checkpoints = out / "work" / "transformer" / "fold-0" / "checkpoints"
    # many more steps than the first checkpoint needs, so the kill lands while it is still training
    cmd = [sys.executable, "-m", "emitlab.cli", "-q", "train", "--data", str(emit_folder), "--model", str(tiny_model),
           "--out", str(out), *TRAIN_ARGS, "--eval-steps", "5", "--max-steps", "200", "--early-stopping-patience", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not (checkpoints.is_dir() and any(p.name.startswith("checkpoint-") for p in checkpoints.iterdir())):
            assert proc.poll() is None, f"train ended (status {proc.returncode}) before writing a checkpoint:\n" + \
                proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: only the process started here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # nothing half-written: the results appear whole or not at all
    assert not (out / "metrics.json").exists()
    if not (out / "members" / "transformer" / "fold-0" / "fold.json").exists():  # killed while training
        assert not (out / "model").exists() and not (out / "model.zip").exists()
    else:  # killed after training: whatever is there is complete
        if (out / "model").exists():
            EmotionClassifier.from_pretrained(out / "model")
        if (out / "model.zip").exists():
            assert zipfile.is_zipfile(out / "model.zip")

    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in (out / "run.log").read_text()
    m = json.loads((out / "metrics.json").read_text())
    assert m["members"]["transformer"]["training"][0]["global_steps"] == 200
    clf = EmotionClassifier.from_pretrained(out / "model")
    assert clf.predict_proba(["ciao"]).shape == (1, 10)
    assert EmotionClassifier.from_pretrained(out / "model.zip").predict_proba(["ciao"]).shape == (1, 10)


def test_resume_skips_checkpoints_that_were_not_completely_written(tmp_path):
    from emitlab.members.transformer.member import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, state in ((5, "{}"), (10, None), (15, '{"global_step": 1')):  # whole, no state, cut state
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-20.tmp").mkdir()  # not a checkpoint name
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-20.tmp", "checkpoint-5"]


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_cpu_precisions_train(tiny_model, emit_folder, tmp_path, precision):
    """``--precision bf16 --device cpu``: the Trainer's CPU autocast trains; the model it keeps, its
    predictions and the export are float32, and the reload reproduces them. ``fp32``: what ``auto``
    does on a CPU without native bf16, run here whatever this CPU has."""
    out = tmp_path / precision
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--no-report", "--precision", precision, "--device", "cpu"] + TRAIN_ARGS) == 0
    m = json.loads((out / "metrics.json").read_text())
    info = m["members"]["transformer"]["training"][0]
    assert info["precision"] == ({"bf16": True} if precision == "bf16" else "fp32") and info["device"] == "cpu"
    assert m["export"]["reload_max_abs_diff"] == 0.0
    assert m["models"]["transformer"]["validation"]["macro_f1"] > 0.3  # it learnt the synthetic cues


def test_weights_and_biases_offline(tiny_model, emit_folder, tmp_path, monkeypatch):
    """--report-to wandb: the Trainer's W&B integration, one W&B run per fold under the run folder;
    offline, each run's file holds the losses the fold's Trainer logged."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    out = tmp_path / "wb"
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--no-report", "--folds", "2", "--transformer-folds", "2"]
                + TRAIN_ARGS + ["--epochs", "1", "--report-to", "wandb"]) == 0
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2  # one W&B run per fold
    for i in range(2):
        log_history = json.loads((out / "work" / "transformer" / f"fold-{i}" / "trainer_log.json").read_text())
        losses = [h["loss"] for h in log_history if "loss" in h]
        runs = [f.read_bytes() for f in files if f"transformer/fold-{i}".encode() in f.read_bytes()]
        assert len(runs) == 1 and losses
        assert all(json.dumps(v).encode() in runs[0] for v in losses)  # the logged values are in its file

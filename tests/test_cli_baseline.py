"""End-to-end CLI on a synthetic EMit folder: baseline run folder, submissions, data stats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from emitlab.cli import main
from emitlab.labels import TASK_A_LABELS


@pytest.mark.parametrize("task,labels", [("A", TASK_A_LABELS), ("B", ["Direction", "Topic"])])
def test_baseline_run_folder(emit_folder, tmp_path, capsys, task, labels):
    out = tmp_path / "run"
    assert main(["-q", "baseline", "--data", str(emit_folder), "--task", task, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    tfidf = metrics["models"]["tfidf"]
    assert set(metrics["models"]) == {"tfidf"} and metrics["best_model"] == "tfidf"
    assert 0 <= tfidf["validation"]["macro_f1"] <= 1
    assert set(tfidf["test"]["per_label"]) == set(labels)
    assert tfidf["test"]["macro_f1"] > 0.6  # the synthetic cues are easy to learn
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["task"] == task and "tfidf" in cfg and "cleaning" in cfg and "versions" in cfg
    folds = json.loads((out / "folds.json").read_text())  # 5-fold cross-fitting by default
    assert sorted(set(folds["default"]["fold_of_row"])) == [0, 1, 2, 3, 4] and len(folds["ids"]) == 300
    assert metrics["selection"] == {"rows": "out-of-fold", "n": 300, "folds": {"default": 5}}
    sub = pd.read_csv(out / f"submission_task-{task}_test.csv", dtype={"id": str})
    gold = pd.read_csv(emit_folder / "emit_test.csv", dtype={"id": str})
    assert list(sub.columns) == ["id"] + labels and sub["id"].tolist() == gold["id"].tolist()
    assert set(np.unique(sub[labels].to_numpy())) <= {0, 1}
    ood = pd.read_csv(out / f"submission_task-{task}_ood.csv")
    assert len(ood) == 60
    assert (out / "run.log").stat().st_size > 0


def test_run_folder_is_never_overwritten_silently(emit_folder, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out), "--overwrite"]) == 2
    assert "not an emitlab run folder" in capsys.readouterr().err  # only emitlab's own runs are replaced
    assert (out / "keep.txt").read_text() == "mine"
    run = tmp_path / "run2"
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(run)]) == 0
    (run / "extra.txt").write_text("x")
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(run), "--overwrite"]) == 0
    assert not (run / "extra.txt").exists() and (run / "metrics.json").is_file()


def test_config_file_and_flags(emit_folder, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data:\n  data: {emit_folder}\n  seed: 3\ntfidf:\n  C: 0.5\nrun:\n  folds: 1\n")
    out = tmp_path / "run"
    assert main(["-q", "baseline", "--config", str(cfg), "--seed", "5", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["tfidf"]["C"] == 0.5 and saved["data"]["seed"] == 5 and saved["run"]["folds"] == 1
    assert abs(json.loads((out / "metrics.json").read_text())["selection"]["n"] - 30) <= 2  # the 90/10 split


def test_data_stats_png(emit_folder, tmp_path, capsys):
    png = tmp_path / "stats.png"
    assert main(["data", "stats", "--data", str(emit_folder), "--png", str(png),
                 "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    for name in TASK_A_LABELS:
        assert name in out
    img = image.imread(png)
    assert img.shape[0] > 400 and img.shape[1] > 800 and img.std() > 0.05
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats[0]["n_texts"] == 300


def test_help_explains_options(capsys):
    with pytest.raises(SystemExit):
        main(["baseline", "--help"])
    out = capsys.readouterr().out
    assert "--char-ngram-max" in out and "Longest character n-gram" in out and "--zip-password" in out


def test_report_to_choices(capsys):
    from emitlab.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", "--report-to", "comet"])
    assert exc.value.code == 2 and "invalid choice: 'comet'" in capsys.readouterr().err
    assert build_parser().parse_args(["train", "--report-to", "wandb"])  # back, issue 19 (tested offline)
    assert build_parser().parse_args(["train", "--report-to", "mlflow"])

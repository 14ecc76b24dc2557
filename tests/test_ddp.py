"""Multi-process training (distributed data parallel, gloo on CPU) with ``accelerate launch``
and ``torchrun``: real two-process runs of the tiny BERT.

Only rank 0 writes the run folder; rank 1 takes part in the transformer fits only (see
``emitlab.jobs._replica_engine``), so the folder must hold exactly what a single-process run
writes, each file once and complete, while the Trainer takes half the optimizer steps (the
effective batch is 2 x --batch-size).

Note: ``accelerate launch --cpu --num_processes 2`` starts ONE process (accelerate runs several
CPU processes only through MPI); ``--multi_gpu`` is the flag that starts one process per rank,
and on a machine without CUDA those ranks use gloo on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emitlab.cli import main
from emitlab.inference import EmotionClassifier

from conftest import TINY_FOLDS, TINY_TRAIN

EPOCHS = int(TINY_TRAIN[TINY_TRAIN.index("--epochs") + 1])
BATCH = int(TINY_TRAIN[TINY_TRAIN.index("--batch-size") + 1])
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    # CPU processes (gloo) on every machine: on a CUDA machine the ranks would otherwise take NCCL,
    # which needs a GPU per rank (see test_devices.py for that error)
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def accelerate_cmd(*emitlab_args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "-m", "emitlab.cli", "-q", *emitlab_args]


def torchrun_cmd(*emitlab_args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "emitlab.cli", "-q",
            *emitlab_args]


def launch(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    res.log = f"--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-6000:]}"  # type: ignore[attr-defined]
    return res


def files(folder: Path) -> set[str]:
    """The run folder's files (relative), without the per-fold work folders."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and not p.relative_to(folder).as_posix().startswith("work/")}


def check_intact(folder: Path) -> None:
    """No temporary leftovers of concurrent atomic writes, and every JSON file parses."""
    leftovers = [p for p in folder.rglob("*") if ".tmp-" in p.name]
    assert not leftovers, leftovers
    for p in folder.rglob("*.json"):
        json.loads(p.read_text(encoding="utf-8"))
    marker = json.loads((folder / ".emitlab-run").read_text(encoding="utf-8"))
    assert marker["emitlab_run"] == 1


def n_train_rows(folder: Path, plan: str = "transformer") -> list[int]:
    """Training rows of each fold of ``plan`` (folds.json: fold_of_row, -1 = never held out)."""
    p = json.loads((folder / "folds.json").read_text(encoding="utf-8"))[plan]
    fold_of = np.asarray(p["fold_of_row"])
    return [int((fold_of != i).sum()) for i in range(p["k"])]


@pytest.fixture(scope="module")
def train_runs(tiny_model, emit_folder, tmp_path_factory):
    """The same ``emitlab train`` in one process and in two (accelerate launch)."""
    root = tmp_path_factory.mktemp("ddp")
    common = ["train", "--data", str(emit_folder), "--model", str(tiny_model)] + TINY_TRAIN
    assert main(["-q", *common, "--out", str(root / "single")]) == 0
    res = launch(accelerate_cmd(*common, "--out", str(root / "ddp")), root)
    return root / "single", root / "ddp", res


def test_accelerate_train_two_processes(train_runs):
    single, ddp, res = train_runs
    assert res.returncode == 0, res.log
    # rank 0 prints the summary table, rank 1 only one line
    assert res.stdout.count("EMit task A: macro-F1") == 1, res.log
    assert "rank 1 of 2: trained 1 transformer fold(s)" in res.stdout, res.log

    m = json.loads((ddp / "metrics.json").read_text())
    info = m["members"]["transformer"]["training"][0]
    assert info["processes"] == 2 and info["effective_batch_size"] == 2 * BATCH
    single_info = json.loads((single / "metrics.json").read_text())["members"]["transformer"]["training"][0]
    assert "processes" not in single_info  # one process: unchanged

    # the effective batch is 2 x --batch-size: half the optimizer steps of the single run
    (n_train,) = n_train_rows(ddp)
    assert single_info["global_steps"] == EPOCHS * math.ceil(n_train / BATCH)
    assert info["global_steps"] == EPOCHS * math.ceil(n_train / (2 * BATCH))
    assert info["global_steps"] <= single_info["global_steps"] / 2 + EPOCHS
    history = json.loads((ddp / "trainer_log.json").read_text())
    assert max(h["step"] for h in history) == info["global_steps"]
    first = next(h for h in history if "loss" in h)
    assert first["epoch"] == pytest.approx(1 / math.ceil(n_train / (2 * BATCH)), abs=1e-3)

    # the run folder: exactly the files a single-process run writes, each complete and once
    assert files(ddp) == files(single)
    check_intact(ddp)
    log_text = (ddp / "run.log").read_text()
    for line in ("member transformer: 1 fold(s)", "transformer: fold 1/1 done", "exported transformer"):
        assert log_text.count(line) == 1, log_text
    assert "rank 1" not in log_text  # replicas write no run.log lines

    # a loadable export, its reload checked against the run's own probabilities
    assert m["export"]["reload_max_abs_diff"] <= 1e-6
    clf = EmotionClassifier.from_pretrained(ddp / "model.zip")
    probs = clf.predict_proba(["che paura terrore", "amore cuore"])
    assert probs.shape == (2, 10) and np.isfinite(probs).all()


def test_existing_folder_fails_on_every_rank(train_runs, tiny_model, emit_folder):
    """Rank 0 refuses a non-empty --out; the other rank learns it at the barrier and also stops
    (no hang until the process-group timeout), and nothing in the folder changes."""
    _, ddp, _ = train_runs
    before = {p: (ddp / p).stat().st_mtime_ns for p in files(ddp)}
    res = launch(accelerate_cmd("train", "--data", str(emit_folder), "--model", str(tiny_model),
                                "--out", str(ddp), *TINY_TRAIN), ddp.parent)
    assert res.returncode != 0, res.log
    assert res.stderr.count("already exists and is not empty") == 2, res.log  # both ranks: exit 2
    assert {p: (ddp / p).stat().st_mtime_ns for p in files(ddp)} == before


def test_torchrun_run_overwrite(train_runs, tiny_model, emit_folder):
    """``emitlab run`` with torchrun, replacing the earlier run folder (--overwrite: rank 0 alone
    empties it): cheap members and the combination once on rank 0, both transformer folds
    trained by the two ranks."""
    _, ddp, _ = train_runs
    res = launch(torchrun_cmd("run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(ddp),
                              "--overwrite", "--no-report", *TINY_TRAIN, *TINY_FOLDS), ddp.parent)
    assert res.returncode == 0, res.log
    assert "rank 1 of 2: trained 2 transformer fold(s)" in res.stdout, res.log
    m = json.loads((ddp / "metrics.json").read_text())
    assert set(m["members"]) == {"tfidf", "lexicon", "transformer"}
    assert {k: v["folds"] for k, v in m["members"].items()} == {"tfidf": 3, "lexicon": 3, "transformer": 2}
    for info, n_train in zip(m["members"]["transformer"]["training"], n_train_rows(ddp)):
        assert info["processes"] == 2
        assert info["global_steps"] == EPOCHS * math.ceil(n_train / (2 * BATCH))
    check_intact(ddp)
    assert not (ddp / "submission_task-A_test.csv").read_text().count("\n\n")
    log_text = (ddp / "run.log").read_text()
    for line in ("member tfidf: 3 fold(s)", "member lexicon: 3 fold(s)", "member transformer: 2 fold(s)",
                 "transformer: fold 2/2 done", "combination: nested choice"):
        assert log_text.count(line) == 1, log_text
    assert (ddp / "data_stats.json").is_file() and (ddp / "model" / "emitlab.json").is_file()
    assert EmotionClassifier.from_pretrained(ddp / "model").predict_proba(["felice"]).shape == (1, 10)

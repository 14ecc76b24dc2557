"""Run folders: the ``.emitlab-run`` marker, what ``--overwrite`` / ``--resume`` may touch, provenance."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from emitlab import runs
from emitlab.cli import main
from emitlab.errors import DiskSpaceError, RunFolderError
from emitlab.runs import MARKER, RunDir, RunExistsError, git_info

REPO = Path(__file__).resolve().parents[1]


def _open(path, **kw) -> RunDir:
    run = RunDir(path, command=["emitlab", "test"], **kw)
    run.close()
    return run


def _earlier_run(path: Path) -> Path:
    _open(path)
    (path / "metrics.json").write_text("{}")
    (path / "model").mkdir()
    (path / "model" / "w.bin").write_bytes(b"x")
    return path


@pytest.fixture()
def no_deletion(monkeypatch):
    """Any attempt to empty a folder fails the test (belt and braces for the refusal tests)."""
    def refuse(folder):
        pytest.fail(f"tried to empty {folder}")

    monkeypatch.setattr(runs, "_empty", refuse)


def test_new_run_folder_gets_a_marker(tmp_path):
    _open(tmp_path / "run")
    marker = json.loads((tmp_path / "run" / MARKER).read_text())
    assert marker["command"] == ["emitlab", "test"] and marker["emitlab_run"] == 1
    assert marker["created"][:2] == "20"


def test_overwrite_replaces_an_earlier_run(tmp_path):
    run = _earlier_run(tmp_path / "run")
    _open(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [MARKER, "run.log"]


def test_existing_folder_needs_overwrite_or_resume(tmp_path):
    run = _earlier_run(tmp_path / "run")
    with pytest.raises(RunExistsError, match="already exists"):
        _open(run)
    _open(run, resume=True)
    assert (run / "model" / "w.bin").is_file()


def test_overwrite_refuses_a_folder_emitlab_did_not_make(tmp_path, no_deletion):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(RunFolderError, match=r"mine.*not an emitlab run folder"):
        _open(folder, overwrite=True)
    with pytest.raises(RunFolderError, match="cannot resume"):
        _open(folder, resume=True)
    assert (folder / "thesis.tex").read_text() == "years of work" and not (folder / MARKER).exists()


def test_overwrite_refuses_the_current_directory_and_its_parents(tmp_path, monkeypatch, no_deletion):
    work = _earlier_run(tmp_path / "a" / "work")
    (tmp_path / MARKER).write_text(json.dumps({"emitlab_run": 1}))  # a marker does not make a parent deletable
    monkeypatch.chdir(work)
    with pytest.raises(RunFolderError, match="is the current directory"):
        _open(".", overwrite=True)
    with pytest.raises(RunFolderError, match="holds the current directory"):
        _open(tmp_path, overwrite=True)
    assert (work / "metrics.json").is_file()


def test_overwrite_refuses_home_and_root(tmp_path, monkeypatch, no_deletion):
    home = _earlier_run(tmp_path / "users" / "me")
    (tmp_path / "users" / MARKER).write_text(json.dumps({"emitlab_run": 1}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunFolderError, match="is the home folder"):
        _open(home, overwrite=True)
    with pytest.raises(RunFolderError, match="holds the home folder"):
        _open(tmp_path / "users", overwrite=True)
    with pytest.raises(RunFolderError, match="/ with --overwrite: it is the root of the file system"):
        _open("/", overwrite=True)


def test_symlinks_are_resolved_and_never_followed(tmp_path, monkeypatch, no_deletion):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    monkeypatch.chdir(outside)
    link = tmp_path / "link-to-cwd"
    link.symlink_to(outside)
    (outside / MARKER).write_text(json.dumps({"emitlab_run": 1}))
    with pytest.raises(RunFolderError, match="is the current directory"):
        _open(link, overwrite=True)
    assert (outside / "keep.txt").is_file()


def test_overwrite_removes_links_not_their_targets(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    run = _earlier_run(tmp_path / "real-run")
    (run / "data").symlink_to(outside)
    (run / "file-link").symlink_to(outside / "keep.txt")
    link = tmp_path / "run-link"
    link.symlink_to(run)
    _open(link, overwrite=True)
    assert link.is_symlink() and (run / MARKER).is_file() and not (run / "data").exists()
    assert not (run / "file-link").is_symlink() and (outside / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


def test_a_file_is_not_a_run_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        _open(tmp_path / "f", overwrite=True)


def test_cli_refuses_out_dot_overwrite(emit_folder, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", ".", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "refusing to replace . with --overwrite: it is the current directory" in err
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------- disk space


def _disk_with(monkeypatch, free: int) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free))


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_a_run_that_cannot_fit_on_its_disk_is_refused_before_training(emit_folder, tiny_model, tmp_path,
                                                                       monkeypatch, capsys):
    from conftest import TINY_FOLDS, TINY_TRAIN

    _disk_with(monkeypatch, _folder_bytes(tiny_model) * 3)  # 2 fold folders + a zip of 2 need 4 folds' worth
    out = tmp_path / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--no-report"] + TINY_TRAIN + TINY_FOLDS) == 2
    err = capsys.readouterr().err
    assert "GiB free on its disk" in err and "2 transformer fold folder(s) to write and model.zip with all 2" in err
    assert not (out / "members").exists()  # refused before the first member, not at the export


def test_checkpoints_that_may_not_fit_are_a_warning(tiny_model, tmp_path, monkeypatch, caplog):
    import numpy as np

    from emitlab.engine.crossfit import FOLD_FILE, split_plan
    from emitlab.jobs import check_disk_space
    from emitlab.settings import TrainConfig

    size = _folder_bytes(tiny_model)
    run = RunDir(tmp_path / "run")
    plan = split_plan(np.arange(8), np.arange(8, 10), 10, seed=0)
    cfg = TrainConfig(model=str(tiny_model))
    _disk_with(monkeypatch, size * 2 + 1)  # the fold folder and the zip fit; checkpoints may not
    with caplog.at_level("WARNING", logger="emitlab"):
        check_disk_space(run, cfg, plan, export=True, resume=False)
    assert "it may run out of disk" in caplog.text
    _disk_with(monkeypatch, size * 2 - 1)
    with pytest.raises(DiskSpaceError, match="writes about"):
        check_disk_space(run, cfg, plan, export=True, resume=False)
    check_disk_space(run, cfg, plan, export=False, resume=False)  # without the zip one fold folder fits
    done = run / "members" / "transformer" / "fold-0"
    done.mkdir(parents=True)
    (done / FOLD_FILE).write_text("{}")
    check_disk_space(run, cfg, plan, export=True, resume=True)  # resumed: only the zip is still to write
    run.close()


# ----------------------------------------------------------------------------- provenance


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_info_commit_and_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("ignored/\n")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-q", "-m", "init")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_info(repo) == {"commit": head, "dirty": False}
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_bytes(b"x")
    assert git_info(repo) == {"commit": head, "dirty": False}
    (repo / "new.py").write_text("")
    assert git_info(repo) == {"commit": head, "dirty": True}
    # results written by other benchmarks are not source changes when excluded (from any subfolder)
    (repo / "new.py").unlink()
    (repo / "bench" / "results").mkdir(parents=True)
    (repo / "bench" / "results" / "other.json").write_text("{}")
    assert git_info(repo)["dirty"] is True
    assert git_info(repo / "bench", exclude=("bench/results",)) == {"commit": head, "dirty": False}
    (repo / "bench" / "x.py").write_text("")
    assert git_info(repo, exclude=("bench/results",))["dirty"] is True


def test_git_info_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "plain").mkdir()
    assert git_info(tmp_path / "plain") == {"commit": None, "dirty": None}
    assert git_info(tmp_path / "missing") == {"commit": None, "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path / "plain"))  # no git executable
    assert git_info() == {"commit": None, "dirty": None}


def test_config_json_records_git_and_is_a_valid_config_file(emit_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["-q", "baseline", "--data", str(emit_folder), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["git"] == git_info() and set(config["git"]) == {"commit", "dirty"}
    if (REPO / ".git").exists() and shutil.which("git"):
        assert config["git"]["commit"] == _git(REPO, "rev-parse", "HEAD")
    again = tmp_path / "again"
    assert main(["-q", "baseline", "--config", str(out / "config.json"), "--out", str(again)]) == 0


def test_benchmark_record_carries_provenance(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("record", REPO / "benchmarks" / "record.py")
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)
    monkeypatch.setattr(record, "RESULTS", tmp_path / "results")
    path = record.write_result("probe", {"wall_seconds": 1.0})
    saved = json.loads(path.read_text())
    assert saved["git"] == git_info() and saved["command"] and saved["date"][:2] == "20"
    assert saved["versions"]["python"] and saved["machine"]["cpus"] == os.cpu_count()
    assert saved["machine"]["memory_gib"] > 0 and saved["machine"]["cpu_model"]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["probe.json"]

